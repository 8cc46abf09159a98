from modelyard.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CamMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAM_METHOD_DEFAULT: _ClassVar[CamMethod]
    CAM_METHOD_GSCORECAM: _ClassVar[CamMethod]
    CAM_METHOD_SCORECAM: _ClassVar[CamMethod]
    CAM_METHOD_GRADCAM: _ClassVar[CamMethod]
    CAM_METHOD_SIMILARITY: _ClassVar[CamMethod]

class Colormap(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLORMAP_DEFAULT: _ClassVar[Colormap]
    COLORMAP_JET: _ClassVar[Colormap]
    COLORMAP_TURBO: _ClassVar[Colormap]
    COLORMAP_INFERNO: _ClassVar[Colormap]
    COLORMAP_HOT: _ClassVar[Colormap]

class ThresholdMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    THRESHOLD_DEFAULT: _ClassVar[ThresholdMode]
    THRESHOLD_FIXED: _ClassVar[ThresholdMode]
    THRESHOLD_OTSU: _ClassVar[ThresholdMode]

class BoxRanking(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RANKING_DEFAULT: _ClassVar[BoxRanking]
    RANKING_AREA: _ClassVar[BoxRanking]
    RANKING_AREA_TIMES_HEAT: _ClassVar[BoxRanking]
CAM_METHOD_DEFAULT: CamMethod
CAM_METHOD_GSCORECAM: CamMethod
CAM_METHOD_SCORECAM: CamMethod
CAM_METHOD_GRADCAM: CamMethod
CAM_METHOD_SIMILARITY: CamMethod
COLORMAP_DEFAULT: Colormap
COLORMAP_JET: Colormap
COLORMAP_TURBO: Colormap
COLORMAP_INFERNO: Colormap
COLORMAP_HOT: Colormap
THRESHOLD_DEFAULT: ThresholdMode
THRESHOLD_FIXED: ThresholdMode
THRESHOLD_OTSU: ThresholdMode
RANKING_DEFAULT: BoxRanking
RANKING_AREA: BoxRanking
RANKING_AREA_TIMES_HEAT: BoxRanking

class EmbedImagesRequest(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[_types_pb2.Image]
    def __init__(self, images: _Optional[_Iterable[_Union[_types_pb2.Image, _Mapping]]] = ...) -> None: ...

class EmbedTextsRequest(_message.Message):
    __slots__ = ("texts",)
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, texts: _Optional[_Iterable[str]] = ...) -> None: ...

class EmbeddingsResponse(_message.Message):
    __slots__ = ("embeddings",)
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    embeddings: _types_pb2.Tensor
    def __init__(self, embeddings: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("images", "labels", "template")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[_types_pb2.Image]
    labels: _containers.RepeatedScalarFieldContainer[str]
    template: str
    def __init__(self, images: _Optional[_Iterable[_Union[_types_pb2.Image, _Mapping]]] = ..., labels: _Optional[_Iterable[str]] = ..., template: _Optional[str] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("probabilities", "logits")
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    LOGITS_FIELD_NUMBER: _ClassVar[int]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    logits: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, probabilities: _Optional[_Iterable[float]] = ..., logits: _Optional[_Iterable[float]] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("results", "prompts")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Classification]
    prompts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, results: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ..., prompts: _Optional[_Iterable[str]] = ...) -> None: ...

class CamOptions(_message.Message):
    __slots__ = ("method", "top_k")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    method: CamMethod
    top_k: int
    def __init__(self, method: _Optional[_Union[CamMethod, str]] = ..., top_k: _Optional[int] = ...) -> None: ...

class PromptedImage(_message.Message):
    __slots__ = ("image", "prompt")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    image: _types_pb2.Image
    prompt: str
    def __init__(self, image: _Optional[_Union[_types_pb2.Image, _Mapping]] = ..., prompt: _Optional[str] = ...) -> None: ...

class RenderOptions(_message.Message):
    __slots__ = ("composite", "colormap", "alpha", "label")
    COMPOSITE_FIELD_NUMBER: _ClassVar[int]
    COLORMAP_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    composite: bool
    colormap: Colormap
    alpha: float
    label: str
    def __init__(self, composite: bool = ..., colormap: _Optional[_Union[Colormap, str]] = ..., alpha: _Optional[float] = ..., label: _Optional[str] = ...) -> None: ...

class HeatmapRequest(_message.Message):
    __slots__ = ("items", "cam", "render", "output_region")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    CAM_FIELD_NUMBER: _ClassVar[int]
    RENDER_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_REGION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[PromptedImage]
    cam: CamOptions
    render: RenderOptions
    output_region: _types_pb2.OutputRegion
    def __init__(self, items: _Optional[_Iterable[_Union[PromptedImage, _Mapping]]] = ..., cam: _Optional[_Union[CamOptions, _Mapping]] = ..., render: _Optional[_Union[RenderOptions, _Mapping]] = ..., output_region: _Optional[_Union[_types_pb2.OutputRegion, _Mapping]] = ...) -> None: ...

class HeatmapResult(_message.Message):
    __slots__ = ("heatmap", "composite_png", "similarity", "method", "top_k")
    HEATMAP_FIELD_NUMBER: _ClassVar[int]
    COMPOSITE_PNG_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    heatmap: _types_pb2.Tensor
    composite_png: bytes
    similarity: float
    method: str
    top_k: int
    def __init__(self, heatmap: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., composite_png: _Optional[bytes] = ..., similarity: _Optional[float] = ..., method: _Optional[str] = ..., top_k: _Optional[int] = ...) -> None: ...

class HeatmapResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[HeatmapResult]
    def __init__(self, results: _Optional[_Iterable[_Union[HeatmapResult, _Mapping]]] = ...) -> None: ...

class LocalizeOptions(_message.Message):
    __slots__ = ("threshold", "threshold_mode", "multi_box", "max_candidates", "ranking", "pad_max", "pad_min", "pad_small_area", "pad_large_area", "min_box_area", "body_mask", "smart_padding", "anatomical_check", "min_mean_intensity")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_MODE_FIELD_NUMBER: _ClassVar[int]
    MULTI_BOX_FIELD_NUMBER: _ClassVar[int]
    MAX_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    PAD_MAX_FIELD_NUMBER: _ClassVar[int]
    PAD_MIN_FIELD_NUMBER: _ClassVar[int]
    PAD_SMALL_AREA_FIELD_NUMBER: _ClassVar[int]
    PAD_LARGE_AREA_FIELD_NUMBER: _ClassVar[int]
    MIN_BOX_AREA_FIELD_NUMBER: _ClassVar[int]
    BODY_MASK_FIELD_NUMBER: _ClassVar[int]
    SMART_PADDING_FIELD_NUMBER: _ClassVar[int]
    ANATOMICAL_CHECK_FIELD_NUMBER: _ClassVar[int]
    MIN_MEAN_INTENSITY_FIELD_NUMBER: _ClassVar[int]
    threshold: float
    threshold_mode: ThresholdMode
    multi_box: bool
    max_candidates: int
    ranking: BoxRanking
    pad_max: float
    pad_min: float
    pad_small_area: float
    pad_large_area: float
    min_box_area: float
    body_mask: bool
    smart_padding: bool
    anatomical_check: bool
    min_mean_intensity: float
    def __init__(self, threshold: _Optional[float] = ..., threshold_mode: _Optional[_Union[ThresholdMode, str]] = ..., multi_box: bool = ..., max_candidates: _Optional[int] = ..., ranking: _Optional[_Union[BoxRanking, str]] = ..., pad_max: _Optional[float] = ..., pad_min: _Optional[float] = ..., pad_small_area: _Optional[float] = ..., pad_large_area: _Optional[float] = ..., min_box_area: _Optional[float] = ..., body_mask: bool = ..., smart_padding: bool = ..., anatomical_check: bool = ..., min_mean_intensity: _Optional[float] = ...) -> None: ...

class LocalizeRequest(_message.Message):
    __slots__ = ("items", "cam", "options", "include_heatmap", "render_boxes")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    CAM_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HEATMAP_FIELD_NUMBER: _ClassVar[int]
    RENDER_BOXES_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[PromptedImage]
    cam: CamOptions
    options: LocalizeOptions
    include_heatmap: bool
    render_boxes: bool
    def __init__(self, items: _Optional[_Iterable[_Union[PromptedImage, _Mapping]]] = ..., cam: _Optional[_Union[CamOptions, _Mapping]] = ..., options: _Optional[_Union[LocalizeOptions, _Mapping]] = ..., include_heatmap: bool = ..., render_boxes: bool = ...) -> None: ...

class LocalizedBox(_message.Message):
    __slots__ = ("box", "score", "area_fraction")
    BOX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    AREA_FRACTION_FIELD_NUMBER: _ClassVar[int]
    box: _types_pb2.BoxXYXY
    score: float
    area_fraction: float
    def __init__(self, box: _Optional[_Union[_types_pb2.BoxXYXY, _Mapping]] = ..., score: _Optional[float] = ..., area_fraction: _Optional[float] = ...) -> None: ...

class LocalizeResult(_message.Message):
    __slots__ = ("boxes", "reason", "notes", "heatmap", "boxes_png", "similarity")
    BOXES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_FIELD_NUMBER: _ClassVar[int]
    BOXES_PNG_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    boxes: _containers.RepeatedCompositeFieldContainer[LocalizedBox]
    reason: str
    notes: _containers.RepeatedScalarFieldContainer[str]
    heatmap: _types_pb2.Tensor
    boxes_png: bytes
    similarity: float
    def __init__(self, boxes: _Optional[_Iterable[_Union[LocalizedBox, _Mapping]]] = ..., reason: _Optional[str] = ..., notes: _Optional[_Iterable[str]] = ..., heatmap: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., boxes_png: _Optional[bytes] = ..., similarity: _Optional[float] = ...) -> None: ...

class LocalizeResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[LocalizeResult]
    def __init__(self, results: _Optional[_Iterable[_Union[LocalizeResult, _Mapping]]] = ...) -> None: ...
