"""Build SAM from an Architecture and load MedSAM checkpoints (flat or training format) onto any device.

segment-anything's own builder hard-codes 1024 px and calls torch.load without map_location (a CUDA-saved
checkpoint then fails on a CPU host), so the network is assembled here from its modules.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from modelyard.medsam.config import Architecture
from modelyard.runtime.errors import ConfigError


def build_sam(arch: Architecture) -> Sam:
    grid = arch.image_size // arch.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.encoder_depth,
            embed_dim=arch.encoder_embed_dim,
            img_size=arch.image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=arch.encoder_num_heads,
            patch_size=arch.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=arch.encoder_global_attn_indexes,
            window_size=arch.window_size,
            out_chans=arch.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(arch.image_size, arch.image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=arch.decoder_depth,
                embedding_dim=arch.prompt_embed_dim,
                mlp_dim=arch.decoder_mlp_dim,
                num_heads=arch.decoder_num_heads,
            ),
            transformer_dim=arch.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=arch.iou_head_hidden_dim,
        ),
        pixel_mean=[0.0, 0.0, 0.0],  # unused: MedSAM normalises min-max itself, never with mean/std
        pixel_std=[1.0, 1.0, 1.0],
    )


def parameter_bytes(arch: Architecture) -> int:
    """Weight size in float32, counted on the meta device (no memory used)."""
    with torch.device("meta"):
        model = build_sam(arch)
    return sum(p.numel() for p in model.parameters()) * 4


# A top-level entry that write_random_checkpoint adds: the file says it holds random weights, wherever it is copied.
RANDOM_WEIGHTS_KEY = "modelyard_random_weights"


def declares_random_weights(path: Path) -> bool:
    """Whether the checkpoint was written by write_random_checkpoint (memory-mapped: no tensor is read)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # an old-format or pickled file: not one of ours
        return False
    return isinstance(obj, dict) and obj.get(RANDOM_WEIGHTS_KEY) is True


def read_state_dict(path: Path, trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """The SAM state dict in `path` and a description of the format found."""
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:
        if "Unsupported global" in str(exc) or "allowed global" in str(exc):
            raise ConfigError(
                f"checkpoint {path} holds Python objects besides tensors, which are not loaded by default; "
                f"if you trust the file, set model.trust_checkpoint_pickle: true ({exc.__class__.__name__})"
            ) from None
        raise ConfigError(f"checkpoint {path} cannot be read by torch.load: {exc}") from None
    if isinstance(obj, dict):
        obj.pop(RANDOM_WEIGHTS_KEY, None)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        state, fmt = obj["model"], "training checkpoint {'model': state_dict}"
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        state, fmt = obj["state_dict"], "checkpoint {'state_dict': ...}"
    elif isinstance(obj, dict):
        state, fmt = obj, "flat SAM state dict"
    else:
        raise ConfigError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
        fmt += " with 'module.' prefixes"
    return state, fmt


def load_sam(path: Path, arch: Architecture, device: str, trust_pickle: bool = False) -> tuple[Sam, str]:
    state, fmt = read_state_dict(path, trust_pickle)
    model = build_sam(arch)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if mismatched:
            k = mismatched[0]
            detail.append(
                f"{len(mismatched)} of another shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
                f"{tuple(expected[k].shape)} in the model)"
            )
        raise ConfigError(
            f"checkpoint {path} ({fmt}) does not fit the configured architecture: {'; '.join(detail)}. "
            "Set model.architecture to the checkpoint's (vit_b, vit_l, vit_h, or explicit dimensions)."
        )
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), fmt


def write_random_checkpoint(path: Path, arch: Architecture, seed: int = 0, training_format: bool = False) -> Path:
    """A randomly initialised checkpoint in MedSAM's format, for tests and the demo (never real weights)."""
    torch.manual_seed(seed)
    state = build_sam(arch).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    if training_format:
        torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 0, RANDOM_WEIGHTS_KEY: True}, path)
    else:
        torch.save({**state, RANDOM_WEIGHTS_KEY: True}, path)
    return path


# A tiny SAM that loads in well under a second: the shape of a real one, not its weights.
TINY = Architecture(
    image_size=128,
    patch_size=16,
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    window_size=4,
    prompt_embed_dim=32,
    decoder_depth=2,
    decoder_num_heads=2,
    decoder_mlp_dim=64,
    iou_head_hidden_dim=32,
)
