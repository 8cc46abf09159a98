"""The CPU reference backend: MediaPipe Hands with the pretrained palm-detection and hand-landmark models that
the mediapipe 0.10.x wheel ships (mediapipe/modules/{palm_detection,hand_landmark}/*.tflite).

Per image it runs MediaPipe's hand-tracking graph in static-image mode (every image detected afresh; images are
unrelated, as WiLoR's demo treats them), so results do not depend on what was processed before. Per hand:

- keypoints_2d: MediaPipe's 21 image landmarks in pixels (the service's joint order is MediaPipe's);
- side: MediaPipe's handedness label swapped — it labels hands as if the image were a mirrored selfie;
  side_score: the probability of that side;
- score: the palm detector's score (what detection_confidence thresholds), matched to the hand by position;
- box: the keypoints' box widened by `mediapipe.box_margin` of its size on each side;
- keypoints_3d: MediaPipe's metric world landmarks (camera-aligned axes, origin at the hand's centre) moved
  into the camera frame by the translation that best reprojects them onto the 2D landmarks
  (camera_translation), with WiLoR's default camera unless the request gives a focal length.
No MANO parameters or mesh: those fields stay absent.

Given boxes: MediaPipe cannot skip its palm detector, so each given box is cropped (enlarged by
rescale_factor), the graph runs on the crop, and the hand whose box overlaps the given one most is kept with the
given box and side; a box where no hand is found yields no hand (see Hand.given_index).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.runtime.checkpoints import sha256_of
from modelyard.runtime.errors import ConfigError
from modelyard.wilor.config import WiLoRConfig
from modelyard.wilor.conversions import (
    box_iou,
    box_of_points,
    crop_geometry,
    default_focal_length,
    fit_translation,
    mediapipe_is_right,
)
from modelyard.wilor.hands import ALWAYS_FILLED, Hand, Query

log = logging.getLogger("modelyard.wilor")
PALM_LANDMARKS = (0, 5, 9, 13, 17)  # wrist and the four finger bases: the palm the detector boxes
MIN_GIVEN_OVERLAP = 0.1  # IoU a hand found in a given box's crop needs with that box


@dataclass
class _Found:
    """A hand as MediaPipe reports it, in the coordinates of the image it ran on."""

    keypoints_2d: np.ndarray  # (21, 2) pixels
    world: np.ndarray  # (21, 3) metres, hand-centred, camera-aligned
    label: str  # MediaPipe's (mirrored) handedness label
    label_score: float
    palm_score: float | None


class MediaPipeHands:
    name = "mediapipe"
    filled_fields = (*ALWAYS_FILLED, "score", "side_score")

    def __init__(self, config: WiLoRConfig, device: str) -> None:
        if device != "cpu":
            raise ConfigError(
                f"the mediapipe backend runs on the CPU, but device {device} was chosen: set runtime.device to "
                "cpu (or auto on a machine where torch sees no GPU)"
            )
        self.config = config
        self.settings = config.mediapipe
        self._graphs: OrderedDict[tuple[float, int], Any] = OrderedDict()

    # -- lifecycle ------------------------------------------------------------------------------------
    def load(self) -> None:
        try:
            from mediapipe.python.solution_base import SolutionBase
            from mediapipe.python.solutions import hands as mp_hands
        except ImportError as exc:
            raise ConfigError(
                f"the mediapipe backend needs mediapipe 0.10.x ({exc}); run the service in its own environment: "
                "`pip install 'modelyard[wilor]'` into a virtualenv of its own (in a checkout: `make setup-wilor`) "
                "and point MODELYARD_WILOR_PYTHON at its python for `modelyard up`"
            ) from None
        self._solution_base = SolutionBase
        self._graph_file = mp_hands._BINARYPB_FILE_PATH
        # The model files the graph loads (provenance for Info): mediapipe/modules/*/..._{lite,full}.tflite
        kind = "full" if self.settings.model_complexity else "lite"
        modules = Path(mp_hands.__file__).resolve().parents[2] / "modules"
        self._models = {
            "palm": modules / "palm_detection" / f"palm_detection_{kind}.tflite",
            "landmark": modules / "hand_landmark" / f"hand_landmark_{kind}.tflite",
        }
        missing = [str(path) for path in self._models.values() if not path.is_file()]
        if missing:
            raise ConfigError(
                f"the mediapipe wheel lacks its hand models ({', '.join(missing)}): install mediapipe 0.10.x "
                "(the 1.x wheels do not carry them), see the `wilor` extra"
            )
        self._sha256 = {name: sha256_of(path) for name, path in self._models.items()}
        started = time.monotonic()
        self._graph(self.config.detection_confidence, self.config.max_hands)  # fails here if the models are gone
        log.info("mediapipe hands graph ready", extra={"fields": {"seconds": round(time.monotonic() - started, 3)}})

    def close(self) -> None:
        for graph in self._graphs.values():
            graph.close()
        self._graphs.clear()

    def info(self) -> dict[str, Any]:
        try:
            mp_version = version("mediapipe")
        except PackageNotFoundError:
            mp_version = "unknown"
        return {
            "model": "MediaPipe Hands (palm detector + hand landmarks)",
            "backend": f"mediapipe {mp_version}",
            "checkpoint": str(self._models["landmark"]),
            "checkpoint_sha256": self._sha256["landmark"],
            "architecture": {"model_complexity": self.settings.model_complexity, "static_image_mode": True},
            "details": {
                "palm_detector": str(self._models["palm"]),
                "palm_detector_sha256": self._sha256["palm"],
                "presence_threshold": self.settings.presence_threshold,
                "box_margin": self.settings.box_margin,
            },
        }

    def _graph(self, confidence: float, max_hands: int) -> Any:
        """A MediaPipe graph for these thresholds (they are fixed when a graph is built), least recently used
        ones closed beyond `mediapipe.graph_cache`."""
        key = (round(confidence, 4), max_hands)
        graph = self._graphs.get(key)
        if graph is not None:
            self._graphs.move_to_end(key)
            return graph
        graph = self._solution_base(
            binary_graph_path=self._graph_file,
            side_inputs={
                "model_complexity": self.settings.model_complexity,
                "num_hands": max_hands,
                "use_prev_landmarks": False,  # static-image mode: detect in every image
            },
            calculator_params={
                "palmdetectioncpu__TensorsToDetectionsCalculator.min_score_thresh": key[0],
                "handlandmarkcpu__ThresholdingCalculator.threshold": self.settings.presence_threshold,
            },
            outputs=["multi_hand_landmarks", "multi_hand_world_landmarks", "multi_handedness", "palm_detections"],
        )
        self._graphs[key] = graph
        while len(self._graphs) > self.settings.graph_cache:
            _, old = self._graphs.popitem(last=False)
            old.close()
        return graph

    # -- inference ------------------------------------------------------------------------------------
    def run(self, queries: list[Query]) -> list[list[Hand] | Exception]:
        return [self._given(q) if q.boxes is not None else self._detect(q) for q in queries]

    def _find(self, image: np.ndarray, confidence: float, max_hands: int) -> list[_Found]:
        result = self._graph(confidence, max_hands).process(np.ascontiguousarray(image))
        if not result.multi_hand_landmarks:
            return []
        height, width = image.shape[:2]
        size = np.array([width, height], np.float64)
        found = []
        for landmarks, world, handedness in zip(
            result.multi_hand_landmarks, result.multi_hand_world_landmarks, result.multi_handedness, strict=True
        ):
            best = handedness.classification[0]
            found.append(
                _Found(
                    keypoints_2d=np.array([[p.x, p.y] for p in landmarks.landmark], np.float64) * size,
                    world=np.array([[p.x, p.y, p.z] for p in world.landmark], np.float64),
                    label=best.label,
                    label_score=float(best.score),
                    palm_score=None,
                )
            )
        _match_palms(found, result.palm_detections or [], size)
        return found

    def _hand(self, found: _Found, query: Query, box: np.ndarray, is_right: bool, side_score: float) -> Hand:
        width, height = query.width, query.height
        focal = query.options.focal_length or default_focal_length(width, height)
        translation = fit_translation(found.world, found.keypoints_2d, focal, (width / 2.0, height / 2.0))
        return Hand(
            box=box.astype(np.float32),
            is_right=is_right,
            keypoints_2d=found.keypoints_2d.astype(np.float32),
            keypoints_3d=(found.world + translation).astype(np.float32),
            camera_translation=translation.astype(np.float32),
            focal_length=float(focal),
            score=found.palm_score,
            side_score=side_score,
        )

    def _detect(self, query: Query) -> list[Hand]:
        opts = query.options
        hands = []
        for found in self._find(query.image, opts.detection_confidence, opts.max_hands):
            box = box_of_points(found.keypoints_2d, self.settings.box_margin, query.width, query.height)
            hands.append(self._hand(found, query, box, mediapipe_is_right(found.label), found.label_score))
        hands.sort(key=lambda h: -(h.score or 0.0))  # highest detector score first, like the upstream detector
        return hands

    def _given(self, query: Query) -> list[Hand]:
        assert query.boxes is not None and query.is_right is not None
        opts = query.options
        centres, sizes = crop_geometry(query.boxes, opts.rescale_factor)
        hands = []
        for index, (box, is_right) in enumerate(zip(query.boxes, query.is_right, strict=True)):
            half = sizes[index] / 2.0
            x1, y1 = (max(0, int(np.floor(v - half))) for v in centres[index])
            x2 = min(query.width, int(np.ceil(centres[index][0] + half)))
            y2 = min(query.height, int(np.ceil(centres[index][1] + half)))
            offset = np.array([x1, y1], np.float64)
            best: tuple[float, _Found] | None = None
            for found in self._find(query.image[y1:y2, x1:x2], opts.detection_confidence, opts.max_hands):
                found.keypoints_2d = found.keypoints_2d + offset
                overlap = box_iou(
                    box_of_points(found.keypoints_2d, self.settings.box_margin, query.width, query.height), box
                )
                if overlap >= MIN_GIVEN_OVERLAP and (best is None or overlap > best[0]):
                    best = (overlap, found)
            if best is None:
                continue
            found = best[1]
            agrees = mediapipe_is_right(found.label) == bool(is_right)
            side_score = found.label_score if agrees else 1.0 - found.label_score
            hand = self._hand(found, query, np.asarray(box, np.float64), bool(is_right), side_score)
            hand.given_index = index
            hands.append(hand)
        return hands


def _match_palms(found: list[_Found], detections: list[Any], size: np.ndarray) -> None:
    """Give each hand the score of the palm detection it grew from. MediaPipe takes palm detections best first
    and drops hand regions that overlap one already taken, so a hand belongs to the best-scored detection whose
    box overlaps its keypoints' box; a hand no box overlaps takes the nearest detection left. One per hand."""
    if not found or not detections:
        return
    hand_boxes = [np.concatenate([f.keypoints_2d.min(axis=0), f.keypoints_2d.max(axis=0)]) for f in found]
    palm_boxes = []
    for det in detections:
        box = det.location_data.relative_bounding_box
        palm_boxes.append(np.array([box.xmin * size[0], box.ymin * size[1], (box.xmin + box.width) * size[0],
                                    (box.ymin + box.height) * size[1]]))  # fmt: skip
    scores = [float(det.score[0]) if det.score else 0.0 for det in detections]
    overlap = np.array([[box_iou(h, p) for p in palm_boxes] for h in hand_boxes])
    centre = np.array([(b[:2] + b[2:]) / 2 for b in hand_boxes])
    distance = np.linalg.norm(centre[:, None, :] - np.array([(b[:2] + b[2:]) / 2 for b in palm_boxes])[None], axis=-1)
    taken: set[int] = set()
    for det in sorted(range(len(detections)), key=lambda d: -scores[d]):
        holders = [h for h in range(len(found)) if overlap[h, det] > 0 and found[h].palm_score is None]
        if holders:
            found[max(holders, key=lambda h: overlap[h, det])].palm_score = scores[det]
            taken.add(det)
    for hand in range(len(found)):
        free = [d for d in range(len(detections)) if d not in taken]
        if found[hand].palm_score is None and free:
            det = min(free, key=lambda d: distance[hand, d])
            found[hand].palm_score = scores[det]
            taken.add(det)
