"""modelyard.v1.BiomedCLIP over gRPC: proto messages in, validated arrays to the model host, results out.

Images are decoded and preprocessed here (in the calling thread, in parallel across calls); the model thread only
runs the model. Box post-processing and pictures are made here too, after the model has answered.
"""

from __future__ import annotations

import threading
from typing import Any

import grpc
import numpy as np
from pydantic import ValidationError

from modelyard.biomedclip import architecture
from modelyard.biomedclip.boxes import localize, to_grey
from modelyard.biomedclip.cam import METHODS
from modelyard.biomedclip.config import BiomedCLIPConfig, LocalizeSettings
from modelyard.biomedclip.model import (
    Classification,
    ClassifyItem,
    EmbedImageItem,
    EmbedTextItem,
    Heatmap,
    HeatmapItem,
)
from modelyard.biomedclip.preprocess import ImageSettings, to_frame
from modelyard.runtime.arrays import OutputWriter, decode_image, encode_png, guard_decoding, numpy_to_tensor
from modelyard.runtime.budget import CallContext, RequestBudget
from modelyard.runtime.devices import MIB
from modelyard.runtime.errors import ConfigError, InvalidInput, NotReady
from modelyard.runtime.host import ModelHost
from modelyard.runtime.progress import Progress
from modelyard.runtime.render import as_rgb_uint8, draw_boxes, heatmap_overlay
from modelyard.v1 import biomedclip_pb2, biomedclip_pb2_grpc, types_pb2

METHOD_NAMES: dict[int, str] = {
    biomedclip_pb2.CAM_METHOD_GSCORECAM: "gscorecam",
    biomedclip_pb2.CAM_METHOD_SCORECAM: "scorecam",
    biomedclip_pb2.CAM_METHOD_GRADCAM: "gradcam",
    biomedclip_pb2.CAM_METHOD_SIMILARITY: "similarity",
}
COLORMAP_NAMES: dict[int, str] = {
    biomedclip_pb2.COLORMAP_JET: "jet",
    biomedclip_pb2.COLORMAP_TURBO: "turbo",
    biomedclip_pb2.COLORMAP_INFERNO: "inferno",
    biomedclip_pb2.COLORMAP_HOT: "hot",
}
THRESHOLD_MODES = {biomedclip_pb2.THRESHOLD_FIXED: "fixed", biomedclip_pb2.THRESHOLD_OTSU: "otsu"}
RANKINGS = {biomedclip_pb2.RANKING_AREA: "area", biomedclip_pb2.RANKING_AREA_TIMES_HEAT: "area_x_heat"}
_OPTIONAL_FIELDS = (
    "threshold",
    "multi_box",
    "max_candidates",
    "pad_max",
    "pad_min",
    "pad_small_area",
    "pad_large_area",
    "min_box_area",
    "body_mask",
    "smart_padding",
    "anatomical_check",
    "min_mean_intensity",
)
_ACCEPTED_DTYPES = {"uint8", "uint16", "int16", "int32", "float16", "float32", "float64"}


def localize_settings(
    defaults: LocalizeSettings, msg: biomedclip_pb2.LocalizeOptions, what: str = "options"
) -> LocalizeSettings:
    """The configured defaults with every field the request set; InvalidInput names any value out of range."""
    update: dict[str, Any] = {name: getattr(msg, name) for name in _OPTIONAL_FIELDS if msg.HasField(name)}
    for field, table, name in (
        ("threshold_mode", THRESHOLD_MODES, "threshold_mode"),
        ("ranking", RANKINGS, "ranking"),
    ):
        value = getattr(msg, field)
        if value:
            if value not in table:
                raise InvalidInput(f"{what}: unknown {name} {value}; use one of {', '.join(table.values())}")
            update[name] = table[value]
    try:
        return LocalizeSettings.model_validate({**defaults.model_dump(), **update})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors()
        )
        raise InvalidInput(f"{what}: {problems}") from None


class BiomedCLIPServicer(biomedclip_pb2_grpc.BiomedCLIPServicer):
    def __init__(self, host: ModelHost) -> None:
        self.host = host
        self.config: BiomedCLIPConfig = host.config.model
        self._settings: ImageSettings | None = None
        self._lock = threading.Lock()
        guard_decoding(self.config.max_pixels)

    # -- helpers --------------------------------------------------------------------------------------
    def _image_settings(self) -> ImageSettings:
        """The model's preprocessing, from its open_clip_config.json (read once, after the model loaded)."""
        if self._settings is None:
            if self.host.adapter is None:
                raise NotReady("biomedclip is still loading; retry shortly")
            with self._lock:
                try:
                    files = architecture.resolve_files(self.config)
                except ConfigError as exc:  # the files changed under a running service
                    raise NotReady(exc.message) from None
                self._settings = ImageSettings.from_config(files.model_cfg, files.preprocess_cfg)
        return self._settings

    def _count(self, count: int, what: str, context: CallContext | None) -> RequestBudget:
        """The call's budget, once its items are counted (before any is prepared)."""
        if count == 0:
            raise InvalidInput(f"the request holds no {what}: send at least one")
        budget = RequestBudget(self.config.max_items_per_request, self.config.max_request_pixels, context)
        budget.count(count, what)
        return budget

    def _rgb(self, msg: types_pb2.Image, what: str, budget: RequestBudget) -> np.ndarray:
        """Any accepted image as (H,W,3) uint8 RGB (grey repeated, alpha dropped, wider ranges min-max scaled)."""
        if msg.WhichOneof("source") == "array":
            dtype = msg.array.inline.dtype or msg.array.shared.dtype
            if dtype not in _ACCEPTED_DTYPES:
                raise InvalidInput(f"{what}: dtype {dtype} is not accepted; use uint8, uint16, int16 or float")
        runtime = self.host.runtime
        image = decode_image(
            msg,
            runtime.shared_memory_dir,
            runtime.data_root,
            self.config.max_pixels,
            what,
            budget,
            runtime.max_file_mb * MIB,
        )
        return as_rgb_uint8(np.asarray(image))

    def _text(self, text: str, what: str) -> str:
        cleaned = text.strip()
        if not cleaned:
            raise InvalidInput(f"{what} is empty: give the text to look for (e.g. the question)")
        if len(cleaned) > self.config.max_prompt_chars:
            raise InvalidInput(
                f"{what} has {len(cleaned)} characters, over the limit of {self.config.max_prompt_chars} "
                "(model.max_prompt_chars)"
            )
        return cleaned

    def _cam(self, msg: biomedclip_pb2.CamOptions) -> tuple[str, int]:
        cam = self.config.cam
        if msg.method and msg.method not in METHOD_NAMES:
            raise InvalidInput(f"unknown method {msg.method}; use one of {', '.join(METHODS)}")
        method = METHOD_NAMES.get(msg.method, cam.default_method)
        if msg.top_k and method != "gscorecam":
            raise InvalidInput(f"top_k is gScoreCAM's channel count; {method} does not use it, so leave it 0")
        return method, int(msg.top_k or cam.default_top_k)

    def _cam_items(
        self, msgs: Any, method: str, top_k: int, progress: Progress, context: CallContext
    ) -> tuple[list[HeatmapItem], list[np.ndarray]]:
        budget = self._count(len(msgs), "items", context)
        settings = self._image_settings()
        items, images = [], []
        for index, msg in enumerate(msgs):
            what = f"item {index}"
            rgb = self._rgb(msg.image, what, budget)
            prompt = self._text(msg.prompt, f"{what}: the prompt")
            pixels, geometry = to_frame(rgb, settings, self.config.cam.geometry)
            items.append(HeatmapItem(pixels, geometry, prompt, method, top_k, progress))
            images.append(rgb)
        return items, images

    # -- rpcs -----------------------------------------------------------------------------------------
    def EmbedImages(
        self, request: biomedclip_pb2.EmbedImagesRequest, context: grpc.ServicerContext
    ) -> biomedclip_pb2.EmbeddingsResponse:
        budget = self._count(len(request.images), "images", context)
        settings = self._image_settings()
        items = [
            EmbedImageItem(to_frame(self._rgb(m, f"image {i}", budget), settings)[0])
            for i, m in enumerate(request.images)
        ]
        vectors = self.host.run(items, context)
        return biomedclip_pb2.EmbeddingsResponse(embeddings=numpy_to_tensor(np.stack(vectors).astype(np.float32)))

    def EmbedTexts(
        self, request: biomedclip_pb2.EmbedTextsRequest, context: grpc.ServicerContext
    ) -> biomedclip_pb2.EmbeddingsResponse:
        self._count(len(request.texts), "texts", context)
        items = [EmbedTextItem(self._text(t, f"text {i}")) for i, t in enumerate(request.texts)]
        vectors = self.host.run(items, context)
        return biomedclip_pb2.EmbeddingsResponse(embeddings=numpy_to_tensor(np.stack(vectors).astype(np.float32)))

    def Classify(
        self, request: biomedclip_pb2.ClassifyRequest, context: grpc.ServicerContext
    ) -> biomedclip_pb2.ClassifyResponse:
        budget = self._count(len(request.images), "images", context)
        if len(request.labels) < 2:
            raise InvalidInput(
                f"{len(request.labels)} label(s) given: give at least two, since probabilities are a softmax "
                "across the labels"
            )
        if len(request.labels) > self.config.max_labels:
            raise InvalidInput(f"{len(request.labels)} labels, over the limit of {self.config.max_labels}")
        template = request.template or self.config.classify_template
        if "{}" not in template:
            raise InvalidInput(f"template '{template}' has no {{}} where the label goes, e.g. 'an X-ray of {{}}'")
        labels = [self._text(label, f"label {i}") for i, label in enumerate(request.labels)]
        prompts = tuple(template.replace("{}", label) for label in labels)
        settings = self._image_settings()
        items = [
            ClassifyItem(to_frame(self._rgb(m, f"image {i}", budget), settings)[0], prompts)
            for i, m in enumerate(request.images)
        ]
        results: list[Classification] = self.host.run(items, context)
        return biomedclip_pb2.ClassifyResponse(
            results=[
                biomedclip_pb2.Classification(probabilities=r.probabilities.tolist(), logits=r.logits.tolist())
                for r in results
            ],
            prompts=list(prompts),
        )

    def Heatmap(
        self, request: biomedclip_pb2.HeatmapRequest, context: grpc.ServicerContext
    ) -> biomedclip_pb2.HeatmapResponse:
        method, top_k = self._cam(request.cam)
        render = request.render
        colormap = self.config.render.colormap
        if render.colormap:
            if render.colormap not in COLORMAP_NAMES:
                raise InvalidInput(
                    f"unknown colormap {render.colormap}; use one of {', '.join(COLORMAP_NAMES.values())}"
                )
            colormap = COLORMAP_NAMES[render.colormap]  # type: ignore[assignment]
        alpha = render.alpha if render.HasField("alpha") else self.config.render.alpha
        if not 0 <= alpha <= 1:
            raise InvalidInput(f"render.alpha {alpha} must be within [0, 1]")
        progress = Progress()  # the host makes it watch the call, so the model stops when the caller goes
        # The output region is checked before any work, so a bad one costs nothing.
        out = OutputWriter.optional(request.output_region, self.host.runtime.shared_memory_dir)
        try:
            items, images = self._cam_items(request.items, method, top_k, progress, context)
            results: list[Heatmap] = self.host.run(items, context, progress)
            return biomedclip_pb2.HeatmapResponse(
                results=[
                    biomedclip_pb2.HeatmapResult(
                        heatmap=numpy_to_tensor(r.heatmap, out),
                        composite_png=(
                            encode_png(heatmap_overlay(rgb, r.heatmap, colormap, alpha, render.label or None))
                            if render.composite
                            else b""
                        ),
                        similarity=r.similarity,
                        method=r.method,
                        top_k=r.top_k,
                    )
                    for r, rgb in zip(results, images, strict=True)
                ]
            )
        finally:
            if out is not None:
                out.close()

    def Localize(
        self, request: biomedclip_pb2.LocalizeRequest, context: grpc.ServicerContext
    ) -> biomedclip_pb2.LocalizeResponse:
        method, top_k = self._cam(request.cam)
        options = localize_settings(self.config.localize, request.options)
        progress = Progress()  # the host makes it watch the call, so the model stops when the caller goes
        items, images = self._cam_items(request.items, method, top_k, progress, context)
        results: list[Heatmap] = self.host.run(items, context, progress)
        style = self.config.render
        answers = []
        for r, rgb in zip(results, images, strict=True):
            found = localize(r.heatmap, to_grey(rgb), options)
            boxes = [(b.x1, b.y1, b.x2, b.y2) for b in found.boxes]
            answers.append(
                biomedclip_pb2.LocalizeResult(
                    boxes=[
                        biomedclip_pb2.LocalizedBox(
                            box=types_pb2.BoxXYXY(x1=b.x1, y1=b.y1, x2=b.x2, y2=b.y2),
                            score=b.score,
                            area_fraction=b.area_fraction,
                        )
                        for b in found.boxes
                    ],
                    reason=found.reason,
                    notes=found.notes,
                    heatmap=numpy_to_tensor(r.heatmap) if request.include_heatmap else None,
                    boxes_png=(
                        encode_png(draw_boxes(rgb, boxes, style.box_color, style.box_thickness))
                        if request.render_boxes
                        else b""
                    ),
                    similarity=r.similarity,
                )
            )
        return biomedclip_pb2.LocalizeResponse(results=answers)

    def Info(self, request: types_pb2.InfoRequest, context: grpc.ServicerContext) -> types_pb2.ModelInfo:
        return self.host.info(request)
