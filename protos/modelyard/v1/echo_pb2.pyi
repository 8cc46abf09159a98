from modelyard.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EchoFault(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ECHO_FAULT_NONE: _ClassVar[EchoFault]
    ECHO_FAULT_OUT_OF_MEMORY: _ClassVar[EchoFault]
    ECHO_FAULT_FATAL: _ClassVar[EchoFault]
    ECHO_FAULT_INVALID_ITEM: _ClassVar[EchoFault]
    ECHO_FAULT_RAISE: _ClassVar[EchoFault]
ECHO_FAULT_NONE: EchoFault
ECHO_FAULT_OUT_OF_MEMORY: EchoFault
ECHO_FAULT_FATAL: EchoFault
ECHO_FAULT_INVALID_ITEM: EchoFault
ECHO_FAULT_RAISE: EchoFault

class EchoRequest(_message.Message):
    __slots__ = ("array", "delay_seconds", "output_region", "fault")
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_REGION_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    array: _types_pb2.Tensor
    delay_seconds: float
    output_region: _types_pb2.OutputRegion
    fault: EchoFault
    def __init__(self, array: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., delay_seconds: _Optional[float] = ..., output_region: _Optional[_Union[_types_pb2.OutputRegion, _Mapping]] = ..., fault: _Optional[_Union[EchoFault, str]] = ...) -> None: ...

class EchoResponse(_message.Message):
    __slots__ = ("array",)
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    array: _types_pb2.Tensor
    def __init__(self, array: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ...) -> None: ...
