"""Where a CLIP model sees a prompt: gScoreCAM, ScoreCAM, Grad-CAM and patch-text similarity, batched on any device.

All four explain the score s = logit_scale * cos(image, text) and return a map over the target layer's grid:

- gScoreCAM (Chen et al. 2022, github anguyen8/gScoreCAM): one forward + backward of s; channels ranked by their
  gradient — at the CLS token for a ViT's token layout (the published `is_transformer` path, because patch tokens
  of the last block get no gradient), its spatial mean for conv maps — and the top k kept; each kept channel's
  activation is upsampled to the input, min-max normalised, multiplies the (normalised) input, and the masked image
  is scored by the model again; the softmax of those k scores weighs the channels; CAM = ReLU(sum_c w_c A_c).
  Upstream scores masks in batches on `.cuda()` and gives the unkept channels weight exp(0)/Z; here masks are built
  chunk by chunk on whatever device the model is on, and only the kept channels share the softmax.
- ScoreCAM: the same without the ranking: every channel is scored (768 passes for ViT-B).
- Grad-CAM: weights = spatial mean of the gradient at its own layer (the last block's norm1 by default).
- similarity: the final patch tokens projected like the pooled token, cosine with the text (one forward).

Masks are upsampled with pixel centres aligned (align_corners=False), so a channel's mask covers its own patches.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modelyard.biomedclip.config import CamSettings
from modelyard.runtime.errors import Cancelled, ConfigError, InvalidInput
from modelyard.runtime.progress import Progress

log = logging.getLogger("modelyard.biomedclip")
METHODS = ("gscorecam", "scorecam", "gradcam", "similarity")


def resolve_module(root: nn.Module, path: str) -> nn.Module:
    """`visual.trunk.blocks.-1.norm1` -> that module (negative indices count from the end of a list)."""
    current, walked = root, "model"
    for part in path.split("."):
        if isinstance(current, (nn.ModuleList, nn.Sequential)) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(current) <= index < len(current):
                raise ConfigError(
                    f"layer '{path}': {walked} has {len(current)} entries, so index {index} is out of range"
                )
            current = current[index]
        else:
            children = dict(current.named_children())
            if part not in children:
                known = ", ".join(list(children)[:24]) or "no sub-modules"
                raise ConfigError(f"layer '{path}': {walked} has no module '{part}' (it has: {known})")
            current = children[part]
        walked = f"{walked}.{part}"
    return current


@dataclass(frozen=True)
class Layout:
    """How a layer's output is laid out: tokens (B,N,C) with `prefix` non-patch tokens first, or maps (B,C,h,w)."""

    tokens: bool
    seq_first: bool  # tokens as (N,B,C) (OpenAI-style transformers)
    prefix: int
    grid: tuple[int, int]
    channels: int


@dataclass
class CamOutput:
    grid: torch.Tensor  # (h, w) on the host, not normalised (ReLU'd for the CAMs, cosine for similarity)
    similarity: float  # cosine of the whole image with the prompt
    top_k: int  # channels that weigh the map (0 for Grad-CAM and similarity)


class _Watch:
    """Per-item progress and cancellation inside one batch: a cancelled item is dropped, the others go on."""

    def __init__(self, progress: Sequence[Progress | None], stage: str) -> None:
        self.progress = progress
        self.stage = stage
        self.dropped: set[int] = set()

    def check(self) -> set[int]:
        for index, p in enumerate(self.progress):
            if p is not None and p.cancelled:
                self.dropped.add(index)
        return self.dropped

    def report(self, index: int, done: int, total: int) -> None:
        p = self.progress[index]
        if p is None or index in self.dropped:
            return
        try:
            p.report(done, total, self.stage)
        except Cancelled:
            self.dropped.add(index)


class CamEngine:
    """The four map methods over one loaded open_clip model. Runs in the model thread only."""

    def __init__(self, model: nn.Module, settings: CamSettings, device: str, image_size: int) -> None:
        self.model = model
        self.visual: nn.Module = model.visual  # type: ignore[assignment]
        self.device = device
        self.size = image_size
        self.chunk_size = settings.chunk_size
        self.ranking = settings.channel_ranking
        self.target = resolve_module(model, settings.target_layer)
        self.gradcam_target = resolve_module(model, settings.gradcam_layer)
        self.logit_scale = float(model.logit_scale.exp())  # type: ignore[operator]
        probe = torch.zeros(2, 3, image_size, image_size, device=device)
        with torch.inference_mode(False), torch.no_grad():
            self.layout = self._probe(self.target, probe, settings.target_layer)
            self.gradcam_layout = self._probe(self.gradcam_target, probe, settings.gradcam_layer)
            self.similarity_layout = self._probe_similarity(probe)
        if self.ranking == "cls_token" and not (self.layout.tokens and self.layout.prefix > 0):
            raise ConfigError(
                f"cam.channel_ranking cls_token needs a token layer with a CLS token; {settings.target_layer} "
                "has none (use auto or spatial_mean)"
            )

    @property
    def channels(self) -> int:
        return self.layout.channels

    # -- layout ---------------------------------------------------------------------------------------
    def _probe(self, layer: nn.Module, probe: torch.Tensor, path: str) -> Layout:
        seen: list[torch.Tensor] = []
        handle = layer.register_forward_hook(lambda m, i, o: seen.append(o[0] if isinstance(o, tuple) else o))
        try:
            self.visual(probe)
        finally:
            handle.remove()
        if not seen or not isinstance(seen[-1], torch.Tensor):
            raise ConfigError(f"layer '{path}' is not reached by the image tower (or returns no tensor)")
        shape = tuple(seen[-1].shape)
        if len(shape) == 4 and shape[0] == probe.shape[0]:
            return Layout(False, False, 0, (shape[2], shape[3]), shape[1])
        if len(shape) == 3 and probe.shape[0] in (shape[0], shape[1]):
            seq_first = shape[0] != probe.shape[0]
            count = shape[0] if seq_first else shape[1]
            return Layout(True, seq_first, *self._token_grid(count, path), shape[2])
        raise ConfigError(f"layer '{path}' gives {shape}: neither tokens (B,N,C) nor feature maps (B,C,H,W)")

    def _token_grid(self, count: int, path: str) -> tuple[int, tuple[int, int]]:
        trunk = getattr(self.visual, "trunk", None)
        prefix = getattr(trunk, "num_prefix_tokens", None)
        if prefix is None:
            prefix = count - math.isqrt(count) ** 2
        side = math.isqrt(count - prefix)
        if side * side != count - prefix or side == 0:
            raise ConfigError(f"layer '{path}' has {count} tokens, which do not form a square grid after {prefix}")
        return int(prefix), (side, side)

    def _probe_similarity(self, probe: torch.Tensor) -> Layout | None:
        trunk, head = getattr(self.visual, "trunk", None), getattr(self.visual, "head", None)
        if trunk is None or head is None or not hasattr(trunk, "forward_features"):
            return None
        if isinstance(head, nn.Sequential) and "pool" in dict(head.named_children()):
            return None  # attention pooling: patch tokens cannot be projected on their own
        tokens = trunk.forward_features(probe)
        if tokens.ndim != 3:
            return None
        prefix, grid = self._token_grid(tokens.shape[1], "trunk.forward_features")
        return Layout(True, False, prefix, grid, tokens.shape[2])

    def _as_maps(self, act: torch.Tensor, layout: Layout) -> torch.Tensor:
        if not layout.tokens:
            return act
        if layout.seq_first:
            act = act.transpose(0, 1)
        patches = act[:, layout.prefix :, :]
        return patches.transpose(1, 2).reshape(act.shape[0], layout.channels, *layout.grid)

    # -- scores ---------------------------------------------------------------------------------------
    def _score(self, pixels: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        emb = F.normalize(self.visual(pixels), dim=-1)
        return self.logit_scale * (emb * text).sum(-1)

    def _capture(
        self, layer: nn.Module, layout: Layout, pixels: torch.Tensor, text: torch.Tensor, want_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Activations at `layer` (as they come), their gradient of the score when asked, and the scores."""
        saved: list[torch.Tensor] = []

        def hook(module: nn.Module, inputs: object, output: object) -> object:
            tensor = output[0] if isinstance(output, tuple) else output
            assert isinstance(tensor, torch.Tensor)
            if want_grad:
                # A fresh leaf: only the layers after the target keep activations for the backward pass.
                tensor = tensor.detach().requires_grad_(True)
            saved.append(tensor)
            if not want_grad:
                return None
            return (tensor, *output[1:]) if isinstance(output, tuple) else tensor

        handle = layer.register_forward_hook(hook)
        try:
            with torch.set_grad_enabled(want_grad):
                score = self._score(pixels, text)
                grad = torch.autograd.grad(score.sum(), saved[-1])[0] if want_grad else None
        finally:
            handle.remove()
        return saved[-1].detach(), grad, score.detach()

    @torch.no_grad()
    def _masked_scores(
        self,
        pixels: torch.Tensor,
        maps: torch.Tensor,
        text: torch.Tensor,
        channel_sets: list[torch.Tensor],
        watch: _Watch,
    ) -> list[torch.Tensor]:
        """Score every (item, channel) pair's masked image, in chunks that fit; returns scores per item."""
        items = torch.cat([torch.full((len(c),), b, dtype=torch.long) for b, c in enumerate(channel_sets)])
        chans = torch.cat([c.cpu() for c in channel_sets])
        totals = [len(c) for c in channel_sets]
        done = [0] * len(channel_sets)
        scores = torch.zeros(len(items), device=pixels.device)
        pos = 0
        while pos < len(items):
            dropped = watch.check()
            if dropped and int(items[pos]) in dropped:
                pos += 1  # a cancelled item: skip its remaining channels
                continue
            count = min(self.chunk_size, len(items) - pos)
            b_idx, c_idx = items[pos : pos + count].to(pixels.device), chans[pos : pos + count].to(pixels.device)
            try:
                masks = F.interpolate(
                    maps[b_idx, c_idx].unsqueeze(1).float(),
                    size=pixels.shape[-2:],
                    mode="bilinear",
                    align_corners=False,
                )
                flat = masks.flatten(1)
                lo, hi = flat.min(1).values.view(-1, 1, 1, 1), flat.max(1).values.view(-1, 1, 1, 1)
                masks = (masks - lo) / (hi - lo + 1e-6)  # a flat channel masks everything out
                scores[pos : pos + count] = self._score(pixels[b_idx] * masks, text[b_idx])
                del masks
            except torch.cuda.OutOfMemoryError:
                if count == 1:
                    raise  # the governor halves the batch of items, or answers RESOURCE_EXHAUSTED
                self.chunk_size = max(1, count // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                log.warning("out of memory scoring %d masked images; chunks of %d from now on", count, self.chunk_size)
                continue
            for b in items[pos : pos + count].unique().tolist():
                done[b] += int((items[pos : pos + count] == b).sum())
                watch.report(b, done[b], totals[b])
            pos += count
        return list(torch.split(scores, totals))

    # -- methods --------------------------------------------------------------------------------------
    def run(
        self,
        pixels: torch.Tensor,
        text: torch.Tensor,
        methods: Sequence[str],
        top_ks: Sequence[int],
        progress: Sequence[Progress | None],
    ) -> list[CamOutput | Exception]:
        """Maps for a batch: pixels (B,3,S,S) and unit text embeddings (B,E) on the device, one method per item."""
        results: list[CamOutput | Exception] = [InvalidInput("not computed")] * len(methods)
        groups: dict[str, list[int]] = {"score": [], "gradcam": [], "similarity": []}
        for index, method in enumerate(methods):
            if method not in METHODS:
                results[index] = InvalidInput(f"unknown method '{method}'; use one of {', '.join(METHODS)}")
            elif method == "similarity" and self.similarity_layout is None:
                results[index] = InvalidInput("similarity needs a ViT image tower whose head projects patch tokens")
            elif method == "gscorecam" and not 1 <= top_ks[index] <= self.channels:
                results[index] = InvalidInput(
                    f"top_k {top_ks[index]} is out of range: the target layer has {self.channels} channels, so "
                    f"use 1..{self.channels}"
                )
            else:
                groups["score" if method in ("gscorecam", "scorecam") else method].append(index)
        for name, indices in groups.items():
            if not indices:
                continue
            sel = torch.tensor(indices, device=pixels.device)
            sub_pixels, sub_text = pixels.index_select(0, sel), text.index_select(0, sel)
            sub_progress = [progress[i] for i in indices]
            if name == "score":
                outs = self._score_cams(
                    sub_pixels, sub_text, [methods[i] for i in indices], [top_ks[i] for i in indices], sub_progress
                )
            elif name == "gradcam":
                outs = self._gradcam(sub_pixels, sub_text)
            else:
                outs = self._similarity(sub_pixels, sub_text)
            for index, out in zip(indices, outs, strict=True):
                results[index] = out
        return results

    def _score_cams(
        self,
        pixels: torch.Tensor,
        text: torch.Tensor,
        methods: list[str],
        top_ks: list[int],
        progress: list[Progress | None],
    ) -> list[CamOutput | Exception]:
        want_grad = "gscorecam" in methods
        act, grad, score = self._capture(self.target, self.layout, pixels, text, want_grad)
        maps = self._as_maps(act, self.layout)
        importance = None
        if grad is not None:
            if self.ranking == "cls_token" or (self.ranking == "auto" and self.layout.tokens and self.layout.prefix):
                tokens = grad.transpose(0, 1) if self.layout.seq_first else grad
                importance = tokens[:, 0, :]  # the CLS token's gradient per channel
            else:
                importance = self._as_maps(grad, self.layout).mean(dim=(2, 3))
        channel_sets = []
        for b, method in enumerate(methods):
            if method == "gscorecam":
                assert importance is not None
                channel_sets.append(importance[b].topk(top_ks[b]).indices)
            else:
                channel_sets.append(torch.arange(self.channels, device=pixels.device))
        watch = _Watch(progress, "scoring masked images")
        scores = self._masked_scores(pixels, maps, text, channel_sets, watch)
        outs: list[CamOutput | Exception] = []
        for b in range(len(methods)):
            if b in watch.dropped:
                outs.append(Cancelled("the call was cancelled or its deadline passed; the work was stopped"))
                continue
            weights = torch.zeros(self.channels, device=pixels.device)
            weights[channel_sets[b]] = torch.softmax(scores[b].float(), dim=0)
            cam = torch.relu((weights[:, None, None] * maps[b].float()).sum(0))
            outs.append(CamOutput(cam.cpu(), float(score[b]) / self.logit_scale, len(channel_sets[b])))
        return outs

    def _gradcam(self, pixels: torch.Tensor, text: torch.Tensor) -> list[CamOutput | Exception]:
        act, grad, score = self._capture(self.gradcam_target, self.gradcam_layout, pixels, text, True)
        assert grad is not None
        maps = self._as_maps(act, self.gradcam_layout).float()
        weights = self._as_maps(grad, self.gradcam_layout).float().mean(dim=(2, 3))
        cams = torch.relu((weights[:, :, None, None] * maps).sum(1))
        return [CamOutput(cams[b].cpu(), float(score[b]) / self.logit_scale, 0) for b in range(len(cams))]

    @torch.no_grad()
    def _similarity(self, pixels: torch.Tensor, text: torch.Tensor) -> list[CamOutput | Exception]:
        layout = self.similarity_layout
        assert layout is not None
        trunk: Any = self.visual.trunk
        head: Any = self.visual.head
        tokens = trunk.forward_features(pixels)
        pooled = F.normalize(head(trunk.forward_head(tokens)), dim=-1)  # = visual(pixels), without a 2nd pass
        patches = tokens[:, layout.prefix :, :]
        fc_norm = getattr(trunk, "fc_norm", None)
        if isinstance(fc_norm, nn.Module):
            patches = fc_norm(patches)
        projected = F.normalize(head(patches), dim=-1)
        cosine = (projected * text[:, None, :]).sum(-1).reshape(len(pixels), *layout.grid)
        similarity = (pooled * text).sum(-1)
        return [CamOutput(cosine[b].float().cpu(), float(similarity[b]), 0) for b in range(len(pixels))]
