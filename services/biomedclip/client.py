"""Calling BiomedCLIP: a small Python client and the `modelyard biomedclip ...` commands."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from PIL import Image

from modelyard.runtime.arrays import SHM_DIR, numpy_to_tensor, tensor_to_numpy
from modelyard.runtime.cli import add_address_argument
from modelyard.runtime.client import ModelClient, token_from
from modelyard.v1 import biomedclip_pb2, biomedclip_pb2_grpc, types_pb2

METHODS = {
    "default": biomedclip_pb2.CAM_METHOD_DEFAULT,
    "gscorecam": biomedclip_pb2.CAM_METHOD_GSCORECAM,
    "scorecam": biomedclip_pb2.CAM_METHOD_SCORECAM,
    "gradcam": biomedclip_pb2.CAM_METHOD_GRADCAM,
    "similarity": biomedclip_pb2.CAM_METHOD_SIMILARITY,
}
COLORMAPS = {
    "default": biomedclip_pb2.COLORMAP_DEFAULT,
    "jet": biomedclip_pb2.COLORMAP_JET,
    "turbo": biomedclip_pb2.COLORMAP_TURBO,
    "inferno": biomedclip_pb2.COLORMAP_INFERNO,
    "hot": biomedclip_pb2.COLORMAP_HOT,
}
ImageLike = np.ndarray | bytes


def image_message(image: ImageLike) -> types_pb2.Image:
    """PNG/JPEG bytes as `encoded`, an array as `array`."""
    if isinstance(image, bytes):
        return types_pb2.Image(encoded=image)
    return types_pb2.Image(array=numpy_to_tensor(np.asarray(image)))


@dataclass
class LocalizeAnswer:
    boxes: np.ndarray  # (N,4) xyxy in original pixels
    scores: np.ndarray  # (N,)
    reason: str
    notes: list[str]
    similarity: float
    heatmap: np.ndarray | None
    boxes_png: bytes


class BiomedCLIPClient(ModelClient):
    service = "modelyard.v1.BiomedCLIP"
    stub_class = biomedclip_pb2_grpc.BiomedCLIPStub

    def embed_images(self, images: list[ImageLike]) -> np.ndarray:
        """(N, D) float32 unit vectors."""
        request = biomedclip_pb2.EmbedImagesRequest(images=[image_message(i) for i in images])
        return tensor_to_numpy(self.call(lambda biomedclip: biomedclip.EmbedImages, request).embeddings, SHM_DIR)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        request = biomedclip_pb2.EmbedTextsRequest(texts=texts)
        return tensor_to_numpy(self.call(lambda biomedclip: biomedclip.EmbedTexts, request).embeddings, SHM_DIR)

    def classify(self, images: list[ImageLike], labels: list[str], template: str = "") -> np.ndarray:
        """(N images, L labels) probabilities."""
        request = biomedclip_pb2.ClassifyRequest(
            images=[image_message(i) for i in images], labels=labels, template=template
        )
        response = self.call(lambda biomedclip: biomedclip.Classify, request)
        return np.array([r.probabilities for r in response.results], np.float32)

    def heatmap(
        self,
        image: ImageLike,
        prompt: str,
        method: str = "default",
        top_k: int = 0,
        composite: bool = False,
        colormap: str = "default",
        alpha: float | None = None,
        label: str = "",
    ) -> biomedclip_pb2.HeatmapResult:
        render = biomedclip_pb2.RenderOptions(composite=composite, colormap=COLORMAPS[colormap], label=label)
        if alpha is not None:
            render.alpha = alpha
        request = biomedclip_pb2.HeatmapRequest(
            items=[biomedclip_pb2.PromptedImage(image=image_message(image), prompt=prompt)],
            cam=biomedclip_pb2.CamOptions(method=METHODS[method], top_k=top_k),
            render=render,
        )
        return self.call(lambda biomedclip: biomedclip.Heatmap, request).results[0]

    def localize(
        self,
        image: ImageLike,
        prompt: str,
        method: str = "default",
        top_k: int = 0,
        include_heatmap: bool = False,
        render_boxes: bool = False,
        **options: Any,
    ) -> LocalizeAnswer:
        """Boxes for `prompt`; `options` are LocalizeOptions fields (threshold=0.3, multi_box=True, ...)."""
        request = biomedclip_pb2.LocalizeRequest(
            items=[biomedclip_pb2.PromptedImage(image=image_message(image), prompt=prompt)],
            cam=biomedclip_pb2.CamOptions(method=METHODS[method], top_k=top_k),
            options=biomedclip_pb2.LocalizeOptions(**options),
            include_heatmap=include_heatmap,
            render_boxes=render_boxes,
        )
        r = self.call(lambda biomedclip: biomedclip.Localize, request).results[0]
        return LocalizeAnswer(
            boxes=np.array([[b.box.x1, b.box.y1, b.box.x2, b.box.y2] for b in r.boxes], np.float32).reshape(-1, 4),
            scores=np.array([b.score for b in r.boxes], np.float32),
            reason=r.reason,
            notes=list(r.notes),
            similarity=r.similarity,
            heatmap=tensor_to_numpy(r.heatmap, SHM_DIR) if r.HasField("heatmap") else None,
            boxes_png=r.boxes_png,
        )


# -- commands ---------------------------------------------------------------------------------------------
def _run(args: argparse.Namespace, action: Any) -> int:
    client = BiomedCLIPClient(args.address, token=token_from(args.token_file))
    try:
        return int(action(client) or 0)
    except grpc.RpcError as exc:
        print(f"biomedclip: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    finally:
        client.close()


def _classify(args: argparse.Namespace) -> int:
    def action(client: BiomedCLIPClient) -> None:
        probs = client.classify([Path(p).read_bytes() for p in args.image], args.label, args.template)
        for path, row in zip(args.image, probs, strict=True):
            ranked = sorted(zip(args.label, row, strict=True), key=lambda lp: -lp[1])
            print(f"{path}: " + ", ".join(f"{label} {p:.3f}" for label, p in ranked))

    return _run(args, action)


def _heatmap(args: argparse.Namespace) -> int:
    def action(client: BiomedCLIPClient) -> None:
        result = client.heatmap(
            Path(args.image).read_bytes(),
            args.prompt,
            args.method,
            args.top_k,
            composite=bool(args.composite),
            colormap=args.colormap,
            alpha=args.alpha,
            label=args.prompt if args.label else "",
        )
        heat = tensor_to_numpy(result.heatmap, SHM_DIR)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((heat * 255).astype(np.uint8)).save(out)
        print(f"map: {out} ({heat.shape[1]}x{heat.shape[0]}, {result.method}, similarity {result.similarity:.3f})")
        if args.composite:
            Path(args.composite).write_bytes(result.composite_png)
            print(f"composite: {args.composite}")

    return _run(args, action)


def _localize(args: argparse.Namespace) -> int:
    def action(client: BiomedCLIPClient) -> None:
        options: dict[str, Any] = {"multi_box": args.multi_box}
        if args.threshold is not None:
            options["threshold"] = args.threshold
        answer = client.localize(
            Path(args.image).read_bytes(),
            args.prompt,
            args.method,
            args.top_k,
            render_boxes=bool(args.render),
            **options,
        )
        record = {
            "image_path": args.image,
            "prompt_used": args.prompt,
            "predicted_boxes": answer.boxes.round(2).tolist(),
            "scores": answer.scores.round(4).tolist(),
            "reason": answer.reason,
            "notes": answer.notes,
        }
        print(json.dumps(record))
        if args.render:
            Path(args.render).write_bytes(answer.boxes_png)

    return _run(args, action)


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("biomedclip", help="call a BiomedCLIP service")
    actions = parser.add_subparsers(dest="action", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        add_address_argument(p, "biomedclip", "BiomedCLIP")
        p.add_argument("--token-file", help="the service's token (default: $MODELYARD_SERVICE_TOKEN_FILE)")

    def cam(p: argparse.ArgumentParser) -> None:
        p.add_argument("--image", required=True, help="PNG/JPEG/TIFF file")
        p.add_argument("--prompt", required=True, help="what to look for, e.g. the question")
        p.add_argument("--method", choices=sorted(METHODS), default="default")
        p.add_argument("--top-k", type=int, default=0, help="gScoreCAM channels (0 = the service's default)")

    cls = actions.add_parser("classify", help="zero-shot labels for images")
    common(cls)
    cls.add_argument("--image", action="append", required=True, help="image file (repeatable)")
    cls.add_argument("--label", action="append", required=True, help="candidate label (repeat, at least two)")
    cls.add_argument("--template", default="", help="e.g. 'a chest X-ray showing {}'")
    cls.set_defaults(func=_classify)

    heat = actions.add_parser("heatmap", help="where the image shows the prompt, as a map")
    common(heat)
    cam(heat)
    heat.add_argument("--out", required=True, help="grey PNG of the map at the image's size")
    heat.add_argument("--composite", help="also write the colour composite PNG here")
    heat.add_argument("--colormap", choices=sorted(COLORMAPS), default="default")
    heat.add_argument("--alpha", type=float, default=None)
    heat.add_argument("--label", action="store_true", help="burn the prompt into the composite")
    heat.set_defaults(func=_heatmap)

    loc = actions.add_parser("localize", help="boxes for the prompt (prints a predictions.jsonl record)")
    common(loc)
    cam(loc)
    loc.add_argument("--threshold", type=float, default=None)
    loc.add_argument("--multi-box", action="store_true")
    loc.add_argument("--render", help="also write the image with its boxes drawn here")
    loc.set_defaults(func=_localize)
