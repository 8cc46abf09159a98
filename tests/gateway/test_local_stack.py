"""`modelyard up`'s local stack: a supervisor restarts a crashed service, jobs ride over the gap, and the services
answer only the gateway (the stack's token)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from modelyard.demo.samples import write_medvqa_inputs
from modelyard.gateway.client import GatewayClient
from modelyard.medsam.client import MedSAMClient
from modelyard.ops.local import TOKEN_FILE, Process, down, read_state, up
from modelyard.ops.supervisor import Backoff, Program, Supervisor
from modelyard.runtime.client import token_from
from tests.conftest import write_config
from tests.gateway.test_gateway_medvqa import GOLD

ITEMS = 12


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_model_section: dict) -> Iterator[tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("local-stack")
    data, state = root / "data", root / "state"
    write_medvqa_inputs(data / "in", count=ITEMS)
    config = write_config(root / "configs", tiny_model_section, {"max_batch_size": 2}, "medsam.yaml")
    up({"medsam": config}, data, state)  # the gateway's defaults: no retry settings tuned for the test
    try:
        yield data, state
    finally:
        down(state)


def _wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f}s")
        time.sleep(0.1)


def test_a_service_killed_mid_job_is_restarted_and_the_job_ends_with_no_failed_item(
    stack: tuple[Path, Path],
) -> None:
    data, state = stack
    before: Process = read_state(state)["medsam"]
    client = GatewayClient(read_state(state)["gateway"].address)
    try:
        job = client.submit("medvqa", "in/questions.csv", "out", {**GOLD, "BATCH_SIZE": "1"})
        _wait_for(lambda: client.get(job.id).done >= 1, 120, "a first item done")
        os.kill(before.pid, signal.SIGKILL)  # a crash mid-job: no drain
        current = client.get(job.id)
        assert current.state == "running" and current.pending + current.running > 0, current
        _wait_for(lambda: read_state(state)["medsam"].restarts == 1, 30, "the supervisor restarted medsam")
        _wait_for(lambda: client.get(job.id).state not in ("queued", "running"), 600, "the job ended")
        final = client.get(job.id)
    finally:
        client.close()
    assert final.state == "done" and final.done == ITEMS and final.failed == 0, final
    after = read_state(state)["medsam"]
    assert after.pid != before.pid and after.last_exit == -signal.SIGKILL and after.state == "running"
    assert len((data / "out" / "predictions.jsonl").read_text().splitlines()) == ITEMS
    status = subprocess.run(
        [sys.executable, "-m", "modelyard.runtime.cli", "status", "--state-dir", str(state)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stdout + status.stderr
    (line,) = [line for line in status.stdout.splitlines() if line.startswith("medsam")]
    assert "SERVING" in line and "restarts 1" in line and "last exit -9" in line
    assert '"msg": "restarted"' in (state / "logs" / "supervisor.log").read_text()


def test_the_stacks_services_answer_only_callers_with_its_token(stack: tuple[Path, Path]) -> None:
    _, state = stack
    address = read_state(state)["medsam"].address
    assert (state / TOKEN_FILE).stat().st_mode & 0o077 == 0  # readable by this user only
    with MedSAMClient(address) as anyone:
        anyone.wait_until_serving(60)  # health stays open
        with pytest.raises(grpc.RpcError) as err:
            anyone.info()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with MedSAMClient(address, token=token_from(str(state / TOKEN_FILE))) as gateway_like:
        assert gateway_like.info().service == "medsam"


def test_down_stops_the_supervisor_and_everything_it_ran(tmp_path: Path, tiny_model_section: dict) -> None:
    config = write_config(tmp_path / "configs", tiny_model_section, {"max_batch_size": 2}, "medsam.yaml")
    (tmp_path / "data").mkdir()
    processes = up({"medsam": config}, tmp_path / "data", tmp_path / "state")
    assert down(tmp_path / "state") == ["gateway", "medsam"]
    for p in processes.values():
        with pytest.raises(ProcessLookupError):
            os.kill(p.pid, 0)
    assert read_state(tmp_path / "state") == {} and not (tmp_path / "state" / TOKEN_FILE).exists()


def test_a_program_that_keeps_failing_is_restarted_with_growing_delays_but_a_configuration_error_is_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def program(name: str, code: int) -> Program:
        return Program(name, [sys.executable, "-c", f"raise SystemExit({code})"], "", str(tmp_path / f"{name}.log"))

    supervisor = Supervisor(tmp_path, [program("crashing", 1), program("misconfigured", 2)], Backoff(0.2, 0.8))
    stop = threading.Event()
    runner = threading.Thread(target=supervisor.run, args=(stop, 0.05))
    with caplog.at_level(logging.INFO, logger="modelyard.supervisor"):
        runner.start()
        _wait_for(lambda: read_state(tmp_path).get("crashing", None) is not None, 30, "a state file")
        _wait_for(lambda: read_state(tmp_path)["crashing"].restarts >= 4, 60, "four restarts")
        stop.set()
        runner.join(60)
    delays = [r.fields["restart_in_s"] for r in caplog.records if r.getMessage() == "exited; restarting"]
    assert delays[:4] == [0.2, 0.4, 0.8, 0.8]  # doubling up to the cap
    state = read_state(tmp_path)
    assert state["crashing"].last_exit == 1
    assert state["misconfigured"].restarts == 0 and state["misconfigured"].last_exit == 2
    assert all(p.state == "stopped" for p in state.values())
