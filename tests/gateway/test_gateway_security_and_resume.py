"""The gateway's bearer token and TLS, cancel, metrics, and resuming after the gateway itself was killed."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from modelyard.demo.samples import write_medvqa_inputs
from modelyard.gateway.client import GatewayClient
from modelyard.runtime.client import channel, wait_until_serving
from modelyard.runtime.launch import LocalService, free_port
from modelyard.v1 import gateway_pb2
from tests.conftest import write_config
from tests.gateway.test_gateway_medvqa import GOLD, Gateway


@pytest.fixture(scope="module")
def medsam(tmp_path_factory: pytest.TempPathFactory, tiny_model_section: dict) -> Iterator[LocalService]:
    folder = tmp_path_factory.mktemp("medsam")
    config = write_config(folder, tiny_model_section, {"max_batch_size": 2}, "medsam.yaml")
    with LocalService("medsam", config, log_path=folder / "medsam.log") as service:
        yield service


def gateway_config(root: Path, medsam: LocalService, **extra: object) -> Path:
    path = root / "gateway.yaml"
    services = {"medsam": {"addresses": [medsam.address], "backoff_initial_s": 0.1, "max_attempts": 60}}
    path.write_text(yaml.safe_dump({"data_root": str(root), "services": services, **extra}))
    return path


def test_a_token_is_required_when_configured(tmp_path: Path, medsam: LocalService) -> None:
    write_medvqa_inputs(tmp_path / "in", count=1)
    (tmp_path / "token").write_text("s3cret\n")
    gateway = Gateway(gateway_config(tmp_path, medsam, token_file=str(tmp_path / "token")), tmp_path / "log").start()
    try:
        for token in (None, "wrong"):
            client = GatewayClient(gateway.address, token=token)
            with pytest.raises(grpc.RpcError) as err:
                client.jobs()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in err.value.details()
            with pytest.raises(grpc.RpcError) as err:
                list(client.run("medvqa", "in/questions.csv", "out", GOLD))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            client.close()
        client = GatewayClient(gateway.address, token="s3cret")
        assert list(client.run("medvqa", "in/questions.csv", "out", GOLD))[-1].job.state == "done"
        client.close()
    finally:
        gateway.stop()


def test_the_gateway_sends_a_services_token_and_without_it_items_fail_unauthenticated(
    tmp_path: Path, tiny_model_section: dict
) -> None:
    write_medvqa_inputs(tmp_path / "in", count=2)
    (tmp_path / "token").write_text("s3cret\n")
    runtime = {"max_batch_size": 2, "token_file": str(tmp_path / "token")}
    config = write_config(tmp_path / "medsam", tiny_model_section, runtime, "medsam.yaml")
    with LocalService("medsam", config, log_path=tmp_path / "medsam.log") as medsam:
        services = {"medsam": {"addresses": [medsam.address], "token_file": str(tmp_path / "token")}}
        (tmp_path / "with.yaml").write_text(yaml.safe_dump({"data_root": str(tmp_path), "services": services}))
        services = {"medsam": {"addresses": [medsam.address]}}
        (tmp_path / "without.yaml").write_text(yaml.safe_dump({"data_root": str(tmp_path), "services": services}))
        for name, out in (("with", "out"), ("without", "refused")):
            gateway = Gateway(tmp_path / f"{name}.yaml", tmp_path / f"{name}.log").start()
            client = GatewayClient(gateway.address)
            try:
                events = list(client.run("medvqa", "in/questions.csv", out, GOLD))
            finally:
                client.close()
                gateway.stop()
            final = events[-1].job
            if name == "with":
                assert final.state == "done" and final.done == 2 and final.failed == 0, final
            else:
                failures = [e.item for e in events if e.HasField("item") and e.item.state == "failed"]
                assert final.failed == 2 and all("UNAUTHENTICATED" in f.error for f in failures), final
                assert "retrying" not in (tmp_path / "without.log").read_text()  # waiting cannot fix a missing token


def test_tls_serves_only_encrypted_callers(tmp_path: Path, medsam: LocalService) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    tls = {"cert": str(tmp_path / "cert.pem"), "key": str(tmp_path / "key.pem")}
    gateway = Gateway(gateway_config(tmp_path, medsam, tls=tls), tmp_path / "log")
    out = gateway.log.open("ab")
    gateway.process = subprocess.Popen(
        [*_cli(), "gateway", "serve", "--config", str(gateway.config), "--port", str(gateway.port),
         "--bind", "127.0.0.1"],
        stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        secure = GatewayClient(f"localhost:{gateway.port}", root_certificate=(tmp_path / "cert.pem").read_bytes())
        deadline = time.monotonic() + 60
        while True:
            try:
                assert {p.name for p in secure.pipelines()} == {"medvqa", "hand3d"}
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        secure.close()
        plain = GatewayClient(f"127.0.0.1:{gateway.port}")
        with pytest.raises(grpc.RpcError) as err:
            plain.stub.ListJobs(gateway_pb2.ListJobsRequest(), timeout=3)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        plain.close()
    finally:
        gateway.stop()


def _cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "modelyard.runtime.cli"]


def test_a_gateway_killed_mid_job_resumes_on_restart_and_the_rerun_finishes(
    tmp_path: Path, medsam: LocalService
) -> None:
    write_medvqa_inputs(tmp_path / "in", count=12)
    config = gateway_config(tmp_path, medsam)
    gateway = Gateway(config, tmp_path / "log").start()
    client = GatewayClient(gateway.address)
    job = client.submit("medvqa", "in/questions.csv", "out", GOLD)
    deadline = time.monotonic() + 60
    while client.get(job.id).done < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    client.close()
    gateway.kill()  # SIGKILL mid-job
    gateway = Gateway(config, tmp_path / "log").start()  # resumes unfinished jobs on start
    client = GatewayClient(gateway.address)
    events = list(client.run("medvqa", "in/questions.csv", "out", GOLD))  # the same command: resumes too
    final = events[-1].job
    assert final.id == job.id and final.state == "done" and final.done == 12
    predictions = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 12 and len(set(predictions)) == 12
    client.close()
    gateway.stop()


def test_cancel_stops_a_job_and_a_later_submit_resumes_it(tmp_path: Path, medsam: LocalService) -> None:
    write_medvqa_inputs(tmp_path / "in", count=16)
    gateway = Gateway(gateway_config(tmp_path, medsam), tmp_path / "log").start()
    client = GatewayClient(gateway.address)
    try:
        job = client.submit("medvqa", "in/questions.csv", "out", {**GOLD, "BATCH_SIZE": "1"})
        cancelled = client.cancel(job.id)
        deadline = time.monotonic() + 60
        while client.get(job.id).state not in ("cancelled", "done") and time.monotonic() < deadline:
            time.sleep(0.05)
        stopped = client.get(job.id)
        assert cancelled.id == job.id and stopped.state == "cancelled" and stopped.pending > 0
        events = list(client.run("medvqa", "in/questions.csv", "out", {**GOLD, "BATCH_SIZE": "1"}))
        assert events[0].job.resumed and events[-1].job.state == "done" and events[-1].job.done == 16
        with pytest.raises(grpc.RpcError) as err:
            client.get("no-such-job")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        client.close()
        gateway.stop()


def test_metrics_count_jobs_items_and_calls(tmp_path: Path, medsam: LocalService) -> None:
    write_medvqa_inputs(tmp_path / "in", count=2)
    metrics_port = free_port()
    gateway = Gateway(gateway_config(tmp_path, medsam), tmp_path / "log")
    out = gateway.log.open("ab")
    gateway.process = subprocess.Popen(
        [*_cli(), "gateway", "serve", "--config", str(gateway.config), "--port", str(gateway.port),
         "--bind", "127.0.0.1", "--metrics-port", str(metrics_port)],
        stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        with channel(gateway.address) as chan:
            wait_until_serving(chan, timeout=60)
        client = GatewayClient(gateway.address)
        list(client.run("medvqa", "in/questions.csv", "out", GOLD))
        client.close()
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert 'modelyard_gateway_jobs{pipeline="medvqa",state="done"} 1.0' in text
        assert 'modelyard_gateway_items{pipeline="medvqa",state="done"} 2.0' in text
        assert 'modelyard_gateway_call_seconds_count{outcome="ok",rpc="Segment",service="medsam"} 2.0' in text
        # RunPipeline is a stream: timed apart from unary calls, in buckets that reach hours
        assert 'modelyard_stream_seconds_count{code="OK",method="RunPipeline",service="gateway"} 1.0' in text
    finally:
        gateway.stop()
