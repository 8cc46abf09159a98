"""The GPU planner (`modelyard plan`): which GPU each model service gets, and how much of it.

`plan_gpus` is a pure function over an inventory snapshot (`modelyard.runtime.devices.GpuSnapshot`, from NVML or a
saved JSON file) and each service's declared memory need, so every rule is tested without a GPU:

- reserve = need x (1 + headroom_pct/100) + headroom_mb: the estimate is not exact, and a neighbour may allocate
  briefly while a model loads. A service whose backend needs no GPU memory reserves nothing.
- a GPU busier than `max_utilization_pct` is skipped whatever its free memory: on the seed's day GPU 1 had 15 GB
  free at 91 % utilisation, and loading BiomedCLIP there still ran out of memory.
- best-fit decreasing: the largest reserve first, each on the eligible GPU it leaves the least room on, so small
  services share a card and whole cards stay free for big ones (`spread` takes the GPU with the most room).
- a service that fits nowhere refuses the whole plan, with a table of what each GPU had left and why.

What compose reads — the GPU overlay (docker-compose.gpu.yml) uses exactly these variables, SERVICE being the
service name uppercased (MEDSAM, BIOMEDCLIP, TAPIP3D, WILOR):

    <SERVICE>_GPU=<NVML index>          device_ids of the service's GPU reservation, e.g. MEDSAM_GPU=2
    <SERVICE>_MEMORY_FRACTION=<0..1>    reserve / the GPU's total memory, rounded up to 0.01, e.g. 0.46; empty
                                        when the service needs no GPU memory (no cap). Its GPU is still named,
                                        so device_ids stays valid.

They are written between marker lines in an env file (default `.env`, the file compose reads by itself); other
lines of that file are kept.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator
from rich.console import Console
from rich.table import Table

from modelyard.ops.volumes import Mounts, check_for_container, read_yaml
from modelyard.runtime.config import RuntimeConfig, Strict
from modelyard.runtime.devices import GpuSnapshot, GpuState, read_gpus
from modelyard.runtime.errors import ConfigError
from modelyard.runtime.manifest import installed_manifests

ENV_BEGIN = "# >>> modelyard plan (written by `modelyard plan`; edits between these lines are replaced)"
ENV_END = "# <<< modelyard plan"
_OWNED_KEY = re.compile(r"^\s*(?:export\s+)?([A-Z0-9_]+)_(?:GPU|MEMORY_FRACTION)\s*=")

_MANIFESTS = installed_manifests()
MODEL_SERVICES = tuple(m.name for m in _MANIFESTS)
# Used only when a config cannot be checked on this host (its checkpoints are not in the models folder yet):
# (fixed MiB, MiB per batch item) from each adapter's memory_need_mb with the published checkpoints, as each
# service's manifest declares them (memory.fallback_mb).
FALLBACK_NEED_MB: dict[str, tuple[int, int]] = {m.name: m.memory.fallback_mb for m in _MANIFESTS}


class PlanPolicy(Strict):
    headroom_pct: float = Field(10.0, ge=0, le=200, description="extra memory on top of each need, in percent")
    headroom_mb: int = Field(
        512, ge=0, description="fixed extra MiB per service (allocator slack, a neighbour's spike)"
    )
    max_utilization_pct: int = Field(50, ge=0, le=100, description="skip GPUs busier than this")
    only_gpus: tuple[int, ...] | None = Field(None, description="consider only these NVML indices")
    strategy: Literal["pack", "spread"] = Field("pack", description="pack: best fit (co-locate); spread: most room")

    def reserve_mb(self, need_mb: int) -> int:
        if need_mb <= 0:
            return 0
        return math.ceil(need_mb * (1 + self.headroom_pct / 100)) + self.headroom_mb


@dataclass(frozen=True)
class ServiceNeed:
    service: str
    need_mb: int  # at batch_size
    batch_size: int
    source: str  # where need_mb came from
    note: str = ""  # why a fallback was used


@dataclass(frozen=True)
class Placement:
    service: str
    gpu: int
    need_mb: int
    reserve_mb: int
    memory_fraction: float | None


@dataclass(frozen=True)
class GpuVerdict:
    gpu: GpuState
    skipped: str | None  # why the planner does not use this GPU; None = eligible


@dataclass
class Plan:
    snapshot: GpuSnapshot
    policy: PlanPolicy
    needs: list[ServiceNeed]
    gpus: list[GpuVerdict]
    placements: list[Placement] = field(default_factory=list)
    unplaced: list[ServiceNeed] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unplaced

    def on_gpu(self, index: int) -> list[Placement]:
        return [p for p in self.placements if p.gpu == index]

    def left_mb(self, index: int) -> int:
        gpu = next(v.gpu for v in self.gpus if v.gpu.index == index)
        return gpu.free_mb - sum(p.reserve_mb for p in self.on_gpu(index))

    def env(self) -> dict[str, str]:
        """The variables compose reads (see the module docstring)."""
        values: dict[str, str] = {}
        for p in sorted(self.placements, key=lambda p: p.service):
            name = p.service.upper()
            values[f"{name}_GPU"] = str(p.gpu)
            values[f"{name}_MEMORY_FRACTION"] = "" if p.memory_fraction is None else f"{p.memory_fraction:.2f}"
        return values


def _skip_reason(gpu: GpuState, policy: PlanPolicy) -> str | None:
    if policy.only_gpus is not None and gpu.index not in policy.only_gpus:
        return "not among --gpus"
    if gpu.utilization_pct > policy.max_utilization_pct:
        return f"busy ({gpu.utilization_pct} % > {policy.max_utilization_pct} %)"
    return None


def plan_gpus(snapshot: GpuSnapshot, needs: Sequence[ServiceNeed], policy: PlanPolicy | None = None) -> Plan:
    """Assign each service a GPU (see the module docstring). Never raises: `Plan.unplaced` says what did not fit."""
    policy = policy or PlanPolicy()
    gpus = sorted(snapshot.gpus, key=lambda g: g.index) if snapshot.available else []
    plan = Plan(snapshot, policy, list(needs), [GpuVerdict(g, _skip_reason(g, policy)) for g in gpus])
    room = {v.gpu.index: v.gpu.free_mb for v in plan.gpus if v.skipped is None}
    for need in sorted(needs, key=lambda n: (-policy.reserve_mb(n.need_mb), n.service)):
        reserve = policy.reserve_mb(need.need_mb)
        fits = [index for index, left in room.items() if left >= reserve]
        if not fits:
            plan.unplaced.append(need)
            continue
        if reserve == 0 or policy.strategy == "spread":
            # Nothing to pack: a service needing no GPU memory goes where it crowds no one.
            index = max(fits, key=lambda i: (room[i], -i))
        else:
            index = min(fits, key=lambda i: (room[i] - reserve, i))
        room[index] -= reserve
        total = next(v.gpu.total_mb for v in plan.gpus if v.gpu.index == index)
        fraction = None if reserve == 0 else min(1.0, math.ceil(100 * reserve / total) / 100)
        plan.placements.append(Placement(need.service, index, need.need_mb, reserve, fraction))
    return plan


# -- tables ----------------------------------------------------------------------------------------------------


def gpu_table(plan: Plan) -> Table:
    table = Table(title=f"GPUs ({plan.snapshot.reason})")
    for column in ("GPU", "name", "used / total MiB", "busy", "verdict", "services", "reserved MiB", "left MiB"):
        table.add_column(column, justify="right" if "MiB" in column or column == "busy" else "left")
    for v in plan.gpus:
        g = v.gpu
        placed = plan.on_gpu(g.index)
        table.add_row(
            str(g.index),
            g.name,
            f"{g.used_mb} / {g.total_mb}",
            f"{g.utilization_pct} %",
            v.skipped or "eligible",
            ", ".join(p.service for p in placed) or "-",
            str(sum(p.reserve_mb for p in placed)),
            str(plan.left_mb(g.index)) if v.skipped is None else "-",
        )
    return table


def service_table(plan: Plan) -> Table:
    table = Table(title="services")
    for column in ("service", "batch", "need MiB", "reserve MiB", "need from", "GPU", "memory fraction"):
        table.add_column(column, justify="right" if column in ("batch", "need MiB", "reserve MiB") else "left")
    placed = {p.service: p for p in plan.placements}
    for need in sorted(plan.needs, key=lambda n: n.service):
        p = placed.get(need.service)
        table.add_row(
            need.service,
            str(need.batch_size),
            str(need.need_mb),
            str(plan.policy.reserve_mb(need.need_mb)),
            need.source,
            str(p.gpu) if p else "[red]does not fit[/red]",
            ("-" if p.memory_fraction is None else f"{p.memory_fraction:.2f}") if p else "-",
        )
    return table


def refusal_table(plan: Plan) -> Table:
    """For each service that did not fit: what every GPU had left for it, and why that was not enough."""
    table = Table(title="cannot place every service", title_style="bold red")
    table.add_column("service")
    table.add_column("reserve MiB", justify="right")
    for v in plan.gpus:
        table.add_column(f"GPU {v.gpu.index}")
    for need in plan.unplaced:
        reserve = plan.policy.reserve_mb(need.need_mb)
        cells = []
        for v in plan.gpus:
            if v.skipped:
                cells.append(f"skipped: {v.skipped}")
                continue
            others = ", ".join(p.service for p in plan.on_gpu(v.gpu.index))
            after = f" after {others}" if others else ""
            cells.append(f"{plan.left_mb(v.gpu.index)} MiB left{after}")
        table.add_row(need.service, str(reserve), *cells)
    return table


def refusal_advice(plan: Plan) -> str:
    if not plan.snapshot.available:
        return (
            f"No GPU to plan on: {plan.snapshot.reason}. Run the CPU stack (docker-compose.yml without the GPU "
            "overlay), or plan from a saved inventory: modelyard plan --inventory gpus.json"
        )
    return (
        "Nothing was written. Lower runtime.max_batch_size (the need grows with it), set runtime.memory_need_mb "
        "if the estimate is too high, free a GPU, or relax the policy (--max-utilization, --headroom-pct, "
        "--headroom-mb)."
    )


def print_plan(plan: Plan, console: Console) -> None:
    if plan.gpus:
        console.print(gpu_table(plan))
    console.print(service_table(plan))
    for need in plan.needs:
        if need.note:
            console.print(f"[yellow]{need.service}[/yellow]: {need.note}")
    if not plan.ok:
        if plan.unplaced and plan.gpus:
            console.print(refusal_table(plan))
        console.print(f"[red]{refusal_advice(plan)}[/red]")


# -- what compose reads ------------------------------------------------------------------------------------------


def merge_env(existing: str, values: dict[str, str], comment: str = "") -> str:
    """`existing` with the planner's block replaced by `values`; other lines stay, except stale copies of the
    variables the planner owns (<NAME>_GPU, <NAME>_MEMORY_FRACTION), which would shadow or contradict it."""
    kept: list[str] = []
    inside = False
    for line in existing.splitlines():
        if line.startswith(ENV_BEGIN):
            inside = True
        elif line.startswith(ENV_END):
            inside = False
        elif not inside and not _OWNED_KEY.match(line):
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    block = [ENV_BEGIN, *([f"# {comment}"] if comment else []), *(f"{k}={v}" for k, v in values.items()), ENV_END]
    return "\n".join([*kept, *([""] if kept else []), *block]) + "\n"


def write_env(path: Path, plan: Plan) -> None:
    """Write the plan's variables into `path` (atomically: compose may read it at any moment)."""
    existing = path.read_text() if path.exists() else ""
    gpus = ", ".join(f"GPU {v.gpu.index} {v.gpu.uuid}".strip() for v in plan.gpus if plan.on_gpu(v.gpu.index))
    text = merge_env(existing, plan.env(), f"{time.strftime('%Y-%m-%d %H:%M:%S')} from {plan.snapshot.reason}: {gpus}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    temp.replace(path)


# -- inventory: NVML or a saved snapshot -------------------------------------------------------------------------


class InventoryGpu(Strict):
    index: int = Field(ge=0, description="NVML index (nvidia-smi order), what compose device_ids take")
    name: str = "GPU"
    uuid: str = ""
    total_mb: int = Field(gt=0)
    used_mb: int = Field(ge=0)
    utilization_pct: int = Field(0, ge=0, le=100)

    @model_validator(mode="after")
    def _used_within_total(self) -> InventoryGpu:
        if self.used_mb > self.total_mb:
            raise ValueError(f"GPU {self.index}: used_mb {self.used_mb} exceeds total_mb {self.total_mb}")
        return self


class Inventory(Strict):
    """A saved snapshot (`modelyard plan --save-inventory`), to plan offline or for another machine."""

    gpus: list[InventoryGpu]
    reason: str = "saved inventory"


def load_inventory(path: Path) -> GpuSnapshot:
    try:
        inventory = Inventory.model_validate(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read inventory {path}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid inventory {path}: {problems}") from None
    gpus = [GpuState(**g.model_dump()) for g in inventory.gpus]
    return GpuSnapshot(bool(gpus), f"{inventory.reason} ({path.name})" if gpus else f"no GPU in {path}", gpus)


def save_inventory(snapshot: GpuSnapshot, path: Path) -> None:
    path.write_text(json.dumps({"reason": snapshot.reason, "gpus": [asdict(g) for g in snapshot.gpus]}, indent=2))


def merge_samples(samples: Sequence[GpuSnapshot]) -> GpuSnapshot:
    """One snapshot from several: the most memory each GPU used and its mean utilisation. NVML's utilisation is
    a short window, so one sample can catch a busy card idle (or an idle one busy)."""
    first = samples[0]
    if not first.available:
        return first
    merged = []
    for gpu in first.gpus:
        seen = [g for s in samples for g in s.gpus if g.index == gpu.index]
        used = max(g.used_mb for g in seen)
        utilization = round(sum(g.utilization_pct for g in seen) / len(seen))
        merged.append(GpuState(gpu.index, gpu.name, gpu.uuid, gpu.total_mb, used, utilization))
    return GpuSnapshot(True, f"{first.reason}, {len(samples)} samples", merged)


def sample_gpus(samples: int = 5, interval_s: float = 0.2) -> GpuSnapshot:
    taken = [read_gpus()]
    while taken[0].available and len(taken) < samples:
        time.sleep(interval_s)
        taken.append(read_gpus())
    return merge_samples(taken)


# -- declared needs ----------------------------------------------------------------------------------------------


def declared_need(service: str, file: Path, mounts: Mounts) -> ServiceNeed:
    """A service's GPU memory need at its runtime.max_batch_size: runtime.memory_need_mb when the config sets it,
    else the adapter's estimate (the config checked through the mounts, as in the container), else the fallback
    table. Loading an adapter imports its model code (torch): a few seconds."""
    raw = read_yaml(file)
    try:
        runtime = RuntimeConfig.model_validate(raw.get("runtime") or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid runtime section in {file}: {problems}") from None
    batch = runtime.max_batch_size
    if runtime.device == "cpu":
        return ServiceNeed(service, 0, batch, "runtime.device: cpu")
    if runtime.memory_need_mb is not None:
        return ServiceNeed(service, runtime.memory_need_mb, batch, "runtime.memory_need_mb")
    from modelyard.runtime.registry import load_service

    try:
        spec = load_service(service)
        checked = check_for_container(file, spec.config_schema, mounts)
        if checked.config is None:
            raise ConfigError(checked.summary())
        return ServiceNeed(service, spec.adapter.memory_need_mb(checked.config.model, batch), batch, "adapter estimate")
    except (ConfigError, OSError) as exc:
        reason = str(exc).replace("\n", " ")
        if service not in FALLBACK_NEED_MB:
            raise ConfigError(
                f"cannot estimate {service}'s GPU memory ({reason}); set runtime.memory_need_mb in {file}"
            ) from None
        fixed, per_item = FALLBACK_NEED_MB[service]
        note = f"fallback table, its config does not load on this host: {reason[:300]} (see `modelyard doctor`)"
        return ServiceNeed(service, fixed + per_item * batch, batch, "fallback table", note)


def service_configs(
    config_dir: Path, services: Sequence[str] | None = None, known: Sequence[str] = MODEL_SERVICES
) -> dict[str, Path]:
    """<service>.yaml in `config_dir` for each model service (all `known` ones that have one when `services` is
    None; `known`: the installed services' manifests)."""
    if services is None:
        return {name: config_dir / f"{name}.yaml" for name in known if (config_dir / f"{name}.yaml").exists()}
    missing = [name for name in services if not (config_dir / f"{name}.yaml").is_file()]
    if missing:
        raise ConfigError(f"no config for {', '.join(missing)} in {config_dir} (looked for <service>.yaml)")
    return {name: config_dir / f"{name}.yaml" for name in services}


# -- the command -------------------------------------------------------------------------------------------------


def _plan(args: argparse.Namespace) -> int:
    console = Console()
    try:
        mounts = Mounts.default(Path(args.config_dir), Path(args.models_dir) if args.models_dir else None)
        configs = service_configs(Path(args.config_dir), args.services.split(",") if args.services else None)
        if not configs:
            raise ConfigError(f"no service configs (<service>.yaml) in {args.config_dir}")
        needs = [declared_need(name, file, mounts) for name, file in configs.items()]
        snapshot = load_inventory(Path(args.inventory)) if args.inventory else sample_gpus(args.samples)
        policy = PlanPolicy(
            headroom_pct=args.headroom_pct,
            headroom_mb=args.headroom_mb,
            max_utilization_pct=args.max_utilization,
            only_gpus=tuple(int(i) for i in args.gpus.split(",")) if args.gpus else None,
            strategy=args.strategy,
        )
    except ConfigError as exc:
        print(f"modelyard plan: {exc.message}", file=sys.stderr)
        return 2
    if args.save_inventory:
        save_inventory(snapshot, Path(args.save_inventory))
    plan = plan_gpus(snapshot, needs, policy)
    print_plan(plan, console)
    if not plan.ok:
        return 1
    if args.dry_run:
        console.print("dry run: nothing written")
    else:
        write_env(Path(args.out), plan)
        console.print(f"wrote {', '.join(plan.env())} to {args.out}")
    return 0


def add_plan_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("plan", help="assign model services to GPUs and write the env file compose's GPU overlay reads")
    p.add_argument("--config-dir", default="deploy/config", help="folder with <service>.yaml (default: deploy/config)")
    p.add_argument("--services", help="comma-separated subset (default: every model service with a config)")
    p.add_argument("--models-dir", help="host folder mounted at /models (default: $MODELYARD_MODELS_DIR or ./models)")
    p.add_argument("--inventory", help="plan from a saved GPU snapshot (JSON) instead of NVML")
    p.add_argument("--save-inventory", help="also save the snapshot used (JSON), e.g. to plan elsewhere")
    p.add_argument("--samples", type=int, default=5, help="NVML samples 0.2 s apart (utilisation is averaged)")
    p.add_argument("--out", default=".env", help="env file to write (default: .env, which compose reads)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument("--headroom-pct", type=float, default=10.0, help="extra memory per service, percent (default 10)")
    p.add_argument("--headroom-mb", type=int, default=512, help="extra MiB per service (default 512)")
    p.add_argument("--max-utilization", type=int, default=50, help="skip GPUs busier than this, percent (default 50)")
    p.add_argument("--gpus", help="consider only these NVML indices, e.g. 2,3")
    p.add_argument("--strategy", choices=["pack", "spread"], default="pack", help="pack (co-locate) or spread")
    p.set_defaults(func=_plan)
