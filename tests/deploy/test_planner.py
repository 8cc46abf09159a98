"""The GPU planner: a pure function over inventory snapshots, and the env file compose's GPU overlay reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from modelyard.ops.planner import (
    ENV_BEGIN,
    FALLBACK_NEED_MB,
    PlanPolicy,
    ServiceNeed,
    declared_need,
    load_inventory,
    merge_env,
    merge_samples,
    plan_gpus,
    print_plan,
    save_inventory,
    write_env,
)
from modelyard.ops.volumes import Mounts
from modelyard.runtime.cli import main
from modelyard.runtime.devices import GpuSnapshot, GpuState
from modelyard.runtime.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def gpu(index: int, used_mb: int, util: int = 0, total_mb: int = 24576) -> GpuState:
    return GpuState(index, "NVIDIA RTX A5000", f"GPU-{index}", total_mb, used_mb, util)


# The seed's day, exactly: GPU0 22331/24576 MiB at 99 %, GPU1 9683 MiB at 91 %, GPU2 12 MiB idle, GPU3 4400 MiB.
SEED_DAY = GpuSnapshot(True, "the seed's day", [gpu(0, 22331, 99), gpu(1, 9683, 91), gpu(2, 12, 0), gpu(3, 4400, 0)])
# The four services with GPU backends at their configured batches (the adapters' estimates).
NEEDS = [
    ServiceNeed("medsam", 10741, 8, "adapter estimate"),
    ServiceNeed("biomedclip", 3277, 8, "adapter estimate"),
    ServiceNeed("tapip3d", 6199, 1, "adapter estimate"),
    ServiceNeed("wilor", 5220, 16, "adapter estimate"),
]


def placed(plan) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {p.service: p.gpu for p in plan.placements}


def rendered(plan) -> str:  # type: ignore[no-untyped-def]
    console = Console(record=True, width=250)
    print_plan(plan, console)
    return console.export_text()


def test_the_seeds_day_avoids_the_full_gpu0_and_the_busy_gpu1() -> None:
    plan = plan_gpus(SEED_DAY, NEEDS)
    assert plan.ok
    assert set(placed(plan)) == {"medsam", "biomedclip", "tapip3d", "wilor"}
    assert set(placed(plan).values()) <= {2, 3}
    verdicts = {v.gpu.index: v.skipped for v in plan.gpus}
    assert verdicts[1] == "busy (91 % > 50 %)" and verdicts[0] == "busy (99 % > 50 %)"
    assert verdicts[2] is None and verdicts[3] is None
    for index in (2, 3):  # what is reserved on a GPU fits in what was free there
        assert plan.left_mb(index) >= 0


def test_the_seeds_day_writes_a_gpu_and_a_memory_fraction_per_service() -> None:
    env = plan_gpus(SEED_DAY, NEEDS).env()
    assert sorted(env) == sorted(
        f"{s}_{v}" for s in ("MEDSAM", "BIOMEDCLIP", "TAPIP3D", "WILOR") for v in ("GPU", "MEMORY_FRACTION")
    )
    assert {env[f"{s}_GPU"] for s in ("MEDSAM", "BIOMEDCLIP", "TAPIP3D", "WILOR")} <= {"2", "3"}
    # medsam reserves 10741 x 1.1 + 512 = 12328 MiB of 24576: just over half the card.
    assert env["MEDSAM_MEMORY_FRACTION"] == "0.51"


def test_gpu1_had_room_on_the_seeds_day_only_its_utilisation_rules_it_out() -> None:
    relaxed = plan_gpus(SEED_DAY, NEEDS, PlanPolicy(max_utilization_pct=100))
    assert 1 in placed(relaxed).values()  # 14.9 GB free: the memory alone would have sent a model there
    assert 0 not in placed(relaxed).values()  # 2245 MiB free: full whatever the policy


def test_headroom_is_a_percentage_plus_a_fixed_amount() -> None:
    policy = PlanPolicy(headroom_pct=10, headroom_mb=512)
    assert policy.reserve_mb(1000) == 1612
    assert policy.reserve_mb(0) == 0  # a CPU backend reserves nothing
    # A GPU with exactly the need free, but not the headroom, is not used.
    tight = GpuSnapshot(True, "one GPU", [gpu(0, 24576 - 1000)])
    plan = plan_gpus(tight, [ServiceNeed("medsam", 1000, 1, "config")], policy)
    assert not plan.ok and [n.service for n in plan.unplaced] == ["medsam"]


def test_small_services_share_a_gpu_so_whole_cards_stay_free_for_big_ones() -> None:
    snapshot = GpuSnapshot(True, "two idle GPUs", [gpu(0, 0), gpu(1, 0)])
    small = [ServiceNeed(name, 3000, 8, "config") for name in ("biomedclip", "tapip3d", "wilor")]
    packed = plan_gpus(snapshot, small)
    assert placed(packed) == {"biomedclip": 0, "tapip3d": 0, "wilor": 0}
    with_big = plan_gpus(snapshot, [*small, ServiceNeed("medsam", 20000, 8, "config")])
    big_gpu = placed(with_big)["medsam"]  # 22512 MiB reserved: only a whole card holds it
    assert with_big.ok and [p.service for p in with_big.on_gpu(big_gpu)] == ["medsam"]
    assert len(set(placed(with_big).values())) == 2
    spread = plan_gpus(snapshot, small, PlanPolicy(strategy="spread"))
    assert set(placed(spread).values()) == {0, 1}


def test_a_service_that_needs_no_gpu_memory_still_names_a_gpu_but_no_cap() -> None:
    plan = plan_gpus(SEED_DAY, [ServiceNeed("tapip3d", 0, 1, "adapter estimate")])
    assert plan.env() == {"TAPIP3D_GPU": "2", "TAPIP3D_MEMORY_FRACTION": ""}
    assert plan.placements[0].reserve_mb == 0


def test_only_the_gpus_asked_for_are_used() -> None:
    plan = plan_gpus(SEED_DAY, NEEDS[:2], PlanPolicy(only_gpus=(3,)))
    assert set(placed(plan).values()) == {3}
    assert {v.gpu.index: v.skipped for v in plan.gpus}[2] == "not among --gpus"


def test_when_it_cannot_fit_it_refuses_with_a_table_of_what_each_gpu_had_left() -> None:
    needs = [*NEEDS, ServiceNeed("biomedclip-large", 30000, 8, "runtime.memory_need_mb")]
    plan = plan_gpus(SEED_DAY, needs)
    assert not plan.ok and [n.service for n in plan.unplaced] == ["biomedclip-large"]
    text = rendered(plan)
    assert "cannot place every service" in text and "biomedclip-large" in text
    assert "33512" in text  # its reserve: 30000 x 1.1 + 512
    assert "skipped: busy (99 % > 50 %)" in text and "skipped: busy (91 % > 50 %)" in text
    assert f"{plan.left_mb(2)} MiB left after" in text
    assert "Lower runtime.max_batch_size" in text


def test_without_nvml_nothing_is_placed_and_it_says_why() -> None:
    snapshot = GpuSnapshot(False, "NVML is not available (NVML Shared Library Not Found)")
    plan = plan_gpus(snapshot, NEEDS)
    assert not plan.ok and len(plan.unplaced) == 4
    text = rendered(plan)
    assert "NVML Shared Library Not Found" in text and "CPU stack" in text


def test_samples_keep_the_most_memory_used_and_average_utilisation() -> None:
    a = GpuSnapshot(True, "NVML", [gpu(0, 1000, 0)])
    b = GpuSnapshot(True, "NVML", [gpu(0, 3000, 100)])
    merged = merge_samples([a, b])
    assert merged.gpus[0].used_mb == 3000 and merged.gpus[0].utilization_pct == 50


def test_an_inventory_round_trips_and_a_wrong_one_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    save_inventory(SEED_DAY, path)
    loaded = load_inventory(path)
    assert loaded.available and loaded.gpus == SEED_DAY.gpus
    path.write_text(json.dumps({"gpus": [{"index": 0, "total_mb": 100, "used_mb": 200}]}))
    with pytest.raises(ConfigError, match="used_mb 200 exceeds total_mb 100"):
        load_inventory(path)
    path.write_text(json.dumps({"gpus": [{"index": 0, "total_mb": 100, "used_mb": 2, "utilisation": 5}]}))
    with pytest.raises(ConfigError, match="utilisation"):
        load_inventory(path)


def test_the_env_file_keeps_other_lines_and_replaces_the_plan(tmp_path: Path) -> None:
    first = merge_env("COMPOSE_PROJECT_NAME=lab\nMEDSAM_GPU=0\n", {"MEDSAM_GPU": "2", "MEDSAM_MEMORY_FRACTION": "0.5"})
    assert first.count("MEDSAM_GPU=") == 1 and "MEDSAM_GPU=2" in first  # a stale hand-written copy is dropped
    assert first.startswith("COMPOSE_PROJECT_NAME=lab\n")
    second = merge_env(first, {"MEDSAM_GPU": "3", "MEDSAM_MEMORY_FRACTION": "0.5"})
    assert second.count(ENV_BEGIN) == 1 and "MEDSAM_GPU=3" in second and "MEDSAM_GPU=2" not in second
    assert "COMPOSE_PROJECT_NAME=lab" in second
    env = tmp_path / ".env"
    write_env(env, plan_gpus(SEED_DAY, NEEDS))
    values = dict(line.split("=", 1) for line in env.read_text().splitlines() if line and not line.startswith("#"))
    assert values == plan_gpus(SEED_DAY, NEEDS).env()


def config(folder: Path, name: str, model: dict, runtime: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"model": model, "runtime": runtime}))
    return path


def test_a_declared_need_in_the_config_wins_over_any_estimate(tmp_path: Path) -> None:
    file = config(tmp_path, "medsam", {"checkpoint": "/models/missing.pth"}, {"memory_need_mb": 7000})
    need = declared_need("medsam", file, Mounts.default(tmp_path, tmp_path / "models"))
    assert (need.need_mb, need.source) == (7000, "runtime.memory_need_mb")
    cpu = config(tmp_path, "biomedclip", {"model_dir": "/models/x"}, {"device": "cpu"})
    assert declared_need("biomedclip", cpu, Mounts.default(tmp_path)).need_mb == 0


def test_the_adapter_estimates_the_need_from_the_config_as_the_container_sees_it(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "medsam").mkdir(parents=True)
    (models / "medsam" / "medsam_vit_b.pth").write_bytes(b"")  # the estimate needs only the architecture
    file = config(
        tmp_path / "config", "medsam", {"checkpoint": "/models/medsam/medsam_vit_b.pth"}, {"max_batch_size": 8}
    )
    need = declared_need("medsam", file, Mounts.default(tmp_path / "config", models))
    fixed, per_item = FALLBACK_NEED_MB["medsam"]
    assert need.source == "adapter estimate" and need.need_mb == fixed + 8 * per_item  # the table matches vit_b
    shipped = declared_need(
        "tapip3d", REPO / "deploy" / "config" / "tapip3d.yaml", Mounts.default(REPO / "deploy" / "config")
    )
    assert (shipped.need_mb, shipped.source) == (0, "adapter estimate")  # lift2d runs on the CPU


def test_without_the_checkpoints_on_this_host_the_fallback_table_is_used_and_says_why(tmp_path: Path) -> None:
    file = config(tmp_path, "medsam", {"checkpoint": "/models/medsam/medsam_vit_b.pth"}, {"max_batch_size": 2})
    need = declared_need("medsam", file, Mounts.default(tmp_path, tmp_path / "models"))
    assert (
        need.source == "fallback table"
        and need.need_mb == FALLBACK_NEED_MB["medsam"][0] + 2 * FALLBACK_NEED_MB["medsam"][1]
    )
    assert "/models/medsam/medsam_vit_b.pth" in need.note


def test_modelyard_plan_writes_the_env_file_from_a_saved_inventory(tmp_path: Path) -> None:
    configs = tmp_path / "config"
    for name, need in (("medsam", 10741), ("biomedclip", 3277)):
        config(configs, name, {}, {"memory_need_mb": need})
    inventory = tmp_path / "gpus.json"
    save_inventory(SEED_DAY, inventory)
    out = tmp_path / "plan.env"
    args = ["plan", "--config-dir", str(configs), "--inventory", str(inventory), "--out", str(out)]
    assert main(args) == 0
    text = out.read_text()
    assert "MEDSAM_GPU=" in text and "BIOMEDCLIP_MEMORY_FRACTION=0." in text
    assert "MEDSAM_GPU=0" not in text and "MEDSAM_GPU=1" not in text
    out.unlink()
    config(configs, "medsam", {}, {"memory_need_mb": 40000})
    assert main(args) == 1  # refused: nothing written
    assert not out.exists()
