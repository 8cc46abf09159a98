"""The servers under fuzz, each started once for the whole fuzz package (the gateway's test module reuses the model
services the other modules fuzzed), on tiny models with small limits so every example stays cheap; and one data
volume shared by all of them, holding good files and every kind of bad one (symlinks out and in circles, FIFOs,
folders named like files, corrupt and empty files)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from modelyard.biomedclip.architecture import write_tiny_model
from modelyard.demo.samples import write_medvqa_inputs
from modelyard.medsam.architecture import TINY, write_random_checkpoint
from modelyard.runtime.arrays import SHM_DIR, SharedRegion
from modelyard.runtime.launch import LocalService
from modelyard.tapip3d import synthetic
from tests.conftest import write_config
from tests.fuzz.support import GatewayProcess, Target
from tests.wilor_env import wilor_python

# One intra-op thread per service: they share two cores with the fuzzing process.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
GOOD_IMAGES = ["images/grey.png", "images/rgb.jpg", "images/rgba.png", "images/grey16.png", "link_inside.png"]
GOOD_CLIPS = ["clips/clip.npz", "clips/frames", "clips/clip.npy", "clips/broken.mp4"]
GOOD_TABLES = ["medvqa/questions.csv", "medvqa/rows.jsonl", "medvqa/broken.parquet", "medvqa/list.json"]


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="package")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-data")
    outside = tmp_path_factory.mktemp("outside")
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 255, (32, 40), dtype=np.uint8)
    _png(outside / "secret.png", grey)
    _png(root / "images" / "grey.png", grey)
    Image.fromarray(np.dstack([grey] * 3)).save(root / "images" / "rgb.jpg")
    _png(root / "images" / "rgba.png", np.dstack([grey] * 4))
    _png(root / "images" / "grey16.png", grey.astype(np.uint16) * 250)  # 16-bit grey (I;16)
    _png(root / "images" / "big.png", np.zeros((200, 200), np.uint8))  # over every service's pixel limit
    # clips: TAPIP3D's .npz (with query points), a folder of frames and a .npy for WiLoR
    scene = synthetic.make_scene(width=40, height=32, frames=6, seed=0)
    truth = scene.sample_queries(8, 0, np.random.default_rng(0))
    scene.save_npz(root / "clips" / "clip.npz", truth.queries)
    (root / "hand3d").mkdir()
    scene.save_npz(root / "hand3d" / "clip.npz")
    for t in range(3):
        _png(root / "clips" / "frames" / f"frame_{t + 1}.png", scene.video[t])
    np.save(root / "clips" / "clip.npy", scene.video[:3])
    (root / "clips" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    # files that are not what their names say
    (root / "empty.png").write_bytes(b"")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 255, 64, dtype=np.uint8)))
    (root / "notes.txt").write_text("not an image")
    (root / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(root / "pickled.npz", video=np.array([{"a": 1}], dtype=object))
    (root / "dir.npz").mkdir()
    (root / "dir.png").mkdir()
    os.mkfifo(root / "fifo.png")  # reading it would block forever
    os.mkfifo(root / "fifo.npz")
    # symlinks: inside (fine), out of the volume, in a circle, to nothing
    (root / "link_inside.png").symlink_to(root / "images" / "grey.png")
    (root / "link_outside.png").symlink_to(outside / "secret.png")
    (root / "link_dir_outside").symlink_to(outside, target_is_directory=True)
    (root / "loop").symlink_to(root / "loop")
    (root / "dangling.png").symlink_to(root / "nowhere.png")
    np.savez(outside / "secret.npz", video=scene.video)
    (root / "clips" / "escape.npz").symlink_to(outside / "secret.npz")  # a folder's member that leads out
    # frames of a folder that lead out of the volume, or to a FIFO, however deep
    _png(root / "clips" / "leaky_frames" / "frame_1.png", scene.video[0])
    (root / "clips" / "leaky_frames" / "frame_2.png").symlink_to(outside / "secret.png")
    (root / "clips" / "deep" / "er").mkdir(parents=True)
    (root / "clips" / "deep" / "er" / "frame_1.png").symlink_to(outside / "secret.png")
    (root / "clips" / "fifo_frames").mkdir()
    (root / "clips" / "fifo_frames" / "frame_1.png").symlink_to(root / "fifo.png")
    # bombs: a few KB that declare far more than any limit here
    np.savez_compressed(root / "bomb.npz", video=np.zeros((1, 3000, 3000, 3), np.uint8))
    Image.new("L", (6000, 6000)).save(root / "bomb.png")
    # medvqa tables: a good one, and ones whose rows or bytes are wrong
    write_medvqa_inputs(root / "medvqa", count=2, size=64)
    rows = [
        {"image_path": "images/cxr_000.png", "question": "lung?", "visual_locations": "[[10, 10, 60, 60]]"},
        1,
        ["a list"],
        {"image_path": "images/cxr\u0000.png", "question": "nul?"},
        {"image_path": "/etc/passwd", "question": "absolute?"},
        {"question": "no path column"},
        {"image_path": "../../escape.png", "question": "escape?"},
    ]
    (root / "medvqa" / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "medvqa" / "broken.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    (root / "medvqa" / "list.json").write_text('{"not": "a list"}')
    os.mkfifo(root / "medvqa" / "fifo.csv")
    return root


@pytest.fixture(scope="package")
def regions(region_target: Path) -> Iterator[list[str]]:
    """Shared-memory regions requests may point into: one with bytes, one of zero bytes."""
    full = SharedRegion.create(1 << 16, SHM_DIR, prefix="modelyard-fuzz")
    full.write(0, np.random.default_rng(0).integers(0, 255, 1 << 16, dtype=np.uint8))
    empty = SharedRegion.create(0, SHM_DIR, prefix="modelyard-fuzz")
    yield [full.name, empty.name, *HOSTILE_REGIONS]
    full.close()
    empty.close()


# Names in /dev/shm that are not a caller's region: a symlink to a file elsewhere, a symlink to a real region,
# a FIFO. Every request naming one must be refused, and the linked file never read or written.
HOSTILE_REGIONS = [f"modelyard-fuzz-{os.getpid()}-{kind}" for kind in ("link-out", "link-in", "fifo")]
REGION_TARGET = b"a file that is nobody's region\n" * 2048


@pytest.fixture(scope="package")
def region_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The file the hostile regions link to (checked unchanged after every fuzz test that drew them)."""
    target = tmp_path_factory.mktemp("region-target") / "precious.bin"
    target.write_bytes(REGION_TARGET)
    real = SharedRegion.create(1 << 16, SHM_DIR, prefix="modelyard-fuzz")
    link_out, link_in, fifo = (SHM_DIR / name for name in HOSTILE_REGIONS)
    link_out.symlink_to(target)
    link_in.symlink_to(real.path)
    os.mkfifo(fifo)
    yield target
    for path in (link_out, link_in, fifo):
        path.unlink(missing_ok=True)
    real.close()


@pytest.fixture(autouse=True)
def _hostile_regions_stay_inert(request: pytest.FixtureRequest) -> Iterator[None]:
    if "regions" not in request.fixturenames:
        yield
        return
    target = request.getfixturevalue("region_target")
    yield
    assert target.read_bytes() == REGION_TARGET, "a request wrote through a symlinked shared-memory region"


def _service(name: str, folder: Path, model: dict, runtime: dict, python: str | None = None) -> Iterator[Target]:
    config = write_config(folder, model, runtime, f"{name}.yaml")
    log = folder / f"{name}.log"
    extra = {"python": python} if python else {}
    with LocalService(name, config, log_path=log, env=ONE_THREAD, **extra) as service:  # type: ignore[arg-type]
        target = Target(name, service.address, service.process, log)
        yield target
        target.close()


@pytest.fixture(scope="package")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    model = {"max_delay_seconds": 0.02}
    yield from _service("echo", tmp_path_factory.mktemp("echo"), model, {"queue_size": 8})


@pytest.fixture(scope="package")
def medsam(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[Target]:
    folder = tmp_path_factory.mktemp("medsam")
    checkpoint = write_random_checkpoint(folder / "tiny.pth", TINY, seed=1)
    model = {
        "checkpoint": str(checkpoint),
        "architecture": TINY.model_dump(mode="json"),
        "max_pixels": 20_000,
        "max_boxes_per_image": 4,
        "max_items_per_request": 4,
        "max_request_pixels": 40_000,
    }
    yield from _service("medsam", folder, model, {"data_root": str(data_root), "max_batch_size": 4})


@pytest.fixture(scope="package")
def biomedclip(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[Target]:
    folder = tmp_path_factory.mktemp("biomedclip")
    files = write_tiny_model(folder / "model", seed=1)
    model = {
        "model_dir": str(files["model_dir"]),
        "text_dir": str(files["text_dir"]),
        "cam": {"default_top_k": 8, "chunk_size": 16},
        "max_pixels": 20_000,
        "max_items_per_request": 3,
        "max_labels": 6,
        "max_prompt_chars": 300,
    }
    yield from _service("biomedclip", folder, model, {"data_root": str(data_root), "max_batch_size": 4})


@pytest.fixture(scope="package")
def tapip3d(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[Target]:
    model = {
        "backend": "lift2d",
        "lift2d": {"window_px": 7, "pyramid_levels": 1},
        "max_frames": 8,
        "max_points": 64,
        "max_pixels": 4_000,
        "default_grid_size": 4,
    }
    # A 1 MiB message limit: large answers go to the data volume.
    runtime = {"data_root": str(data_root), "max_message_mb": 1}
    yield from _service("tapip3d", tmp_path_factory.mktemp("tapip3d"), model, runtime)


@pytest.fixture(scope="package")
def wilor(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[Target]:
    model = {"backend": "mediapipe", "max_frames": 8, "max_pixels": 20_000, "max_hands_limit": 4}
    runtime = {"data_root": str(data_root), "max_batch_size": 4}
    yield from _service("wilor", tmp_path_factory.mktemp("wilor"), model, runtime, python=wilor_python())


@pytest.fixture(scope="package")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    data_root: Path,
    medsam: Target,
    biomedclip: Target,
    tapip3d: Target,
    wilor: Target,
) -> Iterator[Target]:
    folder = tmp_path_factory.mktemp("gateway")
    endpoint = {"backoff_initial_s": 0.05, "backoff_max_s": 0.5, "max_attempts": 3, "attempt_timeout_s": 30}
    services = {t.name: {"addresses": [t.address], **endpoint} for t in (medsam, biomedclip, tapip3d, wilor)}
    config = folder / "gateway.yaml"
    config.write_text(yaml.safe_dump({"data_root": str(data_root), "services": services, "workers": 2}))
    with GatewayProcess(config, folder / "gateway.log") as running:
        target = Target("gateway", running.address, running.process, running.log)
        yield target
        target.close()
