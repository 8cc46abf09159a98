"""Heatmap -> boxes on synthetic maps: each rule of the seed's bbox stage, and the pictures made from maps."""

from __future__ import annotations

import numpy as np
import pytest

from modelyard.biomedclip.boxes import body_mask, localize, pad_fraction
from modelyard.biomedclip.config import LocalizeSettings
from modelyard.biomedclip.servicer import localize_settings
from modelyard.runtime.errors import InvalidInput
from modelyard.runtime.render import colorize, draw_boxes, heatmap_overlay
from modelyard.v1 import biomedclip_pb2

H, W = 200, 300
PLAIN = LocalizeSettings(body_mask=False, smart_padding=False, anatomical_check=False)


def blob(heat: np.ndarray, x1: int, y1: int, x2: int, y2: int, value: float) -> np.ndarray:
    heat[y1:y2, x1:x2] = np.maximum(heat[y1:y2, x1:x2], value)
    return heat


def grey(value: int = 120) -> np.ndarray:
    return np.full((H, W), value, np.uint8)


def unpadded(opts: LocalizeSettings) -> LocalizeSettings:
    return opts.model_copy(update={"pad_max": 0.0, "pad_min": 0.0})


def test_the_threshold_decides_which_regions_exist() -> None:
    heat = blob(blob(np.zeros((H, W), np.float32), 20, 20, 60, 60, 1.0), 150, 100, 250, 180, 0.5)
    at_045 = localize(heat, grey(), unpadded(PLAIN.model_copy(update={"multi_box": True})))
    assert [(b.x1, b.y1, b.x2, b.y2) for b in at_045.boxes] == [(150, 100, 250, 180), (20, 20, 60, 60)]  # by area
    at_055 = localize(heat, grey(), unpadded(PLAIN.model_copy(update={"multi_box": True, "threshold": 0.55})))
    assert [(b.x1, b.y1, b.x2, b.y2) for b in at_055.boxes] == [(20, 20, 60, 60)]
    assert at_055.boxes[0].score == pytest.approx(1.0)
    assert at_055.boxes[0].area_fraction == pytest.approx(40 * 40 / (H * W))


def test_single_box_mode_returns_the_best_region_and_ranking_can_weigh_heat() -> None:
    heat = blob(blob(np.zeros((H, W), np.float32), 20, 20, 60, 60, 1.0), 150, 100, 250, 180, 0.5)
    (largest,) = localize(heat, grey(), unpadded(PLAIN)).boxes
    assert (largest.x1, largest.y1) == (150, 100)
    hot = blob(blob(np.zeros((H, W), np.float32), 20, 20, 100, 100, 1.0), 150, 100, 250, 180, 0.5)
    (by_heat,) = localize(hot, grey(), unpadded(PLAIN.model_copy(update={"ranking": "area_x_heat"}))).boxes
    assert (by_heat.x1, by_heat.y1) == (20, 20)  # 80x80 x 1.0 beats 100x80 x 0.5


def test_otsu_threshold_separates_two_levels() -> None:
    heat = blob(np.full((H, W), 0.2, np.float32), 100, 50, 160, 120, 0.9)
    heat[0, 0] = 0.0
    found = localize(heat, grey(), unpadded(PLAIN.model_copy(update={"threshold_mode": "otsu"})))
    assert [(b.x1, b.y1, b.x2, b.y2) for b in found.boxes] == [(100, 50, 160, 120)]
    assert any("Otsu threshold" in note for note in found.notes)


@pytest.mark.parametrize(
    ("fraction", "pad"), [(0.01, 0.25), (0.05, 0.25), (0.40, 0.02), (0.9, 0.02), (0.225, 0.25 + 0.5 * (0.02 - 0.25))]
)
def test_padding_shrinks_linearly_from_pad_max_for_small_boxes_to_pad_min_for_large(
    fraction: float, pad: float
) -> None:
    assert pad_fraction(fraction, LocalizeSettings()) == pytest.approx(pad)


def test_each_padding_rule_is_applied_per_side() -> None:
    small = localize(blob(np.zeros((H, W), np.float32), 100, 80, 140, 120, 1.0), grey(), PLAIN).boxes[0]
    assert (small.x1, small.y1, small.x2, small.y2) == pytest.approx((90, 70, 150, 130))  # 2.7% of the image: 25%
    large = localize(blob(np.zeros((H, W), np.float32), 0, 0, 250, 190, 1.0), grey(), PLAIN).boxes[0]
    assert (large.x1, large.y1, large.x2, large.y2) == pytest.approx((0, 0, 255, 193.8))  # 79%: 2%, clipped at 0
    mid = localize(blob(np.zeros((H, W), np.float32), 100, 50, 200, 150, 1.0), grey(), PLAIN).boxes[0]
    p = pad_fraction(100 * 100 / (H * W), PLAIN)
    assert 0.02 < p < 0.25
    assert (mid.x1, mid.y1, mid.x2, mid.y2) == pytest.approx(
        (100 - 100 * p, 50 - 100 * p, 200 + 100 * p, 150 + 100 * p)
    )


def test_min_box_area_is_honoured_and_says_why_nothing_is_left() -> None:
    heat = blob(np.zeros((H, W), np.float32), 10, 10, 17, 17, 1.0)  # 49 px = 0.08% of the image
    found = localize(heat, grey(), PLAIN)
    assert found.boxes == [] and "smaller than min_box_area 0.005" in found.reason and "0.0008" in found.reason
    assert len(localize(heat, grey(), PLAIN.model_copy(update={"min_box_area": 0.0005})).boxes) == 1


def body_image() -> np.ndarray:
    """A bright ellipse (the body) on black, a glare spot inside it."""
    yy, xx = np.mgrid[0:H, 0:W]
    image = np.zeros((H, W), np.uint8)
    image[((xx - 150) / 110) ** 2 + ((yy - 100) / 80) ** 2 <= 1] = 110
    image[95:105, 145:155] = 255
    return image


def test_the_body_mask_is_the_body_without_glare() -> None:
    mask = body_mask(body_image())
    assert mask[100, 60] and mask[30, 150] and not mask[5, 5] and not mask[195, 295]
    assert not mask[100, 150]  # glare (> 245) and its surroundings are not body


def test_the_body_mask_removes_heat_outside_the_body() -> None:
    heat = blob(blob(np.zeros((H, W), np.float32), 0, 0, 40, 30, 1.0), 130, 60, 170, 90, 0.6)
    opts = unpadded(LocalizeSettings(smart_padding=False, anatomical_check=False))
    (box,) = localize(heat, body_image(), opts).boxes
    assert (box.x1, box.y1, box.x2, box.y2) == (130, 60, 170, 90)  # the corner blob was on black background
    (unmasked,) = localize(heat, body_image(), opts.model_copy(update={"body_mask": False})).boxes
    assert (unmasked.x1, unmasked.y1) == (130, 60)  # larger area wins without the mask too, but...
    both = localize(heat, body_image(), opts.model_copy(update={"body_mask": False, "multi_box": True})).boxes
    assert len(both) == 2  # ...the off-body blob only survives without it


def test_smart_padding_stops_at_the_body_but_never_cuts_the_region() -> None:
    image = np.zeros((H, W), np.uint8)
    image[50:150, 60:240] = 120  # the body's rectangle, before morphology
    heat = blob(np.zeros((H, W), np.float32), 70, 60, 110, 100, 1.0)
    opts = LocalizeSettings(body_mask=False, anatomical_check=False)
    free = localize(heat, image, opts.model_copy(update={"smart_padding": False})).boxes[0]
    clamped = localize(heat, image, opts).boxes[0]
    bx1 = int(np.nonzero(body_mask(image).any(axis=0))[0].min())
    assert free.x1 == pytest.approx(60) and bx1 > 60 - 10  # 25% of 40 px = 10 px of padding
    assert clamped.x1 == pytest.approx(max(60, bx1)) and clamped.x2 == free.x2
    heat_outside = blob(np.zeros((H, W), np.float32), 20, 60, 70, 100, 1.0)  # the region itself leaves the body:
    assert localize(heat_outside, image, opts).boxes[0].x1 == pytest.approx(20)  # kept whole, not padded further


def test_the_anatomical_check_rejects_dark_boxes_and_single_box_mode_keeps_the_largest() -> None:
    image = grey(0)
    image[:, 150:] = 120
    heat = blob(blob(np.zeros((H, W), np.float32), 20, 20, 100, 100, 1.0), 200, 50, 240, 90, 1.0)
    opts = unpadded(LocalizeSettings(body_mask=False, smart_padding=False))
    (kept,) = localize(heat, image, opts).boxes
    assert (kept.x1, kept.y1) == (200, 50)  # the larger dark one was rejected
    multi = localize(heat, image, opts.model_copy(update={"multi_box": True}))
    assert [(b.x1, b.y1) for b in multi.boxes] == [(200, 50)] and "1 box(es) failed" in multi.notes[0]
    dark = blob(np.zeros((H, W), np.float32), 20, 20, 100, 100, 1.0)
    fallback = localize(dark, image, opts)
    assert len(fallback.boxes) == 1 and "the largest was kept" in fallback.notes[0]
    none = localize(dark, image, opts.model_copy(update={"multi_box": True}))
    assert none.boxes == [] and "failed the anatomical check (mean intensity below 15)" in none.reason


def test_a_flat_map_gives_no_box_and_the_reason() -> None:
    found = localize(np.zeros((H, W), np.float32), grey(), LocalizeSettings())
    assert found.boxes == [] and "flat" in found.reason
    masked = localize(blob(np.zeros((H, W), np.float32), 0, 0, 30, 30, 1.0), body_image(), LocalizeSettings())
    assert masked.boxes == [] and "inside the body mask" in masked.reason


def test_request_options_override_the_configured_defaults_and_are_checked() -> None:
    msg = biomedclip_pb2.LocalizeOptions(
        threshold=0.3, multi_box=True, threshold_mode=biomedclip_pb2.THRESHOLD_OTSU, min_mean_intensity=0
    )
    merged = localize_settings(LocalizeSettings(), msg)
    assert (merged.threshold, merged.multi_box, merged.threshold_mode, merged.min_mean_intensity) == (
        pytest.approx(0.3),
        True,
        "otsu",
        0,
    )
    assert merged.pad_max == 0.25 and merged.body_mask  # untouched fields keep the defaults
    with pytest.raises(InvalidInput, match=r"threshold: Input should be less than or equal to 1 \(got 1.5\)"):
        localize_settings(LocalizeSettings(), biomedclip_pb2.LocalizeOptions(threshold=1.5))
    with pytest.raises(InvalidInput, match=r"pad_small_area .* must be below pad_large_area"):
        localize_settings(LocalizeSettings(), biomedclip_pb2.LocalizeOptions(pad_small_area=0.5))
    with pytest.raises(InvalidInput, match="unknown ranking 7"):
        localize_settings(LocalizeSettings(), biomedclip_pb2.LocalizeOptions(ranking=7))  # type: ignore[arg-type]


def test_colour_composites_use_opencvs_maps_and_alpha() -> None:
    heat = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (16, 1))
    jet = colorize(heat, "jet")
    assert tuple(jet[0, 0]) == (0, 0, 128) and tuple(jet[0, -1]) == (128, 0, 0)  # dark blue -> dark red
    assert not np.array_equal(colorize(heat, "inferno"), jet) and not np.array_equal(colorize(heat, "hot"), jet)
    image = np.full((16, 64), 200, np.uint8)
    assert np.array_equal(heatmap_overlay(image, heat, "turbo", alpha=0.0), np.full((16, 64, 3), 200, np.uint8))
    assert np.array_equal(heatmap_overlay(image, heat, "turbo", alpha=1.0), colorize(heat, "turbo"))
    half = heatmap_overlay(image, heat, "jet", alpha=0.5)
    assert tuple(half[0, 0]) == (100, 100, 164)
    big = np.full((120, 200), 90, np.uint8)
    labelled = heatmap_overlay(big, np.zeros((120, 200), np.float32), label="left lung nodule")
    assert not np.array_equal(labelled, heatmap_overlay(big, np.zeros((120, 200), np.float32)))
    assert np.array_equal(labelled[60:, 100:], heatmap_overlay(big, np.zeros((120, 200), np.float32))[60:, 100:])
    with pytest.raises(ValueError, match="unknown colormap"):
        colorize(heat, "viridis")


def test_boxes_are_drawn_in_their_colour_on_their_edges() -> None:
    picture = draw_boxes(np.zeros((50, 60), np.uint8), [(10, 5, 40, 30)], (255, 0, 0), 2)
    assert tuple(picture[5, 20]) == (255, 0, 0) and tuple(picture[29, 20]) == (255, 0, 0)
    assert tuple(picture[15, 20]) == (0, 0, 0) and tuple(picture[31, 20]) == (0, 0, 0)
