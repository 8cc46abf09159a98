"""medvqa: the medical-VQA preprocessing pipeline, a drop-in for the seed pipeline's users.

Stages (STAGE): `bbox` (BiomedCLIP boxes drawn on the image), `heatmap` (the map as a colour composite),
`segmentation` (boxes, or gold boxes in MODE=gold, then MedSAM masks and overlays; SCENARIO A/B/C). Every stage
writes `vqa_manifest.csv` (exactly image_path,question,answer), `predictions.jsonl` (one record per item,
rewritten whole, so reruns never duplicate) and `report.txt`. Option names and defaults are the seed's config
keys; a `.conf` of theirs is accepted as is. Fixed where the seed was wrong: the CAM is really gScoreCAM when asked,
TOPK/PROMPT/MIN_BOX_AREA are honoured, files are named per question, MedSAM gets MedSAM's preprocessing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Literal

import numpy as np
from PIL import Image
from pydantic import Field, field_validator

from modelyard.gateway import files
from modelyard.gateway.inputs import read_regular
from modelyard.gateway.jobs import Item, ItemState, JobRecord
from modelyard.gateway.pipeline import Pipeline, StepContext
from modelyard.gateway.pipelines.tables import parse_boxes, parse_regions, read_table
from modelyard.runtime.arrays import SHM_DIR, guard_decoding, numpy_to_tensor, open_image, tensor_to_numpy
from modelyard.runtime.config import Strict
from modelyard.runtime.errors import InvalidInput
from modelyard.runtime.paths import confined
from modelyard.runtime.render import CYAN, draw_boxes, overlay_masks
from modelyard.v1 import biomedclip_pb2, medsam_pb2, types_pb2

CAM_METHODS = {
    "gscorecam": biomedclip_pb2.CAM_METHOD_GSCORECAM,
    "scorecam": biomedclip_pb2.CAM_METHOD_SCORECAM,
    "gradcam": biomedclip_pb2.CAM_METHOD_GRADCAM,
    "similarity": biomedclip_pb2.CAM_METHOD_SIMILARITY,
}
COLORMAPS = {
    "jet": biomedclip_pb2.COLORMAP_JET,
    "turbo": biomedclip_pb2.COLORMAP_TURBO,
    "inferno": biomedclip_pb2.COLORMAP_INFERNO,
    "hot": biomedclip_pb2.COLORMAP_HOT,
}
ANSWER_COLUMNS = ("answer_text", "answer", "reference_answer")
SCENARIO_SHIFT_PX = 50  # scenario C: the prompt box is moved this far (the seed's robustness test)
MODEL_NAMES = {"biomedclip": "BiomedCLIP", "medsam": "MedSAM"}
log = logging.getLogger("modelyard.gateway.medvqa")


def _bgr(text: str) -> tuple[int, int, int]:
    b, g, r = (int(v) for v in text.split(","))
    return r, g, b


# Marked images (scenarios B, C) go to MedSAM as raw pixels up to this size (a 2048x2048 RGB is 12 MiB), PNG beyond.
MAX_RAW_IMAGE_BYTES = 16 << 20
MAX_PIXELS = 50_000_000  # the largest image decoded here: the model services' default model.max_pixels


class MedVQAOptions(Strict):
    """The seed pipeline's config keys, with its defaults."""

    STAGE: Literal["bbox", "heatmap", "segmentation"] = Field("segmentation", description="which stage runs")
    MODE: Literal["inference", "gold"] = Field("inference", description="gold: use the table's boxes")
    IMAGE_ROOT: str = Field("", description="folder image paths are relative to (default: the table's folder)")
    PATH_COLUMN: str = "image_path"
    QUESTION_COLUMN: str = "question"
    BOX_COLUMN: str = Field("visual_locations", description="gold boxes [[x1,y1,x2,y2],...]")
    GOLD_BOX_SPACE: int = Field(224, ge=1, description="gold boxes are given in this square reference space")
    REGION_COLUMN: str = "visual_regions"
    ANSWER_COLUMN: str = Field("", description="default: answer_text, answer or reference_answer")
    USE_DYNAMIC_PROMPTS: bool = Field(True, description="the question is the prompt")
    PROMPT: str = Field("", description="the prompt when USE_DYNAMIC_PROMPTS=false (ignored by the seed)")
    FALLBACK_PROMPT: str = Field("medical abnormality", description="when the question is empty")
    REGION_MODE: Literal["none", "join", "explode", "composite"] = Field(
        "none", description="regions joined into one prompt, one item per region, or one box per region"
    )
    CAM_VERSION: str = Field("gScoreCAM", description="gScoreCAM | ScoreCAM | GradCAM | similarity")
    CAM_METHOD: str = Field("", description="the heatmap stage's name for CAM_VERSION (wins when set)")
    TOPK: int = Field(300, ge=1, description="gScoreCAM channels kept (the seed ignored it)")
    CAM_THRESHOLD: float = Field(0.45, gt=0, lt=1)
    ENABLE_MULTI_BOXES: bool = False
    PAD_MAX: float = Field(0.25, ge=0)
    PAD_MIN: float = Field(0.02, ge=0)
    MIN_BOX_AREA: float = Field(0.005, ge=0, lt=1, description="honoured (the seed used 0.01 whatever was set)")
    ENABLE_BODY_MASK: bool = True
    ENABLE_SMART_PADDING: bool = True
    ENABLE_ANATOMICAL_CHECK: bool = True
    BOX_COLOR: str = Field("0,0,255", description="B,G,R as in the seed (red)")
    BOX_THICKNESS: int = Field(2, ge=1)
    DRAW_LABELS: bool = False
    COLORMAP: Literal["jet", "turbo", "inferno", "hot"] = "jet"
    ALPHA: float = Field(0.5, ge=0, le=1)
    SAVE_RAW_CAM: bool = False
    SAVE_ORIGINAL: bool = False
    COMPOSITE_MODE: bool = True
    SCENARIO: Literal["A", "B", "C"] = Field("A", description="A clean box, B box drawn, C drawn + prompt shifted")
    SAVE_VISUALS: bool = Field(True, description="write overlays (the manifest then points at them)")
    DISABLE_MASK_SAVING: bool = False
    SEGMENT_ALL_BOXES: bool = Field(False, description="segment every box (the seed used only the first)")
    BATCH_SIZE: int = Field(8, ge=1, description="items in flight at once")
    LIMIT: int = Field(0, ge=0, description="process only the first N items (0 = all)")
    OUTPUT_FORMAT: Literal["jsonl", "images"] = "jsonl"

    @field_validator("CAM_VERSION", "CAM_METHOD")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value and value.lower() not in CAM_METHODS:
            raise ValueError(f"'{value}' is not one of gScoreCAM, ScoreCAM, GradCAM, similarity")
        return value

    @field_validator("BOX_COLOR")
    @classmethod
    def _colour(cls, value: str) -> str:
        try:
            _bgr(value)
        except ValueError:
            raise ValueError(f"BOX_COLOR '{value}' is not B,G,R like 0,0,255") from None
        return value

    @property
    def cam_method(self) -> str:
        return (self.CAM_METHOD or self.CAM_VERSION).lower()

    def cam(self, top_k: int) -> biomedclip_pb2.CamOptions:
        method = self.cam_method
        return biomedclip_pb2.CamOptions(method=CAM_METHODS[method], top_k=top_k if method == "gscorecam" else 0)

    def services_used(self) -> tuple[str, ...]:
        """The services this stage and mode call (gold boxes need no BiomedCLIP, only segmentation MedSAM)."""
        used = ("biomedclip",) if self.STAGE == "heatmap" or self.MODE == "inference" else ()
        return used + (("medsam",) if self.STAGE == "segmentation" else ())

    @property
    def localize(self) -> biomedclip_pb2.LocalizeOptions:
        return biomedclip_pb2.LocalizeOptions(
            threshold=self.CAM_THRESHOLD,
            threshold_mode=biomedclip_pb2.THRESHOLD_FIXED,
            multi_box=self.ENABLE_MULTI_BOXES,
            pad_max=self.PAD_MAX,
            pad_min=self.PAD_MIN,
            min_box_area=self.MIN_BOX_AREA,
            body_mask=self.ENABLE_BODY_MASK,
            smart_padding=self.ENABLE_SMART_PADDING,
            anatomical_check=self.ENABLE_ANATOMICAL_CHECK,
        )


def _rel(path: Path, root: Path) -> str:
    return str(PurePosixPath(path.relative_to(root)))


class MedVQA(Pipeline[MedVQAOptions]):
    name: ClassVar[str] = "medvqa"
    description: ClassVar[str] = (
        "BiomedCLIP boxes / heatmaps and MedSAM masks per (image, question) -> vqa_manifest.csv"
    )
    services: ClassVar[tuple[str, ...]] = ("biomedclip", "medsam")
    options_schema: ClassVar[type[MedVQAOptions]] = MedVQAOptions

    def concurrency(self, options: MedVQAOptions) -> int:
        return options.BATCH_SIZE

    def services_needed(self, options: MedVQAOptions) -> tuple[str, ...]:
        return options.services_used()

    # -- planning ---------------------------------------------------------------------------------------
    def plan(self, input_path: Path, options: MedVQAOptions, data_root: Path) -> list[Item]:
        rows = read_table(input_path)
        image_root = confined(data_root, options.IMAGE_ROOT) if options.IMAGE_ROOT else input_path.parent
        items: list[Item] = []
        for index, row in enumerate(rows):
            if options.PATH_COLUMN not in row:
                raise InvalidInput(
                    f"row {index} has no '{options.PATH_COLUMN}' column (PATH_COLUMN); columns: {', '.join(row)}"
                )
            raw_path = str(row[options.PATH_COLUMN])
            try:
                image = (Path(raw_path) if Path(raw_path).is_absolute() else image_root / raw_path).resolve()
            except (OSError, RuntimeError, ValueError) as exc:  # a NUL byte, a symlink loop, a name too long
                raise InvalidInput(f"row {index}: image path {raw_path!r} cannot be resolved: {exc}") from None
            if not image.is_relative_to(data_root.resolve()):
                raise InvalidInput(f"row {index}: image '{raw_path}' is outside the data root; keep images under it")
            image_rel = _rel(image, data_root.resolve())
            question = str(row.get(options.QUESTION_COLUMN) or "")
            regions = parse_regions(row.get(options.REGION_COLUMN))
            variants = [(r, [r]) for r in regions] if options.REGION_MODE == "explode" and regions else [("", regions)]
            for region, item_regions in variants:
                digest = hashlib.sha1(f"{question}|{region}".encode()).hexdigest()[:8]
                key = f"{index}:{raw_path}:{digest}"
                payload = {
                    "row": {k: _jsonable(v) for k, v in row.items()},
                    "index": index,
                    "image": image_rel,
                    "question": question,
                    "regions": item_regions,
                    "region": region,
                }
                items.append(Item(key=key, position=len(items), payload=payload))
        return items[: options.LIMIT] if options.LIMIT else items

    # -- one item ---------------------------------------------------------------------------------------
    def process(self, item: Item, ctx: StepContext[MedVQAOptions]) -> dict[str, Any]:
        o = ctx.options
        p = item.payload
        image_path = confined(ctx.data_root, p["image"])
        data = read_regular(image_path, f"image {p['image']}")  # a FIFO or a folder fails this item, never blocks
        image, mode = _decode_with_mode(data, p["image"])
        sent = self._image_message(ctx, p["image"], data)
        stem = Path(p["image"]).stem + f"_idx{p['index']}" + (f"_{_slug(p['region'])}" if p["region"] else "")
        prompts = self._prompts(p, o)
        models = {name: _model_info(ctx, name, item) for name in o.services_used()}
        record: dict[str, Any] = {"prompt_used": " | ".join(prompts), "mode": o.MODE, "stage": o.STAGE}
        notes: list[str] = []
        top_k = o.TOPK
        if "biomedclip" in models and o.cam_method == "gscorecam":
            top_k, warning = _fit_top_k(o.TOPK, models["biomedclip"].pop("cam_channels"))
            record["top_k"] = top_k
            notes += [warning] if warning else []
        for info in models.values():
            info.pop("cam_channels", None)
        record["models"] = models
        if o.STAGE == "heatmap":
            shown = self._heatmap(item, ctx, data, sent("biomedclip"), prompts[0], stem, top_k)
            record["heatmap"] = shown
        else:
            boxes, box_notes = self._boxes(item, ctx, sent, image, prompts, top_k)
            record["predicted_boxes"] = [[round(v, 2) for v in b] for b in boxes]
            notes += box_notes
        if notes:
            record["notes"] = notes
        if o.STAGE != "heatmap":
            if o.STAGE == "bbox":
                shown = self._draw(ctx, image, boxes, stem + Path(p["image"]).suffix.lower(), prompts)
            else:
                original = sent("medsam") if mode in ("L", "RGB") else None  # the file's pixels are `image`'s
                shown, mask_paths = self._segment(item, ctx, image, original, boxes, stem)
                record["masks"] = mask_paths
        record["image_path"] = shown
        record["processed_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        return record

    @staticmethod
    def _image_message(
        ctx: StepContext[MedVQAOptions], image_rel: str, data: bytes
    ) -> Callable[[str], types_pb2.Image]:
        """The item's image as a service gets it: a DataRef to the file when the service mounts the data volume,
        else the file's bytes as read (never decoded and encoded again here)."""

        def for_service(service: str) -> types_pb2.Image:
            probe = ctx.data_volume
            if probe is not None and probe.shares(ctx.clients[service]):
                return types_pb2.Image(ref=types_pb2.DataRef(path=image_rel))
            return types_pb2.Image(encoded=data)

        return for_service

    def _prompts(self, p: dict[str, Any], o: MedVQAOptions) -> list[str]:
        if o.REGION_MODE == "composite" and p["regions"]:
            return list(p["regions"])
        if o.REGION_MODE in ("join", "explode") and p["regions"]:
            return [", ".join(p["regions"])]
        if o.USE_DYNAMIC_PROMPTS:
            return [p["question"].strip() or o.FALLBACK_PROMPT]
        return [o.PROMPT.strip() or o.FALLBACK_PROMPT]

    def _boxes(
        self,
        item: Item,
        ctx: StepContext[MedVQAOptions],
        sent: Callable[[str], types_pb2.Image],
        image: np.ndarray,
        prompts: list[str],
        top_k: int,
    ) -> tuple[list[list[float]], list[str]]:
        o = ctx.options
        h, w = image.shape[:2]
        if o.MODE == "gold":
            gold = parse_boxes(item.payload["row"].get(o.BOX_COLUMN))
            scale = np.array([w, h, w, h]) / o.GOLD_BOX_SPACE
            return [list(np.clip(np.array(b) * scale, 0, [w, h, w, h]).astype(float)) for b in gold], (
                [] if gold else [f"no gold boxes in column {o.BOX_COLUMN}"]
            )
        request = biomedclip_pb2.LocalizeRequest(
            items=[biomedclip_pb2.PromptedImage(image=sent("biomedclip"), prompt=prompt) for prompt in prompts],
            cam=o.cam(top_k),
            options=o.localize,
        )
        response = ctx.clients["biomedclip"].call(
            lambda biomedclip: biomedclip.Localize, request, ctx.request_id(item, "localize")
        )
        boxes, notes = [], []
        for prompt, result in zip(prompts, response.results, strict=True):
            found = [[b.box.x1, b.box.y1, b.box.x2, b.box.y2] for b in result.boxes]
            if not found and result.reason:
                notes.append(f"{prompt}: {result.reason}")
            notes += list(result.notes)
            boxes += found if (o.ENABLE_MULTI_BOXES or o.REGION_MODE == "composite") else found[:1]
        return boxes, notes

    def _draw(
        self,
        ctx: StepContext[MedVQAOptions],
        image: np.ndarray,
        boxes: list[list[float]],
        name: str,
        prompts: list[str],
    ) -> str:
        o = ctx.options
        labels = [prompts[min(i, len(prompts) - 1)] for i in range(len(boxes))] if o.DRAW_LABELS else None
        picture = draw_boxes(image, boxes, _bgr(o.BOX_COLOR), o.BOX_THICKNESS, labels)
        path = ctx.output_dir / name
        files.write_bytes(path, _encode(picture, path.suffix))
        return _rel(path, ctx.output_dir)

    def _heatmap(
        self,
        item: Item,
        ctx: StepContext[MedVQAOptions],
        data: bytes,
        sent: types_pb2.Image,
        prompt: str,
        stem: str,
        top_k: int,
    ) -> str:
        o = ctx.options
        request = biomedclip_pb2.HeatmapRequest(
            items=[biomedclip_pb2.PromptedImage(image=sent, prompt=prompt)],
            cam=o.cam(top_k),
            render=biomedclip_pb2.RenderOptions(
                composite=True, colormap=COLORMAPS[o.COLORMAP], alpha=o.ALPHA if o.COMPOSITE_MODE else 1.0,
                label=prompt if o.DRAW_LABELS else "",
            ),
        )  # fmt: skip
        (result,) = (
            ctx.clients["biomedclip"]
            .call(lambda biomedclip: biomedclip.Heatmap, request, ctx.request_id(item, "heatmap"))
            .results
        )
        path = files.write_bytes(ctx.output_dir / f"{stem}.png", result.composite_png)
        if o.SAVE_RAW_CAM:
            heat = tensor_to_numpy(result.heatmap, SHM_DIR)
            files.write_png(ctx.output_dir / f"{stem}_raw_cam.png", (np.clip(heat, 0, 1) * 255).astype(np.uint8))
        if o.SAVE_ORIGINAL:
            files.write_bytes(ctx.output_dir / f"{stem}_original{Path(item.payload['image']).suffix}", data)
        return _rel(path, ctx.output_dir)

    def _segment(
        self,
        item: Item,
        ctx: StepContext[MedVQAOptions],
        image: np.ndarray,
        original: types_pb2.Image | None,
        boxes: list[list[float]],
        stem: str,
    ) -> tuple[str, list[str]]:
        """MedSAM on the image; `original` is how to send the unmarked image as its file (None: as pixels)."""
        o = ctx.options
        if not boxes:  # nothing to segment: the VQA step still gets the image, unmarked
            path = files.write_png(ctx.output_dir / "overlays" / f"{stem}_overlay.png", image)
            return _rel(path, ctx.output_dir), []
        chosen = boxes if o.SEGMENT_ALL_BOXES else boxes[:1]
        h, w = image.shape[:2]
        shown = image
        prompt_boxes = [list(b) for b in chosen]
        if o.SCENARIO in ("B", "C"):  # the box is drawn into the image MedSAM sees
            shown = draw_boxes(image, chosen, (255, 0, 0), 5)
        if o.SCENARIO == "C":
            prompt_boxes = [_shift(b, SCENARIO_SHIFT_PX, w, h) for b in chosen]
        if shown is image and original is not None:
            picture = original
        elif shown.nbytes <= MAX_RAW_IMAGE_BYTES:  # pixels as they are: no PNG encoding here, none to decode there
            picture = types_pb2.Image(array=numpy_to_tensor(shown))
        else:
            picture = types_pb2.Image(encoded=_encode(shown, ".png"))
        request = medsam_pb2.SegmentRequest(
            items=[
                medsam_pb2.SegmentItem(
                    image=picture,
                    boxes=[types_pb2.BoxXYXY(x1=b[0], y1=b[1], x2=b[2], y2=b[3]) for b in prompt_boxes],
                )
            ]
        )
        (result,) = (
            ctx.clients["medsam"].call(lambda medsam: medsam.Segment, request, ctx.request_id(item, "segment")).results
        )
        masks = tensor_to_numpy(result.masks, SHM_DIR)
        mask_paths = []
        if not o.DISABLE_MASK_SAVING:
            path = files.write_png(
                ctx.output_dir / "masks" / f"{stem}_mask.png", (masks.max(axis=0) * 255).astype(np.uint8)
            )
            mask_paths.append(_rel(path, ctx.output_dir))
        if not o.SAVE_VISUALS and mask_paths:
            return mask_paths[0], mask_paths
        overlay = overlay_masks(image, masks, np.array(prompt_boxes), box_color=CYAN)
        path = files.write_png(ctx.output_dir / "overlays" / f"{stem}_overlay.png", overlay)
        return _rel(path, ctx.output_dir), mask_paths

    # -- job outputs ------------------------------------------------------------------------------------
    def finalize(self, job: JobRecord, items: list[Item], ctx: StepContext[MedVQAOptions]) -> dict[str, str]:
        o = ctx.options
        done = [i for i in items if i.state == ItemState.DONE]
        manifest_rows = [[i.outputs["image_path"], i.payload["question"], _answer(i.payload["row"], o)] for i in done]
        manifest = files.write_csv(
            ctx.output_dir / "vqa_manifest.csv", ["image_path", "question", "answer"], manifest_rows
        )
        predictions = files.write_jsonl(
            ctx.output_dir / "predictions.jsonl",
            ({**i.payload["row"], **i.outputs, "image_path": i.outputs["image_path"]} for i in done),
        )
        failed = [i for i in items if i.state == ItemState.FAILED]
        top_ks = sorted({i.outputs["top_k"] for i in done if "top_k" in i.outputs})
        lines = [
            f"medvqa job {job.id}: stage {o.STAGE}, mode {o.MODE}",
            f"input: {job.request['input']}",
            f"items: {len(items)}  done: {len(done)}  failed: {len(failed)}",
            f"options: {json.dumps(o.model_dump(mode='json'), sort_keys=True)}",
            *(_model_lines(done)),
            *([f"gScoreCAM top_k used: {', '.join(map(str, top_ks))} (TOPK {o.TOPK})"] if top_ks else []),
            "",
            *(f"FAILED {i.key}: {i.error}" for i in failed),
        ]
        report = files.write_text(ctx.output_dir / "report.txt", "\n".join(lines) + "\n")
        return {
            "manifest": _rel(manifest, ctx.data_root),
            "predictions": _rel(predictions, ctx.data_root),
            "report": _rel(report, ctx.data_root),
        }


def _model_info(ctx: StepContext[MedVQAOptions], service: str, item: Item) -> dict[str, Any]:
    """Which model answered (recorded with every item): random-weight results must never pass for real ones."""
    info = ctx.clients[service].call(
        lambda stub: stub.Info, types_pb2.InfoRequest(), ctx.request_id(item, f"info-{service}")
    )
    record: dict[str, Any] = {
        "model": info.model,
        "checkpoint": info.checkpoint,
        "checkpoint_sha256": info.checkpoint_sha256,
        "random_weights": info.random_weights,
    }
    if service == "biomedclip":
        record["cam_channels"] = int(json.loads(info.architecture or "{}").get("cam_channels") or 0)
    return record


def _fit_top_k(top_k: int, channels: int) -> tuple[int, str]:
    """TOPK beyond the target layer's channels (300 on the tiny model's 64) uses them all, and says so."""
    if not channels or top_k <= channels:
        return top_k, ""
    warning = f"TOPK {top_k} exceeds the {channels} channels of BiomedCLIP's target layer: gScoreCAM used {channels}"
    log.warning(warning)
    return channels, warning


def _model_lines(done: list[Item]) -> list[str]:
    """One line per (service, checkpoint) the done items were made with; RANDOM WEIGHTS said in capitals."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for item in done:
        for service, info in item.outputs.get("models", {}).items():
            seen.setdefault((service, info["checkpoint_sha256"]), info)
    lines = []
    for (service, sha), info in sorted(seen.items()):
        warning = "  RANDOM WEIGHTS: these outputs mean nothing" if info.get("random_weights") else ""
        lines.append(f"{MODEL_NAMES[service]}: {info['model']}, checkpoint {info['checkpoint']} sha256 {sha}{warning}")
    return lines


def _answer(row: dict[str, Any], o: MedVQAOptions) -> str:
    columns = (o.ANSWER_COLUMN,) if o.ANSWER_COLUMN else ANSWER_COLUMNS
    for column in columns:
        if row.get(column) not in (None, ""):
            return str(row[column])
    return ""


def _shift(box: list[float], shift: float, w: int, h: int) -> list[float]:
    dx = min(shift, w - box[2])
    dy = min(shift, h - box[3])
    return [box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy]


def _decode(data: bytes, name: str) -> np.ndarray:
    return _decode_with_mode(data, name)[0]


def _decode_with_mode(data: bytes, name: str) -> tuple[np.ndarray, str]:
    """The image as L or RGB pixels, and the file's own mode. The services' guarded decoder: pixels checked
    from the header (and PIL's bomb guard) before decoding."""
    guard_decoding(MAX_PIXELS)
    with open_image(data, MAX_PIXELS, f"image {name}") as img:
        return np.asarray(img.convert("RGB") if img.mode not in ("L", "RGB") else img), img.mode


def _encode(picture: np.ndarray, suffix: str) -> bytes:
    buffer = io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(suffix.lower(), "PNG")
    Image.fromarray(picture).save(buffer, format=fmt)
    return buffer.getvalue()


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)[:40]


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
