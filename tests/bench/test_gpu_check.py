"""bench/gpu/check.sh, the GPU acceptance run: its dry run on this machine, and how it prepares a bare GPU machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from bench.gpu import wheels

ROOT = Path(__file__).resolve().parents[2]
GPU_CHECKS = {"1", "2", "3", "4", "5", "6", "7"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "MODELYARD_GPU_PYTHON": sys.executable, "MODELYARD_GPU_SITE": str(out / "site")}
    # Its own process group, so that a run past the timeout is stopped with every service it started.
    process = subprocess.Popen(
        [str(ROOT / "bench/gpu/check.sh"), "--dry-run", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), out


@pytest.mark.integration
@pytest.mark.timeout(1000)
def test_the_dry_run_passes_its_plumbing_and_lists_every_gpu_check_as_not_run(dry_run: tuple) -> None:
    done, out = dry_run
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert result["dry_run"] is True and result["ok"] is True
    by_check: dict[str, list[dict]] = {}
    for row in result["rows"]:
        by_check.setdefault(row["check"], []).append(row)
    assert {row["status"] for check in GPU_CHECKS for row in by_check[check]} == {"not run: no GPU"}
    assert [row["status"] for row in by_check["setup"] + by_check["dry run"]] == ["pass", "pass", "pass"]
    assert "shared memory: yes" in by_check["dry run"][1]["measured"]


@pytest.mark.integration
@pytest.mark.timeout(1000)
def test_the_dry_run_writes_one_markdown_table_and_the_services_logs(dry_run: tuple) -> None:
    _, out = dry_run
    table = (out / "results.md").read_text()
    assert "| check | promise | measured | goal | result |" in table
    assert table.count("not run: no GPU") == len(GPU_CHECKS)
    with tarfile.open(out / "logs.tar.gz") as archive:
        names = archive.getnames()
    assert "logs/medsam-tiny.log" in names and "logs/cuda-fault.log" in names


def test_every_requirement_is_carried_within_pyprojects_range_or_named_as_the_machines_own() -> None:
    pins = {wheels.canonical(name): version for name, version in wheels.PINS.items()}
    for line in wheels.requirements():
        req = Requirement(line)
        name = wheels.canonical(req.name)
        if name in wheels.NOT_CARRIED:
            continue
        assert name in pins, f"{name} is required but no wheel is carried for machines that lack it"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside pyproject's {req.specifier}"


def _fake_wheel(folder: Path, name: str, version: str, requires: list[str]) -> None:
    metadata = f"Name: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as archive:
        archive.writestr(f"{name}-{version}.dist-info/METADATA", metadata)


def test_the_setup_takes_a_wheel_only_for_what_the_machine_lacks_and_follows_its_requirements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lacking = {"tenacity", "pydantic", "pydantic-core"}
    real = wheels._satisfied
    monkeypatch.setattr(
        wheels,
        "_satisfied",
        lambda line: (False, "missing") if wheels.canonical(Requirement(line).name) in lacking else real(line),
    )
    _fake_wheel(tmp_path, "tenacity", "9.2.1", [])
    _fake_wheel(tmp_path, "pydantic", "2.14.4", ["pydantic-core==2.50.5", 'email-validator>=2; extra == "email"'])
    plan = wheels.plan(tmp_path)
    assert plan["tenacity"]["source"] == plan["pydantic"]["source"] == "wheel"
    assert plan["grpcio"]["source"] == "machine"
    assert plan["pydantic-core"] == {"requirement": "pydantic-core==2.50.5", "source": "none", "machine": "missing"}
    assert "email-validator" not in plan
    with pytest.raises(SystemExit, match=r"pydantic-core \(pydantic-core==2.50.5, machine: missing\)"):
        wheels.install(tmp_path, tmp_path / "site")


def test_the_linked_checkout_is_importable_with_its_entry_points_and_nothing_else(tmp_path: Path) -> None:
    wheels.link_checkout(tmp_path)
    probe = (
        "import importlib.metadata as m, modelyard.runtime as r; "
        "print(r.__path__[0]); print(sorted(e.name for e in m.entry_points(group='modelyard.services')))"
    )
    # -S: without this environment's site-packages (its editable install), only the linked folder provides modelyard
    done = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path)},
        check=True,
    )
    path, services = done.stdout.splitlines()
    assert Path(path) == tmp_path / "modelyard" / "runtime"
    assert services == str(["biomedclip", "echo", "medsam", "tapip3d", "wilor"])
