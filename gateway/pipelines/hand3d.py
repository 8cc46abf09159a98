"""hand3d: per video, TAPIP3D tracks and WiLoR hands -> one HDF5 file (layout in the README).

Input: a TAPIP3D-format `.npz`, a folder of them, or a ViPE artifact folder (rgb/, pose/, intrinsics/, depth/).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import h5py
import numpy as np
from pydantic import Field

from modelyard.gateway import files
from modelyard.gateway.jobs import Item, ItemState, JobRecord
from modelyard.gateway.pipeline import Pipeline, StepContext
from modelyard.gateway.pipelines.rgbd import RGBD, is_vipe_folder, load_npz, load_vipe, save_npz, vipe_videos
from modelyard.runtime import __version__
from modelyard.runtime.arrays import SHM_DIR, tensor_to_numpy
from modelyard.runtime.checkpoints import sha256_of
from modelyard.runtime.config import Strict
from modelyard.runtime.errors import InvalidInput
from modelyard.runtime.paths import confined
from modelyard.v1 import tapip3d_pb2, types_pb2, wilor_pb2

JOINT_ORDER = (
    "wrist, thumb_cmc, thumb_mcp, thumb_ip, thumb_tip, index_mcp, index_pip, index_dip, index_tip, "
    "middle_mcp, middle_pip, middle_dip, middle_tip, ring_mcp, ring_pip, ring_dip, ring_tip, "
    "pinky_mcp, pinky_pip, pinky_dip, pinky_tip"
)
HAND_FIELDS = {  # proto field -> (shape per frame)
    "keypoints_2d": (21, 2),
    "keypoints_3d": (21, 3),
    "global_orient": (3,),
    "hand_pose": (15, 3),
    "betas": (10,),
    "vertices": (778, 3),
    "camera_translation": (3,),
}


class Hand3DOptions(Strict):
    GRID_SIZE: int = Field(16, ge=1, le=64, description="TAPIP3D queries: a GxG grid on the first frame")
    VISIBILITY_THRESHOLD: float = Field(0.0, ge=0, le=1, description="0 = the tracker's default")
    RESOLUTION_FACTOR: float = Field(0.0, ge=0, description="0 = the tracker's default")
    ITERATIONS: int = Field(0, ge=0, description="0 = the tracker's default")
    HAND_CONFIDENCE: float = Field(0.3, gt=0, le=1, description="detector confidence (WiLoR demo: 0.3)")
    FRAMES_PER_CALL: int = Field(32, ge=1, description="frames per WiLoR call")
    SKIP_VERTICES: bool = Field(False, description="leave MANO vertices (778x3 per hand and frame) out")
    COMPRESSION: int = Field(4, ge=0, le=9, description="gzip level of the video and depth datasets (0 = none)")


class Hand3D(Pipeline[Hand3DOptions]):
    name: ClassVar[str] = "hand3d"
    description: ClassVar[str] = "TAPIP3D 3D tracks + WiLoR hands per RGB-D video -> one HDF5 per video"
    services: ClassVar[tuple[str, ...]] = ("tapip3d", "wilor")
    options_schema: ClassVar[type[Hand3DOptions]] = Hand3DOptions

    def concurrency(self, options: Hand3DOptions) -> int:
        return 2

    def plan(self, input_path: Path, options: Hand3DOptions, data_root: Path) -> list[Item]:
        root = data_root.resolve()
        rel = str(PurePosixPath(input_path.resolve().relative_to(root)))
        if input_path.is_file():
            if input_path.suffix != ".npz":
                raise InvalidInput(f"{rel}: hand3d takes a TAPIP3D .npz, a folder of them, or a ViPE folder")
            return [Item(key=rel, position=0, payload={"kind": "npz", "path": rel, "name": input_path.stem})]
        if is_vipe_folder(input_path):
            names = vipe_videos(input_path)
            return [
                Item(key=f"{rel}#{n}", position=i, payload={"kind": "vipe", "path": rel, "name": n})
                for i, n in enumerate(names)
            ]
        npzs = []
        for p in sorted(input_path.glob("*.npz")):
            if p.name.endswith(".result.npz"):
                continue
            member = confined(data_root, f"{rel}/{p.name}")  # a symlink in the folder may lead out of the root
            if member.is_file():  # not a folder or FIFO named *.npz
                npzs.append((str(PurePosixPath(member.relative_to(root))), p.stem))
        return [
            Item(key=path, position=i, payload={"kind": "npz", "path": path, "name": stem})
            for i, (path, stem) in enumerate(npzs)
        ]

    def process(self, item: Item, ctx: StepContext[Hand3DOptions]) -> dict[str, Any]:
        o = ctx.options
        p = item.payload
        source = confined(ctx.data_root, p["path"])
        if p["kind"] == "vipe":
            rgbd = load_vipe(source, p["name"])
            work = files.write_bytes(ctx.output_dir / "work" / f"{p['name']}.npz", save_npz(rgbd))
            sequence_rel = str(PurePosixPath(work.relative_to(ctx.data_root.resolve())))
        else:
            rgbd = load_npz(source)
            sequence_rel = p["path"]
        tracks = self._track(item, ctx, sequence_rel)
        hands, wilor_backend, filled = self._hands(item, ctx, sequence_rel, rgbd)
        provenance = {
            "tapip3d": _info(ctx, "tapip3d", item),
            "wilor": _info(ctx, "wilor", item),
        }
        out = ctx.output_dir / f"{p['name']}.h5"
        files.write_atomic(out, lambda tmp: _write_h5(tmp, rgbd, tracks, hands, filled, provenance, o, p, source))
        return {
            "hdf5": str(PurePosixPath(out.relative_to(ctx.output_dir))),
            "frames": int(rgbd.video.shape[0]),
            "points": int(tracks["points"].shape[1]),
            "left_frames": int(hands["left"]["valid"].sum()),
            "right_frames": int(hands["right"]["valid"].sum()),
            "tracker": tracks["backend"],
            "hands_backend": wilor_backend,
        }

    def _track(self, item: Item, ctx: StepContext[Hand3DOptions], sequence_rel: str) -> dict[str, Any]:
        o = ctx.options
        request = tapip3d_pb2.TrackRequest(
            sequence=types_pb2.DataRef(path=sequence_rel),
            grid_size=o.GRID_SIZE,
            frame=tapip3d_pb2.FRAME_WORLD,
            visibility_threshold=o.VISIBILITY_THRESHOLD,
            resolution_factor=o.RESOLUTION_FACTOR,
            iterations=o.ITERATIONS,
        )
        response = ctx.clients["tapip3d"].call(lambda tapip3d: tapip3d.Track, request, ctx.request_id(item, "track"))
        return {
            "points": tensor_to_numpy(response.tracks, SHM_DIR).astype(np.float32),
            "visibility": tensor_to_numpy(response.visibility, SHM_DIR).astype(bool),
            "queries": tensor_to_numpy(response.queries, SHM_DIR).astype(np.float32),
            "backend": response.backend,
        }

    def _hands(
        self, item: Item, ctx: StepContext[Hand3DOptions], sequence_rel: str, rgbd: RGBD
    ) -> tuple[dict[str, dict[str, np.ndarray]], str, list[str]]:
        o = ctx.options
        t = rgbd.video.shape[0]
        sides: dict[str, dict[str, np.ndarray]] = {
            side: {
                "valid": np.zeros(t, bool),
                "box": np.full((t, 4), np.nan, np.float32),
                "score": np.full(t, np.nan, np.float32),
                "focal_length": np.full(t, np.nan, np.float32),
            }
            for side in ("left", "right")
        }
        backend, filled = "", []
        for start in range(0, t, o.FRAMES_PER_CALL):
            request = wilor_pb2.DetectRequest(
                sequence=wilor_pb2.FrameSequence(
                    ref=types_pb2.DataRef(path=sequence_rel), start=start, count=min(o.FRAMES_PER_CALL, t - start)
                ),
                options=wilor_pb2.DetectOptions(detection_confidence=o.HAND_CONFIDENCE, skip_vertices=o.SKIP_VERTICES),
            )
            response = ctx.clients["wilor"].call(
                lambda wilor: wilor.Detect, request, ctx.request_id(item, f"hands-{start}")
            )
            backend, filled = response.backend, list(response.filled_fields)
            for frame in response.results:
                for side_name, side in (("left", wilor_pb2.HAND_SIDE_LEFT), ("right", wilor_pb2.HAND_SIDE_RIGHT)):
                    candidates = [h for h in frame.hands if h.side == side]
                    if not candidates:
                        continue
                    best = max(candidates, key=lambda h: h.score if h.HasField("score") else 0.0)
                    _store_hand(sides[side_name], frame.frame_index, best, t)
        for side in sides.values():  # one layout whatever was detected: every filled field, NaN where not valid
            for name in filled:
                if name in HAND_FIELDS and name not in side:
                    side[name] = np.full((t, *HAND_FIELDS[name]), np.nan, np.float32)
        return sides, backend, filled

    def finalize(self, job: JobRecord, items: list[Item], ctx: StepContext[Hand3DOptions]) -> dict[str, str]:
        done = [i for i in items if i.state == ItemState.DONE]
        failed = [i for i in items if i.state == ItemState.FAILED]
        lines = [
            f"hand3d job {job.id}: {len(done)} of {len(items)} videos done, {len(failed)} failed",
            *(
                f"{i.payload['name']}: {i.outputs.get('hdf5')} ({i.outputs.get('frames')} frames, "
                f"{i.outputs.get('points')} tracks, hands L/R in {i.outputs.get('left_frames')}/"
                f"{i.outputs.get('right_frames')} frames)"
                for i in done
            ),
            *(f"FAILED {i.key}: {i.error}" for i in failed),
        ]
        report = files.write_text(ctx.output_dir / "report.txt", "\n".join(lines) + "\n")
        return {"report": str(PurePosixPath(report.relative_to(ctx.data_root.resolve()))), "videos": str(len(done))}


def _store_hand(side: dict[str, np.ndarray], index: int, hand: Any, t: int) -> None:
    if not 0 <= index < t:
        return
    side["valid"][index] = True
    side["box"][index] = [hand.box.x1, hand.box.y1, hand.box.x2, hand.box.y2]
    if hand.HasField("score"):
        side["score"][index] = hand.score
    if hand.HasField("focal_length"):
        side["focal_length"][index] = hand.focal_length
    for name, shape in HAND_FIELDS.items():
        tensor = getattr(hand, name)
        if tensor.WhichOneof("payload") is None:
            continue  # the backend does not fill it: absent, never zeros
        if name not in side:
            side[name] = np.full((t, *shape), np.nan, np.float32)
        side[name][index] = tensor_to_numpy(tensor, SHM_DIR).reshape(shape)


def _info(ctx: StepContext[Hand3DOptions], service: str, item: Item) -> dict[str, str]:
    info = ctx.clients[service].call(
        lambda stub: stub.Info, types_pb2.InfoRequest(), ctx.request_id(item, f"info-{service}")
    )
    return {
        "service": info.service,
        "model": info.model,
        "backend": info.backend,
        "checkpoint": info.checkpoint,
        "checkpoint_sha256": info.checkpoint_sha256,
        "architecture": info.architecture,
        "device": info.device,
        "version": info.version,
    }


def _write_h5(
    path: Path,
    rgbd: RGBD,
    tracks: dict[str, Any],
    hands: dict[str, dict[str, np.ndarray]],
    filled: list[str],
    provenance: dict[str, dict[str, str]],
    o: Hand3DOptions,
    payload: dict[str, Any],
    source: Path,
) -> None:
    gzip = {"compression": "gzip", "compression_opts": o.COMPRESSION} if o.COMPRESSION else {}
    with h5py.File(path, "w") as h5:
        h5.attrs.update(
            {
                "format": "modelyard.hand3d/1",
                "modelyard_version": __version__,
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "source": payload["path"] + (f"#{payload['name']}" if payload["kind"] == "vipe" else ""),
                "source_sha256": "" if source.is_dir() else sha256_of(source),  # a ViPE folder has no one file
                "options": json.dumps(o.model_dump(mode="json"), sort_keys=True),
                "num_frames": int(rgbd.video.shape[0]),
            }
        )
        h5.create_dataset("video", data=rgbd.video, chunks=(1, *rgbd.video.shape[1:]), **gzip)
        h5.create_dataset("depth", data=rgbd.depths, chunks=(1, *rgbd.depths.shape[1:]), **gzip)
        cams = h5.create_group("cameras")
        cams.create_dataset("intrinsics", data=rgbd.intrinsics.astype(np.float32))
        cams.create_dataset("extrinsics", data=rgbd.extrinsics.astype(np.float32))
        cams.attrs["extrinsics_convention"] = "world->camera, OpenCV axes"
        group = h5.create_group("tracks")
        group.create_dataset("points", data=tracks["points"])
        group.create_dataset("visibility", data=tracks["visibility"])
        group.create_dataset("queries", data=tracks["queries"])
        group.attrs.update({"frame": "world", "queries_layout": "t, X, Y, Z", **provenance["tapip3d"]})
        hand_group = h5.create_group("hands")
        hand_group.attrs.update({"joint_order": JOINT_ORDER, "filled_fields": ",".join(filled), **provenance["wilor"]})
        for side, arrays in hands.items():
            sub = hand_group.create_group(side)
            for name, array in arrays.items():
                sub.create_dataset(name, data=array)
