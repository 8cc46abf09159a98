"""Checks 1 and 2: the NVML inventory the planner reads, `modelyard plan` on it, and the pre-load refusal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.gpu.filler import Filler
from bench.gpu.stack import Row, Service, judge, write_config

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("medsam", "biomedclip", "tapip3d", "wilor")


def plan_cli(out: Path, inventory: Path | None = None, config_dir: Path = ROOT / "deploy/config") -> tuple[int, str]:
    """`modelyard plan` over deploy/config, as a user runs it (dry run: nothing written)."""
    cmd = [
        sys.executable,
        "-m",
        "modelyard.runtime.cli",
        "plan",
        "--config-dir",
        str(config_dir),
        "--dry-run",
        "--samples",
        "3",
    ]
    cmd += ["--inventory", str(inventory)] if inventory else ["--save-inventory", str(out / "inventory.json")]
    env = {**os.environ, "COLUMNS": "200"}  # rich wraps narrower tables, which would split service names
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    (out / "plan.txt").write_text(done.stdout + done.stderr)
    return done.returncode, done.stdout + done.stderr


def plan_row(out: Path, inventory: Path | None = None, config_dir: Path = ROOT / "deploy/config") -> Row:
    code, text = plan_cli(out, inventory, config_dir)
    placed = [s for s in SERVICES if s in text]
    row = Row("1", "`modelyard plan` places every service on this inventory", goal="exit 0, all 4 placed")
    row.measured = f"exit {code}, placed {', '.join(placed) or 'none'} (plan.txt)"
    row.numbers = {"exit_code": code, "placed": placed}
    return judge(row, code == 0 and len(placed) == len(SERVICES))


def synthetic_inventory(folder: Path) -> tuple[Path, Path]:
    """One H200 as NVML reports it, and configs that declare their needs (so planning imports no model code),
    for the dry run's plan."""
    gpu = {"index": 0, "name": "NVIDIA H200", "uuid": "GPU-dry-run", "total_mb": 143771, "used_mb": 0}
    path = folder / "h200.json"
    path.write_text(json.dumps({"reason": "dry run: a saved H200 inventory", "gpus": [gpu]}))
    configs = folder / "plan-configs"
    configs.mkdir()
    for service, need in zip(SERVICES, (11_000, 3_000, 8_000, 6_000), strict=True):
        (configs / f"{service}.yaml").write_text(json.dumps({"runtime": {"memory_need_mb": need}}))
    return path, configs


def inventory(out: Path) -> list[Row]:
    import torch

    from modelyard.runtime.devices import read_gpus, torch_visible_gpus

    snapshot = read_gpus()
    visible = torch_visible_gpus(snapshot)
    row = Row("1", "NVML inventory: every GPU, its memory, matched to torch's view by UUID", goal="NVML = torch")
    if not snapshot.available or not visible:
        row.measured = snapshot.reason
        return [judge(row, False), plan_row(out)]
    gpu = snapshot.gpus[0]
    total = torch.cuda.mem_get_info(0)[1]
    matched = visible[0] is not None and any(visible[0].uuid == g.uuid for g in snapshot.gpus)
    torch_total_mb = total // 2**20
    off = abs(torch_total_mb - gpu.total_mb) / gpu.total_mb
    row.measured = (
        f"{len(snapshot.gpus)} GPU: {gpu.name}, {gpu.total_mb} MiB, {gpu.used_mb} used, {gpu.utilization_pct}% busy; "
        f"cuda:0 matched by UUID: {'yes' if matched else 'no'}; torch total {torch_total_mb} MiB ({off:.2%} off)"
    )
    row.numbers = {"gpus": [vars(g) for g in snapshot.gpus], "torch_total_mb": torch_total_mb, "matched": matched}
    return [judge(row, matched and off < 0.02), plan_row(out)]


def refusal(folder: Path, logs: Path) -> list[Row]:
    """Another process fills the GPU until less than MedSAM's need is free: the service must refuse to load."""
    from modelyard.medsam.config import MedSAMConfig
    from modelyard.medsam.model import MedSAMAdapter

    model = json.loads((folder / "medsam_model.json").read_text())
    need = MedSAMAdapter.memory_need_mb(MedSAMConfig.model_validate(model), 8)
    config = write_config(folder, "refused", model, {"device": "cuda:0", "max_batch_size": 8})
    row = Row(
        "2",
        "pre-load refusal: less free than `memory_need_mb`: no load, free vs needed named, exit ≠ 0",
        goal="exit ≠ 0, message has both numbers",
    )
    with Filler() as filler:
        free, held = filler.leave(need // 2)
        service = Service("medsam", "refused", config, logs)
        service.start()
        assert service.process is not None
        try:
            code = service.process.wait(120)
        except subprocess.TimeoutExpired:
            service.stop(5)
            row.measured = f"still running after 120 s with {free} MiB free of a {need} MiB need"
            return [judge(row, False)]
    text = service.log_text()
    line = next((ln for ln in text.splitlines() if "refusing to load" in ln), "")
    message = json.loads(line).get("msg", line) if line.startswith("{") else line
    named = f"needs {need} MiB" in message and "MiB free of" in message
    row.measured = f"exit {code} with {free} MiB free (filler held {held} MiB): “{message[:260]}”"
    row.numbers = {"exit_code": code, "free_mb": free, "need_mb": need, "message": message}
    return [judge(row, code != 0 and named)]
