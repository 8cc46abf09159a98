"""TAPIP3D under fuzz: Track and TrackStream with any clip (inline arrays or a reference), queries, options and
outputs; Info."""

from __future__ import annotations

import grpc
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from modelyard.tapip3d import synthetic
from modelyard.v1 import tapip3d_pb2 as pb
from modelyard.v1 import tapip3d_pb2_grpc, types_pb2
from tests.fuzz import strategies as fz
from tests.fuzz.conftest import GOOD_CLIPS
from tests.fuzz.support import Target, fuzz

SCENE = synthetic.make_scene(width=40, height=32, frames=6, seed=0)
PARTS = {"video": SCENE.video, "depths": SCENE.depths, "intrinsics": SCENE.intrinsics, "extrinsics": SCENE.extrinsics}
SHAPES = {"video": (6, 32, 40, 3), "depths": (6, 32, 40), "intrinsics": (3, 3), "extrinsics": (4, 4)}


def stub(target: Target) -> tapip3d_pb2_grpc.TAPIP3DStub:
    return tapip3d_pb2_grpc.TAPIP3DStub(target.channel)


@st.composite
def clips(draw: st.DrawFn, regions: list[str]) -> pb.RGBDSequence:
    """The scene's arrays, each kept, left out, or replaced by an array of another shape, dtype or content."""
    clip = pb.RGBDSequence()
    for name, array in PARTS.items():
        what = draw(st.sampled_from(["keep", "keep", "keep", "keep", "drop", "odd", "near"]))
        if what == "keep":
            getattr(clip, name).CopyFrom(fz.inline(array))
        elif what == "near":  # the right shape, any dtype and values (NaN, inf, zeros ...)
            getattr(clip, name).CopyFrom(fz.inline(draw(fz.arrays(st.just(SHAPES[name])))))
        elif what == "odd":
            shapes = st.lists(st.integers(0, 7), max_size=5).map(tuple)
            getattr(clip, name).CopyFrom(draw(fz.tensors(fz.arrays(shapes), regions)))
    return clip


@st.composite
def valid_clips(draw: st.DrawFn) -> pb.RGBDSequence:
    """A well-formed clip of any geometry within the limits: 1..8 frames from 1x1 pixels, depths with holes,
    any pixel camera (the principal point may lie outside the image), static or moving."""
    t, h = draw(st.integers(1, 8)), draw(st.integers(1, 40))
    w = draw(st.integers(1, min(60, 4000 // h)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    depths = rng.uniform(0.2, 10, (t, h, w)).astype(np.float32)
    depths[rng.random((t, h, w)) < draw(st.sampled_from([0.0, 0.3, 1.0]))] = draw(st.sampled_from([0.0, np.nan, -1.0]))
    f = draw(st.floats(0.5, 1000))
    k = np.array([[f, 0, draw(st.floats(-50, 100))], [0, f, draw(st.floats(-50, 100))], [0, 0, 1]])
    extrinsics = np.repeat(np.eye(4)[None], t, axis=0)
    extrinsics[:, :3, 3] = rng.normal(0, draw(st.sampled_from([0.0, 0.1, 100.0])), (t, 3))
    return pb.RGBDSequence(
        video=fz.inline(rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)),
        depths=fz.inline(depths),
        intrinsics=fz.inline(k),
        extrinsics=fz.inline(extrinsics),
    )


@st.composite
def track_requests(draw: st.DrawFn, regions: list[str]) -> pb.TrackRequest:
    request = pb.TrackRequest()
    source = draw(st.sampled_from(["ref", "ref", "clip", "clip", "valid", "valid", "none"]))
    if source == "ref":
        request.sequence.path = draw(fz.mostly(st.just("clips/clip.npz"), fz.data_refs(GOOD_CLIPS), weight=2))
    elif source == "clip":
        request.clip.CopyFrom(draw(clips(regions)))
    elif source == "valid":
        request.clip.CopyFrom(draw(valid_clips()))
    queries = draw(st.sampled_from(["none", "grid", "pixel", "world"]))
    points = st.integers(1, 8).map(lambda n: (n,))
    if queries == "grid":
        request.grid_size = draw(fz.mostly(st.integers(1, 8), fz.uint32s))
    elif queries == "pixel":
        good = st.tuples(st.integers(0, 5), st.floats(0, 39), st.floats(0, 31)).map(list)
        rows = st.lists(good, min_size=1, max_size=8).map(lambda r: fz.inline(np.array(r, np.float32)))
        odd = fz.tensors(
            fz.arrays(points.map(lambda n: (n[0], 3)) | st.lists(st.integers(0, 5), max_size=3).map(tuple)), regions
        )
        request.pixel_queries.CopyFrom(draw(fz.mostly(rows, odd)))
    elif queries == "world":
        shapes = st.one_of(points.map(lambda n: (n[0], 4)), st.lists(st.integers(0, 5), max_size=3).map(tuple))
        request.world_queries.CopyFrom(draw(fz.tensors(fz.arrays(shapes), regions)))
    request.grid_frame = draw(fz.mostly(st.integers(0, 5), fz.uint32s))
    request.frame = draw(fz.mostly(st.sampled_from([0, 1]), fz.enum_values))
    request.visibility_threshold = draw(fz.mostly(st.just(0.0), fz.floats))
    request.resolution_factor = draw(fz.mostly(st.just(0.0), fz.floats))
    request.iterations = draw(fz.mostly(st.integers(0, 10), fz.uint32s))
    if draw(st.booleans()):
        request.output.path = draw(
            fz.mostly(st.sampled_from(["results/a.npz", "results/b.result.npz"]), fz.data_refs(["clips/out.npz"]))
        )
        request.output_without_video = draw(st.booleans())
    if draw(st.booleans()):
        request.output_region.CopyFrom(draw(fz.output_regions(regions)))
    return request


@given(data=st.data())
@fuzz(60)
def test_track_answers_any_request_cleanly(tapip3d: Target, regions: list[str], data) -> None:
    response = tapip3d.call(stub(tapip3d).Track, data.draw(track_requests(regions)))
    if not isinstance(response, grpc.RpcError):
        assert response.num_points >= 1 and (response.HasField("tracks") or response.result.path)


@given(data=st.data())
@fuzz(25)
def test_track_stream_answers_any_request_cleanly(tapip3d: Target, regions: list[str], data) -> None:
    events = tapip3d.stream(stub(tapip3d).TrackStream, data.draw(track_requests(regions)))
    if not isinstance(events, grpc.RpcError):
        assert events and events[-1].HasField("result")


@given(probe=fz.region_names(()), token=st.binary(max_size=32))
@fuzz(10)
def test_info_answers_any_probe_cleanly(tapip3d: Target, probe: str, token: bytes) -> None:
    tapip3d.call(stub(tapip3d).Info, types_pb2.InfoRequest(shared_memory_probe=probe, shared_memory_token=token))


def test_after_the_fuzz_tapip3d_still_tracks(tapip3d: Target) -> None:
    response = tapip3d.call(stub(tapip3d).Track, pb.TrackRequest(sequence=types_pb2.DataRef(path="clips/clip.npz")))
    assert not isinstance(response, grpc.RpcError) and response.num_frames == 6


def test_an_npz_bomb_is_refused_from_its_header(tapip3d: Target) -> None:
    answer = tapip3d.call(stub(tapip3d).Track, pb.TrackRequest(sequence=types_pb2.DataRef(path="bomb.npz")))
    assert isinstance(answer, grpc.RpcError) and answer.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "3000x3000 are 9000000 pixels, over this service's limit of 4000" in answer.details()
