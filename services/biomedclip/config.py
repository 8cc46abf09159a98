"""The `model:` section of /config/biomedclip.yaml.

The architecture is never configured here: it comes from the model folder's `open_clip_config.json`, exactly as
the hub repo ships it. This file says where the files are and how the service answers (CAM, boxes, pictures).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from modelyard.runtime.config import ExistingDir, ExistingFile, Strict

Method = Literal["gscorecam", "scorecam", "gradcam", "similarity"]
Geometry = Literal["longest", "shortest", "squash"]
ColormapName = Literal["jet", "turbo", "inferno", "hot"]


class CamSettings(Strict):
    """How localisation maps are computed."""

    default_method: Method = "gscorecam"
    default_top_k: int = Field(
        300, ge=1, description="gScoreCAM channels kept (the paper's default); must not exceed the layer's channels"
    )
    target_layer: str = Field(
        "visual.trunk.blocks.-1",
        description="module whose activations gScoreCAM/ScoreCAM mask with (dotted path, negative indices allowed)",
    )
    gradcam_layer: str = Field(
        "visual.trunk.blocks.-1.norm1",
        description="Grad-CAM's layer: the last block's input norm, where ViT patch tokens still carry gradient",
    )
    channel_ranking: Literal["auto", "cls_token", "spatial_mean"] = Field(
        "auto",
        description="gScoreCAM's channel importance: the gradient at the CLS token (as published for ViTs) or its "
        "spatial mean (CNNs); auto picks by the layer's layout",
    )
    chunk_size: int = Field(32, ge=1, description="masked images per forward pass; halved on out-of-memory")
    geometry: Geometry = Field(
        "longest",
        description="how an image becomes the model's square input for maps: longest = whole image letterboxed "
        "(boxes can be anywhere), shortest = the model's own centre crop (outside it the map is 0), squash = stretched",
    )


class LocalizeSettings(Strict):
    """Heatmap -> boxes. Defaults are the seed pipeline's; every field can be overridden per request."""

    threshold: float = Field(0.45, ge=0, le=1, description="on the min-max normalised map (fixed mode)")
    threshold_mode: Literal["fixed", "otsu"] = "fixed"
    multi_box: bool = Field(False, description="every region passing the checks, not only the best")
    max_candidates: int = Field(3, ge=1, description="single-box mode considers the N best regions")
    ranking: Literal["area", "area_x_heat"] = Field("area", description="region order: area, or area x mean heat")
    pad_max: float = Field(0.25, ge=0, le=2, description="padding per side, as a fraction of the box, for small boxes")
    pad_min: float = Field(0.02, ge=0, le=2, description="padding per side for large boxes")
    pad_small_area: float = Field(0.05, gt=0, lt=1, description="boxes up to this fraction of the image get pad_max")
    pad_large_area: float = Field(0.40, gt=0, le=1, description="boxes from this fraction of the image get pad_min")
    min_box_area: float = Field(0.005, ge=0, lt=1, description="drop regions whose box is a smaller image fraction")
    body_mask: bool = Field(True, description="multiply the map by the body (Otsu + morphology - glare)")
    smart_padding: bool = Field(True, description="padding never reaches beyond the body's bounding rectangle")
    anatomical_check: bool = Field(True, description="reject boxes over dark background")
    min_mean_intensity: float = Field(15.0, ge=0, le=255, description="anatomical check: the box's mean grey level")

    @model_validator(mode="after")
    def _ordered(self) -> LocalizeSettings:
        if self.pad_small_area >= self.pad_large_area:
            raise ValueError(
                f"pad_small_area ({self.pad_small_area}) must be below pad_large_area ({self.pad_large_area})"
            )
        return self


class RenderSettings(Strict):
    colormap: ColormapName = "jet"
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the colour map over the image")
    box_color: tuple[int, int, int] = Field((255, 0, 0), description="RGB (the seed's BGR 0,0,255)")
    box_thickness: int = Field(2, ge=1, le=50)


class BiomedCLIPConfig(Strict):
    model_dir: ExistingDir = Field(
        description="the hub repo's files: open_clip_config.json, open_clip_pytorch_model.bin, tokenizer files"
    )
    checkpoint: ExistingFile | None = Field(
        None, description="weights elsewhere than model_dir (e.g. a fine-tune); default: found in model_dir"
    )
    text_dir: ExistingDir | None = Field(
        None,
        description="folder with the text tower's BERT config.json; default: model_dir, then the Hugging Face cache",
    )
    tokenizer_dir: ExistingDir | None = Field(
        None, description="folder with vocab.txt / tokenizer.json; default: model_dir, text_dir, the HF cache"
    )
    trust_checkpoint_pickle: bool = Field(
        False, description="allow checkpoints holding arbitrary Python objects (runs their code when unpickling)"
    )
    max_pixels: int = Field(50_000_000, ge=1, description="refuse images with more pixels than this")
    max_items_per_request: int = Field(256, ge=1, description="images, texts or items per request")
    max_request_pixels: int = Field(
        200_000_000, ge=1, description="pixels of all a request's images together, counted from their headers"
    )
    max_labels: int = Field(1000, ge=2)
    max_prompt_chars: int = Field(2000, ge=1)
    classify_template: str = Field("{}", description="how a label becomes a prompt; {} is the label")
    cam: CamSettings = CamSettings()
    localize: LocalizeSettings = LocalizeSettings()
    render: RenderSettings = RenderSettings()

    @model_validator(mode="after")
    def _template(self) -> BiomedCLIPConfig:
        if "{}" not in self.classify_template:
            raise ValueError(f"classify_template '{self.classify_template}' needs {{}} where the label goes")
        if self.max_request_pixels < self.max_pixels:
            raise ValueError(f"max_request_pixels {self.max_request_pixels} is under max_pixels {self.max_pixels}")
        return self
