"""The BiomedCLIP adapter: load, warm up, infer. It owns the model and nothing else.

One batch may mix every kind of item (concurrent requests are batched together): texts are deduplicated and
embedded once, images for embeddings/labels go through the image tower together, maps run per method in
sub-batches (cam.py). Results are host arrays; maps come back at each image's own size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from modelyard.biomedclip.architecture import (
    ModelFiles,
    declares_random_weights,
    load_model,
    load_tokenizer,
    resolve_files,
    vision_shape,
)
from modelyard.biomedclip.cam import CamEngine
from modelyard.biomedclip.config import BiomedCLIPConfig
from modelyard.biomedclip.preprocess import FrameGeometry, ImageSettings, min_max, to_frame, to_original
from modelyard.runtime.adapter import ModelAdapter
from modelyard.runtime.checkpoints import sha256_of
from modelyard.runtime.devices import MIB
from modelyard.runtime.errors import ConfigError
from modelyard.runtime.progress import Progress

log = logging.getLogger("modelyard.biomedclip")
TEXT_BATCH = 256


@dataclass
class EmbedImageItem:
    pixels: np.ndarray  # (3,S,S) float32, the model's own preprocessing


@dataclass
class EmbedTextItem:
    text: str


@dataclass
class ClassifyItem:
    pixels: np.ndarray  # (3,S,S) float32, the model's own preprocessing
    prompts: tuple[str, ...]  # one per label, template applied


@dataclass
class HeatmapItem:
    pixels: np.ndarray  # (3,S,S) float32 in the CAM geometry
    geometry: FrameGeometry  # how the original image maps into that frame
    prompt: str
    method: str
    top_k: int  # gscorecam only
    progress: Progress | None = None


Item = EmbedImageItem | EmbedTextItem | ClassifyItem | HeatmapItem


@dataclass
class Classification:
    probabilities: np.ndarray  # (L,) float32, softmax over the labels
    logits: np.ndarray  # (L,) float32, logit_scale x cosine (+ bias, if the model has one)


@dataclass
class Heatmap:
    heatmap: np.ndarray  # (H,W) float32 in [0,1] at the original image's size
    similarity: float  # cosine of the whole image with the prompt
    method: str
    top_k: int


Result = np.ndarray | Classification | Heatmap


def memory_estimate_mb(checkpoint_bytes: int, shape: dict[str, int], batch_size: int, chunk_size: int) -> int:
    """Weights + per-item backward activations (gScoreCAM/Grad-CAM) + a chunk of masked forwards + CUDA context."""
    tokens, width, depth, heads = shape["tokens"], shape["width"], shape["depth"], shape["heads"]
    per_layer = tokens * width * 4 * 10 + heads * tokens * tokens * 4 * 3  # bytes of one block's saved tensors
    backward = depth * per_layer
    forward = 3 * per_layer  # a forward keeps a few layers' tensors alive at once
    return int(400 + (checkpoint_bytes + batch_size * backward + chunk_size * forward) / MIB)


class BiomedCLIPAdapter(ModelAdapter[BiomedCLIPConfig, Item, Result]):
    @classmethod
    def memory_need_mb(cls, config: BiomedCLIPConfig, batch_size: int) -> int:
        files = resolve_files(config)
        return memory_estimate_mb(
            files.checkpoint.stat().st_size, vision_shape(files), batch_size, config.cam.chunk_size
        )

    def load(self) -> None:
        cfg = self.config
        self.files: ModelFiles = resolve_files(cfg)
        self.model, self.checkpoint_format = load_model(self.files, self.device, cfg.trust_checkpoint_pickle)
        self.tokenizer = load_tokenizer(self.files)
        self.image_settings = ImageSettings.from_config(self.files.model_cfg, self.files.preprocess_cfg)
        loaded = getattr(self.model.visual, "preprocess_cfg", None)
        if loaded and int(np.atleast_1d(loaded["size"])[0]) != self.image_settings.size:
            raise ConfigError(f"open_clip preprocesses at {loaded['size']}, not at {self.image_settings.size}")
        self.engine = CamEngine(self.model, cfg.cam, self.device, self.image_settings.size)
        if cfg.cam.default_top_k > self.engine.channels:
            raise ConfigError(
                f"cam.default_top_k {cfg.cam.default_top_k} exceeds the {self.engine.channels} channels of "
                f"{cfg.cam.target_layer}; set it to at most {self.engine.channels}"
            )
        self.checkpoint_sha256 = sha256_of(self.files.checkpoint)
        self.random_weights = declares_random_weights(self.files)

    def warmup(self) -> None:
        rng = np.random.default_rng(0)
        rgb = rng.integers(0, 255, (self.image_settings.size, self.image_settings.size, 3), dtype=np.uint8)
        pixels, geometry = to_frame(rgb, self.image_settings, self.config.cam.geometry)
        k = min(8, self.engine.channels)
        out = self.infer(
            [
                EmbedTextItem("chest x ray"),
                EmbedImageItem(pixels),
                HeatmapItem(pixels, geometry, "chest x ray", "gscorecam", k),
            ]
        )
        for result in out:
            if isinstance(result, Exception):
                raise result
        self._check_ranking_gradient(pixels)

    def _check_ranking_gradient(self, pixels: np.ndarray) -> None:
        """A target layer whose ranking gradient is all zero makes gScoreCAM's ranking arbitrary: say so once."""
        with torch.inference_mode(False):
            text = self._embed_texts(["chest x ray"])
            x = torch.from_numpy(pixels).unsqueeze(0).to(self.device)
            engine = self.engine
            _, grad, _ = engine._capture(engine.target, engine.layout, x, text, True)
        if grad is not None and not bool(grad.abs().sum() > 0):
            log.warning(
                "the gradient at cam.target_layer %s is zero everywhere: gScoreCAM's channel ranking carries no "
                "information there; choose a layer the score depends on",
                self.config.cam.target_layer,
            )

    # -- inference ------------------------------------------------------------------------------------
    def _embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit text embeddings (T,E) on the device, in batches."""
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), TEXT_BATCH):
                tokens = self.tokenizer(list(texts[start : start + TEXT_BATCH])).to(self.device)
                out.append(F.normalize(self.model.encode_text(tokens), dim=-1).float())
        return torch.cat(out)

    def _embed_images(self, pixels: Sequence[np.ndarray]) -> torch.Tensor:
        with torch.no_grad():
            x = torch.from_numpy(np.stack(pixels)).to(self.device)
            return F.normalize(self.model.encode_image(x), dim=-1).float()

    def infer(self, items: list[Item]) -> list[Result | Exception]:
        results: list[Result | Exception | None] = [None] * len(items)
        # The governor runs this under inference_mode; the CAMs need autograd, so tensors here are ordinary ones.
        with torch.inference_mode(False):
            texts = sorted(
                {i.text for i in items if isinstance(i, EmbedTextItem)}
                | {p for i in items if isinstance(i, ClassifyItem) for p in i.prompts}
                | {i.prompt for i in items if isinstance(i, HeatmapItem)}
            )
            table = self._embed_texts(texts) if texts else None
            row = {t: n for n, t in enumerate(texts)}

            image_idx = [n for n, i in enumerate(items) if isinstance(i, (EmbedImageItem, ClassifyItem))]
            if image_idx:
                embs = self._embed_images([items[n].pixels for n in image_idx])  # type: ignore[union-attr]
                for emb, n in zip(embs, image_idx, strict=True):
                    item = items[n]
                    if isinstance(item, ClassifyItem):
                        assert table is not None
                        results[n] = self._classify(emb, table[[row[p] for p in item.prompts]])
                    else:
                        results[n] = emb.cpu().numpy()
            for n, item in enumerate(items):
                if isinstance(item, EmbedTextItem):
                    assert table is not None
                    results[n] = table[row[item.text]].cpu().numpy()

            cam_idx = [n for n, i in enumerate(items) if isinstance(i, HeatmapItem)]
            if cam_idx:
                assert table is not None
                cam_items: list[HeatmapItem] = [items[n] for n in cam_idx]  # type: ignore[misc]
                for n, out in zip(cam_idx, self._heatmaps(cam_items, table, row), strict=True):
                    results[n] = out
        return [r if r is not None else RuntimeError("item kind not handled") for r in results]

    def _classify(self, image: torch.Tensor, texts: torch.Tensor) -> Classification:
        logits = self.model.logit_scale.exp() * (texts @ image)  # type: ignore[operator]
        bias = getattr(self.model, "logit_bias", None)
        if bias is not None:
            logits = logits + bias
        return Classification(
            torch.softmax(logits.float(), dim=0).cpu().numpy(), logits.float().cpu().numpy().astype(np.float32)
        )

    def _heatmaps(
        self, items: list[HeatmapItem], table: torch.Tensor, row: dict[str, int]
    ) -> list[Heatmap | Exception]:
        pixels = torch.from_numpy(np.stack([i.pixels for i in items])).to(self.device)
        text = table[[row[i.prompt] for i in items]]
        outs = self.engine.run(
            pixels, text, [i.method for i in items], [i.top_k for i in items], [i.progress for i in items]
        )
        results: list[Heatmap | Exception] = []
        for item, out in zip(items, outs, strict=True):
            if isinstance(out, Exception):
                results.append(out)
                continue
            # Normalise on the grid, put it back where the image lay in the frame, normalise at full size.
            grid = min_max(out.grid.numpy().astype(np.float32))
            heat = min_max(to_original(grid, item.geometry))
            results.append(Heatmap(heat, out.similarity, item.method, out.top_k))
        return results

    # -- description ----------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        files, cam = self.files, self.config.cam
        vision, text = files.vision_cfg, files.text_cfg
        tower = vision.get("timm_model_name") or f"open_clip ViT (width {vision.get('width')})"
        text_name = text.get("hf_model_name") or "open_clip text transformer"
        import open_clip

        return {
            "model": f"open_clip {type(self.model).__name__}: {tower} + {text_name}",
            "backend": f"open_clip {open_clip.__version__}",
            "checkpoint": str(files.checkpoint),
            "checkpoint_sha256": self.checkpoint_sha256,
            "checkpoint_format": self.checkpoint_format,
            "random_weights": self.random_weights,
            "architecture": {
                "embed_dim": files.model_cfg.get("embed_dim"),
                "vision_cfg": vision,
                "text_cfg": text,
                "preprocess": self.image_settings.__dict__,
                "cam_target_layer": cam.target_layer,
                "cam_channels": self.engine.channels,
                "cam_grid": list(self.engine.layout.grid),
                "gradcam_layer": cam.gradcam_layer,
            },
            "details": {
                "model_dir": files.model_dir,
                "text_dir": files.text_dir,
                "tokenizer_dir": files.tokenizer_dir,
                "logit_scale": round(self.engine.logit_scale, 4),
                "cam_default_method": cam.default_method,
                "cam_default_top_k": cam.default_top_k,
                "cam_chunk_size": self.engine.chunk_size,
                "cam_geometry": cam.geometry,
                "channel_ranking": cam.channel_ranking,
                "max_pixels": self.config.max_pixels,
            },
        }

    def close(self) -> None:
        del self.model, self.engine
