from modelyard.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Frame(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAME_WORLD: _ClassVar[Frame]
    FRAME_CAMERA: _ClassVar[Frame]
FRAME_WORLD: Frame
FRAME_CAMERA: Frame

class RGBDSequence(_message.Message):
    __slots__ = ("video", "depths", "intrinsics", "extrinsics")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    DEPTHS_FIELD_NUMBER: _ClassVar[int]
    INTRINSICS_FIELD_NUMBER: _ClassVar[int]
    EXTRINSICS_FIELD_NUMBER: _ClassVar[int]
    video: _types_pb2.Tensor
    depths: _types_pb2.Tensor
    intrinsics: _types_pb2.Tensor
    extrinsics: _types_pb2.Tensor
    def __init__(self, video: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., depths: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., intrinsics: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., extrinsics: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ...) -> None: ...

class TrackRequest(_message.Message):
    __slots__ = ("sequence", "clip", "grid_size", "pixel_queries", "world_queries", "grid_frame", "frame", "visibility_threshold", "resolution_factor", "iterations", "output", "output_without_video", "output_region")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    GRID_SIZE_FIELD_NUMBER: _ClassVar[int]
    PIXEL_QUERIES_FIELD_NUMBER: _ClassVar[int]
    WORLD_QUERIES_FIELD_NUMBER: _ClassVar[int]
    GRID_FRAME_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_WITHOUT_VIDEO_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_REGION_FIELD_NUMBER: _ClassVar[int]
    sequence: _types_pb2.DataRef
    clip: RGBDSequence
    grid_size: int
    pixel_queries: _types_pb2.Tensor
    world_queries: _types_pb2.Tensor
    grid_frame: int
    frame: Frame
    visibility_threshold: float
    resolution_factor: float
    iterations: int
    output: _types_pb2.DataRef
    output_without_video: bool
    output_region: _types_pb2.OutputRegion
    def __init__(self, sequence: _Optional[_Union[_types_pb2.DataRef, _Mapping]] = ..., clip: _Optional[_Union[RGBDSequence, _Mapping]] = ..., grid_size: _Optional[int] = ..., pixel_queries: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., world_queries: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., grid_frame: _Optional[int] = ..., frame: _Optional[_Union[Frame, str]] = ..., visibility_threshold: _Optional[float] = ..., resolution_factor: _Optional[float] = ..., iterations: _Optional[int] = ..., output: _Optional[_Union[_types_pb2.DataRef, _Mapping]] = ..., output_without_video: bool = ..., output_region: _Optional[_Union[_types_pb2.OutputRegion, _Mapping]] = ...) -> None: ...

class TrackResponse(_message.Message):
    __slots__ = ("tracks", "visibility", "queries", "frame", "num_frames", "num_points", "backend", "result")
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    NUM_POINTS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    tracks: _types_pb2.Tensor
    visibility: _types_pb2.Tensor
    queries: _types_pb2.Tensor
    frame: Frame
    num_frames: int
    num_points: int
    backend: str
    result: _types_pb2.DataRef
    def __init__(self, tracks: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., visibility: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., queries: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., frame: _Optional[_Union[Frame, str]] = ..., num_frames: _Optional[int] = ..., num_points: _Optional[int] = ..., backend: _Optional[str] = ..., result: _Optional[_Union[_types_pb2.DataRef, _Mapping]] = ...) -> None: ...

class TrackProgress(_message.Message):
    __slots__ = ("done", "total", "stage", "elapsed_seconds")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    stage: str
    elapsed_seconds: float
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ..., stage: _Optional[str] = ..., elapsed_seconds: _Optional[float] = ...) -> None: ...

class TrackEvent(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: TrackProgress
    result: TrackResponse
    def __init__(self, progress: _Optional[_Union[TrackProgress, _Mapping]] = ..., result: _Optional[_Union[TrackResponse, _Mapping]] = ...) -> None: ...
