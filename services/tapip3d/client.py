"""Calling TAPIP3D: a Python client and the `modelyard tapip3d track` command (with a progress bar).

client = TAPIP3DClient("127.0.0.1:50053")
result = client.track(sequence="videos/kitchen.npz", grid_size=32, on_progress=print)
result.tracks        # (T,N,3) world coordinates; result.visibility (T,N); result.queries (N,4)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from modelyard.runtime.arrays import SHM_DIR, numpy_to_tensor, tensor_to_numpy
from modelyard.runtime.cli import add_address_argument
from modelyard.runtime.client import ModelClient, request_metadata, token_from
from modelyard.v1 import tapip3d_pb2, tapip3d_pb2_grpc

FRAMES = {"world": tapip3d_pb2.FRAME_WORLD, "camera": tapip3d_pb2.FRAME_CAMERA}


@dataclass(frozen=True)
class TrackResult:
    tracks: np.ndarray | None  # (T,N,3) float32 in `frame`; None when only written to `result_path`
    visibility: np.ndarray | None  # (T,N) bool
    queries: np.ndarray | None  # (N,4) float32 (t, X, Y, Z) in `frame`
    frame: str
    backend: str
    result_path: str  # the result .npz on the data volume ('' when none was written)


def track_request(
    sequence: str | None = None,
    clip: dict[str, np.ndarray] | None = None,
    grid_size: int | None = None,
    pixel_queries: np.ndarray | None = None,
    world_queries: np.ndarray | None = None,
    grid_frame: int = 0,
    frame: str = "world",
    visibility_threshold: float = 0.0,
    resolution_factor: float = 0.0,
    iterations: int = 0,
    output: str | None = None,
    output_without_video: bool = False,
    overwrite: bool = False,
) -> tapip3d_pb2.TrackRequest:
    """A TrackRequest for a data-volume .npz (`sequence`) or arrays (`clip`: video, depths, intrinsics[,
    extrinsics]); at most one of grid_size, pixel_queries (N,3) and world_queries (N,4). An existing `output`
    file is refused by the service unless `overwrite`."""
    request = tapip3d_pb2.TrackRequest(
        grid_frame=grid_frame,
        frame=FRAMES[frame],
        visibility_threshold=visibility_threshold,
        resolution_factor=resolution_factor,
        iterations=iterations,
        output_without_video=output_without_video,
    )
    if sequence is not None:
        request.sequence.path = sequence
    elif clip is not None:
        for name in ("video", "depths", "intrinsics", "extrinsics"):
            if clip.get(name) is not None:
                getattr(request.clip, name).CopyFrom(numpy_to_tensor(np.asarray(clip[name])))
    if grid_size is not None:
        request.grid_size = grid_size
    elif pixel_queries is not None:
        request.pixel_queries.CopyFrom(numpy_to_tensor(np.asarray(pixel_queries, np.float32)))
    elif world_queries is not None:
        request.world_queries.CopyFrom(numpy_to_tensor(np.asarray(world_queries, np.float32)))
    if output:
        request.output.path = output
        request.output.overwrite = overwrite
    return request


def read_response(response: tapip3d_pb2.TrackResponse, data_root: Path | None = None) -> TrackResult:
    """The arrays of a response; when they only went to a file and the data volume is mounted here, from it."""
    frame = "camera" if response.frame == tapip3d_pb2.FRAME_CAMERA else "world"
    if response.HasField("tracks"):
        tracks = tensor_to_numpy(response.tracks, SHM_DIR, "tracks")
        visibility = tensor_to_numpy(response.visibility, SHM_DIR, "visibility")
        queries = tensor_to_numpy(response.queries, SHM_DIR, "queries")
    elif data_root is not None and response.result.path:
        with np.load(data_root / response.result.path) as data:
            tracks = data["coords_camera"] if frame == "camera" else data["coords"]
            visibility, queries = data["visibs"], data["query_points"]
    else:
        tracks = visibility = queries = None
    return TrackResult(tracks, visibility, queries, frame, response.backend, response.result.path)


class TAPIP3DClient(ModelClient):
    service = "modelyard.v1.TAPIP3D"
    stub_class = tapip3d_pb2_grpc.TAPIP3DStub
    default_timeout = 3600.0

    def track(
        self,
        *,
        on_progress: Callable[[tapip3d_pb2.TrackProgress], None] | None = None,
        data_root: Path | None = None,
        **request: object,
    ) -> TrackResult:
        """Track points (arguments as track_request). With `on_progress`, the call streams and reports progress."""
        return self.send(track_request(**request), on_progress, data_root)  # type: ignore[arg-type]

    def send(
        self,
        request: tapip3d_pb2.TrackRequest,
        on_progress: Callable[[tapip3d_pb2.TrackProgress], None] | None = None,
        data_root: Path | None = None,
    ) -> TrackResult:
        if on_progress is None:
            return read_response(self.call(lambda tapip3d: tapip3d.Track, request), data_root)
        result = None
        # A stream is not retried: its progress would be replayed from the start.
        for event in self.stub.TrackStream(request, timeout=self.timeout, metadata=request_metadata()):
            if event.HasField("progress"):
                on_progress(event.progress)
            else:
                result = event.result  # the last event; reading on lets the stream end normally
        if result is None:
            raise RuntimeError("the stream ended without a result")
        return read_response(result, data_root)


# -- the command ------------------------------------------------------------------------------------------
def _render(path: Path, clip: dict[str, np.ndarray], result: TrackResult) -> None:
    """The last frame with every track's visible path drawn on it."""
    from PIL import Image

    from modelyard.runtime.render import draw_tracks
    from modelyard.tapip3d import geometry

    assert result.tracks is not None and result.visibility is not None
    t_count = len(clip["video"])
    k = np.broadcast_to(clip["intrinsics"], (t_count, 3, 3))
    if result.frame == "camera":
        pixels, _ = geometry.project(result.tracks, k[:, None])
    else:
        e = np.broadcast_to(clip.get("extrinsics", np.eye(4)), (t_count, 4, 4))
        pixels, _ = geometry.project_world(result.tracks, k[:, None], e[:, None])
    Image.fromarray(draw_tracks(clip["video"][-1], pixels, result.visibility)).save(path)


def track_command(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    clip: dict[str, np.ndarray] | None = None
    if args.file:
        with np.load(args.file, allow_pickle=False) as data:
            clip = {key: data[key] for key in data.files}
    elif args.data_root:
        with np.load(Path(args.data_root) / args.sequence, allow_pickle=False) as data:
            clip = {key: data[key] for key in data.files}
    queries = np.load(args.queries) if args.queries else None
    if queries is not None and queries.ndim == 2 and queries.shape[1] not in (3, 4):
        print(f"tapip3d: --queries must hold (N,3) pixel or (N,4) world rows, got {queries.shape}", file=sys.stderr)
        return 2
    request = track_request(
        sequence=args.sequence,
        clip=None if args.sequence else clip,
        grid_size=args.grid,
        pixel_queries=queries if queries is not None and queries.shape[1] == 3 else None,
        world_queries=queries if queries is not None and queries.shape[1] == 4 else None,
        grid_frame=args.grid_frame,
        frame=args.frame,
        output=args.output,
        overwrite=args.overwrite,
    )
    client = TAPIP3DClient(args.address, token=token_from(args.token_file))
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), transient=True) as bar:  # fmt: skip
            task = bar.add_task("queued", total=None)

            def show(p: tapip3d_pb2.TrackProgress) -> None:
                bar.update(task, description=p.stage, completed=p.done, total=p.total)

            result = client.send(request, show, Path(args.data_root) if args.data_root else None)
    except grpc.RpcError as exc:
        print(f"tapip3d: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if result.tracks is None or result.visibility is None or result.queries is None:
        print(f"result: {result.result_path} on the service's data volume (pass --data-root to read it here)")
        return 0
    t_count, n = result.tracks.shape[:2]
    visible = float(result.visibility.mean())
    print(f"{n} points x {t_count} frames ({result.backend}, {result.frame} frame), {visible:.0%} visible")
    if result.result_path:
        print(f"result file: {result.result_path}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, tracks=result.tracks, visibility=result.visibility, queries=result.queries)
        print(f"tracks: {out}")
    if args.render:
        if clip is None:
            print("tapip3d: --render needs the frames: use --file, or --sequence with --data-root", file=sys.stderr)
            return 2
        _render(Path(args.render), clip, result)
        print(f"render: {args.render}")
    return 0


def sample_command(args: argparse.Namespace) -> int:
    from modelyard.tapip3d import synthetic

    scene = synthetic.make_scene(args.width, args.height, args.frames, args.seed)
    queries = scene.sample_queries(args.queries, 0, np.random.default_rng(args.seed)).queries if args.queries else None
    path = scene.save_npz(Path(args.out), queries)
    print(f"sample: {path} ({args.frames} frames of {args.width}x{args.height}, TAPIP3D's input format)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    tapip3d = sub.add_parser("tapip3d", help="call a TAPIP3D service (3D point tracks from RGB-D video)")
    actions = tapip3d.add_subparsers(dest="action", required=True)
    track = actions.add_parser("track", help="track points through an RGB-D sequence, showing progress")
    add_address_argument(track, "tapip3d", "TAPIP3D")
    track.add_argument("--token-file", help="the service's token (default: $MODELYARD_SERVICE_TOKEN_FILE)")
    source = track.add_mutually_exclusive_group(required=True)
    source.add_argument("--sequence", help="an .npz on the service's data volume (path relative to it)")
    source.add_argument("--file", help="a local .npz in TAPIP3D's input format, sent inline (short clips)")
    track.add_argument("--data-root", help="where the data volume is mounted here (to read frames and results)")
    how = track.add_mutually_exclusive_group()
    how.add_argument("--grid", type=int, help="a GxG grid of queries at --grid-frame")
    how.add_argument("--queries", help="a .npy of (N,3) pixel rows (t, x, y) or (N,4) world rows (t, X, Y, Z)")
    track.add_argument("--grid-frame", type=int, default=0)
    track.add_argument("--frame", choices=sorted(FRAMES), default="world", help="coordinates of the tracks")
    track.add_argument("--output", help="also have the service write a TAPIP3D result .npz here (data volume)")
    track.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    track.add_argument("--out", help="write tracks, visibility and queries to this local .npz")
    track.add_argument("--render", help="draw the tracks on the last frame into this PNG")
    track.set_defaults(func=track_command)
    sample = actions.add_parser("sample", help="write a synthetic RGB-D clip (.npz, TAPIP3D's input format)")
    sample.add_argument("--out", required=True)
    sample.add_argument("--width", type=int, default=256)
    sample.add_argument("--height", type=int, default=192)
    sample.add_argument("--frames", type=int, default=24)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--queries", type=int, default=0, help="also store this many query_point rows at frame 0")
    sample.set_defaults(func=sample_command)
