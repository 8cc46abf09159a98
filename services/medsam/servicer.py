"""modelyard.v1.MedSAM over gRPC: proto messages in, validated arrays to the model host, masks out."""

from __future__ import annotations

import math

import grpc
import numpy as np

from modelyard.medsam.config import MedSAMConfig
from modelyard.medsam.model import SegmentItem
from modelyard.medsam.preprocess import CT_LEVEL, CT_WIDTH, Intensity, resize_normalise, to_rgb_uint8
from modelyard.runtime.arrays import OutputWriter, check_box, decode_image, guard_decoding, numpy_to_tensor
from modelyard.runtime.budget import RequestBudget
from modelyard.runtime.devices import MIB
from modelyard.runtime.errors import InvalidInput
from modelyard.runtime.host import ModelHost
from modelyard.v1 import medsam_pb2, medsam_pb2_grpc, types_pb2

_INTENSITY: dict[int, Intensity] = {
    medsam_pb2.INTENSITY_AUTO: "auto",
    medsam_pb2.INTENSITY_CT: "ct",
    medsam_pb2.INTENSITY_MR: "mr",
}
_ACCEPTED_DTYPES = {"uint8", "uint16", "int16", "int32", "float16", "float32", "float64"}


def validate_boxes(msgs: list[types_pb2.BoxXYXY], height: int, width: int, limit: int, what: str) -> np.ndarray:
    """Boxes as an (N,4) array, or InvalidInput saying which box is wrong and how."""
    if not msgs:
        raise InvalidInput(f"{what}: no box given; MedSAM needs at least one box (x1, y1, x2, y2 in pixels)")
    if len(msgs) > limit:
        raise InvalidInput(
            f"{what}: {len(msgs)} boxes, over the limit of {limit} per image (model.max_boxes_per_image)"
        )
    boxes = np.array([[b.x1, b.y1, b.x2, b.y2] for b in msgs], dtype=np.float64)
    for i, box in enumerate(boxes):
        check_box(box, height, width, f"{what} box {i}")
    return boxes


class MedSAMServicer(medsam_pb2_grpc.MedSAMServicer):
    def __init__(self, host: ModelHost) -> None:
        self.host = host
        self.config: MedSAMConfig = host.config.model
        guard_decoding(self.config.max_pixels)

    def _item(self, index: int, msg: medsam_pb2.SegmentItem, budget: RequestBudget) -> SegmentItem:
        what = f"item {index}"
        if msg.intensity not in _INTENSITY:
            raise InvalidInput(f"{what}: unknown intensity {msg.intensity}; use INTENSITY_AUTO, _CT or _MR (0, 1, 2)")
        level, window = msg.ct_window_level or CT_LEVEL, msg.ct_window_width or CT_WIDTH
        if msg.intensity == medsam_pb2.INTENSITY_CT and not (
            math.isfinite(level) and math.isfinite(window) and window > 0
        ):
            raise InvalidInput(
                f"{what}: the CT window (level {level:g}, width {window:g}) needs a finite level and a positive "
                "finite width in HU; 0 = the default (40, 400)"
            )
        if msg.image.WhichOneof("source") == "array":
            tensor = msg.image.array
            dtype = tensor.inline.dtype or tensor.shared.dtype
            if dtype not in _ACCEPTED_DTYPES:
                raise InvalidInput(f"{what}: dtype {dtype} is not accepted; use uint8, uint16, int16 or float")
        runtime = self.host.runtime
        image = decode_image(
            msg.image,
            runtime.shared_memory_dir,
            runtime.data_root,
            self.config.max_pixels,
            what,
            budget,
            runtime.max_file_mb * MIB,
        )
        height, width = image.shape[:2]
        boxes = validate_boxes(list(msg.boxes), height, width, self.config.max_boxes_per_image, what)
        rgb = to_rgb_uint8(image, _INTENSITY[msg.intensity], level, window)
        budget.check()  # resizing to image_size² is the costly part
        return SegmentItem(resize_normalise(rgb, self.config.arch.image_size), boxes, height, width)

    def Segment(self, request: medsam_pb2.SegmentRequest, context: grpc.ServicerContext) -> medsam_pb2.SegmentResponse:
        if not request.items:
            raise InvalidInput("the request holds no items: send at least one image with its boxes")
        budget = RequestBudget(self.config.max_items_per_request, self.config.max_request_pixels, context)
        budget.count(len(request.items), "items")
        # The output region is checked before any work, so a bad one costs nothing.
        out = OutputWriter.optional(request.output_region, self.host.runtime.shared_memory_dir)
        try:
            items = [self._item(i, msg, budget) for i, msg in enumerate(request.items)]
            results = self.host.run(items, context)
            return medsam_pb2.SegmentResponse(
                results=[
                    medsam_pb2.SegmentResult(masks=numpy_to_tensor(r.masks, out), scores=r.scores.tolist())
                    for r in results
                ]
            )
        finally:
            if out is not None:
                out.close()

    def Info(self, request: types_pb2.InfoRequest, context: grpc.ServicerContext) -> types_pb2.ModelInfo:
        return self.host.info(request)
