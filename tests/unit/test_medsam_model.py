"""MedSAM's own preprocessing and inference, checked against a reference written here from MedSAM_Inference.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import transform

from modelyard.medsam.architecture import TINY, load_sam, read_state_dict, write_random_checkpoint
from modelyard.medsam.config import MedSAMConfig
from modelyard.medsam.model import MedSAMAdapter, SegmentItem
from modelyard.medsam.preprocess import ct_window, mr_percentile, resize_normalise, scale_boxes, to_rgb_uint8
from modelyard.runtime.errors import ConfigError


def reference_medsam(model, image_grey: np.ndarray, box: list[float], size: int) -> np.ndarray:
    """MedSAM_Inference.py, step by step (grey uint8 input, one box)."""
    H, W = image_grey.shape
    img_3c = np.repeat(image_grey[:, :, None], 3, axis=-1)
    img_1024 = transform.resize(img_3c, (size, size), order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)
    img_1024 = (img_1024 - img_1024.min()) / np.clip(img_1024.max() - img_1024.min(), a_min=1e-8, a_max=None)
    tensor = torch.tensor(img_1024).float().permute(2, 0, 1).unsqueeze(0)
    box_1024 = np.array([box]) / np.array([W, H, W, H]) * size
    with torch.no_grad():
        embedding = model.image_encoder(tensor)
        box_torch = torch.as_tensor(box_1024, dtype=torch.float)[:, None, :]
        sparse, dense = model.prompt_encoder(points=None, boxes=box_torch, masks=None)
        logits, _ = model.mask_decoder(
            image_embeddings=embedding,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        pred = F.interpolate(torch.sigmoid(logits), size=(H, W), mode="bilinear", align_corners=False)
    return (pred.squeeze().numpy() > 0.5).astype(np.uint8)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(3)
    img = (rng.random((90, 70)) * 60).astype(np.uint8)
    img[30:60, 20:50] += 150
    return img


def test_preprocessing_is_medsams_stretch_and_min_max_not_sampredictors(image: np.ndarray) -> None:
    ours = resize_normalise(to_rgb_uint8(image), 128)
    img_3c = np.repeat(image[:, :, None], 3, axis=-1)
    ref = transform.resize(img_3c, (128, 128), order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)
    ref = (ref - ref.min()) / np.clip(ref.max() - ref.min(), 1e-8, None)
    assert ours.shape == (3, 128, 128) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref.transpose(2, 0, 1), atol=1e-6)
    assert ours.min() == 0.0 and ours.max() == 1.0  # min-max, no ImageNet mean/std, no padding


def test_rgba_drops_alpha_and_grey_repeats_to_three_channels(image: np.ndarray) -> None:
    rgba = np.dstack([image, image, image, np.full_like(image, 17)])
    assert np.array_equal(to_rgb_uint8(rgba), to_rgb_uint8(image))
    assert to_rgb_uint8(image).shape == (*image.shape, 3)


def test_wide_ranges_are_min_max_scaled_to_uint8() -> None:
    raw = np.array([[1000, 3000], [5000, 65535]], dtype=np.uint16)
    out = to_rgb_uint8(raw)[:, :, 0]
    assert out.dtype == np.uint8 and out[0, 0] == 0 and out[1, 1] == 255


def test_ct_window_maps_level_and_width_to_the_uint8_range() -> None:
    hu = np.array([-1000, -160, 40, 240, 3000], dtype=np.int16)
    assert ct_window(hu).tolist() == [0, 0, 127, 255, 255]


def test_mr_clips_to_the_percentiles_of_non_zero_voxels_and_keeps_background_zero() -> None:
    values = np.concatenate([np.zeros(100), np.linspace(1, 1000, 1000), [1e6]]).astype(np.float32)
    out = mr_percentile(values)
    assert out[:100].max() == 0 and out[-1] == 255
    assert out[100 + 500] == pytest.approx(127, abs=2)


def test_boxes_scale_into_the_stretched_frame() -> None:
    scaled = scale_boxes(np.array([[10, 20, 30, 40]]), height=200, width=100, size=1024)
    np.testing.assert_allclose(scaled, [[102.4, 102.4, 307.2, 204.8]])


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> MedSAMAdapter:
    ckpt = write_random_checkpoint(tmp_path_factory.mktemp("m") / "tiny.pth", TINY, seed=5)
    medsam = MedSAMAdapter(MedSAMConfig(checkpoint=ckpt, architecture=TINY), "cpu")
    medsam.load()
    return medsam


def item(image: np.ndarray, boxes: list[list[float]]) -> SegmentItem:
    return SegmentItem(resize_normalise(to_rgb_uint8(image), 128), np.array(boxes, float), *image.shape[:2])


def test_the_adapter_equals_medsams_reference_inference(adapter: MedSAMAdapter, image: np.ndarray) -> None:
    box = [18.0, 28.0, 52.0, 62.0]
    with torch.inference_mode():
        (result,) = adapter.infer([item(image, [box])])
    expected = reference_medsam(adapter.model, image, box, 128)
    assert result.masks.shape == (1, 90, 70) and result.masks.dtype == np.uint8
    assert np.array_equal(result.masks[0], expected)
    assert result.scores.shape == (1,)


def test_many_boxes_of_one_image_decode_in_one_batch_like_one_at_a_time(
    adapter: MedSAMAdapter, image: np.ndarray
) -> None:
    boxes = [[18.0, 28.0, 52.0, 62.0], [0.0, 0.0, 35.0, 45.0], [10.0, 50.0, 70.0, 90.0]]
    with torch.inference_mode():
        (together,) = adapter.infer([item(image, boxes)])
        alone = [adapter.infer([item(image, [b])])[0] for b in boxes]
    for i, single in enumerate(alone):
        assert np.array_equal(together.masks[i], single.masks[0])
        assert together.scores[i] == pytest.approx(single.scores[0], abs=1e-5)


def test_a_batch_of_images_equals_each_image_alone(adapter: MedSAMAdapter, image: np.ndarray) -> None:
    other = np.ascontiguousarray(image[::-1, :])
    with torch.inference_mode():
        batch = adapter.infer([item(image, [[5, 5, 40, 40]]), item(other, [[10, 10, 60, 80]])])
        one = adapter.infer([item(other, [[10, 10, 60, 80]])])
    assert np.array_equal(batch[1].masks, one[0].masks)


def test_training_checkpoints_with_module_prefixes_load_to_the_same_model(tmp_path: Path) -> None:
    flat = write_random_checkpoint(tmp_path / "flat.pth", TINY, seed=9)
    training = write_random_checkpoint(tmp_path / "train.pth", TINY, seed=9, training_format=True)
    (a, fmt_a), (b, fmt_b) = load_sam(flat, TINY, "cpu"), load_sam(training, TINY, "cpu")
    assert fmt_a == "flat SAM state dict"
    assert fmt_b == "training checkpoint {'model': state_dict} with 'module.' prefixes"
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name


def test_a_checkpoint_of_another_architecture_is_named_as_such(tmp_path: Path) -> None:
    ckpt = write_random_checkpoint(tmp_path / "tiny.pth", TINY)
    bigger = TINY.model_copy(update={"encoder_depth": 3})
    with pytest.raises(ConfigError) as err:
        load_sam(ckpt, bigger, "cpu")
    assert "does not fit the configured architecture" in err.value.message
    assert "image_encoder.blocks.2" in err.value.message


def test_checkpoints_holding_arbitrary_objects_load_only_when_trusted(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pth"
    state = {"model": {"a": torch.zeros(1)}, "args": Path("/somewhere")}  # any non-tensor class
    torch.save(state, path)
    with pytest.raises(ConfigError, match="trust_checkpoint_pickle"):
        read_state_dict(path)
    loaded, fmt = read_state_dict(path, trust_pickle=True)
    assert "a" in loaded and fmt.startswith("training checkpoint")


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match=r"cannot be read by torch\.load"):
        read_state_dict(path)


def test_the_memory_estimate_grows_with_the_batch_and_the_architecture() -> None:
    base = MedSAMConfig.model_construct(architecture="vit_b")
    one, four = MedSAMAdapter.memory_need_mb(base, 1), MedSAMAdapter.memory_need_mb(base, 4)
    assert 1500 < one < 4000 and four > one
    huge = MedSAMConfig.model_construct(architecture="vit_h")
    assert MedSAMAdapter.memory_need_mb(huge, 1) > one
