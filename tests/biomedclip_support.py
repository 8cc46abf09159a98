"""BiomedCLIP test models: the real file layout at a tiny size, and one whose right answer is known by construction.

Import the fixtures into a test module (`from tests.biomedclip_support import tiny_model  # noqa: F401`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modelyard.biomedclip.architecture import load_model, load_tokenizer, resolve_files, write_tiny_model
from modelyard.biomedclip.config import BiomedCLIPConfig
from modelyard.biomedclip.model import BiomedCLIPAdapter

CHANNELS = 64  # timm test_vit: width 64, 10x10 patches of 16 px at 160 px
TARGET_CHANNELS = range(0, 4)  # respond to red: the prompt's evidence
DISTRACTOR_CHANNELS = range(4, 28)  # respond to green: evidence against the prompt
PROMPT = "lesion"


def section(paths: dict[str, Path], **extra: object) -> dict:
    """The `model:` config section for a model written by write_tiny_model."""
    return {"model_dir": str(paths["model_dir"]), "text_dir": str(paths["text_dir"]), **extra}


def load_adapter(model_section: dict) -> BiomedCLIPAdapter:
    adapter = BiomedCLIPAdapter(BiomedCLIPConfig.model_validate(model_section), "cpu")
    adapter.load()
    return adapter


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine run several times faster on one intra-op thread (no OpenMP barrier
    waits on descheduled threads); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random weights in BiomedCLIP's layout (test_vit + a 2-layer BERT + a small WordPiece vocabulary)."""
    return write_tiny_model(tmp_path_factory.mktemp("biomedclip-tiny"), seed=1)


@dataclass(frozen=True)
class Scene:
    """A 200x160 image: black, a red 40x40 square (the target) and a green 80x80 field (the distractor)."""

    image: np.ndarray
    target: tuple[int, int, int, int]  # x1, y1, x2, y2
    distractor: tuple[int, int, int, int]

    def region(self, box: tuple[int, int, int, int]) -> np.ndarray:
        mask = np.zeros(self.image.shape[:2], bool)
        mask[box[1] : box[3], box[0] : box[2]] = True
        return mask


def scene(target: tuple[int, int, int, int] = (120, 40, 160, 80), width: int = 200) -> Scene:
    image = np.zeros((160, width, 3), np.uint8)
    distractor = (0, 80, 80, 160)
    image[distractor[1] : distractor[3], distractor[0] : distractor[2], 1] = 255
    image[target[1] : target[3], target[0] : target[2], 0] = 255
    return Scene(image, target, distractor)


def craft_checkpoint(paths: dict[str, Path], logit_scale: float = 4.0) -> None:
    """Rewrite the tiny model's image tower so its score for PROMPT is known by construction.

    Patch embedding: channels 0-3 measure a patch's red, channels 4-27 its green (each zero on black), 62/63 carry
    +-50 so every LayerNorm is near-linear (their gains are 0, so they never reach a feature). Blocks 0-4 are
    identities; the last block's attention is uniform (q = k = 0, v = proj = I), so the CLS token receives the mean
    of all patches. The projection sends red to the prompt's text embedding t and green to a direction orthogonal
    to t: red raises cos(image, t), green lowers it. So the prompt is *where the red square is*: gScoreCAM's
    gradient ranking keeps the 4 red channels; ScoreCAM's softmax over all 64 channels lets the 24 green ones,
    whose masked scores are only somewhat lower, outweigh them.
    """
    config = BiomedCLIPConfig.model_validate(section(paths))
    files = resolve_files(config)
    model, _ = load_model(files, "cpu")
    with torch.no_grad():
        t = F.normalize(model.encode_text(load_tokenizer(files)([PROMPT])), dim=-1)[0]
    v = torch.randn(t.shape, generator=torch.Generator().manual_seed(0))
    v = F.normalize(v - (v @ t) * t, dim=0)
    state = {k: w.clone() for k, w in model.state_dict().items()}
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    trunk, big = "visual.trunk.", 50.0
    patch_w, patch_b = torch.zeros(CHANNELS, 3, 16, 16), torch.zeros(CHANNELS)
    for c in TARGET_CHANNELS:
        patch_w[c, 0], patch_b[c] = 1 / 256, mean[0] / std[0]
    for c in DISTRACTOR_CHANNELS:
        patch_w[c, 1], patch_b[c] = 1 / 256, mean[1] / std[1]
    patch_b[62], patch_b[63] = big, -big
    state[trunk + "patch_embed.proj.weight"], state[trunk + "patch_embed.proj.bias"] = patch_w, patch_b
    state[trunk + "pos_embed"] = torch.zeros_like(state[trunk + "pos_embed"])
    cls = torch.zeros(1, 1, CHANNELS)
    cls[..., 62], cls[..., 63] = big, -big
    state[trunk + "cls_token"] = cls
    gain = torch.ones(CHANNELS)
    gain[62:] = 0
    depth = sum(1 for k in state if k.startswith(trunk + "blocks.") and k.endswith(".norm1.weight"))
    for i in range(depth):
        block = f"{trunk}blocks.{i}."
        state[block + "mlp.fc2.weight"].zero_()
        state[block + "mlp.fc2.bias"].zero_()
        if i < depth - 1:
            state[block + "attn.proj.weight"].zero_()
            state[block + "attn.proj.bias"].zero_()
            continue
        state[block + "norm1.weight"], state[block + "norm1.bias"] = gain.clone(), torch.zeros(CHANNELS)
        qkv = torch.zeros(3 * CHANNELS, CHANNELS)
        qkv[2 * CHANNELS :] = torch.eye(CHANNELS)
        state[block + "attn.qkv.weight"], state[block + "attn.qkv.bias"] = qkv, torch.zeros(3 * CHANNELS)
        state[block + "attn.proj.weight"], state[block + "attn.proj.bias"] = torch.eye(CHANNELS), torch.zeros(CHANNELS)
    state[trunk + "norm.weight"], state[trunk + "norm.bias"] = gain.clone(), torch.zeros(CHANNELS)
    head = torch.zeros(t.shape[0], CHANNELS)
    for c in TARGET_CHANNELS:
        head[:, c] = t
    for c in DISTRACTOR_CHANNELS:
        head[:, c] = v
    state["visual.head.proj.weight"] = head
    state["logit_scale"] = torch.tensor(math.log(logit_scale))
    torch.save(state, paths["checkpoint"])


@pytest.fixture(scope="session")
def crafted_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    paths = write_tiny_model(tmp_path_factory.mktemp("biomedclip-crafted"), seed=2)
    craft_checkpoint(paths)
    return paths
