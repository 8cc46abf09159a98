"""gScoreCAM and its alternatives on a model whose right answer is known by construction (tests/biomedclip_support)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modelyard.biomedclip.boxes import localize, to_grey
from modelyard.biomedclip.config import LocalizeSettings
from modelyard.biomedclip.model import BiomedCLIPAdapter, Heatmap, HeatmapItem
from modelyard.biomedclip.preprocess import FrameGeometry, min_max, to_frame, to_original
from modelyard.runtime.errors import Cancelled, InvalidInput
from modelyard.runtime.progress import Progress
from tests.biomedclip_support import (  # noqa: F401
    CHANNELS,
    PROMPT,
    Scene,
    crafted_model,
    load_adapter,
    one_torch_thread,
    scene,
    section,
    tiny_model,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def crafted(crafted_model: dict[str, Path]) -> BiomedCLIPAdapter:  # noqa: F811
    return load_adapter(section(crafted_model, cam={"default_top_k": 4}))


def heat(adapter: BiomedCLIPAdapter, sc: Scene, method: str, top_k: int = 0, geometry: str = "longest") -> Heatmap:
    pixels, frame = to_frame(sc.image, adapter.image_settings, geometry)
    with torch.inference_mode():
        (result,) = adapter.infer([HeatmapItem(pixels, frame, PROMPT, method, top_k)])
    assert isinstance(result, Heatmap), result
    return result


def peak(h: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(int(h.argmax()), h.shape)
    return int(x), int(y)


def inside(point: tuple[int, int], box: tuple[int, int, int, int]) -> bool:
    return box[0] <= point[0] < box[2] and box[1] <= point[1] < box[3]


def test_gscorecam_localises_what_the_model_was_built_to_score(crafted: BiomedCLIPAdapter) -> None:
    sc = scene()
    result = heat(crafted, sc, "gscorecam", top_k=4)
    assert result.heatmap.shape == sc.image.shape[:2] and result.heatmap.dtype == np.float32
    assert result.heatmap.min() == 0.0 and result.heatmap.max() == 1.0
    assert inside(peak(result.heatmap), sc.target)
    assert result.heatmap[sc.region(sc.target)].mean() > 0.6
    assert result.heatmap[sc.region(sc.distractor)].max() < 0.05
    found = localize(result.heatmap, to_grey(sc.image), LocalizeSettings())
    (box,) = found.boxes
    x1, y1, x2, y2 = sc.target
    assert box.x1 <= x1 and box.y1 <= y1 and box.x2 >= x2 and box.y2 >= y2  # holds the whole target...
    assert (box.x2 - box.x1) * (box.y2 - box.y1) < 2.5 * (x2 - x1) * (y2 - y1)  # ...with no more than padding


def test_scorecam_differs_where_many_channels_count_against_the_prompt(crafted: BiomedCLIPAdapter) -> None:
    # ScoreCAM softmax-weighs all 64 channels; the 24 green ones outweigh the 4 red ones although every green
    # mask scores lower. gScoreCAM's gradient ranking never keeps them.
    sc = scene()
    score = heat(crafted, sc, "scorecam")
    assert score.top_k == CHANNELS
    assert inside(peak(score.heatmap), sc.distractor)
    assert score.heatmap[sc.region(sc.distractor)].mean() > score.heatmap[sc.region(sc.target)].mean()
    g = heat(crafted, sc, "gscorecam", top_k=4)
    assert g.top_k == 4 and inside(peak(g.heatmap), sc.target)


def test_gscorecam_keeping_every_channel_is_scorecam(crafted: BiomedCLIPAdapter) -> None:
    sc = scene()
    np.testing.assert_allclose(
        heat(crafted, sc, "gscorecam", top_k=CHANNELS).heatmap, heat(crafted, sc, "scorecam").heatmap, atol=1e-5
    )


@pytest.mark.parametrize("method", ["gradcam", "similarity"])
def test_the_cheaper_methods_find_the_target_too(crafted: BiomedCLIPAdapter, method: str) -> None:
    sc = scene()
    result = heat(crafted, sc, method)
    assert inside(peak(result.heatmap), sc.target)
    assert result.similarity == pytest.approx(heat(crafted, sc, "gscorecam", 4).similarity, abs=1e-5)


@pytest.mark.parametrize(
    ("layer", "ranking"),
    [("visual.trunk.blocks.-1.norm1", "spatial_mean"), ("visual.trunk.patch_embed.proj", "auto")],
    ids=["block-norm-tokens", "conv-feature-maps"],
)
def test_the_target_layer_and_channel_ranking_are_config(crafted_model, layer: str, ranking: str) -> None:  # noqa: F811
    adapter = load_adapter(
        section(crafted_model, cam={"default_top_k": 4, "target_layer": layer, "channel_ranking": ranking})
    )
    assert adapter.engine.layout.tokens == (layer != "visual.trunk.patch_embed.proj")
    sc = scene()
    assert inside(peak(heat(adapter, sc, "gscorecam", 4).heatmap), sc.target)


def test_maps_lie_where_the_image_was_not_where_the_model_frame_was(crafted: BiomedCLIPAdapter) -> None:
    # A wide image with the target at its left edge: the model's own centre crop never sees it, so a map made on
    # the crop (the seed's) cannot find it; the letterboxed geometry does, and puts it back in original pixels.
    sc = scene(target=(0, 20, 40, 60), width=320)
    whole = heat(crafted, sc, "gscorecam", 4, geometry="longest")
    assert whole.heatmap.shape == (160, 320)
    assert inside(peak(whole.heatmap), sc.target)
    crop = heat(crafted, sc, "gscorecam", 4, geometry="shortest")
    assert crop.heatmap.shape == (160, 320)
    assert crop.heatmap[:, :80].max() == 0.0 and crop.heatmap[:, 240:].max() == 0.0  # cropped away: no evidence
    assert crop.heatmap[sc.region(sc.target)].max() == 0.0


def test_a_batch_with_every_method_equals_each_item_alone_and_chunking_changes_nothing(
    crafted: BiomedCLIPAdapter,
) -> None:
    scenes = [scene(), scene(target=(20, 10, 60, 50)), scene(width=170)]
    requests = [("gscorecam", 4), ("scorecam", 0), ("gradcam", 0), ("similarity", 0), ("gscorecam", 9)]
    items = []
    for i, (method, k) in enumerate(requests):
        pixels, frame = to_frame(scenes[i % 3].image, crafted.image_settings, "longest")
        items.append(HeatmapItem(pixels, frame, PROMPT, method, k))
    with torch.inference_mode():
        together = crafted.infer(items)
    chunk = crafted.engine.chunk_size
    try:
        crafted.engine.chunk_size = 5
        with torch.inference_mode():
            alone = [crafted.infer([item])[0] for item in items]
    finally:
        crafted.engine.chunk_size = chunk
    for a, b in zip(together, alone, strict=True):
        assert isinstance(a, Heatmap) and isinstance(b, Heatmap)
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-5)
        assert (a.method, a.top_k) == (b.method, b.top_k)


def test_out_of_memory_while_scoring_masks_halves_the_chunk_and_gives_the_same_map(
    crafted: BiomedCLIPAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    sc = scene()
    expected = heat(crafted, sc, "scorecam").heatmap
    engine = crafted.engine
    real_score = engine._score
    sizes: list[int] = []

    def tight(pixels: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        sizes.append(len(pixels))
        if len(pixels) > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real_score(pixels, text)

    monkeypatch.setattr(engine, "_score", tight)
    monkeypatch.setattr(engine, "chunk_size", 32)
    np.testing.assert_allclose(heat(crafted, sc, "scorecam").heatmap, expected, atol=1e-5)
    assert engine.chunk_size == 8 and 32 in sizes and 16 in sizes


def test_a_cancelled_item_stops_and_the_rest_of_its_batch_completes(crafted: BiomedCLIPAdapter) -> None:
    sc = scene()
    pixels, frame = to_frame(sc.image, crafted.image_settings, "longest")
    gone, waiting = Progress(), Progress()
    gone.cancel()
    with torch.inference_mode():
        first, second = crafted.infer(
            [
                HeatmapItem(pixels, frame, PROMPT, "scorecam", 0, gone),
                HeatmapItem(pixels, frame, PROMPT, "scorecam", 0, waiting),
            ]
        )
    assert isinstance(first, Cancelled)
    assert isinstance(second, Heatmap) and inside(peak(second.heatmap), sc.distractor)
    update = waiting.take()
    assert update is not None and update.done == update.total == CHANNELS


def test_a_call_that_ends_mid_item_stops_its_masked_scoring_after_the_current_chunk(
    crafted: BiomedCLIPAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    sc = scene()
    pixels, frame = to_frame(sc.image, crafted.image_settings, "longest")
    progress = Progress()
    engine, real_score, chunks = crafted.engine, crafted.engine._score, []

    def score(x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        chunks.append(len(x))
        if len(chunks) == 3:
            progress.cancel()  # what the servicer's gRPC termination callback does when the deadline passes
        return real_score(x, text)

    monkeypatch.setattr(engine, "_score", score)
    monkeypatch.setattr(engine, "chunk_size", 8)
    with torch.inference_mode():
        (result,) = crafted.infer([HeatmapItem(pixels, frame, PROMPT, "scorecam", 0, progress)])
    assert isinstance(result, Cancelled)
    assert chunks == [1, 8, 8]  # the full-image pass, then two chunks of masks of the 8 there were; not 64 masks


def test_a_top_k_beyond_the_layer_fails_only_its_own_item(crafted: BiomedCLIPAdapter) -> None:
    sc = scene()
    pixels, frame = to_frame(sc.image, crafted.image_settings, "longest")
    with torch.inference_mode():
        bad, good = crafted.infer(
            [HeatmapItem(pixels, frame, PROMPT, "gscorecam", 65), HeatmapItem(pixels, frame, PROMPT, "gscorecam", 4)]
        )
    assert isinstance(bad, InvalidInput) and "use 1..64" in bad.message
    assert isinstance(good, Heatmap)


def test_the_gradient_ranking_is_informative_at_the_default_layer(crafted: BiomedCLIPAdapter) -> None:
    # The published choice for ViTs: the CLS token's gradient at the last block (patch tokens there get none).
    sc = scene()
    pixels, _ = to_frame(sc.image, crafted.image_settings, "longest")
    engine = crafted.engine
    with torch.inference_mode(False):
        text = crafted._embed_texts([PROMPT])
        _, grad, _ = engine._capture(engine.target, engine.layout, torch.from_numpy(pixels)[None], text, True)
    assert grad is not None
    assert torch.count_nonzero(grad[0, 1:]) == 0  # patch tokens of the last block: no gradient at all
    top = set(grad[0, 0].topk(4).indices.tolist())
    assert top == {0, 1, 2, 3}  # the red channels, by construction


def test_mapping_back_is_one_bilinear_resample_in_each_geometry() -> None:
    grid = np.random.default_rng(0).random((4, 4)).astype(np.float32)

    def bilinear(height: int, width: int) -> np.ndarray:  # torch's pixel-centre bilinear resize, the reference
        t = torch.from_numpy(grid)[None, None]
        return F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()

    # Squashed: a 48x80 image stretched over the 64x64 frame comes back as a plain resize of the grid.
    np.testing.assert_allclose(to_original(grid, FrameGeometry(48, 80, 64, 64, 64, 0, 0)), bilinear(48, 80), atol=1e-5)
    # Letterboxed: a 32x64 image filled rows 16..48 of the frame, and gets exactly those rows back.
    letterbox = to_original(grid, FrameGeometry(32, 64, 64, 32, 64, 16, 0))
    np.testing.assert_allclose(letterbox, bilinear(64, 64)[16:48], atol=1e-5)
    # Centre-cropped: a 64x128 image's columns 32..96 were the frame; the rest was never seen and stays 0.
    crop = to_original(grid, FrameGeometry(64, 128, 64, 64, 128, 0, -32))
    np.testing.assert_allclose(crop[:, 32:96], bilinear(64, 64), atol=1e-5)
    assert crop[:, :32].max() == 0 and crop[:, 96:].max() == 0
    assert min_max(np.full((3, 3), 7.0)).max() == 0.0  # a flat map carries no location


def test_random_weights_still_give_a_full_range_map_per_method(tiny_model) -> None:  # noqa: F811
    adapter = load_adapter(section(tiny_model, cam={"default_top_k": 16}))
    rng = np.random.default_rng(0)
    image = (rng.random((90, 130, 3)) * 255).astype(np.uint8)
    for method, k in (("gscorecam", 16), ("scorecam", 0), ("gradcam", 0), ("similarity", 0)):
        pixels, frame = to_frame(image, adapter.image_settings, "longest")
        with torch.inference_mode():
            (result,) = adapter.infer([HeatmapItem(pixels, frame, "left lung nodule", method, k)])
        assert isinstance(result, Heatmap)
        assert result.heatmap.shape == (90, 130) and np.isfinite(result.heatmap).all()
        assert result.heatmap.min() == 0.0 and result.heatmap.max() == 1.0
