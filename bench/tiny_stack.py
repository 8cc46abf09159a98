"""The medvqa half of the demo's local stack for benchmarks: tiny random-weight MedSAM and BiomedCLIP as local
processes plus the gateway (`modelyard.ops.local.up/down`), on the CPU, one intra-op thread per service."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from modelyard.ops.local import Process, down, up

THREADS = "1"  # intra-op threads per service: each service process gets one of the 2 shared cores
TOP_K = 16  # gScoreCAM channels: the tiny model's target layer has 64 (BiomedCLIP's has 768, default 300)


def _write(path: Path, model: dict[str, Any], runtime: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"model": model, "runtime": {"device": "cpu", **runtime}}))
    return path


def tiny_models(folder: Path) -> dict[str, dict[str, Any]]:
    """The `model:` sections of a tiny MedSAM and a tiny BiomedCLIP written under `folder`."""
    from modelyard.biomedclip.architecture import write_tiny_model
    from modelyard.medsam.architecture import TINY, write_random_checkpoint

    checkpoint = write_random_checkpoint(folder / "medsam_tiny.pth", TINY, seed=0)
    files = write_tiny_model(folder / "biomedclip_tiny", seed=0)
    return {
        "medsam": {"checkpoint": str(checkpoint), "architecture": TINY.model_dump(mode="json")},
        "biomedclip": {
            "model_dir": str(files["model_dir"]),
            "text_dir": str(files["text_dir"]),
            "cam": {"default_top_k": TOP_K},
        },
    }


@contextmanager
def child_environment(**variables: str) -> Iterator[None]:
    """`variables` set in os.environ while processes started inside inherit them; restored after."""
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def tiny_stack(
    folder: Path, data_root: Path, runtime: dict[str, Any] | None = None, gateway: dict[str, Any] | None = None
) -> Iterator[dict[str, Process]]:
    """`modelyard up` of MedSAM, BiomedCLIP (`runtime:` settings added) and the gateway (`gateway` settings added);
    `modelyard down` on exit. The services mount the gateway's data volume (runtime.data_root), as in compose."""
    models = tiny_models(folder / "models")
    configs = {
        name: _write(
            folder / "config" / f"{name}.yaml",
            model,
            {"max_batch_size": 4, "data_root": str(data_root.resolve()), **(runtime or {})},
        )
        for name, model in models.items()
    }
    with child_environment(OMP_NUM_THREADS=THREADS, MKL_NUM_THREADS=THREADS):  # inherited by the services
        stack = up(configs, data_root, folder / "state", gateway_settings=gateway)
    try:
        yield stack
    finally:
        down(folder / "state")


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0
