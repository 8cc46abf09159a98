"""upstream: the official TAPIP3D, imported from the user's checkout, run the way its inference.py runs it.

Nothing of TAPIP3D is shipped here: users mount a checkout (github zbw001/TAPIP3D, with third_party/pointops2
built) and its checkpoint. Its code imports itself through top-level packages named `utils`, `models`,
`datasets`, `training`, `third_party` — names that clash with other code (HF `datasets`, any `utils`). So it is
only ever imported in this service's process, and only while `UpstreamImports.active()` holds: its root first on
sys.path and its modules in sys.modules; on leaving, both are put back as they were, so nothing else in the
process sees its packages (and anything else's `utils` stays what it was).

What we do around the call, and test without a GPU (`prepare`, `pad_frames`, `unpad`): frames resized to the
checkpoint's image size x sqrt(resolution_factor) (cv2 bilinear), depths resized ignoring invalid pixels and then
edge-filtered by upstream's own `_filter_one_depth` (as inference.py), intrinsics rescaled to match, clips shorter
than the model's window padded with their last frame (upstream tracks nothing in a clip shorter than seq_len),
and the outputs cut back and reshaped to (T,N,3)/(T,N) (upstream squeezes away N=1). The call itself —
`utils.inference_utils.inference(...)` under bf16 autocast on CUDA — needs CUDA and a checkout.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np

from modelyard.runtime.errors import ConfigError
from modelyard.runtime.host import sha256_of
from modelyard.runtime.progress import Progress
from modelyard.tapip3d import geometry
from modelyard.tapip3d.backend import Backend, TrackOptions, Tracks
from modelyard.tapip3d.config import UpstreamConfig
from modelyard.tapip3d.sequence import RGBDClip

# Files a TAPIP3D checkout has; their absence means the mount points somewhere else.
REQUIRED_FILES = ("utils/inference_utils.py", "models/__init__.py", "datasets/data_ops.py")
# inference.py's depth edge filter: relative depth tolerance and normal angle (degrees).
DEPTH_EDGE_RTOL = 0.08
DEPTH_EDGE_NORMAL_DEG = 15


class UpstreamImports:
    """Imports from a checkout without leaking its top-level packages into the rest of the process."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        # Its top-level names: packages, namespace folders (third_party has no __init__.py) and modules.
        self.names = {
            p.stem if p.suffix == ".py" else p.name
            for p in self.root.iterdir()
            if not p.name.startswith((".", "_")) and (p.is_dir() or p.suffix == ".py")
        }
        self._own: dict[str, ModuleType] = {}  # its modules, kept here while inactive
        self._lock = threading.RLock()

    def _theirs(self, name: str, module: ModuleType | None) -> bool:
        if name.partition(".")[0] in self.names:
            return True
        file = getattr(module, "__file__", None)
        return isinstance(file, str) and Path(file).resolve().is_relative_to(self.root)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Inside: the checkout's root is first on sys.path and its modules are the ones imported by its names.
        Re-entrant; one thread at a time (the model thread is the only caller)."""
        with self._lock:
            saved_path = list(sys.path)
            others = {n: m for n, m in list(sys.modules.items()) if n.partition(".")[0] in self.names}
            for name in others:
                del sys.modules[name]
            sys.modules.update(self._own)
            sys.path.insert(0, str(self.root))
            importlib.invalidate_caches()
            try:
                yield
            finally:
                for name, module in list(sys.modules.items()):
                    if self._theirs(name, module) and others.get(name) is not module:
                        self._own[name] = sys.modules.pop(name)
                sys.modules.update(others)
                sys.path[:] = saved_path

    def import_module(self, name: str) -> ModuleType:
        with self.active():
            return importlib.import_module(name)


@dataclass(frozen=True)
class Prepared:
    """A clip as TAPIP3D's model takes it: at inference resolution, padded to at least one window."""

    video: np.ndarray  # (T',H',W',3) uint8
    depths: np.ndarray  # (T',H',W') float32, 0 = no depth
    intrinsics: np.ndarray  # (T',3,3) rescaled to (H',W')
    extrinsics: np.ndarray  # (T',4,4) world→camera
    num_frames: int  # T before padding


def inference_size(image_size: tuple[int, int], resolution_factor: float) -> tuple[int, int]:
    """inference.py: the checkpoint's (H, W) x sqrt(resolution_factor), truncated."""
    scale = float(np.sqrt(resolution_factor))
    return int(image_size[0] * scale), int(image_size[1] * scale)


def pad_frames(array: np.ndarray, length: int) -> np.ndarray:
    """Repeat the last frame until the array has `length` frames (upstream pads windows the same way)."""
    if len(array) >= length:
        return array
    return np.concatenate([array, np.repeat(array[-1:], length - len(array), axis=0)])


def unpad(coords: np.ndarray, visibs: np.ndarray, num_frames: int, num_points: int) -> Tracks:
    """Upstream's (squeezed) outputs → (T,N,3) float32 and (T,N) bool without the padding frames."""
    coords = np.asarray(coords, np.float32).reshape(-1, num_points, 3)[:num_frames]
    visibs = np.asarray(visibs).astype(bool).reshape(-1, num_points)[:num_frames]
    return Tracks(coords, visibs)


def prepare(
    clip: RGBDClip,
    size_hw: tuple[int, int],
    min_frames: int,
    filter_depth: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    report: Callable[[int], None] | None = None,
) -> Prepared:
    """Resize, clean and pad a clip the way inference.py prepares its inputs."""
    height, width = size_hw
    t_count = clip.num_frames
    video = np.empty((t_count, height, width, 3), np.uint8)
    depths = np.empty((t_count, height, width), np.float32)
    intrinsics = geometry.rescale_intrinsics(clip.intrinsics, clip.size_hw, size_hw)
    for t in range(t_count):
        video[t] = cv2.resize(clip.video[t], (width, height), interpolation=cv2.INTER_LINEAR)
        clean = np.where(np.isfinite(clip.depths[t]) & (clip.depths[t] > 0), clip.depths[t], 0)  # 0 = invalid
        depths[t] = geometry.resize_depth(clean, size_hw)
        if filter_depth is not None:
            depths[t] = filter_depth(depths[t], intrinsics[t])
        if report is not None:
            report(t + 1)
    return Prepared(
        video=pad_frames(video, min_frames),
        depths=pad_frames(depths, min_frames),
        intrinsics=pad_frames(intrinsics, min_frames),
        extrinsics=pad_frames(clip.extrinsics, min_frames),
        num_frames=t_count,
    )


def checkout_commit(root: Path) -> str:
    """The checkout's commit from .git (no git binary needed), for provenance; '' when unknown."""
    git = root / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head.removeprefix("ref: ")
        if (git / ref).is_file():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return ""


class Upstream(Backend):
    name = "upstream"

    def __init__(self, config: UpstreamConfig, device: str) -> None:
        self.config = config
        self.device = device
        self.imports = UpstreamImports(config.root)
        self.model: Any = None

    def problems(self) -> list[str]:
        """Everything that stops loading, found at once so one error lists all of it."""
        cfg = self.config
        found = []
        missing = [f for f in REQUIRED_FILES if not (cfg.root / f).is_file()]
        if missing:
            found.append(
                f"{cfg.root} is not a TAPIP3D checkout (no {', '.join(missing)}): mount a clone of "
                "github.com/zbw001/TAPIP3D (with third_party/pointops2 built) and set model.upstream.root to it"
            )
        if not self.device.startswith("cuda"):
            found.append(
                f"the upstream backend needs CUDA (TAPIP3D's pointops2 kernels have no CPU path) but this service "
                f"runs on '{self.device}': run it on a GPU host with runtime.device cuda, or use model.backend: lift2d"
            )
        if not cfg.trust_checkpoint_pickle:
            found.append(
                f"{cfg.checkpoint} pickles its config, so it loads only with torch.load(weights_only=False); set "
                "model.upstream.trust_checkpoint_pickle: true if you trust the file"
            )
        return found

    def load(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError("cannot load the upstream TAPIP3D backend:\n  - " + "\n  - ".join(problems))
        import torch

        cfg = self.config
        if cfg.torch_hub_dir is not None:
            torch.hub.set_dir(str(cfg.torch_hub_dir))
        try:
            with self.imports.active():
                self._inference = importlib.import_module("utils.inference_utils")
                self._filter_one_depth = importlib.import_module("datasets.data_ops")._filter_one_depth
                model = self._inference.load_model(str(cfg.checkpoint))
        except ImportError as exc:
            raise ConfigError(
                f"importing TAPIP3D from {cfg.root} failed ({exc}): install its requirements.txt into this image "
                "and build third_party/pointops2 (see its README)"
            ) from None
        except Exception as exc:
            raise ConfigError(f"TAPIP3D could not load {cfg.checkpoint}: {type(exc).__name__}: {exc}") from None
        self.model = model.to(self.device).eval()
        self.image_size = (int(model.image_size[0]), int(model.image_size[1]))
        self.seq_len = int(model.seq_len)
        self.checkpoint_sha256 = sha256_of(cfg.checkpoint)
        self.commit = checkout_commit(cfg.root)

    def track(self, clip: RGBDClip, queries: np.ndarray, options: TrackOptions, progress: Progress) -> Tracks:
        import torch

        cfg = self.config
        size = inference_size(self.image_size, options.resolution_factor or cfg.resolution_factor)
        backward = cfg.bidirectional and not getattr(self.model, "bidirectional", False) and queries[:, 0].max() > 0
        # Progress counts frames prepared, then frames covered by the model's windows in each pass.
        padded = max(clip.num_frames, self.seq_len)
        total = clip.num_frames + (2 if backward else 1) * padded
        threshold = cfg.visibility_threshold if options.visibility_threshold is None else options.visibility_threshold
        device = torch.device(self.device)
        with self.imports.active():  # once for the whole call: upstream's depth filter runs per frame
            prepared = prepare(
                clip,
                size,
                self.seq_len,
                self._filter_depth,
                lambda done: progress.report(done, total, "preparing frames"),
            )
            with (
                torch.inference_mode(),
                torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext(),
                self._window_progress(
                    lambda done, stage: progress.report(clip.num_frames + done, total, stage), padded
                ),
            ):
                coords, visibs = self._inference.inference(
                    model=self.model,
                    video=torch.from_numpy(prepared.video).permute(0, 3, 1, 2).float().div(255.0).to(device),
                    depths=torch.from_numpy(prepared.depths).float().to(device),
                    intrinsics=torch.from_numpy(prepared.intrinsics).float().to(device),
                    extrinsics=torch.from_numpy(prepared.extrinsics).float().to(device),
                    query_point=torch.from_numpy(queries).float().to(device),
                    num_iters=options.iterations or cfg.num_iters,
                    grid_size=0 if options.queries_are_grid else cfg.support_grid_size,
                    bidrectional=cfg.bidirectional,  # sic: upstream's spelling
                    vis_threshold=threshold,
                )
                coords, visibs = coords.float().cpu().numpy(), visibs.cpu().numpy()  # nothing stays on the GPU
        return unpad(coords, visibs, prepared.num_frames, len(queries))

    def _filter_depth(self, depth: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
        """Upstream's depth edge filter with inference.py's settings (call with the imports active)."""
        return np.asarray(self._filter_one_depth(depth, DEPTH_EDGE_RTOL, DEPTH_EDGE_NORMAL_DEG, intrinsics))

    @contextlib.contextmanager
    def _window_progress(self, report: Callable[[int, str], None], frames: int) -> Iterator[None]:
        """Report each of the model's windows as frames covered (a backward pass counts on after the forward
        one) — which also stops the work at a window's end once the caller has gone. Hooks this instance's
        window generator when this TAPIP3D version has one; otherwise progress jumps at the end."""
        original = getattr(self.model, "_wrapped_forward_window", None)
        if original is None:
            yield
            return
        state = {"pass": 0, "last_end": 0}

        def counted(*args: Any, **kwargs: Any) -> Iterator[Any]:
            end = int(kwargs.get("window_end", 0))
            if end < state["last_end"]:  # windows restart: the backward pass
                state["pass"] += 1
            state["last_end"] = end
            report(state["pass"] * frames + min(end, frames), "tracking backward" if state["pass"] else "tracking")
            yield from original(*args, **kwargs)

        self.model._wrapped_forward_window = counted
        try:
            yield
        finally:
            del self.model._wrapped_forward_window  # the class's method again

    def info(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "model": "TAPIP3D (official code)",
            "backend": "upstream",
            "checkpoint": str(cfg.checkpoint),
            "checkpoint_sha256": self.checkpoint_sha256,
            "checkpoint_format": "TAPIP3D checkpoint {'cfg', 'weight'}",
            "architecture": {"image_size": self.image_size, "seq_len": self.seq_len},
            "details": {
                "root": str(cfg.root),
                "commit": self.commit,
                "resolution_factor": cfg.resolution_factor,
                "num_iters": cfg.num_iters,
                "support_grid_size": cfg.support_grid_size,
                "bidirectional": cfg.bidirectional,
                "visibility_threshold": cfg.visibility_threshold,
            },
        }

    def close(self) -> None:
        self.model = None
