"""The MedSAM adapter: load, warm up, infer. It owns the model and nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from modelyard.medsam.architecture import declares_random_weights, load_sam, parameter_bytes
from modelyard.medsam.config import MedSAMConfig
from modelyard.medsam.preprocess import masks_from_logits, scale_boxes
from modelyard.runtime.adapter import ModelAdapter
from modelyard.runtime.checkpoints import sha256_of
from modelyard.runtime.devices import MIB


@dataclass
class SegmentItem:
    """One image, already preprocessed, with its boxes in original pixels."""

    image: np.ndarray  # (3, S, S) float32 in [0,1], S = architecture image_size
    boxes: np.ndarray  # (N, 4) xyxy in original pixels
    height: int
    width: int


@dataclass
class Segmentation:
    masks: np.ndarray  # (N, H, W) uint8 0/1
    scores: np.ndarray  # (N,) float32, the decoder's IoU prediction


class MedSAMAdapter(ModelAdapter[MedSAMConfig, SegmentItem, Segmentation]):
    @classmethod
    def memory_need_mb(cls, config: MedSAMConfig, batch_size: int) -> int:
        """Weights + per-image encoder activations (global-attention maps dominate) + CUDA context."""
        arch = config.arch
        tokens = (arch.image_size // arch.patch_size) ** 2
        # segment-anything's global attention materialises the scores, adds the relative positions into a new
        # map and softmaxes into another: two of the three maps are alive at once (bench/real_size.py measured
        # vit_b at 1024² within 25 % with two, 48 % under with one).
        attention = 2 * tokens * tokens * arch.encoder_num_heads * 4
        activations = tokens * arch.encoder_embed_dim * 4 * 40
        return int(400 + (parameter_bytes(arch) + batch_size * (attention + activations)) / MIB)

    def load(self) -> None:
        cfg = self.config
        self.arch = cfg.arch
        self.model, self.checkpoint_format = load_sam(
            cfg.checkpoint, self.arch, self.device, cfg.trust_checkpoint_pickle
        )
        self.checkpoint_sha256 = sha256_of(cfg.checkpoint)
        self.random_weights = declares_random_weights(cfg.checkpoint)

    def warmup(self) -> None:
        size = self.arch.image_size
        item = SegmentItem(
            np.zeros((3, size, size), np.float32),
            np.array([[size / 4, size / 4, size * 3 / 4, size * 3 / 4]]),
            size,
            size,
        )
        self.infer([item])

    def infer(self, items: list[SegmentItem]) -> list[Segmentation | Exception]:
        # The encoder runs once per image, all images of the call in one batch; each image's boxes decode
        # together (segment-anything's decoder repeats one embedding per box, so images cannot share a call).
        images = torch.from_numpy(np.stack([item.image for item in items])).to(self.device)
        embeddings = self.model.image_encoder(images)
        del images
        results: list[Segmentation | Exception] = []
        for index, item in enumerate(items):
            boxes = scale_boxes(item.boxes, item.height, item.width, self.arch.image_size)
            box_t = torch.as_tensor(boxes, dtype=torch.float32, device=self.device)[:, None, :]
            sparse, dense = self.model.prompt_encoder(points=None, boxes=box_t, masks=None)
            logits, iou = self.model.mask_decoder(
                image_embeddings=embeddings[index : index + 1],
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
            masks = masks_from_logits(logits, item.height, item.width, self.config.mask_threshold)
            results.append(Segmentation(masks, iou[:, 0].float().cpu().numpy()))
        return results

    def info(self) -> dict[str, Any]:
        return {
            "model": "MedSAM (SAM ViT, box prompt)",
            "backend": "segment-anything",
            "checkpoint": str(self.config.checkpoint),
            "checkpoint_sha256": self.checkpoint_sha256,
            "checkpoint_format": self.checkpoint_format,
            "random_weights": self.random_weights,
            "architecture": self.arch.model_dump(),
            "details": {"mask_threshold": self.config.mask_threshold, "max_pixels": self.config.max_pixels},
        }

    def close(self) -> None:
        del self.model
