"""The compose stack end to end: both pipelines through the gateway's published port, then a model container
killed, crashed, stopped, paused or cut off the network mid-job (docker SDK): every job completes after the
service recovers, with each item's outputs written exactly once. Last, `down` leaves nothing behind.

Runs against the suite's own compose project, or a running deployment (conftest: --gateway, --data-dir,
--compose-project for the faults).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from PIL import Image

from modelyard.demo.assets import HAND_PHOTO, fetch
from modelyard.demo.samples import planar_photo_video, write_medvqa_inputs
from modelyard.v1 import gateway_pb2
from tests.compose.conftest import PROJECT_LABEL, ROOT, STACK_UID, ComposeProject, Deployment
from tests.other_user import as_user

# Startup (and a first image build, when one is missing) counts against the first test.
pytestmark = pytest.mark.timeout(3600)

MEDVQA = {"TOPK": "16"}  # full mode: BiomedCLIP boxes, then MedSAM masks; the tiny model has 64 channels
HAND3D = {"GRID_SIZE": "8"}
MEDVQA_ITEMS = 24  # enough that a fault lands while items are still pending (asserted, not assumed)
HAND3D_ITEMS = 6


def server_signal_script(signal_name: str) -> str:
    """Python that sends `signal_name` to the server process, the child of the container's init (PID 1)."""
    return (
        "import os, signal\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try:\n"
        "        if open(f'/proc/{pid}/stat').read().split()[3] == '1':\n"
        f"            os.kill(int(pid), signal.{signal_name})\n"
        "    except OSError:\n"
        "        pass\n"
    )


# Kills the server process: a crash, which the restart policy answers.
CRASH = server_signal_script("SIGKILL")


def _stamp() -> str:
    return f"{time.time_ns():x}"


def medvqa_input(deployment: Deployment, count: int) -> str:
    name = f"compose-tests/medvqa-{_stamp()}"
    table = write_medvqa_inputs(deployment.data / name, count=count)
    return str(table.relative_to(deployment.data))


_CLIP: dict[str, np.ndarray] = {}


def hand3d_input(deployment: Deployment, count: int) -> str:
    """A folder of `count` copies of a 12-frame RGB-D clip panning over a real photo of a hand."""
    if not _CLIP:
        _CLIP.update(planar_photo_video(np.asarray(Image.open(fetch(HAND_PHOTO)).convert("RGB"))))
    name = f"compose-tests/hand3d-{_stamp()}"
    folder = deployment.data / name
    folder.mkdir(parents=True)
    np.savez(folder / "clip_000.npz", **_CLIP)
    for i in range(1, count):
        shutil.copy(folder / "clip_000.npz", folder / f"clip_{i:03d}.npz")
    return name


def output_for(input_rel: str) -> str:
    """results/<input's folder>: created by the gateway under /data, so owned by the services' user."""
    return "results/" + input_rel.removesuffix("/questions.csv").rsplit("/", 1)[-1]


def failures(deployment: Deployment, job: gateway_pb2.Job) -> list[str]:
    """The job report's FAILED lines: each failed item with its error."""
    report = deployment.data / job.output / "report.txt"
    lines = report.read_text().splitlines() if report.is_file() else ["(no report.txt)"]
    return [line for line in lines if line.startswith("FAILED")]


def check_medvqa(deployment: Deployment, job: gateway_pb2.Job, count: int) -> None:
    assert job.failed == 0, failures(deployment, job)
    assert job.state == "done" and job.total == job.done == count, job
    out = deployment.data / job.output
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == count  # none lost, none written twice
    assert len({json.dumps(p, sort_keys=True) for p in predictions}) == count
    rows = list(csv.reader((out / "vqa_manifest.csv").open()))
    assert rows[0] == ["image_path", "question", "answer"] and len(rows) == count + 1
    assert len({r[0] for r in rows[1:]}) == count and all((out / r[0]).is_file() for r in rows[1:])
    assert len(list((out / "masks").glob("*_mask.png"))) == count


def check_hand3d(deployment: Deployment, job: gateway_pb2.Job, count: int) -> None:
    assert job.state == "done" and job.total == job.done == count and job.failed == 0, job
    files = sorted((deployment.data / job.output).glob("*.h5"))
    assert [f.stem for f in files] == [f"clip_{i:03d}" for i in range(count)]
    for path in files:
        with h5py.File(path) as h5:
            assert h5["video"].shape == (12, 270, 480, 3) and h5["tracks/points"].shape[:2] == (12, 64)
            assert h5["tracks"].attrs["backend"] == "lift2d" and h5["hands"].attrs["backend"].startswith("mediapipe")


def run(deployment: Deployment, pipeline: str, input_rel: str, options: dict[str, str]) -> gateway_pb2.Job:
    client = deployment.client()
    try:
        events = list(client.run(pipeline, input_rel, output_for(input_rel), options))
    finally:
        client.close()
    return events[-1].job


def test_medvqa_runs_through_the_gateways_published_port(deployment: Deployment) -> None:
    job = run(deployment, "medvqa", medvqa_input(deployment, 4), MEDVQA)
    check_medvqa(deployment, job, 4)


def test_hand3d_runs_through_the_gateways_published_port(deployment: Deployment) -> None:
    job = run(deployment, "hand3d", hand3d_input(deployment, 2), HAND3D)
    check_hand3d(deployment, job, 2)
    with h5py.File(next((deployment.data / job.output).glob("*.h5"))) as h5:
        assert h5["hands/left/valid"][:].all()  # the photo's pointing hand, found in every frame


def test_the_readmes_compose_quick_start_works_as_written(deployment: Deployment, tmp_path: Path) -> None:
    """The commands of README's "Compose quick start" after `make up`, verbatim but for the gateway's port (the
    suite's project has one of its own) and the data folder it mounts, on the tiny stack with no options."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("### Compose quick start (CPU)", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if ".venv/bin/modelyard" in line]
    assert len(commands) == 2 and "run medvqa" in commands[1], commands
    write_medvqa_inputs(tmp_path / "my-study", count=3)
    (tmp_path / "data").symlink_to(deployment.data)  # `cp -r my-study data/` lands in the mounted folder
    port = deployment.gateway.rsplit(":", 1)[1]
    for command in commands:
        command = command.replace("127.0.0.1:50050", f"127.0.0.1:{port}")
        command = command.replace(".venv/bin/modelyard", str(ROOT / ".venv" / "bin" / "modelyard"))
        done = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    out = deployment.data / "runs" / "seg"
    assert len((out / "vqa_manifest.csv").read_text().splitlines()) == 1 + 3
    assert "RANDOM WEIGHTS" in (out / "report.txt").read_text()  # the tiny models say what they are


def test_outputs_are_the_stack_users_files_and_readable_by_any_other_user(deployment: Deployment) -> None:
    job = run(deployment, "medvqa", medvqa_input(deployment, 2), MEDVQA)
    check_medvqa(deployment, job, 2)
    files = [path for path in (deployment.data / job.output).rglob("*") if path.is_file()]
    assert {"report.txt", "vqa_manifest.csv", "predictions.jsonl"} <= {path.name for path in files}
    for path in files:
        mode = path.stat().st_mode
        assert mode & 0o044 == 0o044, f"{path} is {stat.filemode(mode)}: group and others cannot read it"
        if deployment.project is not None:  # the suite's own stack: the containers ran as STACK_UID
            assert path.stat().st_uid == STACK_UID, path
    if os.geteuid() == 0:  # read them as an unrelated, unprivileged user, as a colleague on the host would
        # from the data folder down (the suite's temporary folders above it are root's own): through an open
        # descriptor of it, so only the folders the stack made and the file itself are checked
        data = os.open(deployment.data, os.O_RDONLY | os.O_DIRECTORY)
        try:
            report = f"/proc/self/fd/{data}/{job.output}/report.txt"
            done = subprocess.run(as_user(54321, ["cat", report]), pass_fds=(data,), capture_output=True, text=True)
        finally:
            os.close(data)
        assert done.returncode == 0 and "medvqa" in done.stdout, done.stderr


# -- faults ------------------------------------------------------------------------------------------------------


def _backend_network(project: ComposeProject) -> Any:
    (network,) = [n for n in project.networks() if n.name.endswith("_backend")]
    return network


def kill(project: ComposeProject, service: str) -> None:
    """SIGKILL, no drain, then down for 20 s: long enough for gRPC's default reconnect backoff to grow past the
    outage, so the job finishing with no failed item shows the gateway reaches the service soon after it is back.
    Docker leaves a killed container down, so it is started again, as an operator would; back within 60 s."""
    container = project.container(service)
    container.kill()
    time.sleep(20)
    container.start()
    project.wait_healthy((service,), timeout=60)


def crash(project: ComposeProject, service: str) -> None:
    """The server process dies inside the container; the restart policy (on-failure) brings it back."""
    container = project.container(service)
    restarts = container.attrs["RestartCount"]
    container.exec_run(["python", "-c", CRASH])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        container.reload()
        if container.attrs["RestartCount"] > restarts:
            return
        time.sleep(0.2)
    raise AssertionError(f"{service} was not restarted by its restart policy after its server died")


def stop(project: ComposeProject, service: str) -> None:
    """SIGTERM: the service drains its in-flight calls, refuses new ones and exits; started again later."""
    container = project.container(service)
    container.stop(timeout=40)
    time.sleep(3)
    container.start()


def pause(project: ComposeProject, service: str) -> None:
    """Frozen (cgroup freezer): connections stay open, nothing answers; then thawed."""
    container = project.container(service)
    container.pause()
    time.sleep(8)
    container.unpause()


def disconnect(project: ComposeProject, service: str) -> None:
    """Cut off the backend network (its name no longer resolves, its connections go dark), then reconnected."""
    container = project.container(service)
    network = _backend_network(project)
    network.disconnect(container)
    time.sleep(8)
    network.connect(container, aliases=[service])


FAULTS: list[tuple[str, Callable[[ComposeProject, str], None], str, str]] = [
    ("kill", kill, "medsam", "medvqa"),
    ("crash", crash, "biomedclip", "medvqa"),
    ("stop", stop, "tapip3d", "hand3d"),
    ("pause", pause, "wilor", "hand3d"),
    ("disconnect", disconnect, "medsam", "medvqa"),
    ("disconnect", disconnect, "wilor", "hand3d"),
]


@pytest.mark.parametrize(("fault", "inject", "service", "pipeline"), FAULTS, ids=[f"{f[0]}-{f[2]}" for f in FAULTS])
def test_a_job_completes_after_a_model_container_fault_with_no_item_lost_or_duplicated(
    deployment: Deployment, fault: str, inject: Callable[[ComposeProject, str], None], service: str, pipeline: str
) -> None:
    project = deployment.project
    if project is None:
        pytest.skip("fault injection needs the deployment's compose project (--compose-project)")
    count = MEDVQA_ITEMS if pipeline == "medvqa" else HAND3D_ITEMS
    if pipeline == "medvqa":
        input_rel, options = medvqa_input(deployment, count), MEDVQA
    else:
        input_rel, options = hand3d_input(deployment, count), HAND3D
    client = deployment.client()
    try:
        job = client.submit(pipeline, input_rel, output_for(input_rel), options)
        deadline = time.monotonic() + 120
        while (current := client.get(job.id)).done < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert current.state == "running" and current.pending + current.running > 0, (
            f"the job was not mid-way when the fault came: {current}"
        )
        inject(project, service)
        deadline = time.monotonic() + 600
        while (final := client.get(job.id)).state in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        client.close()
    if pipeline == "medvqa":
        check_medvqa(deployment, final, count)
    else:
        check_hand3d(deployment, final, count)
    project.wait_healthy((service,), timeout=300)  # and the service is back, healthy


def test_down_leaves_no_container_network_or_volume_behind(deployment: Deployment) -> None:
    project = deployment.project
    if project is None or not project.env:  # --gateway: not ours to take down
        pytest.skip("only the suite's own compose project is taken down")
    project.down()
    assert project.containers() == []
    assert project.networks() == []
    assert project.engine.volumes.list(filters={"label": f"{PROJECT_LABEL}={project.name}"}) == []
