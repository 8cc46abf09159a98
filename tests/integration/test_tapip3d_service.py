"""The TAPIP3D service (lift2d backend) on a loopback port, with synthetic RGB-D clips on its data volume."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelyard.runtime.arrays import SHM_DIR, numpy_to_tensor, tensor_to_numpy
from modelyard.runtime.client import SharedMemoryClient
from modelyard.runtime.launch import LocalService
from modelyard.runtime.progress import Progress
from modelyard.tapip3d import geometry, sequence, synthetic
from modelyard.tapip3d.backend import TrackOptions, Tracks
from modelyard.tapip3d.client import TAPIP3DClient, track_request
from modelyard.tapip3d.config import Lift2DConfig
from modelyard.tapip3d.lift2d import Lift2D
from modelyard.v1 import tapip3d_pb2, tapip3d_pb2_grpc, types_pb2
from tests.conftest import write_config

LIFT2D = {"window_px": 11}
LIMITS = sequence.Limits(max_frames=2000, max_points=4096, max_pixels=20_000)


@pytest.fixture(scope="module")
def scene() -> synthetic.Scene:
    return synthetic.make_scene(width=96, height=72, frames=16, seed=0)


@pytest.fixture(scope="module")
def truth(scene: synthetic.Scene) -> synthetic.GroundTruth:
    return scene.sample_queries(24, 0, np.random.default_rng(0))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory, scene: synthetic.Scene, truth: synthetic.GroundTruth) -> Path:
    root = tmp_path_factory.mktemp("data")
    scene.save_npz(root / "clips" / "clip.npz", truth.queries)
    synthetic.make_scene(width=64, height=48, frames=48, seed=1).save_npz(root / "clips" / "long.npz")
    # 1200 frames (a 60-frame clip 20 times over): seconds of work, to cancel
    loop = synthetic.make_scene(width=64, height=48, frames=60, seed=2, occluder=False)
    np.savez(
        root / "clips" / "slow.npz",
        video=np.tile(loop.video, (20, 1, 1, 1)),
        depths=np.tile(loop.depths, (20, 1, 1)),
        intrinsics=loop.intrinsics[0],
    )
    np.savez(root / "too_long.npz", video=np.zeros((2001, 3, 4, 3), np.uint8), depths=np.ones((2001, 3, 4)))
    (root / "notes.txt").write_text("not a clip")
    (root / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(root / "video_only.npz", video=scene.video)
    return root


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[LocalService]:
    folder = tmp_path_factory.mktemp("tapip3d")
    model = {"backend": "lift2d", "lift2d": LIFT2D, "max_frames": 2000, "max_pixels": 20_000}
    # A 1 MiB message limit, so that large results have to go to the data volume.
    config = write_config(folder, model, {"data_root": str(data_root), "max_message_mb": 1}, "tapip3d.yaml")
    with LocalService("tapip3d", config, log_path=folder / "tapip3d.log") as running:
        yield running


@pytest.fixture(scope="module")
def stub(service: LocalService) -> tapip3d_pb2_grpc.TAPIP3DStub:
    return tapip3d_pb2_grpc.TAPIP3DStub(grpc.insecure_channel(service.address))


def in_process(clip: sequence.RGBDClip, queries: np.ndarray, **options: float) -> Tracks:
    return Lift2D(Lift2DConfig(**LIFT2D)).track(clip, queries, TrackOptions(**options), Progress())  # type: ignore[arg-type]


def arrays(response: tapip3d_pb2.TrackResponse) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(tensor_to_numpy(getattr(response, k), SHM_DIR) for k in ("tracks", "visibility", "queries"))  # type: ignore[return-value]


def serving(service: LocalService) -> int:
    with grpc.insecure_channel(service.address) as chan:
        request = health_pb2.HealthCheckRequest(service="modelyard.v1.TAPIP3D")
        return health_pb2_grpc.HealthStub(chan).Check(request, timeout=10).status


def clip_message(scene: synthetic.Scene, **replace: np.ndarray | None) -> tapip3d_pb2.RGBDSequence:
    parts = {
        "video": scene.video,
        "depths": scene.depths,
        "intrinsics": scene.intrinsics[0],
        "extrinsics": scene.extrinsics,
    }
    parts.update(replace)
    return tapip3d_pb2.RGBDSequence(**{k: numpy_to_tensor(v) for k, v in parts.items() if v is not None})


# -- answers ----------------------------------------------------------------------------------------------
def test_track_equals_the_backend_in_process(stub, data_root: Path, truth: synthetic.GroundTruth) -> None:
    response = stub.Track(track_request(sequence="clips/clip.npz"), timeout=60)  # queries: the file's query_point
    tracks, visibility, queries = arrays(response)
    npz = sequence.read_npz(data_root / "clips" / "clip.npz")
    clip = sequence.clip_from_npz(npz, LIMITS)
    expected = in_process(clip, sequence.world_queries(clip, npz["query_point"], LIMITS))
    assert response.backend == "lift2d" and (response.num_frames, response.num_points) == (16, 24)
    assert np.array_equal(tracks, expected.coords) and np.array_equal(visibility, expected.visibs)
    np.testing.assert_allclose(queries, truth.queries, rtol=1e-6)
    # and they are tracks: sub-centimetre where the points are truly seen
    assert np.median(np.linalg.norm(tracks - truth.tracks, axis=-1)[truth.visible]) < 0.01


def test_the_stream_reports_progress_then_the_same_result(stub) -> None:
    request = track_request(sequence="clips/clip.npz", grid_size=8, grid_frame=5)
    events = list(stub.TrackStream(request, timeout=60))
    progress, last = events[:-1], events[-1]
    assert progress and all(e.HasField("progress") for e in progress) and last.HasField("result")
    done = [e.progress.done for e in progress]
    assert done == sorted(done) and done[-1] == progress[-1].progress.total == 10 + 5  # frames 5→15, then 5→0
    single = stub.Track(request, timeout=60)
    assert all(np.array_equal(a, b) for a, b in zip(arrays(last.result), arrays(single), strict=True))


def test_an_inline_clip_with_pixel_queries_equals_the_backend_in_process(
    stub, scene: synthetic.Scene, truth: synthetic.GroundTruth
) -> None:
    request = tapip3d_pb2.TrackRequest(
        clip=clip_message(scene), pixel_queries=numpy_to_tensor(truth.pixels.astype(np.float32)), iterations=20
    )
    tracks, visibility, queries = arrays(stub.Track(request, timeout=60))
    clip = sequence.make_clip(scene.video, scene.depths, scene.intrinsics[0], scene.extrinsics, LIMITS)
    world = sequence.pixel_queries(clip, truth.pixels.astype(np.float32), LIMITS)
    expected = in_process(clip, world, iterations=20)
    assert np.array_equal(tracks, expected.coords) and np.array_equal(visibility, expected.visibs)
    np.testing.assert_allclose(queries, world, rtol=1e-6)


def test_camera_frame_tracks_are_the_world_tracks_seen_from_each_frames_camera(stub, scene: synthetic.Scene) -> None:
    world = stub.Track(track_request(sequence="clips/clip.npz"), timeout=60)
    camera = stub.Track(track_request(sequence="clips/clip.npz", frame="camera"), timeout=60)
    assert camera.frame == tapip3d_pb2.FRAME_CAMERA
    (tw, vw, qw), (tc, vc, qc) = arrays(world), arrays(camera)
    extrinsics = scene.extrinsics.astype(np.float64)
    np.testing.assert_allclose(tc, geometry.world_to_camera(tw, extrinsics), atol=1e-5)
    np.testing.assert_allclose(geometry.camera_to_world(tc, extrinsics), tw, atol=1e-5)
    np.testing.assert_allclose(qc, geometry.queries_to_camera(qw, extrinsics), atol=1e-5)
    assert np.array_equal(vw, vc)


def test_a_result_file_has_tapip3ds_keys_and_the_answers_arrays(stub, data_root: Path) -> None:
    request = track_request(sequence="clips/clip.npz", frame="camera", output="results/clip.result.npz")
    response = stub.Track(request, timeout=60)
    assert response.result.path == "results/clip.result.npz"
    tracks, visibility, _ = arrays(response)  # small enough to come inline as well
    with np.load(data_root / "results" / "clip.result.npz") as data:
        keys = ["coords", "coords_camera", "depths", "extrinsics", "intrinsics", "query_points", "video", "visibs"]
        assert sorted(data.files) == keys
        np.testing.assert_array_equal(data["coords_camera"], tracks)
        np.testing.assert_array_equal(data["visibs"], visibility)
        assert data["video"].shape == (16, 3, 72, 96)  # what TAPIP3D's visualize.py reads


def test_a_result_over_the_message_limit_goes_to_the_data_volume(stub, data_root: Path) -> None:
    # 48 frames x 1764 points is 1.1 MB of answer, over the service's 1 MiB limit.
    response = stub.Track(track_request(sequence="clips/long.npz", grid_size=42), timeout=120)
    assert not response.HasField("tracks") and response.num_points == 42 * 42
    assert response.result.path.startswith("tapip3d-results/") and response.result.path.endswith(".result.npz")
    with np.load(data_root / response.result.path) as data:
        assert data["coords"].shape == (48, 1764, 3) and data["visibs"].shape == (48, 1764)


def test_a_large_result_can_come_back_through_shared_memory_instead(stub) -> None:
    with SharedMemoryClient(stub.Info, SHM_DIR) as shm:
        assert shm.enabled
        request = track_request(sequence="clips/long.npz", grid_size=42)
        request.output_region.CopyFrom(shm.output_region(2 << 20))
        response = stub.Track(request, timeout=120)
        assert response.tracks.WhichOneof("payload") == "shared" and not response.result.path
        assert shm.read(response.tracks).shape == (48, 1764, 3)
        assert shm.read(response.visibility).shape == (48, 1764)


def test_info_names_the_backend_and_limits(stub) -> None:
    info = stub.Info(types_pb2.InfoRequest(), timeout=10)
    assert info.service == "tapip3d" and info.backend == "lift2d" and info.device == "cpu"
    assert info.details["max_frames"] == "2000" and '"window_px": 11' in info.architecture


# -- bad inputs -------------------------------------------------------------------------------------------
def small(**replace: np.ndarray | None) -> tapip3d_pb2.RGBDSequence:
    scene = synthetic.make_scene(width=32, height=24, frames=6, seed=3, occluder=False)
    return clip_message(scene, **replace)


def _bad_inputs() -> dict[str, tuple[Callable[[], tapip3d_pb2.TrackRequest], str]]:
    tiny = synthetic.make_scene(width=32, height=24, frames=6, seed=3, occluder=False)
    zero_depth = tiny.depths.copy()
    zero_depth[0, 10, 12] = 0.0
    nan_depth = tiny.depths.copy()
    nan_depth[0, 10, 12] = np.nan
    singular = np.repeat(np.eye(4)[None], 6, axis=0)
    singular[2, :3, :3] = 0
    nan_extrinsics = tiny.extrinsics.copy()
    nan_extrinsics[1, 0, 3] = np.nan

    def inline(queries: dict | None = None, **replace: np.ndarray | None) -> Callable[[], tapip3d_pb2.TrackRequest]:
        return lambda: tapip3d_pb2.TrackRequest(clip=small(**replace), **(queries or {}))

    def ref(path: str, **fields: object) -> Callable[[], tapip3d_pb2.TrackRequest]:
        return lambda: tapip3d_pb2.TrackRequest(sequence=types_pb2.DataRef(path=path), **fields)  # type: ignore[arg-type]

    pixel = lambda rows: {"pixel_queries": numpy_to_tensor(np.array(rows, np.float32))}  # noqa: E731
    return {
        "no input": (lambda: tapip3d_pb2.TrackRequest(), "no input"),
        "reference outside the volume": (ref("../escape.npz"), "escapes the data volume"),
        "absolute reference": (ref("/etc/passwd"), "is absolute"),
        "missing file": (ref("clips/absent.npz"), "does not exist"),
        "not an npz": (ref("notes.txt"), "must be an .npz"),
        "corrupt npz": (ref("broken.npz"), "not a readable .npz"),
        "no depths": (ref("video_only.npz"), "no depths"),
        "no video": (inline(video=None), "clip.video is missing"),
        "video not uint8 RGB": (inline(video=tiny.video.astype(np.float32)), "video must be (T,H,W,3) uint8"),
        "empty video": (inline(video=tiny.video[:0]), "video is empty"),
        "depths with fewer frames": (inline(depths=tiny.depths[:5]), "depths has shape (5, 24, 32)"),
        "depths of another size": (inline(depths=tiny.depths[:, :, :30]), "depths must be (T,H,W) = (6, 24, 32)"),
        "depths as integers": (inline(depths=(tiny.depths * 1000).astype(np.uint16)), "depths must be float"),
        "intrinsics not 3x3": (inline(intrinsics=np.eye(4)), "intrinsics must be 3x3 matrices"),
        "intrinsics per frame miscounted": (
            inline(intrinsics=tiny.intrinsics[:4]),
            "has 4 matrices but the video has 6",
        ),
        "intrinsics not a camera": (inline(intrinsics=-np.eye(3)), "not a pixel camera matrix"),
        "singular extrinsics": (inline(extrinsics=singular), "extrinsics of frame 2 are singular"),
        "non-finite extrinsics": (inline(extrinsics=nan_extrinsics), "NaN or infinite values at frame 1"),
        "zero depth where queried": (inline(pixel([[0, 12, 10]]), depths=zero_depth), "has no valid depth there"),
        "NaN depth where queried": (inline(pixel([[0, 12, 10]]), depths=nan_depth), "has no valid depth there"),
        "pixel query outside the frame": (inline(pixel([[0, 32, 10]])), "lies outside the 32x24 frames"),
        "query frame out of range": (inline(pixel([[6, 3, 3]])), "is not a frame index of this 6-frame video"),
        "fractional query frame": (inline(pixel([[1.5, 3, 3]])), "is not a frame index"),
        "queries of the wrong shape": (inline(pixel([[3, 3]])), "must be (N,3) rows (t, x, y)"),
        "world query behind the camera": (
            inline({"world_queries": numpy_to_tensor(np.array([[0, 0, 0, -2.0]], np.float32))}),
            "is behind the camera",
        ),
        "world query outside the image": (
            inline({"world_queries": numpy_to_tensor(np.array([[0, 50.0, 0, 2.0]], np.float32))}),
            "outside the 32x24 frame 0",
        ),
        "too many frames": (ref("too_long.npz"), "2001 frames, over this service's limit of 2000"),
        "too many pixels": (inline(video=np.zeros((2, 150, 150, 3), np.uint8)), "over this service's limit of 20000"),
        "too large a grid": (inline({"grid_size": 70}), "gives 4900 points"),
        "too many queries": (inline(pixel(np.tile([[0, 3, 3]], (4097, 1)))), "over this service's limit of 4096"),
        "grid frame out of range": (inline({"grid_size": 4, "grid_frame": 9}), "grid_frame 9 is not a frame"),
        "visibility threshold above 1": (inline({"visibility_threshold": 1.5}), "visibility_threshold 1.5"),
        "negative resolution factor": (inline({"resolution_factor": -1.0}), "resolution_factor -1"),
        "output outside the volume": (
            ref("clips/clip.npz", output=types_pb2.DataRef(path="../out.npz")),
            "escapes the data volume",
        ),
        "output not an npz": (ref("clips/clip.npz", output=types_pb2.DataRef(path="out.txt")), "must name an .npz"),
    }


BAD_INPUTS = _bad_inputs()


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_invalid_argument_with_what_to_fix_and_the_service_stays_up(
    stub, service: LocalService, case: str
) -> None:
    make, message = BAD_INPUTS[case]
    with pytest.raises(grpc.RpcError) as err:
        stub.Track(make(), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert serving(service) == health_pb2.HealthCheckResponse.SERVING


def test_cancelling_a_stream_stops_the_work(stub) -> None:
    stream = stub.TrackStream(track_request(sequence="clips/slow.npz", grid_size=16), timeout=120)
    first = next(stream)
    assert first.HasField("progress") and first.progress.total == 1199
    stream.cancel()
    cancelled = time.monotonic()
    # The model is free again at once (the whole clip takes seconds): the next call does not wait for it.
    stub.Track(track_request(sequence="clips/clip.npz", grid_size=4), timeout=60)
    assert time.monotonic() - cancelled < 1.5


def test_a_bad_streaming_request_ends_the_stream_with_invalid_argument(stub) -> None:
    make, message = BAD_INPUTS["singular extrinsics"]
    with pytest.raises(grpc.RpcError) as err:
        list(stub.TrackStream(make(), timeout=30))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.details()


# -- the client and the command ---------------------------------------------------------------------------
def test_the_client_tracks_with_progress(service: LocalService) -> None:
    client = TAPIP3DClient(service.address)
    seen: list[int] = []
    result = client.track(sequence="clips/clip.npz", on_progress=lambda p: seen.append(p.done))
    client.close()
    assert result.tracks is not None and result.tracks.shape == (16, 24, 3) and seen == sorted(seen)


def test_the_cli_writes_a_sample_clip_tracks_it_and_renders_the_tracks(service: LocalService, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "modelyard.runtime.cli", "tapip3d", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    clip, out, render = tmp_path / "clip.npz", tmp_path / "tracks.npz", tmp_path / "tracks.png"
    assert cli("sample", "--out", str(clip), "--width", "64", "--height", "48", "--frames", "6").returncode == 0
    run = cli("track", "--address", service.address, "--file", str(clip), "--grid", "4", "--frame", "camera",
              "--out", str(out), "--render", str(render))  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "16 points x 6 frames (lift2d, camera frame)" in run.stdout
    with np.load(out) as data:
        assert data["tracks"].shape == (6, 16, 3) and data["visibility"].shape == (6, 16)
    assert render.stat().st_size > 0


def test_a_checkout_without_what_the_service_calls_stops_the_service_with_one_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "TAPIP3D"
    files = ("utils/inference_utils.py", "models/__init__.py", "datasets/data_ops.py")
    for name in (*files, "third_party/pointops2/functions/__init__.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    (tmp_path / "tapip3d_final.pth").write_bytes(b"weights")
    model = {"backend": "upstream", "upstream": {"root": "TAPIP3D", "checkpoint": "tapip3d_final.pth"}}
    service = LocalService("tapip3d", write_config(tmp_path, model, name="tapip3d.yaml"), log_path=tmp_path / "log")
    service.start()
    assert service.process is not None and service.process.wait(120) == 2
    log = (tmp_path / "log").read_text()
    assert "is not the TAPIP3D this service runs: its utils.inference_utils has no inference, get_grid_queries" in log


# -- no escape through shared memory; outputs never overwrite by surprise ----------------------------------
def test_a_video_region_that_is_a_symlink_is_refused_and_nothing_is_written(
    stub, data_root: Path, scene: synthetic.Scene, shm_symlink
) -> None:
    name, _ = shm_symlink
    clip = clip_message(scene)
    t, h, w = scene.video.shape[:3]
    clip.video.CopyFrom(types_pb2.Tensor(shared=types_pb2.SharedArray(region=name, dtype="uint8", shape=[t, h, w, 3])))
    request = tapip3d_pb2.TrackRequest(clip=clip, grid_size=4, output=types_pb2.DataRef(path="stolen.result.npz"))
    with pytest.raises(grpc.RpcError) as err:
        stub.Track(request, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is a symbolic link" in err.value.details()
    assert not (data_root / "stolen.result.npz").exists()


def test_an_existing_output_file_is_kept_unless_the_request_says_overwrite(stub, data_root: Path) -> None:
    existing = data_root / "clips" / "keep.result.npz"
    existing.write_bytes(b"an input clip someone named as output by mistake")
    request = track_request(sequence="clips/clip.npz", grid_size=4, output="clips/keep.result.npz")
    with pytest.raises(grpc.RpcError) as err:
        stub.Track(request, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'clips/keep.result.npz' already exists" in err.value.details()
    assert "output.overwrite" in err.value.details()
    assert existing.read_bytes() == b"an input clip someone named as output by mistake"
    overwrite = track_request(sequence="clips/clip.npz", grid_size=4, output="clips/keep.result.npz", overwrite=True)
    assert stub.Track(overwrite, timeout=60).result.path == "clips/keep.result.npz"
    with np.load(existing) as data:
        assert data["coords"].shape == (16, 16, 3)


def test_an_npz_bomb_on_the_data_volume_is_refused_from_its_header(stub, data_root: Path) -> None:
    # 1.1 MB compressed, a 1.2 GB video declared: refused before it is inflated
    np.savez_compressed(data_root / "bomb.npz", video=np.zeros((1, 20000, 20000, 3), np.uint8))
    with pytest.raises(grpc.RpcError) as err:
        stub.Track(track_request(sequence="bomb.npz"), timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "20000x20000 are 400000000 pixels, over this service's limit of 20000" in err.value.details()
