"""The gateway over real processes on loopback: medvqa (gold boxes -> MedSAM) as a resumable job."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from modelyard.demo.samples import write_medvqa_inputs
from modelyard.gateway.client import GatewayClient
from modelyard.runtime.client import channel, wait_until_serving
from modelyard.runtime.launch import LocalService, free_port
from tests.conftest import write_config

GOLD = {"MODE": "gold", "STAGE": "segmentation"}


class Gateway:
    """`modelyard gateway serve` as a child process."""

    def __init__(self, config: Path, log: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.config, self.log = config, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Gateway:
        out = self.log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelyard.runtime.cli", "gateway", "serve", "--config", str(self.config),
             "--port", str(self.port), "--bind", "127.0.0.1"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        with channel(self.address) as chan:
            wait_until_serving(chan, "", timeout=60)
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_model_section: dict) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("data")
    table = write_medvqa_inputs(root / "medvqa", count=6)
    port = free_port()
    medsam_config = write_config(root / "cfg", tiny_model_section, {"max_batch_size": 2}, "medsam.yaml")
    medsam = LocalService("medsam", medsam_config, port=port, log_path=root / "medsam.log").start()
    medsam.wait_until_serving()
    gateway_config = root / "cfg" / "gateway.yaml"
    gateway_config.write_text(
        yaml.safe_dump(
            {
                "data_root": str(root),
                "services": {
                    "medsam": {
                        "addresses": [medsam.address],
                        "backoff_initial_s": 0.1,
                        "backoff_max_s": 1.0,
                        "max_total_s": 120,
                        "max_attempts": 60,
                    }
                },
            }
        )
    )
    gateway = Gateway(gateway_config, root / "gateway.log").start()
    yield {"root": root, "table": str(table.relative_to(root)), "medsam": medsam, "gateway": gateway}
    gateway.stop()
    medsam.stop()


def run(stack: dict, out: str, options: dict[str, str] | None = None) -> list:
    client = GatewayClient(stack["gateway"].address)
    try:
        return list(client.run("medvqa", stack["table"], out, {**GOLD, **(options or {})}))
    finally:
        client.close()


def read_manifest(path: Path) -> list[list[str]]:
    with path.open() as f:
        return list(csv.reader(f))


def test_a_job_segments_every_question_and_writes_the_seed_outputs(stack: dict) -> None:
    events = run(stack, "out/first")
    final = events[-1].job
    assert final.state == "done" and final.done == final.total == 6 and final.failed == 0
    assert {e.item.state for e in events if e.HasField("item")} == {"running", "done"}
    out = stack["root"] / "out" / "first"
    rows = read_manifest(out / "vqa_manifest.csv")
    assert rows[0] == ["image_path", "question", "answer"]
    assert len(rows) == 7 and all((out / r[0]).is_file() for r in rows[1:])
    assert len({r[0] for r in rows[1:]}) == 6  # one overlay per question, none overwritten
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 6 and all(p["predicted_boxes"] for p in predictions)
    assert len(list((out / "masks").glob("*_mask.png"))) == 6
    assert "items: 6  done: 6  failed: 0" in (out / "report.txt").read_text()
    assert final.summary["manifest"] == "out/first/vqa_manifest.csv"
    client = GatewayClient(stack["gateway"].address)
    assert client.get(final.id).summary == final.summary  # kept with the job, not only in the stream
    client.close()


def test_rerunning_the_same_command_resumes_without_duplicates(stack: dict) -> None:
    run(stack, "out/rerun")
    events = run(stack, "out/rerun")
    assert events[0].job.resumed and events[-1].job.state == "done"
    assert not [e for e in events if e.HasField("item")]  # nothing was done twice
    out = stack["root"] / "out" / "rerun"
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 6
    assert len(read_manifest(out / "vqa_manifest.csv")) == 7


def test_a_bad_item_fails_alone_with_the_services_message(stack: dict) -> None:
    root = stack["root"]
    bad = root / "medvqa" / "bad.csv"
    rows = list(csv.DictReader((root / stack["table"]).open()))
    rows[1]["visual_locations"] = "[[300, 10, 310, 20]]"  # outside the image once scaled: MedSAM says so
    rows[2]["image_path"] = "images/missing.png"
    with bad.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    client = GatewayClient(stack["gateway"].address)
    events = list(client.run("medvqa", "medvqa/bad.csv", "out/bad", GOLD))
    client.close()
    final = events[-1].job
    assert final.state == "failed" and final.done == 4 and final.failed == 2
    errors = {e.item.position: e.item.error for e in events if e.HasField("item") and e.item.state == "failed"}
    assert "does not exist" in errors[2]
    report = (root / "out" / "bad" / "report.txt").read_text()
    assert report.count("FAILED") == 2
    assert len(read_manifest(root / "out" / "bad" / "vqa_manifest.csv")) == 5


def test_a_model_service_killed_mid_job_and_restarted_loses_nothing(stack: dict) -> None:
    medsam: LocalService = stack["medsam"]
    client = GatewayClient(stack["gateway"].address)
    job = client.submit("medvqa", stack["table"], "out/killed", GOLD)
    assert medsam.process is not None
    medsam.process.kill()  # SIGKILL: no drain
    medsam.process.wait()
    time.sleep(1.0)
    medsam.start()  # same port, as an orchestrator restarts it
    medsam.wait_until_serving()
    deadline = time.monotonic() + 120
    while client.get(job.id).state in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
    final = client.get(job.id)
    client.close()
    assert final.state == "done" and final.done == 6
    out = stack["root"] / "out" / "killed"
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 6


def test_paths_outside_the_data_root_are_refused(stack: dict) -> None:
    client = GatewayClient(stack["gateway"].address)
    for input_rel, output in (("../etc/passwd", "out/x"), ("/etc/passwd", "out/x"), (stack["table"], "../escape")):
        with pytest.raises(grpc.RpcError) as err:
            client.submit("medvqa", input_rel, output, GOLD)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    client.close()


def test_unknown_or_bad_options_are_named(stack: dict) -> None:
    client = GatewayClient(stack["gateway"].address)
    with pytest.raises(grpc.RpcError) as err:
        client.submit("medvqa", stack["table"], "out/y", {"CAM_TRESHOLD": "0.3"})
    assert "unknown option 'CAM_TRESHOLD'" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        client.submit("medvqa", stack["table"], "out/y", {"SKIP_CRF": "false"})
    assert "unknown option 'SKIP_CRF'" in err.value.details()  # DenseCRF is not offered
    with pytest.raises(grpc.RpcError) as err:
        client.submit("medvqa", stack["table"], "out/y", {"CAM_THRESHOLD": "2"})
    assert "CAM_THRESHOLD" in err.value.details()
    client.close()


def test_pipelines_are_listed_with_their_options_and_defaults(stack: dict) -> None:
    client = GatewayClient(stack["gateway"].address)
    infos = {p.name: p for p in client.pipelines()}
    client.close()
    assert set(infos) == {"medvqa", "hand3d"}
    options = {o.name: o.default for o in infos["medvqa"].options}
    assert options["CAM_THRESHOLD"] == "0.45" and options["PAD_MAX"] == "0.25" and options["TOPK"] == "300"


def test_a_seed_conf_file_is_accepted_as_is(stack: dict) -> None:
    conf = 'MODE="gold"\nSTAGE="segmentation"\n# a comment\nSCENARIO="B"\nSAVE_VISUALS="true"\n'
    client = GatewayClient(stack["gateway"].address)
    events = list(client.run("medvqa", stack["table"], "out/conf", config_text=conf))
    client.close()
    assert events[-1].job.state == "done"
    assert '"SCENARIO": "B"' in (stack["root"] / "out" / "conf" / "report.txt").read_text()
