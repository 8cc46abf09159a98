"""medvqa through the gateway and the services vs the same steps called one after another in one process (the seed
pipeline's way), on the same images with the same tiny models (issues 6, 14). Wall time, median of several runs.

python -m bench.medvqa_vs_sequential [--images 64]

Both do STAGE=segmentation MODE=inference per (image, question): BiomedCLIP gScoreCAM map -> boxes (the seed's
box options) -> MedSAM on the first box -> mask and overlay PNGs, then vqa_manifest.csv and predictions.jsonl.
In-process, both adapters are loaded once and the items run in a loop, torch with its default threads (all cores)
and with one. Through the gateway: `modelyard.ops.local.up` (each service its own process with one intra-op
thread; items overlap across the two services), timed from RunPipeline to the job's last event, once with the
services at max_batch_size 1 (the compared stack: what a CPU deployment with one intra-op thread per service
should run) and once at 4. The machine's ceiling for any split of the work over its cores: the in-process path
with one thread in two processes at once, half the items each. Model loading and warm-up, and the stacks'
start-up and an 8-item warm-up job, are excluded and reported apart. The stacks stay up while the paths take
turns, run after run, so each run's ratio compares times taken moments apart. The masks of both runs are compared.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from bench.report import machine, table, write_section
from bench.tiny_stack import TOP_K, child_environment, tiny_models, tiny_stack
from modelyard.biomedclip.boxes import localize, to_grey
from modelyard.biomedclip.config import BiomedCLIPConfig
from modelyard.biomedclip.model import BiomedCLIPAdapter, Heatmap, HeatmapItem
from modelyard.biomedclip.preprocess import to_frame
from modelyard.biomedclip.servicer import localize_settings
from modelyard.demo.samples import write_medvqa_inputs
from modelyard.gateway import files
from modelyard.gateway.client import GatewayClient
from modelyard.gateway.datarefs import DataVolumeProbe
from modelyard.gateway.pipeline import StepContext
from modelyard.gateway.pipelines.medvqa import MedVQA, MedVQAOptions
from modelyard.gateway.server import STUBS
from modelyard.medsam.config import MedSAMConfig
from modelyard.medsam.model import MedSAMAdapter, SegmentItem
from modelyard.medsam.preprocess import resize_normalise, to_rgb_uint8
from modelyard.runtime.calls import EndpointConfig, ServiceClient
from modelyard.runtime.render import CYAN, as_rgb_uint8, overlay_masks

OPTIONS = {"MODE": "inference", "STAGE": "segmentation", "TOPK": str(TOP_K)}
WARM_UP_ITEMS = 8
# The services' max_batch_size: the ratio is taken with the first. On a CPU with one intra-op thread a batch runs
# its items one after another (no more items per second than one at a time), while every item in it waits for the
# last and the next stage gets them in lumps: measured on 2 cores, 51-53 ms per item at 1 against 54-57 at 4.
BATCH_SIZES = (1, 4)


def sequential(
    models: dict[str, dict], table_path: Path, out: Path, threads: int, loaded: Callable[[], object] | None = None
) -> tuple[float, float, dict[str, float]]:
    """The seed's way: both models in this process, the items in a loop, torch on `threads` intra-op threads;
    `loaded` is called between loading and the timed loop. Returns (load s, run s, seconds by step)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _sequential(models, table_path, out, loaded)
    finally:
        torch.set_num_threads(before)


def _sequential(
    models: dict[str, dict], table_path: Path, out: Path, loaded_hook: Callable[[], object] | None
) -> tuple[float, float, dict[str, float]]:
    started = time.perf_counter()
    clip = BiomedCLIPAdapter(BiomedCLIPConfig.model_validate(models["biomedclip"]), "cpu")
    clip.load()
    sam_config = MedSAMConfig.model_validate(models["medsam"])
    sam = MedSAMAdapter(sam_config, "cpu")
    sam.load()
    with torch.inference_mode():  # as the services do (under their governor) before they report SERVING
        clip.warmup()
        sam.warmup()
    loaded = time.perf_counter() - started
    options = MedVQAOptions.model_validate(OPTIONS)
    settings = localize_settings(clip.config.localize, options.localize)
    steps = {"read + decode": 0.0, "BiomedCLIP map": 0.0, "boxes": 0.0, "MedSAM": 0.0, "write outputs": 0.0}
    rows = list(csv.DictReader(table_path.open()))
    manifest, predictions = [], []
    if loaded_hook is not None:
        loaded_hook()
    started = time.perf_counter()
    for index, row in enumerate(rows):
        t0 = time.perf_counter()
        image = np.asarray(Image.open(table_path.parent / row["image_path"]))
        rgb = as_rgb_uint8(image)
        pixels, geometry = to_frame(rgb, clip.image_settings, clip.config.cam.geometry)
        t1 = time.perf_counter()
        (heat,) = clip.infer([HeatmapItem(pixels, geometry, row["question"], "gscorecam", TOP_K)])
        assert isinstance(heat, Heatmap)
        t2 = time.perf_counter()
        found = localize(heat.heatmap, to_grey(rgb), settings)
        boxes = np.array([[b.x1, b.y1, b.x2, b.y2] for b in found.boxes[:1]], np.float32).astype(np.float64)  # as sent
        t3 = time.perf_counter()
        stem = f"{Path(row['image_path']).stem}_idx{index}"
        masks = None
        if len(boxes):
            item = SegmentItem(resize_normalise(to_rgb_uint8(image), sam_config.arch.image_size), boxes, *image.shape)
            with torch.inference_mode():
                (result,) = sam.infer([item])
            masks = result.masks
        t4 = time.perf_counter()
        if masks is not None:
            files.write_png(out / "masks" / f"{stem}_mask.png", (masks.max(axis=0) * 255).astype(np.uint8))
            shown = files.write_png(
                out / "overlays" / f"{stem}_overlay.png", overlay_masks(image, masks, boxes, box_color=CYAN)
            )
        else:
            shown = files.write_png(out / "overlays" / f"{stem}_overlay.png", image)
        manifest.append([str(shown.relative_to(out)), row["question"], row["answer_text"]])
        predictions.append({**row, "predicted_boxes": boxes.round(2).tolist(), "image_path": manifest[-1][0]})
        t5 = time.perf_counter()
        for name, seconds in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            steps[name] += seconds
    files.write_csv(out / "vqa_manifest.csv", ["image_path", "question", "answer"], manifest)
    files.write_jsonl(out / "predictions.jsonl", predictions)
    return loaded, time.perf_counter() - started, steps


def _half(
    models: dict[str, dict], tables: tuple[Path, Path], out: Path, start: Any, results: Any
) -> None:  # (a spawned process: module level, arguments picklable)
    sequential(models, tables[0], out / "warm-up", 1)  # a fresh process's first items are slower: untimed
    results.put(sequential(models, tables[1], out, 1, start.wait)[1])


def split_table(table_path: Path, warm_up: int) -> tuple[Path, Path, Path]:
    """The table's rows in tables beside it: its first `warm_up` rows, its first half, its second half."""
    with table_path.open(newline="") as f:
        reader = csv.reader(f)
        header, rows = next(reader), list(reader)
    parts = {"warm-up": rows[:warm_up], "half0": rows[: len(rows) // 2], "half1": rows[len(rows) // 2 :]}
    paths = []
    for name, part in parts.items():
        path = table_path.with_name(f"{table_path.stem}.{name}{table_path.suffix}")
        with path.open("w", newline="") as f:
            csv.writer(f).writerows([header, *part])
        paths.append(path)
    return paths[0], paths[1], paths[2]


def two_at_once(models: dict[str, dict], tables: tuple[Path, Path, Path], out: Path) -> float:
    """The machine's ceiling for splitting the work over two cores: the one-thread in-process path in two fresh
    processes (numpy's BLAS on one thread too), each on its half of the items (`tables`: warm-up, halves),
    started together once both have loaded their models and run the warm-up items. Returns the seconds until the
    later one finished."""
    spawn = multiprocessing.get_context("spawn")
    start, results = spawn.Barrier(3), spawn.Queue()
    workers = [
        spawn.Process(target=_half, args=(models, (tables[0], half), out / f"half{index}", start, results))
        for index, half in enumerate(tables[1:])
    ]
    # (read by the children's BLAS when they import numpy)
    with child_environment(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1"):
        for worker in workers:
            worker.start()
    start.wait(timeout=300)
    started = time.perf_counter()
    for _ in workers:
        results.get(timeout=600)  # (each child's own seconds: the later one's end is what counts)
    elapsed = time.perf_counter() - started  # before the joins: a process exiting is not its work
    for worker in workers:
        worker.join()
    return elapsed


class GatewayRuns:
    """The local stack (MedSAM, BiomedCLIP, gateway) kept up across the bench, so its runs can take turns with
    the sequential ones: `run` times one medvqa job from RunPipeline to its last event."""

    def __init__(self, folder: Path, data: Path, table_rel: str, max_batch_size: int) -> None:
        self.folder, self.data, self.table_rel = folder, data, table_rel
        self.max_batch_size = max_batch_size
        self.out = f"out/gateway-batch{max_batch_size}"  # + "-<run>", under the data root
        self.times: list[float] = []
        self.state = ""
        self.up_s = 0.0

    @contextmanager
    def up(self) -> Iterator[GatewayRuns]:
        started = time.perf_counter()
        with tiny_stack(self.folder, self.data, runtime={"max_batch_size": self.max_batch_size}) as stack:
            self.client = GatewayClient(stack["gateway"].address)
            # One short job first, as the sequential path warms its models before it is timed: a fresh stack's
            # first job measured 25-35 % slower than the ones after it. Eight items, so that the services also
            # run batches of every size up to their max_batch_size (4) before the timed jobs: after a 2-item
            # warm-up the first timed run had the lowest ratio of the five in two benches out of three.
            warm_up = {**OPTIONS, "LIMIT": str(WARM_UP_ITEMS)}
            for _ in self.client.run("medvqa", self.table_rel, f"{self.out}-warm-up", warm_up):
                pass
            self.up_s = time.perf_counter() - started
            try:
                yield self
            finally:
                self.client.close()

    def run(self) -> None:
        index, last = len(self.times), None
        started = time.perf_counter()
        for event in self.client.run("medvqa", self.table_rel, self.out_folder(index), OPTIONS):
            last = event.job
        self.times.append(time.perf_counter() - started)
        assert last is not None
        self.state = f"{last.state}: {last.done} done, {last.failed} failed"

    def out_folder(self, index: int) -> str:
        return f"{self.out}-{index}"

    def time_per_item(self) -> dict[str, tuple[float, float]]:
        return gateway_time_per_item(self.folder / "state" / "gateway.yaml", self.data, self.table_rel)


def gateway_time_per_item(gateway_yaml: Path, data: Path, table_rel: str) -> dict[str, tuple[float, float]]:
    """The gateway's own work per item: medvqa's `process` run here, item after item, against the stack's
    services, timing it whole and inside the service calls; once with images as DataRefs, once as bytes."""
    services = yaml.safe_load(gateway_yaml.read_text())["services"]
    in_calls = [0.0]

    def on_call(_service: str, _rpc: str, seconds: float, _ok: bool) -> None:
        in_calls[0] += seconds

    clients = {
        name: ServiceClient(name, STUBS[name], EndpointConfig(**services[name]), on_call=on_call) for name in services
    }
    pipeline = MedVQA()
    options = MedVQAOptions.model_validate(OPTIONS)
    items = pipeline.plan(data / table_rel, options, data)
    result: dict[str, tuple[float, float]] = {}
    try:
        for label, probe in (("DataRef (both services mount /data)", DataVolumeProbe(data)), ("file bytes", None)):
            out = data / "out" / f"per-item-{len(result)}"
            out.mkdir(parents=True)
            ctx = StepContext("bench", options, data, out, clients, threading.Event(), probe)
            pipeline.process(items[0], ctx)  # warm: probes, connections
            in_calls[0] = 0.0
            started = time.perf_counter()
            for item in items:
                pipeline.process(item, ctx)
            total = time.perf_counter() - started
            result[label] = (total / len(items) * 1000, in_calls[0] / len(items) * 1000)
    finally:
        for client in clients.values():
            client.close()
    return result


def spread(seconds: list[float]) -> str:
    return f"{min(seconds):.2f}-{max(seconds):.2f}"


def same_masks(a: Path, b: Path) -> tuple[int, int]:
    """Masks present in both runs, and how many of them are identical."""
    names = sorted(p.name for p in (a / "masks").glob("*.png"))
    equal = sum(
        np.array_equal(np.asarray(Image.open(a / "masks" / n)), np.asarray(Image.open(b / "masks" / n)))
        for n in names
        if (b / "masks" / n).exists()
    )
    return len(names), equal


def run(count: int, folder: Path, runs: int) -> str:
    data = folder / "data"
    table_path = write_medvqa_inputs(data / "medvqa", count=count, size=256)
    load_before = os.getloadavg()[0]
    models = tiny_models(folder / "inprocess-models")
    default_threads = torch.get_num_threads()
    baselines = {  # torch's default (what the seed ran with), and one thread (faster for tiny models on 2 cores)
        f"sequential, one process, torch {default_threads} threads (its default)": default_threads,
        "sequential, one process, torch 1 thread": 1,
    }
    table_rel = str(table_path.relative_to(data))
    gateways = [GatewayRuns(folder / f"stack-batch{size}", data, table_rel, size) for size in BATCH_SIZES]
    compared = gateways[0]
    timings: dict[str, list[tuple[float, float, dict[str, float]]]] = {label: [] for label in baselines}
    split, ceiling = split_table(table_path, WARM_UP_ITEMS), []
    with ExitStack() as stacks:  # both stacks up at once: idle, a stack takes ~1 ms of CPU per second
        for gateway in gateways:
            stacks.enter_context(gateway.up())
        # The paths take turns within each run, so a run's ratio pairs times taken seconds apart: on shared cores
        # what else runs drifts over the bench's minutes.
        for index in range(runs):
            for label, threads in baselines.items():
                out = data / "out" / f"sequential-{threads}-{index}"
                timings[label].append(sequential(models, table_path, out, threads))
            ceiling.append(two_at_once(models, split, data / "out" / f"two-at-once-{index}"))
            for gateway in gateways:
                gateway.run()
        per_item = compared.time_per_item()
    rows: list[list[object]] = []
    seq_runs = {}
    for label, runs_of in timings.items():
        seconds = statistics.median(t[1] for t in runs_of)
        steps = {name: statistics.median(t[2][name] for t in runs_of) for name in runs_of[0][2]}
        seq_runs[label] = ([t[1] for t in runs_of], steps)
        loaded = statistics.median(t[0] for t in runs_of)
        rows.append([label, f"{seconds:.2f}", spread(seq_runs[label][0]), f"{count / seconds:.2f}", f"{loaded:.1f}"])
    ceiling_s = statistics.median(ceiling)
    rows.append(
        [
            "ceiling: the 1-thread path in two processes at once, half the items each",
            f"{ceiling_s:.2f}",
            spread(ceiling),
            f"{count / ceiling_s:.2f}",
            "(load)",
        ]
    )
    for gateway in gateways:
        gw_s = statistics.median(gateway.times)
        rows.append(
            [
                f"gateway + services (1 thread per service, max_batch_size {gateway.max_batch_size})",
                f"{gw_s:.2f}",
                spread(gateway.times),
                f"{count / gw_s:.2f}",
                f"{gateway.up_s:.1f}",
            ]
        )
    load_after = os.getloadavg()[0]
    masks, equal = same_masks(data / "out" / "sequential-1-0", data / compared.out_folder(0))
    best = min(seq_runs, key=lambda label: statistics.median(seq_runs[label][0]))
    seq_times, steps = seq_runs[best]
    seq_s = statistics.median(seq_times)

    def ratios_of(times: list[float]) -> tuple[float, list[float]]:
        return seq_s / statistics.median(times), [s / g for s, g in zip(seq_times, times, strict=True)]

    ratio, ratios = ratios_of(compared.times)
    # (stable: every run's own ratio reaches the goal too, not only the ratio of the medians)
    verdict = "not met" if ratio < 1.5 else "met, and in every run" if min(ratios) >= 1.5 else "met by the medians only"
    others = "; ".join(
        f"at max_batch_size {g.max_batch_size} {ratios_of(g.times)[0]:.2f}x "
        f"(runs {', '.join(f'{r:.2f}' for r in ratios_of(g.times)[1])})"
        for g in gateways[1:]
    )
    ceiling_ratio, ceiling_ratios = ratios_of(ceiling)
    per_step = ", ".join(f"{name} {seconds / count * 1000:.0f} ms" for name, seconds in steps.items())
    item_rows: list[list[object]] = [
        [label, f"{total:.1f}", f"{calls:.1f}", f"{total - calls:.1f}"] for label, (total, calls) in per_item.items()
    ]
    return (
        "## medvqa: gateway + services vs sequential in one process (issues 6, 14)\n\n"
        f"Machine: {machine()}; load average (1 min) {load_before:.1f} before, {load_after:.1f} after (the 2 "
        f"cores are shared with other work). {count} generated 256x256 chest X-rays with questions, STAGE=segmentation "
        f"MODE=inference (BiomedCLIP gScoreCAM k={TOP_K} -> seed box options -> MedSAM on the first box -> mask, "
        f"overlay, manifest), tiny random-weight models in the real formats, CPU, {runs} runs, the paths taking "
        "turns within each run; wall s is the median, with the range of the runs (on shared cores the same command "
        "moves by tens of percent between runs).\n\n"
        + table(
            [
                "path",
                "wall s (median)",
                "runs (min-max s)",
                "items/s",
                f"excluded: model load + warm-up, or the stack's start-up + a {WARM_UP_ITEMS}-item warm-up job (s)",
            ],
            rows,
        )
        + f"\n\n**Ratio (the faster sequential path / gateway at max_batch_size {compared.max_batch_size}, medians): "
        f"{ratio:.2f}x** (goal: at least 1.5x: {verdict}); run by run {', '.join(f'{r:.2f}' for r in ratios)}. "
        f"The same stack {others}. The ceiling for any split over the cores: {ceiling_ratio:.2f}x "
        f"(runs {', '.join(f'{r:.2f}' for r in ceiling_ratios)}), below 2x: beside another, a process takes "
        f"{ceiling_s * 2 / count * 1000:.0f} ms per item against {seq_s / count * 1000:.0f} ms alone (the cores share "
        "caches and memory bandwidth). "
        f"Gateway job: {compared.state}. Masks written by both: {masks}, identical: {equal}.\n\n"
        "The gateway's own time per item (medvqa's step for one item run in this process against the same "
        f"services at max_batch_size {compared.max_batch_size}, items one after another; the services' share is "
        "the time inside their calls, the network hop included):\n\n"
        + table(["images sent as", "ms per item", "in service calls", "the gateway's own"], item_rows)
        + "\n\n"
        f"Where the time goes per item ({best}): {per_step}. Through the gateway the two models run at once, in "
        "their own processes, on different items (stage overlap); at max_batch_size above 1 each service batches "
        "the items of concurrent calls."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # (32 images: ~2 s per gateway run, and on shared cores the runs' ratios spread over 1.18-1.78x; a longer run
    # averages more of the other work out)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5, help="runs of each path (the table gives medians)")
    parser.add_argument("--quick", action="store_true", help="4 images, 1 run (smoke run; not written)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelyard-medvqa-") as tmp:
        body = run(4 if args.quick else args.images, Path(tmp), 1 if args.quick else args.runs)
    print(body)
    if not args.quick:
        write_section("medvqa_vs_sequential", body)


if __name__ == "__main__":
    main()
