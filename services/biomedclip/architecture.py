"""Offline loading of BiomedCLIP-style open_clip models from the hub repo's own file layout.

The architecture is read from `open_clip_config.json`, never assumed. open_clip's HF text tower always calls
`AutoConfig.from_pretrained(hf_model_name)`, so the hub name in that config is pointed at a local folder holding the
BERT `config.json` (and the tokenizer at the folder holding `vocab.txt` / `tokenizer.json`): nothing is ever
downloaded, whatever HF_HUB_OFFLINE says. The model is built by open_clip's own `create_model` and the weights are
read by its own `load_checkpoint` (which, e.g., drops the `position_ids` buffer newer transformers no longer have).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modelyard.biomedclip.config import BiomedCLIPConfig
from modelyard.runtime.errors import ConfigError

OPEN_CLIP_CONFIG = "open_clip_config.json"
# open_clip's own preference when it looks for weights in a folder.
CHECKPOINT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
# Keys of older open_clip configs (BiomedCLIP's first revisions) and the names open_clip uses today.
_OLD_TEXT_KEYS = {"proj": "hf_proj_type", "pooler_type": "hf_pooler_type"}


@dataclass(frozen=True)
class ModelFiles:
    """Every file the model needs, resolved and checked."""

    model_dir: Path
    model_cfg: dict[str, Any]  # open_clip_config.json's `model_cfg`
    preprocess_cfg: dict[str, Any]  # its `preprocess_cfg` (may be empty)
    checkpoint: Path
    text_dir: Path | None  # the BERT config.json's folder (None when the text tower is open_clip's own)
    tokenizer_dir: Path | None  # vocab.txt / tokenizer.json folder (None: open_clip's bundled BPE tokenizer)

    @property
    def text_cfg(self) -> dict[str, Any]:
        return dict(self.model_cfg.get("text_cfg", {}))

    @property
    def vision_cfg(self) -> dict[str, Any]:
        return dict(self.model_cfg.get("vision_cfg", {}))

    @property
    def hf_text(self) -> bool:
        return bool(self.text_cfg.get("hf_model_name"))


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - transformers always brings huggingface_hub
        return "~/.cache/huggingface/hub"


def _from_hf_cache(name: str, filenames: tuple[str, ...]) -> Path | None:
    """The cached snapshot folder holding one of `filenames` for hub repo `name`, without any network access."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for filename in filenames:
        try:
            found = try_to_load_from_cache(name, filename)
        except Exception:  # not a valid repo id (e.g. a path): nothing cached under it
            return None
        if isinstance(found, str):
            return Path(found).parent
    return None


def _has_any(folder: Path, names: tuple[str, ...]) -> bool:
    return any((folder / n).is_file() for n in names)


# A top-level key of open_clip_config.json that write_tiny_model adds, naming its randomly initialised checkpoint.
RANDOM_WEIGHTS_KEY = "modelyard_random_weights"


def declares_random_weights(files: ModelFiles) -> bool:
    """Whether the checkpoint in use is the one its folder's config declares random (write_tiny_model's)."""
    try:
        raw = json.loads((files.model_dir / OPEN_CLIP_CONFIG).read_text())
    except (OSError, ValueError):
        return False
    named = raw.get(RANDOM_WEIGHTS_KEY) if isinstance(raw, dict) else None
    return isinstance(named, str) and files.checkpoint.resolve() == (files.model_dir / named).resolve()


def _read_open_clip_config(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not readable JSON: {exc}") from None
    model_cfg = raw.get("model_cfg", raw) if isinstance(raw, dict) else None
    if not isinstance(model_cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(model_cfg):
        raise ConfigError(
            f"{path} does not describe an open_clip model: it needs `model_cfg` with embed_dim, vision_cfg and "
            "text_cfg (the hub repo's open_clip_config.json has them)"
        )
    if "multimodal_cfg" in model_cfg:
        raise ConfigError(f"{path} describes a CoCa model (multimodal_cfg); this service serves CLIP models")
    return model_cfg, dict(raw.get("preprocess_cfg") or {})


def resolve_files(config: BiomedCLIPConfig) -> ModelFiles:
    """Find every file the model needs; one ConfigError names everything missing at once."""
    model_dir = config.model_dir
    problems: list[str] = []
    model_cfg: dict[str, Any] = {}
    preprocess_cfg: dict[str, Any] = {}
    cfg_path = model_dir / OPEN_CLIP_CONFIG
    if cfg_path.is_file():
        try:
            model_cfg, preprocess_cfg = _read_open_clip_config(cfg_path)
        except ConfigError as exc:
            problems.append(exc.message)
    else:
        problems.append(f"{OPEN_CLIP_CONFIG} not found in model_dir {model_dir} (it holds the architecture)")

    checkpoint = config.checkpoint
    if checkpoint is None:
        checkpoint = next((model_dir / n for n in CHECKPOINT_NAMES if (model_dir / n).is_file()), None)
        if checkpoint is None:
            problems.append(
                f"no weights in model_dir {model_dir}: looked for {', '.join(CHECKPOINT_NAMES[:3])}, ...; "
                "put open_clip_pytorch_model.bin there or set model.checkpoint"
            )

    text_cfg = model_cfg.get("text_cfg", {}) if isinstance(model_cfg.get("text_cfg"), dict) else {}
    hf_name = str(text_cfg.get("hf_model_name") or "")
    tok_name = str(text_cfg.get("hf_tokenizer_name") or hf_name)
    offline = " (HF_HUB_OFFLINE is set)" if _hf_offline() else ""
    cache = f"the Hugging Face cache {_hf_cache_dir()}{offline}; this service never downloads"
    text_dir: Path | None = None
    tokenizer_dir: Path | None = None
    if hf_name:
        if config.text_dir is not None:
            text_dir = config.text_dir
            if not (text_dir / "config.json").is_file():
                problems.append(f"text_dir {text_dir} holds no config.json (the text tower's BERT config)")
        elif (model_dir / "config.json").is_file():
            text_dir = model_dir
        elif Path(hf_name).is_dir() and (Path(hf_name) / "config.json").is_file():
            text_dir = Path(hf_name)
        else:
            text_dir = _from_hf_cache(hf_name, ("config.json",))
            if text_dir is None:
                problems.append(
                    f"the text tower's config.json ('{hf_name}'): not in model_dir {model_dir}, no model.text_dir "
                    f"set, and not in {cache}. Copy config.json from the hub repo {hf_name} into a folder on the "
                    "models volume and set model.text_dir to it"
                )
    if tok_name:
        candidates = [config.tokenizer_dir] if config.tokenizer_dir is not None else [model_dir, text_dir]
        if config.tokenizer_dir is None and Path(tok_name).is_dir():
            candidates.append(Path(tok_name))
        tokenizer_dir = next((c for c in candidates if c is not None and _has_any(c, TOKENIZER_FILES)), None)
        if tokenizer_dir is None and config.tokenizer_dir is None:
            tokenizer_dir = _from_hf_cache(tok_name, TOKENIZER_FILES)
        if tokenizer_dir is None:
            where = (
                f"tokenizer_dir {config.tokenizer_dir}"
                if config.tokenizer_dir is not None
                else f"model_dir {model_dir}, text_dir, nor {cache}"
            )
            problems.append(
                f"tokenizer files ({' or '.join(TOKENIZER_FILES)}) for '{tok_name}' not found in {where}; "
                "the hub repo ships them next to open_clip_config.json"
            )
    if problems:
        raise ConfigError("BiomedCLIP cannot load:\n  - " + "\n  - ".join(problems))
    assert checkpoint is not None
    return ModelFiles(model_dir, model_cfg, preprocess_cfg, checkpoint, text_dir, tokenizer_dir)


def local_text_cfg(files: ModelFiles) -> dict[str, Any]:
    """text_cfg with the hub names replaced by the local folders, old key names updated, no base weights."""
    text_cfg = {_OLD_TEXT_KEYS.get(k, k) if files.hf_text else k: v for k, v in files.text_cfg.items()}
    if files.hf_text:
        text_cfg["hf_model_name"] = str(files.text_dir)
        text_cfg["hf_tokenizer_name"] = str(files.tokenizer_dir)
        text_cfg["hf_model_pretrained"] = False  # the CLIP checkpoint holds the text weights
    return text_cfg


class _DropOpenClipWeightNotes(logging.Filter):
    """open_clip warns "initialized randomly" when weights are loaded after creation, as they are here."""

    _NOTES = ("No pretrained weights loaded", "initialized partially", "but no CLIP weights found")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(note in record.getMessage() for note in self._NOTES)


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    root = logging.getLogger()
    note_filter = _DropOpenClipWeightNotes()
    root.addFilter(note_filter)
    try:
        yield
    finally:
        root.removeFilter(note_filter)


def build_model(files: ModelFiles) -> torch.nn.Module:
    """The architecture of open_clip_config.json, randomly initialised, on the CPU (open_clip's own builder)."""
    import open_clip

    try:
        with _quiet_open_clip():
            model = open_clip.create_model(
                f"local-dir:{files.model_dir}",
                load_weights=False,
                pretrained_image=False,
                pretrained_text=False,
                text_cfg=local_text_cfg(files),
            )
    except (TypeError, KeyError, ValueError, RuntimeError, OSError) as exc:
        raise ConfigError(
            f"open_clip cannot build the model of {files.model_dir / OPEN_CLIP_CONFIG}: {type(exc).__name__}: {exc}"
        ) from None
    if type(model).__name__ not in ("CLIP", "CustomTextCLIP"):
        raise ConfigError(f"{OPEN_CLIP_CONFIG} builds a {type(model).__name__}; this service serves CLIP models")
    return model


def load_weights(model: torch.nn.Module, checkpoint: Path, trust_pickle: bool = False) -> str:
    """Read the checkpoint into `model` through open_clip's loader; all keys must match. Returns its format."""
    import open_clip

    try:
        incompatible = open_clip.load_checkpoint(model, str(checkpoint), strict=False, weights_only=not trust_pickle)
    except Exception as exc:
        text = str(exc)
        if "weights_only" in text or "Unpickl" in type(exc).__name__:
            raise ConfigError(
                f"checkpoint {checkpoint} holds Python objects besides tensors, which are not loaded by default; "
                f"if you trust the file, set model.trust_checkpoint_pickle: true ({type(exc).__name__})"
            ) from None
        first = text.strip().splitlines()[:3]
        raise ConfigError(
            f"checkpoint {checkpoint} does not fit the architecture of {OPEN_CLIP_CONFIG}: {' '.join(first)}"
        ) from None
    missing = list(getattr(incompatible, "missing_keys", []))
    unexpected = list(getattr(incompatible, "unexpected_keys", []))
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"{len(missing)} weights missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise ConfigError(
            f"checkpoint {checkpoint} does not fit the architecture of {OPEN_CLIP_CONFIG}: {'; '.join(detail)}"
        )
    return "safetensors" if checkpoint.suffix == ".safetensors" else "state dict (torch.save)"


def load_model(files: ModelFiles, device: str, trust_pickle: bool = False) -> tuple[torch.nn.Module, str]:
    model = build_model(files)
    fmt = load_weights(model, files.checkpoint, trust_pickle)
    model.requires_grad_(False)  # CAM gradients are taken w.r.t. activations only
    return model.to(device).eval(), fmt


def load_tokenizer(files: ModelFiles) -> Any:
    """open_clip's tokenizer for the model: HFTokenizer on the local folder, or its bundled BPE tokenizer."""
    from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, HFTokenizer, SimpleTokenizer

    text_cfg = files.text_cfg
    context = int(text_cfg.get("context_length") or DEFAULT_CONTEXT_LENGTH)
    kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
    if files.tokenizer_dir is None:
        return SimpleTokenizer(context_length=context, **kwargs)
    try:
        return HFTokenizer(
            str(files.tokenizer_dir), context_length=context, tokenizer_mode=text_cfg.get("tokenizer_mode"), **kwargs
        )
    except Exception as exc:
        raise ConfigError(f"the tokenizer in {files.tokenizer_dir} cannot be loaded: {exc}") from None


def vision_shape(files: ModelFiles) -> dict[str, int]:
    """Tokens, width, depth and heads of the image tower, read from a meta-device build (no memory used)."""
    vision = files.vision_cfg
    name = vision.get("timm_model_name")
    try:
        if name:
            import timm

            with torch.device("meta"):
                trunk = timm.create_model(name, pretrained=False)
            grid = getattr(trunk.patch_embed, "num_patches", 196)
            blocks = getattr(trunk, "blocks", [])
            heads = getattr(getattr(blocks[0], "attn", None), "num_heads", 12) if len(blocks) else 12
            return {
                "tokens": int(grid) + int(getattr(trunk, "num_prefix_tokens", 1)),
                "width": int(getattr(trunk, "embed_dim", getattr(trunk, "num_features", 768))),
                "depth": max(1, len(blocks)),
                "heads": int(heads),
            }
        size = int(vision.get("image_size", 224))
        patch = int(vision.get("patch_size", 16))
        width = int(vision.get("width", 768))
        return {
            "tokens": (size // patch) ** 2 + 1,
            "width": width,
            "depth": int(vision.get("layers", 12)),
            "heads": max(1, width // int(vision.get("head_width", 64))),
        }
    except Exception:
        return {"tokens": 197, "width": 768, "depth": 12, "heads": 12}  # ViT-B/16, BiomedCLIP's tower


# -- tiny models for tests, benchmarks and demos: the real file layout, random weights ------------------------

_WORDS = (
    "a an the of in on with and or no is are there left right upper lower middle lobe lung lungs chest x ray xray "
    "photo image scan ct mri brain heart liver kidney bone medical abnormality lesion nodule mass effusion pleural "
    "pneumonia pneumothorax opacity consolidation normal tumor fracture cardiomegaly edema atelectasis where what "
    "which shows showing seen visible side"
)
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_WORDS.split()]


def write_tiny_model(
    folder: Path,
    *,
    timm_model: str = "test_vit",
    image_size: int = 160,
    embed_dim: int = 32,
    context_length: int = 32,
    seed: int = 0,
    old_keys: bool = False,
    bert: dict[str, int] | None = None,
) -> dict[str, Path]:
    """A tiny model in BiomedCLIP's layout: model folder (open_clip_config.json, open_clip_pytorch_model.bin,
    WordPiece tokenizer files) and a separate text folder (the BERT config.json, as from BiomedBERT's repo).

    Same code path as the real model; only the sizes differ (`bert` overrides the text tower's BertConfig sizes,
    e.g. BiomedBERT's real ones for benchmarks). Weights are random (seeded), never meaningful.
    """
    from transformers import BertConfig

    model_dir, text_dir = folder / "biomedclip", folder / "biomedbert"
    model_dir.mkdir(parents=True, exist_ok=True)
    text_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    (model_dir / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512})
    )
    (model_dir / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "cls_token": "[CLS]",
                "sep_token": "[SEP]",
                "pad_token": "[PAD]",
                "unk_token": "[UNK]",
                "mask_token": "[MASK]",
            }
        )
    )
    sizes: dict[str, Any] = {
        "vocab_size": len(TINY_VOCAB),
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": max(64, context_length),
        **(bert or {}),
    }
    BertConfig(**sizes).to_json_file(str(text_dir / "config.json"))
    hub_name = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
    proj, pooler = ("proj", "pooler_type") if old_keys else ("hf_proj_type", "hf_pooler_type")
    config: dict[str, Any] = {
        "model_cfg": {
            "embed_dim": embed_dim,
            "vision_cfg": {
                "timm_model_name": timm_model,
                "timm_model_pretrained": False,
                "timm_pool": "",
                "timm_proj": "linear",
                "image_size": image_size,
            },
            "text_cfg": {
                "hf_model_name": hub_name,
                "hf_tokenizer_name": hub_name,
                proj: "mlp",
                pooler: "cls_last_hidden_state_pooler",
                "context_length": context_length,
            },
        },
        "preprocess_cfg": {
            "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711],
        },
        RANDOM_WEIGHTS_KEY: CHECKPOINT_NAMES[2],
    }
    (model_dir / OPEN_CLIP_CONFIG).write_text(json.dumps(config, indent=2))
    cfg = copy.deepcopy(config["model_cfg"])
    files = ModelFiles(model_dir, cfg, config["preprocess_cfg"], model_dir / CHECKPOINT_NAMES[2], text_dir, model_dir)
    torch.manual_seed(seed)
    model = build_model(files)
    checkpoint = model_dir / CHECKPOINT_NAMES[2]
    torch.save(model.state_dict(), checkpoint)
    return {"model_dir": model_dir, "text_dir": text_dir, "checkpoint": checkpoint}
