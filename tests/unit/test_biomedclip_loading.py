"""Offline loading from the hub repo's layout, and preprocessing and embeddings equal to open_clip's own."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
import yaml
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from modelyard.biomedclip.architecture import resolve_files, write_tiny_model
from modelyard.biomedclip.config import BiomedCLIPConfig, LocalizeSettings
from modelyard.biomedclip.model import BiomedCLIPAdapter, ClassifyItem, EmbedImageItem, EmbedTextItem
from modelyard.biomedclip.preprocess import ImageSettings, to_frame
from modelyard.runtime.config import parse_config
from modelyard.runtime.errors import ConfigError
from tests.biomedclip_support import load_adapter, one_torch_thread, section, tiny_model  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reference(paths: dict[str, Path]) -> tuple[torch.nn.Module, object, object]:
    """open_clip alone: its local-dir loader (config + weights + tokenizer files in one folder), with the text
    tower's hub name pointed at the local BERT config, and its own eval transform."""
    cfg = json.loads((paths["model_dir"] / "open_clip_config.json").read_text())["model_cfg"]
    text_cfg = dict(cfg["text_cfg"], hf_model_name=str(paths["text_dir"]), hf_model_pretrained=False)
    model = open_clip.create_model(f"local-dir:{paths['model_dir']}", text_cfg=text_cfg).eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{paths['model_dir']}")
    transform = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    return model, tokenizer, transform


@pytest.fixture(scope="module")
def adapter(tiny_model: dict[str, Path]) -> BiomedCLIPAdapter:  # noqa: F811
    return load_adapter(section(tiny_model, cam={"default_top_k": 64}))


def photo(seed: int, shape: tuple[int, int] = (150, 210)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = (rng.random((*shape, 3)) * 120).astype(np.uint8)
    img[30:90, 40:120] += 100
    return img


@pytest.mark.parametrize("mode", ["shortest", "longest", "squash"])
@pytest.mark.parametrize("shape", [(150, 210), (233, 97), (160, 160), (40, 30)])
def test_preprocessing_equals_open_clips_eval_transform(mode: str, shape: tuple[int, int]) -> None:
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    ours, geometry = to_frame(photo(3, shape), ImageSettings(160, mean, std), mode)
    theirs = image_transform_v2(PreprocessCfg(size=160, mean=mean, std=std, resize_mode=mode), is_train=False)(
        Image.fromarray(photo(3, shape))
    )
    assert ours.shape == (3, 160, 160) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-6)
    assert (geometry.height, geometry.width) == shape


def test_embeddings_and_labels_equal_open_clip_in_process(tiny_model, adapter: BiomedCLIPAdapter) -> None:  # noqa: F811
    model, tokenizer, transform = reference(tiny_model)
    images = [photo(0), photo(1, (97, 233))]
    texts = ["left lung nodule", "pleural effusion", "normal chest x ray"]
    with torch.no_grad():
        ref_img = F.normalize(model.encode_image(torch.stack([transform(Image.fromarray(i)) for i in images])), dim=-1)
        ref_txt = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
        ref_probs = (model.logit_scale.exp() * ref_img @ ref_txt.T).softmax(dim=-1)
    frames = [to_frame(i, adapter.image_settings)[0] for i in images]
    with torch.inference_mode():
        out = adapter.infer(
            [EmbedImageItem(f) for f in frames]
            + [EmbedTextItem(t) for t in texts]
            + [ClassifyItem(f, tuple(texts)) for f in frames]
        )
    ours_img, ours_txt = np.stack(out[:2]), np.stack(out[2:5])
    assert np.allclose(np.linalg.norm(ours_img, axis=1), 1, atol=1e-5)
    assert (np.sum(ours_img * ref_img.numpy(), axis=1) >= 0.9999).all()
    assert (np.sum(ours_txt * ref_txt.numpy(), axis=1) >= 0.9999).all()
    for got, want in zip(out[5:], ref_probs.numpy(), strict=True):
        np.testing.assert_allclose(got.probabilities, want, atol=1e-5)
        assert abs(float(got.probabilities.sum()) - 1) < 1e-5


def test_the_architecture_comes_from_open_clip_config_json(tmp_path: Path) -> None:
    paths = write_tiny_model(tmp_path, timm_model="test_vit2", embed_dim=24, context_length=16)
    adapter = load_adapter(section(paths, cam={"default_top_k": 8}))
    info = adapter.info()
    assert info["architecture"]["vision_cfg"]["timm_model_name"] == "test_vit2"
    assert info["architecture"]["embed_dim"] == 24
    with torch.inference_mode():
        (vector,) = adapter.infer([EmbedTextItem("lung")])
    assert vector.shape == (24,)


def test_old_config_key_names_load_without_edits(tmp_path: Path) -> None:
    paths = write_tiny_model(tmp_path, old_keys=True)
    text_cfg = json.loads((paths["model_dir"] / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]
    assert "proj" in text_cfg and "pooler_type" in text_cfg
    adapter = load_adapter(section(paths, cam={"default_top_k": 8}))
    assert type(adapter.model.text.proj).__name__ == "Sequential"  # the mlp projection the old key asked for


def test_every_missing_file_is_named_in_one_error(tmp_path: Path) -> None:
    paths = write_tiny_model(tmp_path)
    (paths["model_dir"] / "open_clip_pytorch_model.bin").unlink()
    (paths["model_dir"] / "vocab.txt").unlink()
    config = BiomedCLIPConfig.model_validate({"model_dir": str(paths["model_dir"])})
    with pytest.raises(ConfigError) as err:
        resolve_files(config)
    message = err.value.message
    assert "no weights in model_dir" in message and "open_clip_pytorch_model.bin" in message
    assert "config.json ('microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract')" in message
    assert "set model.text_dir" in message and "never downloads" in message
    assert "tokenizer files (tokenizer.json or vocab.txt)" in message

    (paths["model_dir"] / "open_clip_config.json").unlink()
    with pytest.raises(ConfigError, match=r"open_clip_config\.json not found in model_dir"):
        resolve_files(config)


def test_the_text_tower_config_is_found_in_the_hugging_face_cache_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = write_tiny_model(tmp_path / "models")
    repo = tmp_path / "hub" / "models--microsoft--BiomedNLP-BiomedBERT-base-uncased-abstract"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    shutil.copy(paths["text_dir"] / "config.json", repo / "snapshots" / "abc123" / "config.json")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    files = resolve_files(BiomedCLIPConfig.model_validate({"model_dir": str(paths["model_dir"])}))
    assert files.text_dir == repo / "snapshots" / "abc123"
    assert files.tokenizer_dir == paths["model_dir"]  # the hub layout ships the tokenizer next to the config


def test_a_checkpoint_of_another_architecture_is_refused_with_the_keys(tmp_path: Path, tiny_model) -> None:  # noqa: F811
    other = write_tiny_model(tmp_path, embed_dim=16)
    config = section(tiny_model, checkpoint=str(other["checkpoint"]), cam={"default_top_k": 8})
    with pytest.raises(ConfigError, match=r"does not fit the architecture of open_clip_config\.json"):
        load_adapter(config)


def test_a_pickled_checkpoint_needs_explicit_trust(tmp_path: Path, tiny_model) -> None:  # noqa: F811
    state = torch.load(tiny_model["checkpoint"], weights_only=True)
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": state, "args": argparse.Namespace(lr=0.1)}, pickled)  # a training checkpoint
    with pytest.raises(ConfigError, match="trust_checkpoint_pickle"):
        load_adapter(section(tiny_model, checkpoint=str(pickled), cam={"default_top_k": 8}))


def test_cam_settings_that_do_not_fit_the_model_stop_the_load(tiny_model) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match=r"default_top_k 300 exceeds the 64 channels .* at most 64"):
        load_adapter(section(tiny_model))
    with pytest.raises(ConfigError, match=r"has no module 'blockz' \(it has: .*blocks"):
        load_adapter(section(tiny_model, cam={"default_top_k": 8, "target_layer": "visual.trunk.blockz.-1"}))
    with pytest.raises(ConfigError, match="index 9 is out of range"):
        load_adapter(section(tiny_model, cam={"default_top_k": 8, "gradcam_layer": "visual.trunk.blocks.9"}))


def test_unknown_config_keys_are_named_with_a_suggestion(tiny_model) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match=r"unknown key 'model.cam.chunksize' — did you mean 'chunk_size'"):
        parse_config({"model": section(tiny_model, cam={"chunksize": 5})}, BiomedCLIPConfig, None, "test")
    with pytest.raises(ConfigError, match=r"unknown key 'model.localize.pad' .*known here: .*pad_max"):
        parse_config({"model": section(tiny_model, localize={"pad": 0.1})}, BiomedCLIPConfig, None, "test")
    with pytest.raises(ConfigError, match=r"needs \{\} where the label goes"):
        parse_config({"model": section(tiny_model, classify_template="an x-ray")}, BiomedCLIPConfig, None, "test")


def test_memory_need_grows_with_the_batch_and_counts_the_weights(tiny_model) -> None:  # noqa: F811
    config = BiomedCLIPConfig.model_validate(section(tiny_model))
    one, eight = BiomedCLIPAdapter.memory_need_mb(config, 1), BiomedCLIPAdapter.memory_need_mb(config, 8)
    assert 400 < one < eight


def test_the_shipped_config_is_valid(tiny_model) -> None:  # noqa: F811
    shipped = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "deploy" / "config" / "biomedclip.yaml").read_text()
    )
    assert shipped["model"]["model_dir"] == "/models/biomedclip" and shipped["model"]["cam"]["default_top_k"] == 300
    shipped["model"].update(model_dir=str(tiny_model["model_dir"]), text_dir=str(tiny_model["text_dir"]))
    config = parse_config(shipped, BiomedCLIPConfig, None, "deploy/config/biomedclip.yaml")
    assert config.model.localize == LocalizeSettings() and config.runtime.data_root == Path("/data")
