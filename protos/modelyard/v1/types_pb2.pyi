from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NDArray(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class SharedArray(_message.Message):
    __slots__ = ("region", "offset", "dtype", "shape")
    REGION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    region: str
    offset: int
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, region: _Optional[str] = ..., offset: _Optional[int] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("inline", "shared")
    INLINE_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    inline: NDArray
    shared: SharedArray
    def __init__(self, inline: _Optional[_Union[NDArray, _Mapping]] = ..., shared: _Optional[_Union[SharedArray, _Mapping]] = ...) -> None: ...

class OutputRegion(_message.Message):
    __slots__ = ("region", "offset", "capacity")
    REGION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    region: str
    offset: int
    capacity: int
    def __init__(self, region: _Optional[str] = ..., offset: _Optional[int] = ..., capacity: _Optional[int] = ...) -> None: ...

class DataRef(_message.Message):
    __slots__ = ("path", "overwrite")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    path: str
    overwrite: bool
    def __init__(self, path: _Optional[str] = ..., overwrite: bool = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("encoded", "array", "ref")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    array: Tensor
    ref: DataRef
    def __init__(self, encoded: _Optional[bytes] = ..., array: _Optional[_Union[Tensor, _Mapping]] = ..., ref: _Optional[_Union[DataRef, _Mapping]] = ...) -> None: ...

class BoxXYXY(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ("shared_memory_probe", "shared_memory_token", "data_probe", "data_token")
    SHARED_MEMORY_PROBE_FIELD_NUMBER: _ClassVar[int]
    SHARED_MEMORY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DATA_PROBE_FIELD_NUMBER: _ClassVar[int]
    DATA_TOKEN_FIELD_NUMBER: _ClassVar[int]
    shared_memory_probe: str
    shared_memory_token: bytes
    data_probe: str
    data_token: bytes
    def __init__(self, shared_memory_probe: _Optional[str] = ..., shared_memory_token: _Optional[bytes] = ..., data_probe: _Optional[str] = ..., data_token: _Optional[bytes] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("service", "model", "backend", "checkpoint", "checkpoint_sha256", "checkpoint_format", "device", "architecture", "gpu_memory_allocated_bytes", "gpu_memory_reserved_bytes", "rss_bytes", "max_batch_size", "fitted_batch_size", "shared_memory_ok", "version", "details", "random_weights", "data_probe_ok")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SHA256_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_ALLOCATED_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_RESERVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    FITTED_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHARED_MEMORY_OK_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    RANDOM_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    DATA_PROBE_OK_FIELD_NUMBER: _ClassVar[int]
    service: str
    model: str
    backend: str
    checkpoint: str
    checkpoint_sha256: str
    checkpoint_format: str
    device: str
    architecture: str
    gpu_memory_allocated_bytes: int
    gpu_memory_reserved_bytes: int
    rss_bytes: int
    max_batch_size: int
    fitted_batch_size: int
    shared_memory_ok: bool
    version: str
    details: _containers.ScalarMap[str, str]
    random_weights: bool
    data_probe_ok: bool
    def __init__(self, service: _Optional[str] = ..., model: _Optional[str] = ..., backend: _Optional[str] = ..., checkpoint: _Optional[str] = ..., checkpoint_sha256: _Optional[str] = ..., checkpoint_format: _Optional[str] = ..., device: _Optional[str] = ..., architecture: _Optional[str] = ..., gpu_memory_allocated_bytes: _Optional[int] = ..., gpu_memory_reserved_bytes: _Optional[int] = ..., rss_bytes: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., fitted_batch_size: _Optional[int] = ..., shared_memory_ok: bool = ..., version: _Optional[str] = ..., details: _Optional[_Mapping[str, str]] = ..., random_weights: bool = ..., data_probe_ok: bool = ...) -> None: ...
