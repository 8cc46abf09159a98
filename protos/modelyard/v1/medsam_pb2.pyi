from modelyard.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Intensity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTENSITY_AUTO: _ClassVar[Intensity]
    INTENSITY_CT: _ClassVar[Intensity]
    INTENSITY_MR: _ClassVar[Intensity]
INTENSITY_AUTO: Intensity
INTENSITY_CT: Intensity
INTENSITY_MR: Intensity

class SegmentItem(_message.Message):
    __slots__ = ("image", "boxes", "intensity", "ct_window_level", "ct_window_width")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    BOXES_FIELD_NUMBER: _ClassVar[int]
    INTENSITY_FIELD_NUMBER: _ClassVar[int]
    CT_WINDOW_LEVEL_FIELD_NUMBER: _ClassVar[int]
    CT_WINDOW_WIDTH_FIELD_NUMBER: _ClassVar[int]
    image: _types_pb2.Image
    boxes: _containers.RepeatedCompositeFieldContainer[_types_pb2.BoxXYXY]
    intensity: Intensity
    ct_window_level: float
    ct_window_width: float
    def __init__(self, image: _Optional[_Union[_types_pb2.Image, _Mapping]] = ..., boxes: _Optional[_Iterable[_Union[_types_pb2.BoxXYXY, _Mapping]]] = ..., intensity: _Optional[_Union[Intensity, str]] = ..., ct_window_level: _Optional[float] = ..., ct_window_width: _Optional[float] = ...) -> None: ...

class SegmentRequest(_message.Message):
    __slots__ = ("items", "output_region")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_REGION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[SegmentItem]
    output_region: _types_pb2.OutputRegion
    def __init__(self, items: _Optional[_Iterable[_Union[SegmentItem, _Mapping]]] = ..., output_region: _Optional[_Union[_types_pb2.OutputRegion, _Mapping]] = ...) -> None: ...

class SegmentResult(_message.Message):
    __slots__ = ("masks", "scores")
    MASKS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    masks: _types_pb2.Tensor
    scores: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, masks: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., scores: _Optional[_Iterable[float]] = ...) -> None: ...

class SegmentResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SegmentResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SegmentResult, _Mapping]]] = ...) -> None: ...
