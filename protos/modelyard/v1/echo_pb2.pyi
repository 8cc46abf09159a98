from modelyard.v1 import types_pb2 as _types_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EchoRequest(_message.Message):
    __slots__ = ("array", "delay_seconds", "output_region")
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_REGION_FIELD_NUMBER: _ClassVar[int]
    array: _types_pb2.Tensor
    delay_seconds: float
    output_region: _types_pb2.OutputRegion
    def __init__(self, array: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., delay_seconds: _Optional[float] = ..., output_region: _Optional[_Union[_types_pb2.OutputRegion, _Mapping]] = ...) -> None: ...

class EchoResponse(_message.Message):
    __slots__ = ("array",)
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    array: _types_pb2.Tensor
    def __init__(self, array: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ...) -> None: ...
