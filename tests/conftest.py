"""Shared fixtures: tiny MedSAM checkpoints in the real format, configs, services on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from modelyard.medsam.architecture import TINY, write_random_checkpoint
from modelyard.runtime.arrays import SHM_DIR
from modelyard.runtime.launch import LocalService


def write_config(folder: Path, model: dict, runtime: dict | None = None, name: str = "service.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump({"model": model, "runtime": {"device": "cpu", **(runtime or {})}}))
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny SAM saved as a flat MedSAM state dict."""
    return write_random_checkpoint(tmp_path_factory.mktemp("models") / "medsam_tiny.pth", TINY, seed=1)


@pytest.fixture(scope="session")
def tiny_model_section(tiny_checkpoint: Path) -> dict:
    return {"checkpoint": str(tiny_checkpoint), "architecture": TINY.model_dump(mode="json")}


@pytest.fixture(scope="module")
def medsam_service(tmp_path_factory: pytest.TempPathFactory, tiny_model_section: dict) -> Iterator[LocalService]:
    folder = tmp_path_factory.mktemp("medsam")
    model = {**tiny_model_section, "max_pixels": 50_000}
    config = write_config(folder, model, {"max_batch_size": 4, "queue_size": 8}, "medsam.yaml")
    with LocalService("medsam", config, log_path=folder / "medsam.log") as service:
        yield service


SHM_SECRET = b"a file nobody offered as shared memory\n" * 128


@pytest.fixture
def shm_symlink(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A name in /dev/shm (world-writable) that is a symlink to some other file: (region name, that file)."""
    target = tmp_path / "precious.bin"
    target.write_bytes(SHM_SECRET)
    link = SHM_DIR / f"modelyard-test-link-{os.getpid()}-{tmp_path.name}"
    link.symlink_to(target)
    try:
        yield link.name, target
    finally:
        link.unlink(missing_ok=True)
