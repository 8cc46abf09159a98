"""The `model:` section of /config/wilor.yaml.

model:
  backend: mediapipe          # or upstream
  mediapipe: {model_complexity: 1}
  upstream:                   # only for backend: upstream; every path must exist
    checkout: /models/wilor/WiLoR               # a checkout of the official code (holds wilor/)
    checkpoint: /models/wilor/wilor_final.ckpt
    config: /models/wilor/model_config.yaml
    detector: /models/wilor/detector.pt
    mano_dir: /models/wilor/mano_data           # MANO_RIGHT.pkl and mano_mean_params.npz
    trust_checkpoint_pickle: true               # checkpoint and detector are pickles: for files you trust
  flat_hand_mean: true        # hand_pose from the flat hand (WiLoR's); false: for a MANO that adds hands_mean
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from modelyard.runtime.config import ExistingDir, ExistingFile, Strict


class MediaPipeSettings(Strict):
    model_complexity: Literal[0, 1] = Field(
        1, description="0 = the lite palm and landmark models, 1 = the full ones (slower, more accurate)"
    )
    presence_threshold: float = Field(
        0.5, gt=0, le=1, description="hand-presence score a landmark result needs (MediaPipe's tracking confidence)"
    )
    box_margin: float = Field(
        0.1, ge=0, le=1, description="the hand box is the keypoints' box widened by this fraction on each side"
    )
    graph_cache: int = Field(
        4, ge=1, description="MediaPipe graphs kept for different (detection_confidence, max_hands) requests"
    )


class UpstreamSettings(Strict):
    checkout: ExistingDir = Field(description="a checkout of the official WiLoR code: the folder holding wilor/")
    checkpoint: ExistingFile = Field(description="wilor_final.ckpt")
    config: ExistingFile = Field(description="WiLoR's pretrained_models/model_config.yaml")
    detector: ExistingFile = Field(description="detector.pt, the Ultralytics hand detector")
    mano_dir: ExistingDir = Field(description="folder with MANO_RIGHT.pkl and mano_mean_params.npz")
    trust_checkpoint_pickle: bool = Field(
        False,
        description="WiLoR's Lightning checkpoint holds Python objects besides tensors (its config) and "
        "detector.pt is a pickled Ultralytics model; loading them runs code from the files, so it must be "
        "allowed explicitly",
    )
    hands_per_batch: int = Field(32, ge=1, description="hands per forward pass of the reconstruction network")


class WiLoRConfig(Strict):
    backend: Literal["mediapipe", "upstream"] = "mediapipe"
    mediapipe: MediaPipeSettings = MediaPipeSettings()
    upstream: UpstreamSettings | None = None
    # Defaults of the request options (DetectOptions); the WiLoR demo's where it has one.
    detection_confidence: float = Field(0.3, gt=0, le=1, description="the WiLoR demo's detector threshold")
    max_hands: int = Field(2, ge=1, le=64, description="hands per image, highest scores first")
    max_hands_limit: int = Field(16, ge=1, le=256, description="the largest max_hands a request may ask for")
    rescale_factor: float = Field(2.0, gt=1, le=10, description="crop enlargement of the hand box (WiLoR demo: 2.0)")
    flat_hand_mean: bool = Field(
        True,
        description="hand_pose from the flat hand, as WiLoR's MANO layer takes it (true), or for a MANO that adds "
        "hands_mean itself (false: WiLoR's pose minus hands_mean); a request's options.flat_hand_mean overrides it",
    )
    max_pixels: int = Field(50_000_000, ge=1, description="refuse images with more pixels than this")
    max_frames: int = Field(512, ge=1, description="images or sequence frames per request (the item cap)")
    max_request_pixels: int = Field(
        300_000_000,
        ge=1,
        description="pixels of all a request's images or frames together (an .npz sequence counts whole), "
        "checked from headers before decoding",
    )

    @model_validator(mode="after")
    def _backend_section(self) -> WiLoRConfig:
        if self.backend == "upstream" and self.upstream is None:
            raise ValueError(
                "backend 'upstream' needs the 'upstream:' section (checkout, checkpoint, config, detector, mano_dir)"
            )
        if self.max_hands > self.max_hands_limit:
            raise ValueError(f"max_hands {self.max_hands} is over max_hands_limit {self.max_hands_limit}")
        if self.max_request_pixels < self.max_pixels:
            raise ValueError(f"max_request_pixels {self.max_request_pixels} is under max_pixels {self.max_pixels}")
        return self
