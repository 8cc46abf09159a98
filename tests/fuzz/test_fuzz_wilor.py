"""WiLoR under fuzz (its own environment): Detect with any images, given hands, sequences and options; Info."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelyard.v1 import types_pb2, wilor_pb2, wilor_pb2_grpc
from tests.fuzz import strategies as fz
from tests.fuzz.conftest import GOOD_CLIPS, GOOD_IMAGES
from tests.fuzz.support import Target, fuzz

LIMIT = 8  # model.max_frames in the fuzz config
sides = fz.mostly(st.sampled_from([wilor_pb2.HAND_SIDE_LEFT, wilor_pb2.HAND_SIDE_RIGHT]), fz.enum_values)


def stub(target: Target) -> wilor_pb2_grpc.WiLoRStub:
    return wilor_pb2_grpc.WiLoRStub(target.channel)


@st.composite
def options(draw: st.DrawFn) -> wilor_pb2.DetectOptions:
    fields = {
        "detection_confidence": fz.mostly(st.floats(0.125, 1, width=32), fz.floats),
        "max_hands": fz.mostly(st.integers(1, 4), fz.int32s),
        "rescale_factor": fz.mostly(st.floats(1, 10, width=32), fz.floats),
        "focal_length": fz.mostly(st.floats(1, 5000, width=32), fz.floats),
        "skip_vertices": st.booleans(),
    }
    chosen = draw(st.sets(st.sampled_from(sorted(fields)), max_size=3))
    return wilor_pb2.DetectOptions(**{name: draw(fields[name]) for name in chosen})


@st.composite
def sized_items(draw: st.DrawFn) -> wilor_pb2.DetectItem:
    """A valid image of any size from 1x1, with given hands inside it or none."""
    image, height, width = draw(fz.sized_images())
    hand = st.builds(wilor_pb2.GivenHand, box=fz.boxes_inside(height, width), side=sides)
    return wilor_pb2.DetectItem(image=image, hands=draw(st.lists(hand, max_size=2)))


@st.composite
def detect_requests(draw: st.DrawFn, regions: list[str]) -> wilor_pb2.DetectRequest:
    request = wilor_pb2.DetectRequest(options=draw(options()))
    source = draw(st.sampled_from(["images", "images", "sequence", "both", "none"]))
    if source in ("images", "both"):
        hands = st.lists(st.builds(wilor_pb2.GivenHand, box=fz.boxes(40), side=sides), max_size=2)
        item = st.builds(
            wilor_pb2.DetectItem, image=fz.images(GOOD_IMAGES, regions), hands=fz.mostly(st.just([]), hands, 2)
        )
        count = draw(fz.counts(3))
        request.images.extend(draw(st.lists(st.one_of(item, sized_items()), min_size=count, max_size=count)))
    if source in ("sequence", "both"):
        small = fz.mostly(st.integers(0, 4), fz.uint32s)
        request.sequence.CopyFrom(
            wilor_pb2.FrameSequence(
                ref=types_pb2.DataRef(path=draw(fz.data_refs(GOOD_CLIPS))),
                start=draw(small), count=draw(small), step=draw(small),
            )
        )  # fmt: skip
    return request


@given(data=st.data())
@fuzz(50)
def test_detect_answers_any_request_cleanly(wilor: Target, regions: list[str], data) -> None:
    request = data.draw(detect_requests(regions))
    response = wilor.call(stub(wilor).Detect, request)
    if not isinstance(response, grpc.RpcError) and request.images:
        assert len(response.results) == len(request.images)


@given(probe=fz.region_names(()), token=st.binary(max_size=32))
@fuzz(10)
def test_info_answers_any_probe_cleanly(wilor: Target, probe: str, token: bytes) -> None:
    wilor.call(stub(wilor).Info, types_pb2.InfoRequest(shared_memory_probe=probe, shared_memory_token=token))


def test_after_the_fuzz_wilor_still_detects(wilor: Target) -> None:
    request = wilor_pb2.DetectRequest(sequence=wilor_pb2.FrameSequence(ref=types_pb2.DataRef(path="clips/frames")))
    response = wilor.call(stub(wilor).Detect, request)
    assert not isinstance(response, grpc.RpcError) and len(response.results) == 3


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("clips/leaky_frames", "escapes the data volume"),
        ("clips/deep/er", "escapes the data volume"),
        ("clips/fifo_frames", "not a regular file"),
        ("bomb.npz", "3000x3000 frames are over the limit of 20000 pixels"),
    ],
)
def test_a_sequence_with_frames_out_a_fifo_or_a_bomb_is_refused(wilor: Target, ref: str, message: str) -> None:
    request = wilor_pb2.DetectRequest(sequence=wilor_pb2.FrameSequence(ref=types_pb2.DataRef(path=ref)))
    answer = wilor.call(stub(wilor).Detect, request)
    assert isinstance(answer, grpc.RpcError) and answer.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in answer.details()
