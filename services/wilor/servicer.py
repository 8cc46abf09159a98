"""modelyard.v1.WiLoR over gRPC: images or a frame sequence in, validated queries to the model host, hands out."""

from __future__ import annotations

import math

import grpc
import numpy as np

from modelyard.runtime.arrays import check_box, decode_image, guard_decoding, numpy_to_tensor
from modelyard.runtime.budget import RequestBudget
from modelyard.runtime.devices import MIB
from modelyard.runtime.errors import InvalidInput
from modelyard.runtime.frames import read_frames
from modelyard.runtime.host import ModelHost
from modelyard.v1 import types_pb2, wilor_pb2, wilor_pb2_grpc
from modelyard.wilor.config import WiLoRConfig
from modelyard.wilor.conversions import to_rgb_uint8
from modelyard.wilor.hands import Hand, Options, Query
from modelyard.wilor.model import WiLoRAdapter

SIDES = {wilor_pb2.HAND_SIDE_LEFT: False, wilor_pb2.HAND_SIDE_RIGHT: True}


def parse_options(msg: wilor_pb2.DetectOptions, config: WiLoRConfig) -> Options:
    """Request options with the config's defaults, or InvalidInput naming the option and its allowed range."""

    def real(name: str, low: float, high: float, low_open: bool = True) -> float | None:
        if not msg.HasField(name):  # type: ignore[arg-type]
            return None
        value = float(getattr(msg, name))
        below = value <= low if low_open else value < low
        if not math.isfinite(value) or below or value > high:
            bracket = "(" if low_open else "["
            raise InvalidInput(f"options.{name} must be within {bracket}{low:g}, {high:g}], got {value:g}")
        return value

    confidence = real("detection_confidence", 0.0, 1.0)
    rescale = real("rescale_factor", 1.0, 10.0, low_open=False)
    focal = real("focal_length", 0.0, 1e7)
    max_hands = config.max_hands
    if msg.HasField("max_hands"):
        max_hands = msg.max_hands
        if not 1 <= max_hands <= config.max_hands_limit:
            raise InvalidInput(
                f"options.max_hands must be within [1, {config.max_hands_limit}] (model.max_hands_limit), "
                f"got {max_hands}"
            )
    return Options(
        detection_confidence=config.detection_confidence if confidence is None else confidence,
        max_hands=max_hands,
        rescale_factor=config.rescale_factor if rescale is None else rescale,
        focal_length=focal,
        skip_vertices=msg.skip_vertices,
        flat_hand_mean=msg.flat_hand_mean if msg.HasField("flat_hand_mean") else config.flat_hand_mean,
    )


def parse_given_hands(
    msgs: list[wilor_pb2.GivenHand], height: int, width: int, limit: int, what: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """Given hands as boxes (N,4) and sides (N,), None when there are none, or InvalidInput saying which is wrong."""
    if not msgs:
        return None
    if len(msgs) > limit:
        raise InvalidInput(f"{what}: {len(msgs)} given hands, over the limit of {limit} (model.max_hands_limit)")
    boxes = np.array([[h.box.x1, h.box.y1, h.box.x2, h.box.y2] for h in msgs], np.float64)
    sides = []
    for i, (hand, box) in enumerate(zip(msgs, boxes, strict=True)):
        if not hand.HasField("box"):
            raise InvalidInput(f"{what} hand {i}: no box; give x1, y1, x2, y2 in pixels")
        check_box(box, height, width, f"{what} hand {i} box")
        if hand.side not in SIDES:
            raise InvalidInput(f"{what} hand {i}: side is unspecified; give HAND_SIDE_LEFT or HAND_SIDE_RIGHT")
        sides.append(SIDES[hand.side])
    return boxes, np.array(sides, bool)


def hand_message(hand: Hand) -> wilor_pb2.Hand:
    x1, y1, x2, y2 = (float(v) for v in hand.box)
    msg = wilor_pb2.Hand(
        box=types_pb2.BoxXYXY(x1=x1, y1=y1, x2=x2, y2=y2),
        side=wilor_pb2.HAND_SIDE_RIGHT if hand.is_right else wilor_pb2.HAND_SIDE_LEFT,
        keypoints_2d=numpy_to_tensor(hand.keypoints_2d),
        keypoints_3d=numpy_to_tensor(hand.keypoints_3d),
        camera_translation=numpy_to_tensor(hand.camera_translation),
        focal_length=hand.focal_length,
    )
    if hand.score is not None:
        msg.score = hand.score
    if hand.side_score is not None:
        msg.side_score = hand.side_score
    if hand.given_index is not None:
        msg.given_index = hand.given_index
    for name in ("global_orient", "hand_pose", "betas", "vertices"):
        value = getattr(hand, name)
        if value is not None:
            getattr(msg, name).CopyFrom(numpy_to_tensor(value))
    return msg


class WiLoRServicer(wilor_pb2_grpc.WiLoRServicer):
    def __init__(self, host: ModelHost) -> None:
        self.host = host
        self.config: WiLoRConfig = host.config.model
        guard_decoding(self.config.max_pixels)

    def _images(
        self, request: wilor_pb2.DetectRequest, options: Options, context: grpc.ServicerContext
    ) -> tuple[list[Query], list[int], int]:
        runtime = self.host.runtime
        cfg = self.config
        budget = RequestBudget(cfg.max_frames, cfg.max_request_pixels, context, items_key="model.max_frames")
        if request.images and request.HasField("sequence"):
            raise InvalidInput("send either images or a sequence, not both")
        if request.HasField("sequence"):
            seq = request.sequence
            window = read_frames(
                runtime.data_root,
                seq.ref.path,
                seq.start,
                seq.count,
                seq.step or 1,
                cfg.max_frames,
                cfg.max_pixels,
                budget,
                runtime.max_file_mb * MIB,
            )
            queries = [
                Query(to_rgb_uint8(frame, f"sequence frame {index}"), options)
                for frame, index in zip(window.frames, window.indices, strict=True)
            ]
            return queries, window.indices, window.total
        if not request.images:
            raise InvalidInput("the request holds no images: send images (DetectItem) or a sequence (DataRef)")
        budget.count(len(request.images), "images")
        queries = []
        for index, item in enumerate(request.images):
            what = f"image {index}"
            shm, root = runtime.shared_memory_dir, runtime.data_root
            image = decode_image(item.image, shm, root, cfg.max_pixels, what, budget, runtime.max_file_mb * MIB)
            image = to_rgb_uint8(image, what)
            given = parse_given_hands(list(item.hands), image.shape[0], image.shape[1], cfg.max_hands_limit, what)
            query = Query(image, options)
            if given is not None:
                query.boxes, query.is_right = given
            queries.append(query)
        return queries, list(range(len(queries))), 0

    def Detect(self, request: wilor_pb2.DetectRequest, context: grpc.ServicerContext) -> wilor_pb2.DetectResponse:
        options = parse_options(request.options, self.config)
        queries, indices, total = self._images(request, options, context)
        results = self.host.run(queries, context)
        adapter = self.host.adapter
        response = wilor_pb2.DetectResponse(
            results=[
                wilor_pb2.ImageHands(
                    hands=[hand_message(h) for h in hands], frame_index=index, width=q.width, height=q.height
                )
                for q, index, hands in zip(queries, indices, results, strict=True)
            ],
            filled_fields=adapter.filled_fields if isinstance(adapter, WiLoRAdapter) else (),
            backend=self.config.backend,
            sequence_frames=total,
        )
        limit = self.host.runtime.max_message_mb * MIB
        if response.ByteSize() > limit:
            raise InvalidInput(
                f"the answer is {response.ByteSize() / MIB:.1f} MiB, over the {limit // MIB} MiB message limit: ask "
                "for fewer frames per call (sequence.count), set options.skip_vertices, or raise "
                "runtime.max_message_mb"
            )
        return response

    def Info(self, request: types_pb2.InfoRequest, context: grpc.ServicerContext) -> types_pb2.ModelInfo:
        return self.host.info(request)
