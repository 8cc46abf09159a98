"""Calling WiLoR: a small Python client and the `modelyard wilor detect` command (hands as JSON, an overlay)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from PIL import Image

from modelyard.runtime.arrays import numpy_to_tensor, tensor_to_numpy
from modelyard.runtime.cli import add_address_argument
from modelyard.runtime.client import ModelClient, token_from
from modelyard.runtime.render import draw_skeletons
from modelyard.v1 import types_pb2, wilor_pb2, wilor_pb2_grpc
from modelyard.wilor.hands import BONES, JOINT_NAMES, Hand

_NO_SHM = Path("/nonexistent")  # answers come inline
LEFT_COLOR, RIGHT_COLOR = (255, 64, 64), (64, 160, 255)


def hand_from_message(msg: wilor_pb2.Hand) -> Hand:
    """A Hand message as the dataclass the backends return (absent fields stay None)."""

    def array(name: str) -> np.ndarray | None:
        return tensor_to_numpy(getattr(msg, name), _NO_SHM, name) if msg.HasField(name) else None  # type: ignore[arg-type]

    return Hand(
        box=np.array([msg.box.x1, msg.box.y1, msg.box.x2, msg.box.y2], np.float32),
        is_right=msg.side == wilor_pb2.HAND_SIDE_RIGHT,
        keypoints_2d=tensor_to_numpy(msg.keypoints_2d, _NO_SHM, "keypoints_2d"),
        keypoints_3d=tensor_to_numpy(msg.keypoints_3d, _NO_SHM, "keypoints_3d"),
        camera_translation=tensor_to_numpy(msg.camera_translation, _NO_SHM, "camera_translation"),
        focal_length=msg.focal_length,
        score=msg.score if msg.HasField("score") else None,
        side_score=msg.side_score if msg.HasField("side_score") else None,
        global_orient=array("global_orient"),
        hand_pose=array("hand_pose"),
        betas=array("betas"),
        vertices=array("vertices"),
        given_index=msg.given_index if msg.HasField("given_index") else None,
    )


def hand_to_json(hand: Hand) -> dict[str, Any]:
    """A Hand as plain JSON values: arrays as nested lists, side as "left"/"right", absent fields left out."""
    out: dict[str, Any] = {}
    for f in fields(hand):
        value = getattr(hand, f.name)
        if value is None:
            continue
        if f.name == "is_right":
            out["side"] = "right" if value else "left"
        else:
            out[f.name] = value.tolist() if isinstance(value, np.ndarray) else value
    return out


def options_message(
    detection_confidence: float | None = None,
    max_hands: int | None = None,
    rescale_factor: float | None = None,
    focal_length: float | None = None,
    skip_vertices: bool = False,
    flat_hand_mean: bool | None = None,
) -> wilor_pb2.DetectOptions:
    msg = wilor_pb2.DetectOptions(skip_vertices=skip_vertices)
    if detection_confidence is not None:
        msg.detection_confidence = detection_confidence
    if max_hands is not None:
        msg.max_hands = max_hands
    if rescale_factor is not None:
        msg.rescale_factor = rescale_factor
    if focal_length is not None:
        msg.focal_length = focal_length
    if flat_hand_mean is not None:
        msg.flat_hand_mean = flat_hand_mean
    return msg


class WiLoRClient(ModelClient):
    service = "modelyard.v1.WiLoR"
    stub_class = wilor_pb2_grpc.WiLoRStub
    default_timeout = 600.0

    def detect(
        self,
        images: list[np.ndarray | bytes],
        given: list[list[tuple[tuple[float, float, float, float], bool]] | None] | None = None,
        **options: Any,
    ) -> list[list[Hand]]:
        """Hands per image (arrays (H,W[,C]) uint8 RGB, or PNG/JPEG bytes). `given[i]`: the image's hands as
        (box xyxy, is_right) to skip detection. Options: detection_confidence, max_hands, rescale_factor,
        focal_length, skip_vertices, flat_hand_mean."""
        items = []
        for i, image in enumerate(images):
            msg = (
                types_pb2.Image(encoded=image)
                if isinstance(image, bytes)
                else types_pb2.Image(array=numpy_to_tensor(image))
            )
            hands = [
                wilor_pb2.GivenHand(
                    box=types_pb2.BoxXYXY(x1=b[0], y1=b[1], x2=b[2], y2=b[3]),
                    side=wilor_pb2.HAND_SIDE_RIGHT if right else wilor_pb2.HAND_SIDE_LEFT,
                )
                for b, right in ((given[i] if given else None) or [])
            ]
            items.append(wilor_pb2.DetectItem(image=msg, hands=hands))
        response = self.send(wilor_pb2.DetectRequest(images=items, options=options_message(**options)))
        return [[hand_from_message(h) for h in result.hands] for result in response.results]

    def detect_sequence(
        self, ref: str, start: int = 0, count: int = 0, step: int = 1, **options: Any
    ) -> wilor_pb2.DetectResponse:
        """Hands in the frames of a sequence on the service's data volume (see FrameSequence)."""
        sequence = wilor_pb2.FrameSequence(ref=types_pb2.DataRef(path=ref), start=start, count=count, step=step)
        return self.send(wilor_pb2.DetectRequest(sequence=sequence, options=options_message(**options)))

    def send(self, request: wilor_pb2.DetectRequest) -> wilor_pb2.DetectResponse:
        return self.call(lambda wilor: wilor.Detect, request)


def overlay_hands(image: np.ndarray, hands: list[Hand]) -> np.ndarray:
    """The image with each hand's skeleton and box drawn (left hands red, right hands blue)."""
    return draw_skeletons(
        image,
        [h.keypoints_2d for h in hands],
        BONES,
        boxes=[h.box for h in hands],
        colors=[RIGHT_COLOR if h.is_right else LEFT_COLOR for h in hands],
    )


def detect_command(args: argparse.Namespace) -> int:
    options = {
        "detection_confidence": args.confidence,
        "max_hands": args.max_hands,
        "rescale_factor": args.rescale_factor,
        "focal_length": args.focal_length,
        "skip_vertices": args.skip_vertices,
        "flat_hand_mean": False if args.pose_from_hands_mean else None,
    }
    client = WiLoRClient(args.address, token=token_from(args.token_file))
    try:
        if args.sequence:
            response = client.detect_sequence(args.sequence, args.start, args.count, args.step, **options)
            results = [(r.frame_index, [hand_from_message(h) for h in r.hands]) for r in response.results]
            filled = list(response.filled_fields)
        else:
            per_image = client.detect([Path(p).read_bytes() for p in args.image], **options)
            results = list(enumerate(per_image))
            filled = []
    except grpc.RpcError as exc:
        print(f"wilor: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    finally:
        client.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "joint_order": list(JOINT_NAMES),
        "filled_fields": filled,
        "images": [
            {"index": index, "source": args.sequence or args.image[index], "hands": [hand_to_json(h) for h in hands]}
            for index, hands in results
        ],
    }
    out.write_text(json.dumps(document, indent=1))
    count = sum(len(hands) for _, hands in results)
    print(f"hands: {out} ({count} hand(s) in {len(results)} image(s))")
    if args.overlay and not args.sequence:
        folder = Path(args.overlay)
        folder.mkdir(parents=True, exist_ok=True)
        for index, hands in results:
            source = Path(args.image[index])
            image = np.asarray(Image.open(source).convert("RGB"))
            Image.fromarray(overlay_hands(image, hands)).save(folder / f"{source.stem}.png")
        print(f"overlays: {folder}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    wilor = sub.add_parser("wilor", help="call a WiLoR service")
    actions = wilor.add_subparsers(dest="action", required=True)
    detect = actions.add_parser("detect", help="hands in images or a frame sequence, written as JSON")
    add_address_argument(detect, "wilor", "WiLoR")
    detect.add_argument("--token-file", help="the service's token (default: $MODELYARD_SERVICE_TOKEN_FILE)")
    source = detect.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", action="append", help="PNG/JPEG file (repeatable)")
    source.add_argument("--sequence", help="frames on the service's data volume (folder, video, .npy, .npz)")
    detect.add_argument("--start", type=int, default=0, help="first frame of the sequence")
    detect.add_argument("--count", type=int, default=0, help="frames to take (0 = to the end)")
    detect.add_argument("--step", type=int, default=1, help="take every step-th frame")
    detect.add_argument("--confidence", type=float, help="detector confidence threshold (service default: 0.3)")
    detect.add_argument("--max-hands", type=int, help="hands per image")
    detect.add_argument("--rescale-factor", type=float, help="crop enlargement of the hand box")
    detect.add_argument("--focal-length", type=float, help="camera focal length in pixels")
    detect.add_argument("--skip-vertices", action="store_true", help="leave the MANO mesh out")
    detect.add_argument(
        "--pose-from-hands-mean",
        action="store_true",
        help="hand_pose for a MANO that adds hands_mean (flat_hand_mean=False) instead of from the flat hand",
    )
    detect.add_argument("--out", required=True, help="JSON file of the hands")
    detect.add_argument("--overlay", help="folder for images with the hands drawn (images only)")
    detect.set_defaults(func=detect_command)
