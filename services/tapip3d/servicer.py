"""modelyard.v1.TAPIP3D over gRPC: requests → validated clips and world queries → the model host → tracks.

Everything about a request is checked here, before it queues for the model: arrays against each other, cameras,
queries against the frames and depths, limits, data references against the data volume, and whether the answer
can travel in a message at all.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np

from modelyard.runtime.arrays import OutputWriter, numpy_to_tensor, tensor_to_numpy
from modelyard.runtime.devices import MIB
from modelyard.runtime.errors import InvalidInput
from modelyard.runtime.host import ModelHost
from modelyard.runtime.paths import confined
from modelyard.runtime.progress import Update
from modelyard.tapip3d import geometry, sequence
from modelyard.tapip3d.backend import TrackOptions, Tracks
from modelyard.tapip3d.config import TAPIP3DConfig
from modelyard.tapip3d.model import TrackItem, limits_of
from modelyard.v1 import tapip3d_pb2, tapip3d_pb2_grpc, types_pb2

# Bytes a response needs beyond its arrays (field tags, shapes, names).
_RESPONSE_OVERHEAD = 4096


@dataclasses.dataclass
class _Plan:
    """A validated request: the item for the model and what to do with its result."""

    item: TrackItem
    frame: int
    output: tuple[Path, str, bool] | None  # (file, the reference as the caller wrote it, overwrite)
    with_video: bool
    output_region: types_pb2.OutputRegion


def _inline_bytes(frames: int, points: int) -> int:
    return frames * points * (3 * 4 + 1) + points * 4 * 4 + _RESPONSE_OVERHEAD


class TAPIP3DServicer(tapip3d_pb2_grpc.TAPIP3DServicer):
    def __init__(self, host: ModelHost) -> None:
        self.host = host
        self.config: TAPIP3DConfig = host.config.model
        self.limits = limits_of(self.config)
        self.message_limit = host.runtime.max_message_mb * MIB

    # -- requests -------------------------------------------------------------------------------------
    def _data_root(self, what: str, instead: str) -> Path:
        root = self.host.runtime.data_root
        if root is None:
            raise InvalidInput(f"{what}: this service has no data volume (runtime.data_root); {instead}")
        return root

    def _clip(self, request: tapip3d_pb2.TrackRequest) -> tuple[sequence.RGBDClip, np.ndarray | None]:
        """The clip, and the query_point of its .npz if it has one."""
        kind = request.WhichOneof("input")
        if kind == "sequence":
            path = confined(self._data_root("sequence", "send the clip inline"), request.sequence.path)
            if path.suffix != ".npz" or not path.is_file():
                raise InvalidInput(f"sequence '{request.sequence.path}' must be an .npz file (TAPIP3D's input format)")
            arrays = sequence.read_npz(path, self.limits)
            return sequence.clip_from_npz(arrays, self.limits), arrays.get("query_point")
        if kind == "clip":
            shm, msg = self.host.runtime.shared_memory_dir, request.clip

            def array(name: str) -> np.ndarray | None:
                return tensor_to_numpy(getattr(msg, name), shm, f"clip.{name}") if msg.HasField(name) else None  # type: ignore[arg-type]

            video = array("video")
            if video is None:
                raise InvalidInput("clip.video is missing: send (T,H,W,3) uint8 RGB frames")
            clip = sequence.make_clip(video, array("depths"), array("intrinsics"), array("extrinsics"), self.limits)
            return clip, None
        raise InvalidInput("no input: set `sequence` (an .npz on the data volume) or `clip` (arrays)")

    def _queries(
        self, request: tapip3d_pb2.TrackRequest, clip: sequence.RGBDClip, from_file: np.ndarray | None
    ) -> tuple[np.ndarray, tuple[int, int] | None]:
        """World queries (N,4) and the grid (size, frame) they were lifted from, if they are one."""
        kind, shm = request.WhichOneof("queries"), self.host.runtime.shared_memory_dir
        if kind == "grid_size":
            grid = (request.grid_size, request.grid_frame)
            return sequence.grid_queries(clip, *grid, self.limits), grid
        if kind == "pixel_queries":
            pixels = tensor_to_numpy(request.pixel_queries, shm, "pixel_queries")
            return sequence.pixel_queries(clip, pixels, self.limits), None
        if kind == "world_queries":
            world = tensor_to_numpy(request.world_queries, shm, "world_queries")
            return sequence.world_queries(clip, world, self.limits), None
        if from_file is not None:
            return sequence.world_queries(clip, from_file, self.limits, "query_point"), None
        grid = (self.config.default_grid_size, request.grid_frame)
        return sequence.grid_queries(clip, *grid, self.limits), grid

    @staticmethod
    def _options(request: tapip3d_pb2.TrackRequest) -> TrackOptions:
        threshold, factor, iterations = request.visibility_threshold, request.resolution_factor, request.iterations
        if threshold and not 0 < threshold <= 1:
            raise InvalidInput(f"visibility_threshold {threshold:g} must be in (0, 1]; 0 = the backend's default")
        if factor and not 0 < factor <= 8:
            raise InvalidInput(f"resolution_factor {factor:g} must be in (0, 8]; 0 = the backend's default")
        if iterations > 1000:
            raise InvalidInput(f"iterations {iterations} is over 1000; 0 = the backend's default")
        return TrackOptions(
            visibility_threshold=threshold or None, resolution_factor=factor or None, iterations=iterations or None
        )

    def _plan(self, request: tapip3d_pb2.TrackRequest) -> _Plan:
        # The cheap checks first, before a sequence is read.
        if request.frame not in (tapip3d_pb2.FRAME_WORLD, tapip3d_pb2.FRAME_CAMERA):
            raise InvalidInput(f"frame {request.frame} is not FRAME_WORLD (0) or FRAME_CAMERA (1)")
        options = self._options(request)
        output = None
        if request.output.path:
            path = confined(self._data_root("output", "leave output unset"), request.output.path, must_exist=False)
            if path.suffix != ".npz" or path.is_dir():
                raise InvalidInput(f"output '{request.output.path}' must name an .npz file, e.g. clip.result.npz")
            if (path.exists() or path.is_symlink()) and not request.output.overwrite:
                raise InvalidInput(sequence.existing_output(request.output.path))
            output = (path, request.output.path, request.output.overwrite)
        clip, from_file = self._clip(request)
        queries, grid = self._queries(request, clip, from_file)
        needed = _inline_bytes(clip.num_frames, len(queries))
        region = request.output_region
        if needed > self.message_limit and self.host.runtime.data_root is None and not region.region:
            raise InvalidInput(
                f"the result ({clip.num_frames} frames x {len(queries)} points) needs {needed / MIB:.1f} MiB, over "
                f"this service's {self.message_limit / MIB:.0f} MiB message limit, and it has no data volume to write "
                "it to: pass an output_region (shared memory), track fewer points or frames, or raise "
                "runtime.max_message_mb"
            )
        item = TrackItem(clip, queries, dataclasses.replace(options, queries_are_grid=grid is not None, grid=grid))
        return _Plan(item, request.frame, output, not request.output_without_video, region)

    # -- answers --------------------------------------------------------------------------------------
    def _respond(self, plan: _Plan, tracks: Tracks) -> tapip3d_pb2.TrackResponse:
        clip = plan.item.clip
        queries = plan.item.queries if tracks.queries is None else tracks.queries  # upstream lifts grids itself
        coords, out_queries = tracks.coords, queries
        extra = {}
        if plan.frame == tapip3d_pb2.FRAME_CAMERA:
            coords = geometry.world_to_camera(tracks.coords, clip.extrinsics).astype(np.float32)
            out_queries = geometry.queries_to_camera(queries, clip.extrinsics)
            extra["coords_camera"] = coords
        response = tapip3d_pb2.TrackResponse(
            frame=plan.frame,  # type: ignore[arg-type]
            num_frames=clip.num_frames,
            num_points=len(queries),
            backend=self.config.backend,
        )
        if plan.output is not None:
            self._write(plan, tracks, plan.output[0], extra, plan.output[2], plan.output[1])
            response.result.path = plan.output[1]
        arrays = {
            "tracks": coords.astype(np.float32),
            "visibility": tracks.visibs.astype(bool),
            "queries": out_queries.astype(np.float32),
        }
        out = OutputWriter.optional(plan.output_region, self.host.runtime.shared_memory_dir)
        # Arrays that cannot fit inline are not even encoded (they may be hundreds of MB): the file carries them.
        fits = out is not None or sum(a.nbytes for a in arrays.values()) + _RESPONSE_OVERHEAD <= self.message_limit
        try:
            for name, array in arrays.items() if fits else ():
                getattr(response, name).CopyFrom(numpy_to_tensor(array, out))
        finally:
            if out is not None:
                out.close()
        if not fits or response.ByteSize() > self.message_limit:
            for name in arrays:
                response.ClearField(name)  # type: ignore[arg-type]
            if plan.output is None:
                relative = f"{self.config.results_dir}/{uuid.uuid4().hex}.result.npz"
                root = self._data_root("the result is over the message limit", "pass an output_region")
                self._write(plan, tracks, confined(root, relative, must_exist=False), extra, False, relative)
                response.result.path = relative
        return response

    @staticmethod
    def _write(
        plan: _Plan, tracks: Tracks, path: Path, extra: dict[str, np.ndarray], overwrite: bool, reference: str
    ) -> None:
        sequence.write_result(
            path,
            plan.item.clip,
            tracks.coords,
            tracks.visibs,
            plan.item.queries if tracks.queries is None else tracks.queries,
            plan.with_video,
            extra,
            overwrite,
            reference,
        )

    # -- RPCs -----------------------------------------------------------------------------------------
    def Track(self, request: tapip3d_pb2.TrackRequest, context: grpc.ServicerContext) -> tapip3d_pb2.TrackResponse:
        plan = self._plan(request)
        (tracks,) = self.host.run([plan.item], context, plan.item.progress)
        return self._respond(plan, tracks)

    def TrackStream(
        self, request: tapip3d_pb2.TrackRequest, context: grpc.ServicerContext
    ) -> Iterator[tapip3d_pb2.TrackEvent]:
        plan = self._plan(request)
        for event in self.host.stream([plan.item], context, plan.item.progress):
            if isinstance(event, Update):
                progress = tapip3d_pb2.TrackProgress(
                    done=event.done, total=event.total, stage=event.stage, elapsed_seconds=event.elapsed_s
                )
                yield tapip3d_pb2.TrackEvent(progress=progress)
            else:
                yield tapip3d_pb2.TrackEvent(result=self._respond(plan, event[0]))

    def Info(self, request: types_pb2.InfoRequest, context: grpc.ServicerContext) -> types_pb2.ModelInfo:
        return self.host.info(request)
