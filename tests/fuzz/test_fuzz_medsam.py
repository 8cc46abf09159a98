"""MedSAM under fuzz: Segment with any images (bytes, arrays, references), boxes, intensities and windows; Info."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelyard.v1 import medsam_pb2, medsam_pb2_grpc, types_pb2
from tests.fuzz import strategies as fz
from tests.fuzz.conftest import GOOD_IMAGES
from tests.fuzz.support import Target, fuzz


@st.composite
def segment_items(draw: st.DrawFn, regions: list[str]) -> medsam_pb2.SegmentItem:
    box = fz.mostly(st.builds(types_pb2.BoxXYXY, x1=st.just(1.0), y1=st.just(2.0), x2=st.just(7.0), y2=st.just(8.0)),
                    fz.boxes(48))  # fmt: skip
    count = draw(fz.counts(4))
    return medsam_pb2.SegmentItem(
        image=draw(fz.images(GOOD_IMAGES, regions)),
        boxes=draw(st.lists(box, min_size=count, max_size=count)),
        intensity=draw(fz.mostly(st.sampled_from(list(medsam_pb2.Intensity.values())), fz.enum_values)),
        ct_window_level=draw(fz.mostly(st.just(0.0), fz.floats)),
        ct_window_width=draw(fz.mostly(st.just(0.0), fz.floats)),
    )


@st.composite
def sized_items(draw: st.DrawFn) -> medsam_pb2.SegmentItem:
    """A valid image of any size from 1x1, with boxes inside it (possibly zero-width ones)."""
    image, height, width = draw(fz.sized_images())
    count = draw(fz.counts(4))
    boxes = draw(st.lists(fz.boxes_inside(height, width), min_size=count, max_size=count))
    return medsam_pb2.SegmentItem(image=image, boxes=boxes, intensity=draw(st.sampled_from([0, 1, 2])))


@given(data=st.data())
@fuzz(60)
def test_segment_answers_any_request_cleanly(medsam: Target, regions: list[str], data) -> None:
    count = data.draw(fz.counts(3))
    items = st.one_of(segment_items(regions), sized_items())
    request = medsam_pb2.SegmentRequest(items=data.draw(st.lists(items, min_size=count, max_size=count)))
    if data.draw(st.booleans()):
        request.output_region.CopyFrom(data.draw(fz.output_regions(regions)))
    response = medsam.call(medsam_pb2_grpc.MedSAMStub(medsam.channel).Segment, request)
    if not isinstance(response, grpc.RpcError):  # an answer: one result per item, one mask per box
        assert len(response.results) == len(request.items)
        for item, result in zip(request.items, response.results, strict=True):
            assert len(result.scores) == len(item.boxes)


@given(probe=fz.region_names(()), token=st.binary(max_size=32))
@fuzz(10)
def test_info_answers_any_probe_cleanly(medsam: Target, probe: str, token: bytes) -> None:
    request = types_pb2.InfoRequest(shared_memory_probe=probe, shared_memory_token=token)
    medsam.call(medsam_pb2_grpc.MedSAMStub(medsam.channel).Info, request)


def grey_item(**fields: float) -> medsam_pb2.SegmentItem:
    return medsam_pb2.SegmentItem(
        image=types_pb2.Image(ref=types_pb2.DataRef(path="images/grey.png")),
        boxes=[types_pb2.BoxXYXY(x1=4, y1=4, x2=30, y2=20)],
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"intensity": 7}, "unknown intensity 7"),
        ({"intensity": medsam_pb2.INTENSITY_CT, "ct_window_width": -400}, "needs a finite level and a positive"),
        ({"intensity": medsam_pb2.INTENSITY_CT, "ct_window_width": float("inf")}, "positive finite width"),
        ({"intensity": medsam_pb2.INTENSITY_CT, "ct_window_level": float("nan")}, "needs a finite level"),
    ],
)
def test_an_unknown_intensity_or_a_ct_window_that_is_no_window_is_refused(
    medsam: Target, fields: dict, message: str
) -> None:
    # found by the fuzz: these were taken silently (as AUTO, or as a window giving garbage masks)
    answer = medsam.call(
        medsam_pb2_grpc.MedSAMStub(medsam.channel).Segment, medsam_pb2.SegmentRequest(items=[grey_item(**fields)])
    )
    assert isinstance(answer, grpc.RpcError) and answer.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in answer.details()


def test_after_the_fuzz_medsam_still_segments(medsam: Target) -> None:
    request = medsam_pb2.SegmentRequest(items=[grey_item()])
    response = medsam.call(medsam_pb2_grpc.MedSAMStub(medsam.channel).Segment, request)
    assert tuple(response.results[0].masks.inline.shape) == (1, 32, 40)


@given(count=st.integers(5, 400))
@fuzz(10)
def test_more_items_than_the_cap_are_refused_before_any_is_prepared(medsam: Target, count: int) -> None:
    answer = medsam.call(
        medsam_pb2_grpc.MedSAMStub(medsam.channel).Segment, medsam_pb2.SegmentRequest(items=[grey_item()] * count)
    )
    assert isinstance(answer, grpc.RpcError) and answer.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{count} items in one request, over the limit of 4" in answer.details()
    assert "model.max_items_per_request" in answer.details()


def test_items_past_the_request_pixel_budget_are_refused_naming_it(medsam: Target) -> None:
    # three arrays of 20 000 pixels each: within the item cap (4) and max_pixels, over the 40 000-pixel budget
    array = types_pb2.Image(array=fz.inline(np.zeros((100, 200), np.uint8)))
    item = medsam_pb2.SegmentItem(image=array, boxes=[types_pb2.BoxXYXY(x1=4, y1=4, x2=30, y2=20)])
    answer = medsam.call(
        medsam_pb2_grpc.MedSAMStub(medsam.channel).Segment, medsam_pb2.SegmentRequest(items=[item] * 3)
    )
    assert isinstance(answer, grpc.RpcError) and answer.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "item 2: the request's items add up to over 40000 pixels" in answer.details()
    assert "model.max_request_pixels" in answer.details()


@pytest.mark.parametrize("ref", ["bomb.png", "link_outside.png", "fifo.png"])
def test_an_image_reference_to_a_bomb_a_link_out_or_a_fifo_is_refused(medsam: Target, ref: str) -> None:
    item = medsam_pb2.SegmentItem(
        image=types_pb2.Image(ref=types_pb2.DataRef(path=ref)), boxes=[types_pb2.BoxXYXY(x1=4, y1=4, x2=30, y2=20)]
    )
    answer = medsam.call(medsam_pb2_grpc.MedSAMStub(medsam.channel).Segment, medsam_pb2.SegmentRequest(items=[item]))
    assert isinstance(answer, grpc.RpcError) and answer.code() == grpc.StatusCode.INVALID_ARGUMENT
