"""Calling MedSAM: a small Python client and the `modelyard medsam segment` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from modelyard.runtime.arrays import SHM_DIR, numpy_to_tensor, tensor_to_numpy
from modelyard.runtime.cli import add_address_argument
from modelyard.runtime.client import ModelClient, token_from
from modelyard.runtime.render import overlay_masks
from modelyard.v1 import medsam_pb2, medsam_pb2_grpc, types_pb2

_INTENSITY = {"auto": medsam_pb2.INTENSITY_AUTO, "ct": medsam_pb2.INTENSITY_CT, "mr": medsam_pb2.INTENSITY_MR}


class MedSAMClient(ModelClient):
    service = "modelyard.v1.MedSAM"
    stub_class = medsam_pb2_grpc.MedSAMStub

    def segment(
        self,
        image: np.ndarray | bytes,
        boxes: list[tuple[float, float, float, float]],
        intensity: str = "auto",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Masks (N,H,W) uint8 and scores (N,) for one image (an array, or PNG/JPEG bytes)."""
        msg = (
            types_pb2.Image(encoded=image)
            if isinstance(image, bytes)
            else types_pb2.Image(array=numpy_to_tensor(image))
        )
        item = medsam_pb2.SegmentItem(
            image=msg, boxes=[types_pb2.BoxXYXY(x1=b[0], y1=b[1], x2=b[2], y2=b[3]) for b in boxes],
            intensity=_INTENSITY[intensity],
        )  # fmt: skip
        response = self.call(lambda medsam: medsam.Segment, medsam_pb2.SegmentRequest(items=[item]))
        result = response.results[0]
        return tensor_to_numpy(result.masks, SHM_DIR), np.array(result.scores, np.float32)


def _box(text: str) -> tuple[float, float, float, float]:
    try:
        x1, y1, x2, y2 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"box '{text}' is not x1,y1,x2,y2") from None
    return x1, y1, x2, y2


def segment_command(args: argparse.Namespace) -> int:
    data = Path(args.image).read_bytes()
    client = MedSAMClient(args.address, token=token_from(args.token_file))
    try:
        masks, scores = client.segment(data, args.box, args.intensity)
    except grpc.RpcError as exc:
        print(f"medsam: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    finally:
        client.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((masks.max(axis=0) * 255).astype(np.uint8)).save(out)
    print(f"mask: {out} ({masks.shape[0]} box(es), scores {', '.join(f'{s:.3f}' for s in scores)})")
    if args.overlay:
        image = np.asarray(Image.open(args.image))
        Image.fromarray(overlay_masks(image, masks, np.array(args.box))).save(args.overlay)
        print(f"overlay: {args.overlay}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    medsam = sub.add_parser("medsam", help="call a MedSAM service")
    actions = medsam.add_subparsers(dest="action", required=True)
    seg = actions.add_parser("segment", help="segment an image inside one or more boxes")
    add_address_argument(seg, "medsam", "MedSAM")
    seg.add_argument("--token-file", help="the service's token (default: $MODELYARD_SERVICE_TOKEN_FILE)")
    seg.add_argument("--image", required=True, help="PNG/JPEG/TIFF file")
    seg.add_argument("--box", type=_box, action="append", required=True, help="x1,y1,x2,y2 in pixels (repeatable)")
    seg.add_argument("--intensity", choices=sorted(_INTENSITY), default="auto")
    seg.add_argument("--out", required=True, help="mask PNG (union of all boxes' masks)")
    seg.add_argument("--overlay", help="also write the image with masks and boxes drawn")
    seg.set_defaults(func=segment_command)
