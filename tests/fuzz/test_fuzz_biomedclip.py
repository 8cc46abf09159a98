"""BiomedCLIP under fuzz: every RPC with any images, texts, labels, templates, CAM, render and box options."""

from __future__ import annotations

import grpc
from hypothesis import given
from hypothesis import strategies as st

from modelyard.v1 import biomedclip_pb2 as pb
from modelyard.v1 import biomedclip_pb2_grpc, types_pb2
from tests.fuzz import strategies as fz
from tests.fuzz.conftest import GOOD_IMAGES
from tests.fuzz.support import Target, fuzz

LIMIT = 3  # model.max_items_per_request in the fuzz config
prompts = fz.mostly(st.sampled_from(["lesion", "Is there an opacity in the left lung?", "heart"]), fz.texts)
# The tiny model's target layer has 64 channels; the config's default_top_k is 8.
cam_options = st.builds(
    pb.CamOptions,
    method=fz.mostly(st.sampled_from(list(pb.CamMethod.values())), fz.enum_values),
    top_k=fz.mostly(st.sampled_from([0, 0, 1, 64]), fz.uint32s),
)


def images(regions: list[str]) -> st.SearchStrategy[types_pb2.Image]:
    """Images of every kind, and valid ones of any size from 1x1."""
    return st.one_of(fz.images(GOOD_IMAGES, regions), fz.sized_images().map(lambda sized: sized[0]))


def stub(target: Target) -> biomedclip_pb2_grpc.BiomedCLIPStub:
    return biomedclip_pb2_grpc.BiomedCLIPStub(target.channel)


@st.composite
def some(draw: st.DrawFn, items: st.SearchStrategy, limit: int = LIMIT) -> list:
    count = draw(fz.counts(limit))
    return draw(st.lists(items, min_size=count, max_size=count))


@st.composite
def localize_options(draw: st.DrawFn) -> pb.LocalizeOptions:
    """Any of the optional fields set, each to a sensible value or to anything of its type."""
    fraction = fz.mostly(st.floats(0, 1, width=32), fz.floats)
    fields = {
        "threshold": fraction, "multi_box": st.booleans(), "max_candidates": fz.mostly(st.integers(1, 4), fz.uint32s),
        "pad_max": fraction, "pad_min": fraction, "pad_small_area": fraction, "pad_large_area": fraction,
        "min_box_area": fraction, "body_mask": st.booleans(), "smart_padding": st.booleans(),
        "anatomical_check": st.booleans(), "min_mean_intensity": fz.mostly(st.floats(0, 255, width=32), fz.floats),
        "threshold_mode": fz.mostly(st.sampled_from(list(pb.ThresholdMode.values())), fz.enum_values),
        "ranking": fz.mostly(st.sampled_from(list(pb.BoxRanking.values())), fz.enum_values),
    }  # fmt: skip
    chosen = draw(st.sets(st.sampled_from(sorted(fields)), max_size=4))
    return pb.LocalizeOptions(**{name: draw(fields[name]) for name in chosen})


@st.composite
def render_options(draw: st.DrawFn) -> pb.RenderOptions:
    render = pb.RenderOptions(
        composite=draw(st.booleans()),
        colormap=draw(fz.mostly(st.sampled_from(list(pb.Colormap.values())), fz.enum_values)),
        label=draw(fz.mostly(st.just(""), fz.texts, weight=1)),
    )
    if draw(st.booleans()):
        render.alpha = draw(fz.mostly(st.floats(0, 1, width=32), fz.floats))
    return render


@given(data=st.data())
@fuzz(40)
def test_embed_images_answers_any_images_cleanly(biomedclip: Target, regions: list[str], data) -> None:
    request = pb.EmbedImagesRequest(images=data.draw(some(images(regions))))
    response = biomedclip.call(stub(biomedclip).EmbedImages, request)
    if not isinstance(response, grpc.RpcError):
        assert response.embeddings.inline.shape[0] == len(request.images)


@given(texts=some(prompts))
@fuzz(30)
def test_embed_texts_answers_any_texts_cleanly(biomedclip: Target, texts: list[str]) -> None:
    biomedclip.call(stub(biomedclip).EmbedTexts, pb.EmbedTextsRequest(texts=texts))


@given(data=st.data())
@fuzz(30)
def test_classify_answers_any_labels_and_template_cleanly(biomedclip: Target, regions: list[str], data) -> None:
    request = pb.ClassifyRequest(
        images=data.draw(some(images(regions))),
        labels=data.draw(some(prompts, limit=6).filter(lambda labels: len(labels) != 1)),
        template=data.draw(fz.mostly(st.sampled_from(["", "a scan of {}"]), fz.texts)),
    )
    response = biomedclip.call(stub(biomedclip).Classify, request)
    if not isinstance(response, grpc.RpcError):
        assert len(response.results) == len(request.images)


@given(data=st.data())
@fuzz(30)
def test_heatmap_answers_any_cam_and_render_options_cleanly(biomedclip: Target, regions: list[str], data) -> None:
    items = some(st.builds(pb.PromptedImage, image=images(regions), prompt=prompts))
    request = pb.HeatmapRequest(items=data.draw(items), cam=data.draw(cam_options), render=data.draw(render_options()))
    if data.draw(st.booleans()):
        request.output_region.CopyFrom(data.draw(fz.output_regions(regions)))
    response = biomedclip.call(stub(biomedclip).Heatmap, request)
    if not isinstance(response, grpc.RpcError):
        assert len(response.results) == len(request.items)


@given(data=st.data())
@fuzz(30)
def test_localize_answers_any_box_options_cleanly(biomedclip: Target, regions: list[str], data) -> None:
    request = pb.LocalizeRequest(
        items=data.draw(some(st.builds(pb.PromptedImage, image=images(regions), prompt=prompts))),
        cam=data.draw(cam_options),
        options=data.draw(localize_options()),
        include_heatmap=data.draw(st.booleans()),
        render_boxes=data.draw(st.booleans()),
    )
    response = biomedclip.call(stub(biomedclip).Localize, request)
    if not isinstance(response, grpc.RpcError):
        assert len(response.results) == len(request.items)


@given(probe=fz.region_names(()), token=st.binary(max_size=32))
@fuzz(10)
def test_info_answers_any_probe_cleanly(biomedclip: Target, probe: str, token: bytes) -> None:
    request = types_pb2.InfoRequest(shared_memory_probe=probe, shared_memory_token=token)
    biomedclip.call(stub(biomedclip).Info, request)


def test_after_the_fuzz_biomedclip_still_localizes(biomedclip: Target) -> None:
    item = pb.PromptedImage(image=types_pb2.Image(ref=types_pb2.DataRef(path="images/grey.png")), prompt="lesion")
    response = biomedclip.call(stub(biomedclip).Localize, pb.LocalizeRequest(items=[item]))
    assert not isinstance(response, grpc.RpcError) and len(response.results) == 1
