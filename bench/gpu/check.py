"""The GPU acceptance run (issue 15): run by bench/gpu/check.sh, which prepares the environment first.

python -m bench.gpu.check [--dry-run] [--out DIR] [--write-results]

Writes DIR/results.md and DIR/results.json (plus plan.txt, inventory.json and the services' logs as logs.tar.gz)
and exits 1 when a promise failed. --dry-run exercises the plumbing on any machine (tiny models on the CPU) and
lists every GPU check as not run.
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.gpu.stack import MedSAMCaller, Row, Service, judge, start_all, test_images, write_config

ROOT = Path(__file__).resolve().parents[2]
# Every GPU check, as the results table names them when they cannot run.
CHECKS = [
    ("1", "NVML inventory as the planner reads it; `modelyard plan` on it"),
    ("2", "pre-load refusal while another process fills the GPU"),
    ("3", "real OOM backoff (MedSAM vit_b, 1024²), RESOURCE_EXHAUSTED at batch 1, recovery ≥ 0.9x"),
    ("4", "memory_fraction caps for two services on one GPU"),
    ("5", "memory flat over 1000 Segment calls (torch allocated/reserved, NVML used < 1 %)"),
    ("6", "throughput: service (shared memory) vs in-process ≥ 0.95x, batching gain, gScoreCAM k=300 s/image"),
    ("7", "device-side assert: health NOT_SERVING and the process exits"),
]
CAPS = {"cap-a": 0.03, "cap-b": 0.05}


def setup_row(plan_file: Path | None, seconds: float) -> Row:
    row = Row(
        "setup",
        "the check's dependencies: this Python's where they fit pyproject's ranges, carried wheels "
        "otherwise; the checkout linked as `modelyard`",
        goal="nothing missing",
    )
    plan: dict[str, dict[str, str]] = json.loads(plan_file.read_text()) if plan_file and plan_file.exists() else {}
    wheels = sorted(n for n, d in plan.items() if d["source"] == "wheel")
    import modelyard.runtime

    linked = str(Path(modelyard.runtime.__file__).resolve().parent) == str(ROOT / "services" / "runtime")
    row.measured = (
        f"{sum(d['source'] == 'machine' for d in plan.values())} from this Python, {len(wheels)} from wheels"
        + (f" ({', '.join(wheels)})" if wheels else "")
        + f"; modelyard from this checkout: {'yes' if linked else 'no'}; {seconds:.0f} s"
    )
    row.numbers = {"plan": plan, "seconds": seconds}
    return judge(row, bool(plan) and linked and all(d["source"] != "none" for d in plan.values()))


def attempt(rows: list[Row], check: str, run: Callable[[], list[Row]], deadline: float) -> None:
    """Run one check into `rows`; an exception becomes an error row, a spent budget a not-run row."""
    promise = dict(CHECKS).get(check, check)
    if time.monotonic() > deadline:
        rows.append(Row(check, promise, status="not run: time budget spent"))
        return
    started = time.monotonic()
    try:
        got = run()
    except Exception as exc:
        traceback.print_exc()
        got = [Row(check, promise, measured=f"{type(exc).__name__}: {str(exc)[:300]}", status="error")]
    for row in got:
        row.numbers.setdefault("seconds", round(time.monotonic() - started, 1))
    rows.extend(got)


def dry_run(folder: Path, logs: Path, out: Path) -> list[Row]:
    """The plumbing, on the CPU: the planner's command, services starting with tiny models, calls through shared
    memory, metrics, the fault service; then every GPU check as not run."""
    from bench.gpu.fatal import echo, fault_service, health
    from bench.gpu.placement import plan_row, synthetic_inventory
    from bench.gpu.stack import tiny_medsam_model

    # The planner's command runs beside the services' start-up: both mostly import torch.
    planning = ThreadPoolExecutor(1).submit(plan_row, out, *synthetic_inventory(folder))
    config = write_config(folder, "medsam-tiny", tiny_medsam_model(folder), {"device": "cpu", "max_batch_size": 4})
    medsam = Service("medsam", "medsam-tiny", config, logs)
    fault = fault_service(folder, logs, "cpu")
    row = Row(
        "dry run",
        "services start (tiny MedSAM and the fault service on the CPU), Segment through shared "
        "memory, metrics scraped, health read",
        goal="all answer",
    )
    started = time.monotonic()
    try:
        start_all([medsam, fault], timeout=600)  # a busy 2-core machine can take minutes to import torch
        caller = MedSAMCaller(medsam.address)
        try:
            masks = caller.segment(test_images(2))
            shared = caller.shared
        finally:
            caller.close()
        backoffs = medsam.metric("modelyard_oom_backoffs_total")
        code, _ = echo(fault)
        status = health(fault)
    finally:
        medsam.stop()
        fault.stop()
    row.measured = (
        f"started in {time.monotonic() - started:.0f} s; {len(masks)} masks {masks[0].shape}, shared memory: "
        f"{'yes' if shared else 'no'}; backoff metric {backoffs:.0f}; fault service echo {code}, health {status}"
    )
    planned = planning.result()
    planned.check, planned.promise = "dry run", "`modelyard plan` runs on a saved H200 inventory and declared needs"
    rows = [planned, judge(row, len(masks) == 2 and masks[0].shape == (1, 512, 512) and shared and code == "OK")]
    rows += [Row(check, promise, status="not run: no GPU") for check, promise in CHECKS]
    return rows


def gpu_run(folder: Path, logs: Path, out: Path, deadline: float) -> list[Row]:
    import torch

    from bench.gpu import memory, placement, speed
    from bench.gpu.fatal import corrupted_context, fault_service
    from bench.gpu.stack import biomedclip_model, medsam_model

    if not torch.cuda.is_available():
        return [Row(check, promise, measured="torch sees no CUDA device", status="error") for check, promise in CHECKS]
    rows: list[Row] = []
    started = time.monotonic()
    model = medsam_model(folder)
    (folder / "medsam_model.json").write_text(json.dumps(model))
    gpu = {"device": "cuda:0", "max_batch_size": 8}
    services = {
        "s8": Service("medsam", "medsam-batch8", write_config(folder, "s8", model, {**gpu, "batch_wait_ms": 5}), logs),
        "s1": Service("medsam", "medsam-batch1", write_config(folder, "s1", model, {**gpu, "max_batch_size": 1}), logs),
        "backoff": Service(
            "medsam", "medsam-backoff", write_config(folder, "backoff", model, {**gpu, "probe_up_after": 20}), logs
        ),
        **{
            name: Service(
                "medsam", f"medsam-{name}", write_config(folder, name, model, {**gpu, "memory_fraction": f}), logs
            )
            for name, f in CAPS.items()
        },
        "biomedclip": Service(
            "biomedclip",
            "biomedclip-real",
            write_config(folder, "biomedclip", biomedclip_model(folder), {**gpu, "max_batch_size": 4}),
            logs,
        ),
    }
    fault = fault_service(folder, logs, "cuda:0")
    everything: list[Any] = [*services.values(), fault]
    try:
        for service in everything:
            service.start()
        adapter = speed.load_in_process(model)  # while the services load
        for service in everything:
            service.wait_until_serving(240)
        rows.append(
            Row(
                "start-up",
                "7 services (MedSAM vit_b x5, BiomedCLIP real-size, fault service) load side by side",
                measured=f"SERVING after {time.monotonic() - started:.0f} s (models written, loaded, warmed)",
                status="pass",
            )
        )
        attempt(rows, "1", lambda: placement.inventory(out), deadline)
        attempt(rows, "2", lambda: placement.refusal(folder, logs), deadline)
        attempt(rows, "3", lambda: memory.backoff(services["backoff"], services["s8"], adapter), deadline)
        attempt(rows, "4", lambda: memory.caps([(services[n], f) for n, f in CAPS.items()]), deadline)
        attempt(
            rows, "6", lambda: speed.speed(services["s8"], services["s1"], services["biomedclip"], adapter), deadline
        )
        attempt(rows, "5", lambda: memory.flat(services["s8"]), deadline)
        attempt(rows, "7", lambda: corrupted_context(fault), deadline)
    finally:
        for service in everything:
            service.stop(10)
    order = {name: i for i, name in enumerate(["setup", "start-up", *dict(CHECKS)])}
    return sorted(rows, key=lambda r: order.get(r.check, 99))


def machine() -> str:
    parts = [f"Python {platform.python_version()}"]
    try:
        import torch

        parts.insert(0, f"torch {torch.__version__} (CUDA {torch.version.cuda})")
        if torch.cuda.is_available():
            parts.insert(0, f"{torch.cuda.get_device_name(0)}")
    except ImportError:
        pass
    try:
        import pynvml

        pynvml.nvmlInit()
        parts.append(f"driver {pynvml.nvmlSystemGetDriverVersion()}")
        pynvml.nvmlShutdown()
    except Exception:
        parts.append("no NVIDIA driver")
    return ", ".join(parts)


def markdown(rows: list[Row], header: str) -> str:
    from bench.report import table

    cells: list[list[object]] = [[r.check, r.promise, r.measured.replace("|", "/"), r.goal, r.status] for r in rows]
    return header + "\n\n" + table(["check", "promise", "measured", "goal", "result"], cells) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="plumbing only, on any machine; GPU checks not run")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu-check", help="results folder")
    parser.add_argument("--write-results", action="store_true", help="also write the table into bench/RESULTS.md")
    parser.add_argument("--budget-s", type=float, default=420.0, help="no check starts after this many seconds")
    parser.add_argument("--setup-plan", type=Path, help="(from check.sh) what the setup installed")
    parser.add_argument("--setup-seconds", type=float, default=0.0, help="(from check.sh) how long the setup took")
    args = parser.parse_args()
    # SIGTERM (a timeout, an operator) unwinds like Ctrl-C, so every service this run started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = [setup_row(args.setup_plan, args.setup_seconds)]
    # Models and logs live outside `out`: weights are hundreds of MB; the logs travel back as one archive.
    with tempfile.TemporaryDirectory(prefix="modelyard-gpu-") as tmp:
        folder, logs = Path(tmp), Path(tmp) / "logs"
        logs.mkdir()
        deadline = started + args.budget_s - args.setup_seconds
        try:
            rows += dry_run(folder, logs, out) if args.dry_run else gpu_run(folder, logs, out, deadline)
        except Exception as exc:
            traceback.print_exc()
            rows.append(Row("run", "the run itself", measured=f"{type(exc).__name__}: {exc}", status="error"))
        with tarfile.open(out / "logs.tar.gz", "w:gz") as archive:
            archive.add(logs, arcname="logs")
    seconds = time.monotonic() - started + args.setup_seconds
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    ok = not any(r.failed for r in rows)
    kind = "DRY RUN (plumbing only, no GPU)" if args.dry_run else "GPU run"
    header = (
        f"### GPU acceptance run (issue 15): {kind}, {when}\n\n"
        f"Machine: {machine()}. `bench/gpu/check.sh{' --dry-run' if args.dry_run else ''}`: {seconds:.0f} s "
        f"including {args.setup_seconds:.0f} s of setup. Random weights at real size; every promise: "
        f"{'held' if ok else 'NOT all held'}."
    )
    text = markdown(rows, header)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(
        json.dumps(
            {
                "date": when,
                "dry_run": args.dry_run,
                "machine": machine(),
                "seconds": seconds,
                "ok": ok,
                "rows": [asdict(r) for r in rows],
            },
            indent=1,
            default=str,
        )
    )
    if args.write_results:
        from bench.report import write_section

        write_section("gpu", "## GPU acceptance run (issue 15)\n\n" + text)
    print(text)
    print(f"results: {out / 'results.md'}, {out / 'results.json'}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
