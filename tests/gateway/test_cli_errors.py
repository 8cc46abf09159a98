"""The CLI never answers a user error or an interruption with a traceback: one line saying what to fix, exit
code 2 (1 when the work itself failed, 130 when interrupted)."""

from __future__ import annotations

import argparse
import json
import os
import pty
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from modelyard.demo.samples import write_medvqa_inputs
from modelyard.gateway.cli import _data_relative
from modelyard.gateway.client import GatewayClient
from modelyard.ops.local import python_for
from modelyard.runtime.client import channel, wait_until_serving
from modelyard.runtime.launch import LocalService, free_port

CLI = [sys.executable, "-m", "modelyard.runtime.cli"]


def modelyard(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env={**os.environ, **(env or {})}
    )


def refused(result: subprocess.CompletedProcess[str], *words: str, code: int = 2) -> None:
    """Exit `code`, nothing but one line on stderr, naming `words`, and no traceback."""
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A gateway whose only service (medsam) never answers: its jobs stay running while the calls retry."""
    root = tmp_path_factory.mktemp("gw")
    write_medvqa_inputs(root / "data" / "vqa", count=3)
    config = root / "gateway.yaml"
    service = {"addresses": ["127.0.0.1:1"], "max_total_s": 600, "max_attempts": 1000, "backoff_max_s": 1.0}
    config.write_text(yaml.safe_dump({"data_root": str(root / "data"), "services": {"medsam": service}}))
    port = free_port()
    with (root / "gateway.log").open("ab") as log:
        process = subprocess.Popen(
            [*CLI, "gateway", "serve", "--config", str(config), "--port", str(port), "--bind", "127.0.0.1"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        with channel(address) as chan:
            wait_until_serving(chan, "", timeout=60)
        yield {"address": address, "root": root}
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:  # an item still retrying its dead service holds the drain
            process.kill()
            process.wait(30)


def test_a_missing_options_file_for_run_is_named(tmp_path: Path) -> None:
    result = modelyard("run", "medvqa", "--input", "q.csv", "--out", "o", "--config", "nope.conf", cwd=tmp_path)
    refused(result, "nope.conf", "no such file")


def test_an_option_without_equals_is_refused_with_an_example(tmp_path: Path) -> None:
    result = modelyard("run", "medvqa", "--input", "q.csv", "--out", "o", "--option", "FOO", cwd=tmp_path)
    assert result.returncode == 2 and "'FOO' is not KEY=VALUE" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["medsam", "segment", "--box", "1,2,30,40", "--out", "mask.png", "--image"],
        ["biomedclip", "classify", "--label", "a", "--label", "b", "--image"],
        ["wilor", "detect", "--out", "hands.json", "--image"],
        ["tapip3d", "track", "--file"],
    ],
    ids=["medsam", "biomedclip", "wilor", "tapip3d"],
)
def test_a_missing_input_file_of_a_service_command_is_named(tmp_path: Path, command: list[str]) -> None:
    refused(modelyard(*command, "missing.file", "--address", "127.0.0.1:1", cwd=tmp_path), "missing.file")


def test_up_refuses_a_missing_or_empty_config_folder(tmp_path: Path) -> None:
    refused(modelyard("up", "--config-dir", "nowhere", cwd=tmp_path), "nowhere", "no such folder")
    (tmp_path / "empty").mkdir()
    refused(modelyard("up", "--config-dir", "empty", cwd=tmp_path), "holds no <service>.yaml")
    assert not (tmp_path / ".modelyard" / "stack.json").exists()


def test_up_refuses_a_second_stack(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "echo.yaml").write_text("model: {}\n")
    (tmp_path / ".modelyard").mkdir()
    (tmp_path / ".modelyard" / "stack.json").write_text("{}")
    refused(modelyard("up", "--config-dir", "configs", cwd=tmp_path), "already up", "modelyard down")


def test_up_names_a_service_that_failed_to_start(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "echo.yaml").write_text("model: {no_such_key: 1}\n")
    result = modelyard("up", "--config-dir", "configs", cwd=tmp_path)
    assert result.returncode == 2 and "echo exited with code 2 while starting" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".modelyard" / "stack.json").exists()


def test_a_reader_that_leaves_early_gets_no_broken_pipe(gateway: dict, tmp_path: Path) -> None:
    command = " ".join([*CLI, "pipelines", "--gateway", gateway["address"]])
    result = subprocess.run(f"{command} | true", shell=True, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "BrokenPipe" not in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_job_needing_a_service_without_address_is_refused_whole(gateway: dict, tmp_path: Path) -> None:
    result = modelyard(
        "run", "medvqa", "--gateway", gateway["address"], "--input", "vqa/questions.csv", "--out", "runs/inference",
        cwd=tmp_path,
    )  # fmt: skip
    refused(result, "FAILED_PRECONDITION", "needs biomedclip", "no address")


def test_an_unreachable_gateway_says_how_to_start_one(tmp_path: Path) -> None:
    refused(modelyard("jobs", "list", "--gateway", "127.0.0.1:1", cwd=tmp_path), "no gateway answers", "modelyard up")


def test_ctrl_c_during_run_says_the_job_goes_on_and_how_to_follow_or_cancel_it(gateway: dict, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [*CLI, "run", "medvqa", "--gateway", gateway["address"], "--input", "vqa/questions.csv",
         "--out", "runs/interrupted", "--option", "MODE=gold"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    with GatewayClient(gateway["address"]) as client:
        deadline = time.monotonic() + 60
        while not [j for j in client.jobs() if j.output == "runs/interrupted"] and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # the CLI has the job's first event
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        (job,) = [j for j in client.jobs() if j.output == "runs/interrupted"]
        assert process.returncode == 130, out + err
        assert "Traceback" not in err and "KeyboardInterrupt" not in err
        assert f"job {job.id} continues on the gateway" in err
        assert f"modelyard jobs watch {job.id}" in err and f"modelyard jobs cancel {job.id}" in err
        assert client.get(job.id).state == "running"  # it did go on

        shown = modelyard("jobs", "show", job.id, "--gateway", gateway["address"], cwd=tmp_path)
        assert shown.returncode == 0 and "pipeline" in shown.stdout and "medvqa" in shown.stdout
        assert "created" in shown.stdout and time.strftime("%Y-") in shown.stdout  # a date, not a Unix float
        listed = modelyard("jobs", "list", "--gateway", gateway["address"], cwd=tmp_path)
        header = listed.stdout.splitlines()[0].split()
        assert header[:3] == ["job", "pipeline", "state"] and job.id in listed.stdout
        cancelled = modelyard("jobs", "cancel", job.id, "--gateway", gateway["address"], cwd=tmp_path)
        assert cancelled.returncode == 0 and job.id in cancelled.stdout


def test_jobs_show_without_an_id_says_where_ids_come_from(tmp_path: Path) -> None:
    refused(modelyard("jobs", "show", "--gateway", "127.0.0.1:1", cwd=tmp_path), "needs a job id", "jobs list")


def test_serve_prints_config_errors_readably_on_a_terminal_and_as_json_otherwise(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    piped = modelyard("serve", "echo", "--config", str(missing), cwd=tmp_path, env={"MODELYARD_LOG_FORMAT": ""})
    assert piped.returncode == 2
    assert json.loads(piped.stderr.strip().splitlines()[-1])["level"] == "error"
    master, slave = pty.openpty()
    process = subprocess.Popen([*CLI, "serve", "echo", "--config", str(missing)], stderr=slave, cwd=tmp_path)
    os.close(slave)
    assert process.wait(120) == 2
    text = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal closed
            break
        if not chunk:
            break
        text += chunk
    os.close(master)
    shown = text.decode()
    assert shown.startswith("error ") and str(missing) in shown and "{" not in shown.splitlines()[0][:2]


def test_service_commands_find_the_local_stack(medsam_service: LocalService, tmp_path: Path) -> None:
    (tmp_path / ".modelyard").mkdir()
    stack = {"processes": {"medsam": {"name": "medsam", "pid": 0, "address": medsam_service.address, "log": ""}}}
    (tmp_path / ".modelyard" / "stack.json").write_text(json.dumps(stack))
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(tmp_path / "scan.png")
    result = modelyard("medsam", "segment", "--image", "scan.png", "--box", "8,8,40,40", "--out", "m.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m.png").is_file()


def test_relative_paths_resolve_under_the_data_root_from_anywhere(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data"
    (data / "my-study").mkdir(parents=True)
    state = tmp_path / ".modelyard"
    state.mkdir()
    (state / "gateway.yaml").write_text(yaml.safe_dump({"data_root": str(data)}))
    args = argparse.Namespace(gateway=None, state_dir=str(state))
    monkeypatch.chdir(tmp_path)
    assert _data_relative("my-study/questions.csv", args) == "my-study/questions.csv"  # as with --gateway
    assert _data_relative("data/my-study/questions.csv", args) == "my-study/questions.csv"  # what the shell sees
    monkeypatch.chdir(data / "my-study")
    assert _data_relative("questions.csv", args) == "my-study/questions.csv"


def test_the_wilor_interpreter_is_configurable(monkeypatch) -> None:
    monkeypatch.setenv("MODELYARD_WILOR_PYTHON", "/opt/wilor-env/bin/python")
    assert python_for("wilor") == "/opt/wilor-env/bin/python"
    monkeypatch.delenv("MODELYARD_WILOR_PYTHON")
    assert python_for("medsam") == sys.executable


def test_services_lists_each_service_with_its_grpc_name_and_what_it_is_for(tmp_path: Path) -> None:
    listed = modelyard("services", cwd=tmp_path)
    assert listed.returncode == 0 and not listed.stderr, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert {"medsam", "biomedclip", "tapip3d", "wilor", "echo"} <= set(lines)
    assert "modelyard.v1.MedSAM" in lines["medsam"] and "segmentation" in lines["medsam"]
    assert "reference service" in lines["echo"]  # not mistaken for a model


def test_a_uid_the_system_has_no_name_for_gets_one_before_torch_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    """As containers run under compose's MODELYARD_UID or OpenShift's arbitrary uids: torch asks for the user's
    name while it is imported (getpass.getuser), which raises KeyError for a uid without a passwd entry unless
    USER names one. (The compose suite runs its containers under such a uid.)"""
    import getpass
    import pwd

    from modelyard.runtime.cli import name_a_nameless_user

    uid = next(u for u in range(4321, 65000) if u not in {entry.pw_uid for entry in pwd.getpwall()})
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "getuid", lambda: uid)
    with pytest.raises(KeyError):
        getpass.getuser()  # what torch's import ran into
    name_a_nameless_user()
    assert getpass.getuser() == f"uid{uid}"
