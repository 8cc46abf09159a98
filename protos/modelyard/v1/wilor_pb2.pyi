from modelyard.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HandSide(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HAND_SIDE_UNSPECIFIED: _ClassVar[HandSide]
    HAND_SIDE_LEFT: _ClassVar[HandSide]
    HAND_SIDE_RIGHT: _ClassVar[HandSide]
HAND_SIDE_UNSPECIFIED: HandSide
HAND_SIDE_LEFT: HandSide
HAND_SIDE_RIGHT: HandSide

class DetectOptions(_message.Message):
    __slots__ = ("detection_confidence", "max_hands", "rescale_factor", "focal_length", "skip_vertices", "flat_hand_mean")
    DETECTION_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    MAX_HANDS_FIELD_NUMBER: _ClassVar[int]
    RESCALE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    FOCAL_LENGTH_FIELD_NUMBER: _ClassVar[int]
    SKIP_VERTICES_FIELD_NUMBER: _ClassVar[int]
    FLAT_HAND_MEAN_FIELD_NUMBER: _ClassVar[int]
    detection_confidence: float
    max_hands: int
    rescale_factor: float
    focal_length: float
    skip_vertices: bool
    flat_hand_mean: bool
    def __init__(self, detection_confidence: _Optional[float] = ..., max_hands: _Optional[int] = ..., rescale_factor: _Optional[float] = ..., focal_length: _Optional[float] = ..., skip_vertices: bool = ..., flat_hand_mean: bool = ...) -> None: ...

class GivenHand(_message.Message):
    __slots__ = ("box", "side")
    BOX_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    box: _types_pb2.BoxXYXY
    side: HandSide
    def __init__(self, box: _Optional[_Union[_types_pb2.BoxXYXY, _Mapping]] = ..., side: _Optional[_Union[HandSide, str]] = ...) -> None: ...

class DetectItem(_message.Message):
    __slots__ = ("image", "hands")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    HANDS_FIELD_NUMBER: _ClassVar[int]
    image: _types_pb2.Image
    hands: _containers.RepeatedCompositeFieldContainer[GivenHand]
    def __init__(self, image: _Optional[_Union[_types_pb2.Image, _Mapping]] = ..., hands: _Optional[_Iterable[_Union[GivenHand, _Mapping]]] = ...) -> None: ...

class FrameSequence(_message.Message):
    __slots__ = ("ref", "start", "count", "step")
    REF_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ref: _types_pb2.DataRef
    start: int
    count: int
    step: int
    def __init__(self, ref: _Optional[_Union[_types_pb2.DataRef, _Mapping]] = ..., start: _Optional[int] = ..., count: _Optional[int] = ..., step: _Optional[int] = ...) -> None: ...

class DetectRequest(_message.Message):
    __slots__ = ("images", "sequence", "options")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[DetectItem]
    sequence: FrameSequence
    options: DetectOptions
    def __init__(self, images: _Optional[_Iterable[_Union[DetectItem, _Mapping]]] = ..., sequence: _Optional[_Union[FrameSequence, _Mapping]] = ..., options: _Optional[_Union[DetectOptions, _Mapping]] = ...) -> None: ...

class Hand(_message.Message):
    __slots__ = ("box", "side", "score", "side_score", "keypoints_2d", "keypoints_3d", "global_orient", "hand_pose", "betas", "vertices", "camera_translation", "focal_length", "given_index")
    BOX_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SIDE_SCORE_FIELD_NUMBER: _ClassVar[int]
    KEYPOINTS_2D_FIELD_NUMBER: _ClassVar[int]
    KEYPOINTS_3D_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_ORIENT_FIELD_NUMBER: _ClassVar[int]
    HAND_POSE_FIELD_NUMBER: _ClassVar[int]
    BETAS_FIELD_NUMBER: _ClassVar[int]
    VERTICES_FIELD_NUMBER: _ClassVar[int]
    CAMERA_TRANSLATION_FIELD_NUMBER: _ClassVar[int]
    FOCAL_LENGTH_FIELD_NUMBER: _ClassVar[int]
    GIVEN_INDEX_FIELD_NUMBER: _ClassVar[int]
    box: _types_pb2.BoxXYXY
    side: HandSide
    score: float
    side_score: float
    keypoints_2d: _types_pb2.Tensor
    keypoints_3d: _types_pb2.Tensor
    global_orient: _types_pb2.Tensor
    hand_pose: _types_pb2.Tensor
    betas: _types_pb2.Tensor
    vertices: _types_pb2.Tensor
    camera_translation: _types_pb2.Tensor
    focal_length: float
    given_index: int
    def __init__(self, box: _Optional[_Union[_types_pb2.BoxXYXY, _Mapping]] = ..., side: _Optional[_Union[HandSide, str]] = ..., score: _Optional[float] = ..., side_score: _Optional[float] = ..., keypoints_2d: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., keypoints_3d: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., global_orient: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., hand_pose: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., betas: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., vertices: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., camera_translation: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., focal_length: _Optional[float] = ..., given_index: _Optional[int] = ...) -> None: ...

class ImageHands(_message.Message):
    __slots__ = ("hands", "frame_index", "width", "height")
    HANDS_FIELD_NUMBER: _ClassVar[int]
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    hands: _containers.RepeatedCompositeFieldContainer[Hand]
    frame_index: int
    width: int
    height: int
    def __init__(self, hands: _Optional[_Iterable[_Union[Hand, _Mapping]]] = ..., frame_index: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("results", "filled_fields", "backend", "sequence_frames")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    FILLED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FRAMES_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ImageHands]
    filled_fields: _containers.RepeatedScalarFieldContainer[str]
    backend: str
    sequence_frames: int
    def __init__(self, results: _Optional[_Iterable[_Union[ImageHands, _Mapping]]] = ..., filled_fields: _Optional[_Iterable[str]] = ..., backend: _Optional[str] = ..., sequence_frames: _Optional[int] = ...) -> None: ...
