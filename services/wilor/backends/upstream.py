"""The upstream backend: the official WiLoR code (a checkout on the models volume), run the way its demo runs
it, with what the demo leaves out filled in.

- Detector: Ultralytics YOLO (`detector.pt`) on the **BGR** frame (the demo feeds cv2.imread output), one call
  for all frames of a batch; per hand the box, score and class (0 left, 1 right).
- Reconstruction: WiLoR's own ViTDetDataset crops (BGR in; it converts to RGB, mirrors left hands, normalises)
  for the hands of every frame of the batch, `hands_per_batch` hands per forward pass.
- Outputs (conversions.wilor_hands): left hands un-mirrored — joints, vertices and MANO rotations, axis-angle
  for the MANO left-hand model; 2D keypoints in full-image pixels; 3D joints, vertices and the camera
  translation in the full image's camera (focal EXTRA.FOCAL_LENGTH / MODEL.IMAGE_SIZE * max(W,H), both from the
  model's config, unless the request gives one). hand_pose is the articulation from the flat hand (WiLoR's MANO
  layer adds no hands_mean), or from MANO's mean pose when the request asks (options.flat_hand_mean false).

Runs with the packages of the `wilor-upstream` extra (torch, smplx, pytorch-lightning, ultralytics, yacs, ...)
plus modelyard; no pyrender, no chumpy (upstream_load.py). Nothing of WiLoR is shipped or fetched here. The
checkout is put on sys.path: this process runs only this model, so its `wilor` package cannot clash with anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from modelyard.runtime.checkpoints import sha256_of
from modelyard.wilor.backends.upstream_load import build_network, import_upstream, load_detector
from modelyard.wilor.config import WiLoRConfig
from modelyard.wilor.conversions import default_focal_length, hand_pose_from_mean, rgb_to_bgr, wilor_hands
from modelyard.wilor.hands import ALWAYS_FILLED, MANO_FIELDS, Hand, Query

log = logging.getLogger("modelyard.wilor")


@dataclass(frozen=True)
class _Pending:
    """A hand waiting for reconstruction: its query, box, detector score and given-box index."""

    query: int
    box: np.ndarray
    score: float | None
    given: int | None


class UpstreamWiLoR:
    name = "upstream"
    filled_fields = (*ALWAYS_FILLED, "score", *MANO_FIELDS)

    def __init__(self, config: WiLoRConfig, device: str) -> None:
        assert config.upstream is not None  # the config schema requires the section for this backend
        self.config = config
        self.settings = config.upstream
        self.device = device

    def load(self) -> None:
        s = self.settings
        code = import_upstream(s.checkout)
        self._dataset = code.dataset
        network = build_network(code, s)
        self.model_cfg = network.cfg
        self.hands_mean = network.hands_mean
        # The crop camera: EXTRA.FOCAL_LENGTH px on a MODEL.IMAGE_SIZE px crop, as WiLoR's demo reads them.
        self.crop_focal_length = float(self.model_cfg.EXTRA.FOCAL_LENGTH)
        self.crop_size = int(self.model_cfg.MODEL.IMAGE_SIZE)
        self.model = network.model.to(self.device).eval()
        self.detector = load_detector(code, s)
        self.ultralytics_version = code.ultralytics_version
        self.checkpoint_sha256 = sha256_of(s.checkpoint)

    def close(self) -> None:
        self.model = self.detector = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def info(self) -> dict[str, Any]:
        s = self.settings
        return {
            "model": "WiLoR (ViT-H backbone + refinement, MANO)",
            "backend": "upstream WiLoR",
            "checkpoint": str(s.checkpoint),
            "checkpoint_sha256": self.checkpoint_sha256,
            "architecture": {
                "image_size": self.crop_size,
                "bbox_shape": list(self.model_cfg.MODEL.BBOX_SHAPE),
                "focal_length": self.crop_focal_length,
            },
            "details": {
                "checkout": str(s.checkout),
                "detector": str(s.detector),
                "mano_dir": str(s.mano_dir),
                "ultralytics": self.ultralytics_version,
            },
        }

    # -- inference ------------------------------------------------------------------------------------
    def run(self, queries: list[Query]) -> list[list[Hand] | Exception]:
        bgr = [rgb_to_bgr(q.image) for q in queries]
        detections = self._detect([(i, bgr[i]) for i, q in enumerate(queries) if q.boxes is None], queries)
        items: list[dict[str, Any]] = []  # WiLoR's crops, one per hand
        pending: list[_Pending] = []
        for i, query in enumerate(queries):
            if query.boxes is not None:
                assert query.is_right is not None
                boxes, right = query.boxes, query.is_right.astype(np.float64)
                scores: list[float | None] = [None] * len(boxes)
                given: list[int | None] = list(range(len(boxes)))
            else:
                boxes, right, det_scores = detections[i]
                scores, given = list(det_scores), [None] * len(boxes)
            if len(boxes) == 0:
                continue
            dataset = self._dataset(
                self.model_cfg,
                bgr[i],
                np.asarray(boxes, np.float64),
                right,
                rescale_factor=query.options.rescale_factor,
            )
            for k in range(len(dataset)):
                items.append(dataset[k])
                pending.append(_Pending(i, np.asarray(boxes[k], np.float64), scores[k], given[k]))
        results: list[list[Hand]] = [[] for _ in queries]
        step = self.settings.hands_per_batch
        for start in range(0, len(items), step):
            chunk = pending[start : start + step]
            for hand_of, hand in zip(
                chunk, self._reconstruct(items[start : start + step], chunk, queries), strict=True
            ):
                results[hand_of.query].append(hand)
        return list(results)

    def _detect(
        self, frames: list[tuple[int, np.ndarray]], queries: list[Query]
    ) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per query index: boxes (N,4), is_right (N,) as 0/1, scores (N,), best first, within its options.
        One detector call for all frames, at the lowest threshold asked for; each frame then keeps its own."""
        if not frames:
            return {}
        conf = min(queries[i].options.detection_confidence for i, _ in frames)
        predictions = self.detector([image for _, image in frames], conf=conf, verbose=False, device=self.device)
        found = {}
        for (i, _), prediction in zip(frames, predictions, strict=True):
            data = prediction.boxes.data.detach().cpu().numpy().astype(np.float64)
            data = data.reshape(len(data), -1) if data.size else np.zeros((0, 6))
            # rows: x1, y1, x2, y2, [track id,] confidence, class (0 left, 1 right)
            opts = queries[i].options
            data = data[data[:, -2] >= opts.detection_confidence]
            data = data[np.argsort(-data[:, -2], kind="stable")][: opts.max_hands]
            found[i] = (data[:, :4], (data[:, -1] > 0.5).astype(np.float64), data[:, -2])
        return found

    def _reconstruct(self, items: list[dict[str, Any]], pending: list[_Pending], queries: list[Query]) -> list[Hand]:
        batch = torch.utils.data.default_collate(items)
        batch = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        out = self.model(batch)
        params = out["pred_mano_params"]
        outputs = {
            "pred_cam": out["pred_cam"],
            "pred_keypoints_3d": out["pred_keypoints_3d"],
            "pred_keypoints_2d": out["pred_keypoints_2d"],
            "pred_vertices": out["pred_vertices"],
            "global_orient": params["global_orient"],
            "hand_pose": params["hand_pose"],
            "betas": params["betas"],
        }
        host = {k: v.detach().float().cpu().numpy() for k, v in outputs.items()}
        image_sizes = batch["img_size"].detach().cpu().numpy().astype(np.float64)  # (W, H) per hand
        options = [queries[p.query].options for p in pending]
        focal = np.array(
            [
                opts.focal_length
                or default_focal_length(
                    queries[p.query].width, queries[p.query].height, self.crop_focal_length, self.crop_size
                )
                for p, opts in zip(pending, options, strict=True)
            ]
        )
        hands = wilor_hands(
            host,
            boxes=np.array([p.box for p in pending]),
            is_right=batch["right"].detach().cpu().numpy() > 0.5,
            centres=batch["box_center"].detach().cpu().numpy().astype(np.float64),
            sizes=batch["box_size"].detach().cpu().numpy().astype(np.float64).reshape(-1),
            image_sizes=image_sizes,
            focal_lengths=focal,
            scores=[p.score for p in pending],
            given_index=[p.given for p in pending],
            skip_vertices=[opts.skip_vertices for opts in options],
        )
        for hand, opts in zip(hands, options, strict=True):
            if not opts.flat_hand_mean and hand.hand_pose is not None:
                hand.hand_pose = hand_pose_from_mean(hand.hand_pose, hand.is_right, self.hands_mean).astype(np.float32)
        return hands
