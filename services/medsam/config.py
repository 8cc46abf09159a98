"""The `model:` section of /config/medsam.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from modelyard.runtime.config import ExistingFile, Strict


class Architecture(Strict):
    """SAM's dimensions. Presets vit_b / vit_l / vit_h match segment-anything; any other size (e.g. a tiny test
    model) is given explicitly."""

    image_size: int = Field(1024, ge=32)
    patch_size: int = Field(16, ge=1)
    encoder_embed_dim: int = Field(768, ge=8)
    encoder_depth: int = Field(12, ge=1)
    encoder_num_heads: int = Field(12, ge=1)
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = Field(14, ge=1)
    prompt_embed_dim: int = Field(256, ge=8, description="encoder out_chans = prompt dim = decoder dim")
    decoder_depth: int = Field(2, ge=1)
    decoder_num_heads: int = Field(8, ge=1)
    decoder_mlp_dim: int = Field(2048, ge=8)
    iou_head_hidden_dim: int = Field(256, ge=8)

    @model_validator(mode="after")
    def _consistent(self) -> Architecture:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if self.prompt_embed_dim % 8:
            raise ValueError(f"prompt_embed_dim {self.prompt_embed_dim} must be divisible by 8")
        if any(i >= self.encoder_depth for i in self.encoder_global_attn_indexes):
            raise ValueError("encoder_global_attn_indexes must be < encoder_depth")
        return self


PRESETS: dict[str, Architecture] = {
    "vit_b": Architecture(),
    "vit_l": Architecture(
        encoder_embed_dim=1024,
        encoder_depth=24,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(5, 11, 17, 23),
    ),
    "vit_h": Architecture(
        encoder_embed_dim=1280,
        encoder_depth=32,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(7, 15, 23, 31),
    ),
}


class MedSAMConfig(Strict):
    checkpoint: ExistingFile = Field(description="medsam_vit_b.pth: a flat SAM state dict or {'model': ...}")
    architecture: Literal["vit_b", "vit_l", "vit_h"] | Architecture = "vit_b"
    trust_checkpoint_pickle: bool = Field(
        False,
        description="allow checkpoints holding arbitrary Python objects (runs their code when unpickling)",
    )
    max_pixels: int = Field(50_000_000, ge=1, description="refuse images with more pixels than this")
    max_boxes_per_image: int = Field(256, ge=1)
    # Per request, checked before any image is prepared: each prepared item is image_size² RGB float (12 MB at
    # 1024²), whatever the image's own size, so 32 items hold ~400 MB.
    max_items_per_request: int = Field(32, ge=1, description="images per Segment request")
    max_request_pixels: int = Field(
        100_000_000, ge=1, description="pixels of all a request's images together, counted from their headers"
    )
    mask_threshold: float = Field(0.5, gt=0, lt=1, description="on the sigmoid of the logits")

    @model_validator(mode="after")
    def _budget(self) -> MedSAMConfig:
        if self.max_request_pixels < self.max_pixels:
            raise ValueError(f"max_request_pixels {self.max_request_pixels} is under max_pixels {self.max_pixels}")
        return self

    @property
    def arch(self) -> Architecture:
        return PRESETS[self.architecture] if isinstance(self.architecture, str) else self.architecture
