"""upstream: the official TAPIP3D, imported from the user's checkout, run the way its inference.py runs it.

Nothing of TAPIP3D is shipped here: users mount a checkout (github zbw001/TAPIP3D) and its checkpoint into the
`tapip3d-upstream` image, which has the PyPI packages that code imports. Its code imports itself through top-level
packages named `utils`, `models`, `datasets`, `training`, `third_party` — names that clash with other code (HF
`datasets`, any `utils`). So it is only ever imported in this service's process, and only while
`UpstreamImports.active()` holds: its root first on sys.path and its modules in sys.modules; on leaving, both are
put back as they were, so nothing else in the process sees its packages (and anything else's `utils` stays what
it was).

pointops2, the CUDA extension TAPIP3D's KNN correlation imports, is used when its kernels are built into this
Python and the model runs on CUDA; otherwise our torch `knnquery` (knn.py, the one operation the model calls) is
put in its place, so nothing needs compiling and the model runs on the CPU too.

Loading is upstream's `models.from_pretrained`, step by step so each failure says what to fix, and with the
encoder's `pretrained` forced off (it would `torch.hub.load` CoTracker's weights, which the strict load of the
checkpoint's weights replaces anyway).

What we do around the call, and test without the real code (`prepare`, `pad_frames`, `unpad`): frames resized to
the checkpoint's image size x sqrt(resolution_factor) (cv2 bilinear), depths resized ignoring invalid pixels and
then edge-filtered by upstream's own `_filter_one_depth` (as inference.py), intrinsics rescaled to match, grids
lifted by upstream's `get_grid_queries` from that prepared depth (as inference.py), clips shorter than the model's
window padded with their last frame (upstream tracks nothing in a clip shorter than seq_len), and the outputs cut
back and reshaped to (T,N,3)/(T,N) (upstream squeezes away N=1). The call itself is
`utils.inference_utils.inference(...)`, under bf16 autocast on CUDA.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np

from modelyard.runtime.checkpoints import sha256_of
from modelyard.runtime.errors import ConfigError, InvalidInput
from modelyard.runtime.progress import Progress
from modelyard.tapip3d import geometry, knn
from modelyard.tapip3d.backend import Backend, TrackOptions, Tracks
from modelyard.tapip3d.config import UpstreamConfig
from modelyard.tapip3d.sequence import RGBDClip

log = logging.getLogger(__name__)

# Files a TAPIP3D checkout has; their absence means the mount points somewhere else.
REQUIRED_FILES = (
    "utils/inference_utils.py",
    "models/__init__.py",
    "datasets/data_ops.py",
    "third_party/pointops2/functions/__init__.py",
)
# What this service calls, by module: a checkout without them is another version of TAPIP3D.
ENTRY_POINTS = {
    "utils.inference_utils": ("inference", "get_grid_queries"),
    "models": ("from_config",),
    "datasets.data_ops": ("_filter_one_depth",),
}
# Where TAPIP3D imports pointops2 from, and the module its functions/__init__.py star-imports.
POINTOPS_MODULE = "third_party.pointops2.functions.pointops"
POINTOPS_PACKAGE = "pointops2"
HINT_IMAGE = "run the modelyard/tapip3d-upstream image (or pip install modelyard[tapip3d-upstream])"
# inference.py's depth edge filter: relative depth tolerance and normal angle (degrees).
DEPTH_EDGE_RTOL = 0.08
DEPTH_EDGE_NORMAL_DEG = 15


HUB_HINT = "mount a torch hub cache holding it and set model.upstream.torch_hub_dir (containers here are offline)"


def _is_hub_error(exc: BaseException) -> bool:
    """Whether building failed on a torch hub download (offline: 'no internet connection', URLError, ...)."""
    text = f"{type(exc).__name__} {exc}".lower()
    return any(word in text for word in ("internet", "urlopen", "hub", "github", "name resolution"))


def _where(exc: BaseException, root: Path) -> str:
    """The checkout's file (relative to root) where an exception was raised, innermost; '' if none."""
    found = ""
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        file = Path(frame.f_code.co_filename)
        if file.is_relative_to(root.resolve()):
            found = str(file.relative_to(root.resolve()))
    return found


def put_torch_knnquery_in_place(root: Path) -> None:
    """Our knnquery where the TAPIP3D checkout at `root` imports pointops2 from (call with its imports active)."""
    # functions/__init__.py star-imports the installed `pointops2` package: ours stands in for both.
    sys.modules[POINTOPS_PACKAGE] = knn
    try:
        package = importlib.import_module(POINTOPS_MODULE.rpartition(".")[0])
    except ImportError as exc:
        raise ConfigError(
            f"{root}/third_party/pointops2 could not be imported ({exc}): the checkout is incomplete "
            "(git status there shows what is missing)"
        ) from None
    sys.modules[POINTOPS_MODULE] = knn
    setattr(package, "pointops", knn)  # noqa: B010 (a module attribute mypy cannot know)


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
        self.knn = ""  # "pointops2" or "torch": which knnquery the model calls

    def problems(self) -> list[str]:
        """Everything that stops loading and can be seen without importing, found at once so one error lists it."""
        cfg = self.config
        found = []
        missing = [f for f in REQUIRED_FILES if not (cfg.root / f).is_file()]
        if missing:
            found.append(
                f"{cfg.root} is not a TAPIP3D checkout (no {', '.join(missing)}): mount a clone of "
                "github.com/zbw001/TAPIP3D and set model.upstream.root to it"
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
        self.knn = self._knn_choice()
        if self.knn == "torch":  # kept inside the checkout's imports, like its own modules
            self.imports.names.add(POINTOPS_PACKAGE)
        with self.imports.active():
            if self.knn == "torch":
                put_torch_knnquery_in_place(self.config.root)
            modules = {name: self._import(name) for name in ENTRY_POINTS}
            self._inference = modules["utils.inference_utils"]
            self._filter_one_depth = modules["datasets.data_ops"]._filter_one_depth
            model = self._build(modules["models"])
        self.model = model.to(self.device).eval()
        self.image_size = (int(model.image_size[0]), int(model.image_size[1]))
        self.seq_len = int(model.seq_len)
        self.checkpoint_sha256 = sha256_of(cfg.checkpoint)
        self.commit = checkout_commit(cfg.root)

    def _knn_choice(self) -> str:
        """pointops2's kernels when they are built into this Python and the model runs on CUDA, else ours."""
        if self.device.startswith("cuda"):
            try:
                importlib.import_module("pointops2_cuda")
                log.info("TAPIP3D uses pointops2's CUDA kernels")
                return "pointops2"
            except ImportError:
                pass
        log.warning(
            "TAPIP3D uses modelyard's torch knnquery on %s (pointops2's CUDA kernels are %s): same results, slower",
            self.device,
            "not built into this Python" if self.device.startswith("cuda") else "CUDA only",
        )
        return "torch"

    def _import(self, name: str) -> ModuleType:
        """One of the checkout's modules, with what this service calls in it (call with the imports active)."""
        root = self.config.root
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and exc.name.partition(".")[0] not in self.imports.names:
                raise ConfigError(
                    f"TAPIP3D's {_where(exc, root) or name} (in {root}) imports '{exc.name}', which this image "
                    f"lacks: {HINT_IMAGE}"
                ) from None
            raise ConfigError(
                f"importing TAPIP3D's {name} from {root} failed ({exc}): is the checkout complete?"
            ) from None
        except Exception as exc:
            raise ConfigError(
                f"importing TAPIP3D's {name} from {root} failed ({type(exc).__name__}: {exc}): {HINT_IMAGE}, and "
                "use a checkout of github.com/zbw001/TAPIP3D"
            ) from None
        absent = [f for f in ENTRY_POINTS[name] if not callable(getattr(module, f, None))]
        if absent:
            raise ConfigError(
                f"{root} is not the TAPIP3D this service runs: its {name} has no {', '.join(absent)} (mount a "
                "checkout of github.com/zbw001/TAPIP3D, commit 9359ae2 or later)"
            )
        return module

    def _build(self, models: ModuleType) -> Any:
        """upstream's models.from_pretrained + inference_utils.load_model, step by step (call with the imports
        active): the checkpoint's cfg builds the model, its weights load strictly, evaluation in raw mode."""
        import torch

        path, root = self.config.checkpoint, self.config.root
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ConfigError(
                f"{path} could not be read ({type(exc).__name__}: {exc}): model.upstream.checkpoint must be a "
                "TAPIP3D checkpoint such as tapip3d_final.pth"
            ) from None
        if not isinstance(checkpoint, dict) or not {"cfg", "weight"} <= set(checkpoint):
            found = sorted(map(str, checkpoint)) if isinstance(checkpoint, dict) else type(checkpoint).__name__
            raise ConfigError(
                f"{path} is not a TAPIP3D checkpoint: expected a dict with 'cfg' and 'weight' (as TAPIP3D's "
                f"training saves it), found {found}"
            )
        try:
            # An OmegaConf DictConfig (item access and assignment work on it as on a dict); a copy, to edit.
            cfg = copy.deepcopy(checkpoint["cfg"])
            model_cfg, image_size = cfg["model"], cfg["train_dataset"]["resolution"]
        except Exception as exc:
            raise ConfigError(
                f"{path}'s cfg has no model / train_dataset.resolution ({type(exc).__name__}: {exc}): it is not a "
                "TAPIP3D checkpoint"
            ) from None
        encoder = model_cfg.get("encoder") if hasattr(model_cfg, "get") else None
        if encoder is not None and encoder.get("pretrained", False):
            # The encoder would torch.hub.load CoTracker3 to initialise weights that load_state_dict replaces.
            encoder["pretrained"] = False
        try:
            model = models.from_config(model_cfg, image_size=image_size)
        except Exception as exc:
            raise ConfigError(
                f"TAPIP3D in {root} cannot build the model {path}'s cfg describes ({type(exc).__name__}: {exc}): "
                "use the checkout the checkpoint was trained with"
                + (f"; a torch hub download was attempted: {HUB_HINT}" if _is_hub_error(exc) else "")
            ) from None
        try:
            model.load_state_dict(checkpoint["weight"], strict=True)
        except Exception as exc:
            first = str(exc).strip().splitlines()
            detail = "; ".join(line.strip() for line in first[:4]) + (" ..." if len(first) > 4 else "")
            raise ConfigError(
                f"{path}'s weights do not fit the model its cfg describes ({type(exc).__name__}: {detail}): the "
                f"file is damaged, or TAPIP3D in {root} is not the version it was saved with"
            ) from None
        if hasattr(model, "eval_mode"):
            model.set_eval_mode("raw")
        return model.eval()

    def track(self, clip: RGBDClip, queries: np.ndarray, options: TrackOptions, progress: Progress) -> Tracks:
        import torch

        cfg = self.config
        size = inference_size(self.image_size, options.resolution_factor or cfg.resolution_factor)
        threshold = cfg.visibility_threshold if options.visibility_threshold is None else options.visibility_threshold
        device = torch.device(self.device)
        # Upstream tracks backwards too when a query is after frame 0 (a grid is lifted at its frame).
        latest = options.grid[1] if options.grid is not None else queries[:, 0].max()
        backward = cfg.bidirectional and not getattr(self.model, "bidirectional", False) and latest > 0
        # Progress counts frames prepared, then frames covered by the model's windows in each pass.
        padded = max(clip.num_frames, self.seq_len)
        total = clip.num_frames + (2 if backward else 1) * padded
        with self.imports.active():  # once for the whole call: upstream's depth filter runs per frame
            prepared = prepare(
                clip,
                size,
                self.seq_len,
                self._filter_depth,
                lambda done: progress.report(done, total, "preparing frames"),
            )
            lifted = None
            if options.grid is not None:
                queries = lifted = self._grid_queries(prepared, *options.grid)
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
        tracks = unpad(coords, visibs, prepared.num_frames, len(queries))
        return Tracks(tracks.coords, tracks.visibs, lifted)

    def _grid_queries(self, prepared: Prepared, grid_size: int, frame: int) -> np.ndarray:
        """A grid at `frame` lifted by upstream's get_grid_queries from the resized, edge-filtered depth and the
        rescaled intrinsics (inference.py's default queries; it lifts at frame 0, this at any frame)."""
        import torch

        one = slice(frame, frame + 1)
        lifted = self._inference.get_grid_queries(
            grid_size=grid_size,
            depths=torch.from_numpy(prepared.depths[one]).float(),
            intrinsics=torch.from_numpy(prepared.intrinsics[one]).float(),
            extrinsics=torch.from_numpy(prepared.extrinsics[one]).float(),
        )
        queries = np.asarray(lifted.cpu().numpy(), np.float64).reshape(-1, 4)
        if not len(queries):
            raise InvalidInput(
                f"no point of the {grid_size}x{grid_size} grid has a valid depth at frame {frame} once the depth is "
                "edge-filtered at the model's resolution: use another grid_frame or explicit queries"
            )
        queries[:, 0] = frame
        return queries

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
            if end <= state["last_end"]:  # windows restart (one-window clips too): the backward pass
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
                "knnquery": self.knn,
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
