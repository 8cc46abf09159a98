"""The WiLoR adapter: load, warm up, infer — delegating to the configured backend. It owns the model only."""

from __future__ import annotations

from typing import Any

import numpy as np

from modelyard.runtime.adapter import ModelAdapter
from modelyard.wilor.backends import Backend, create_backend
from modelyard.wilor.config import WiLoRConfig
from modelyard.wilor.hands import JOINT_NAMES, Hand, Options, Query


class WiLoRAdapter(ModelAdapter[WiLoRConfig, Query, list[Hand]]):
    @classmethod
    def memory_need_mb(cls, config: WiLoRConfig, batch_size: int) -> int:
        """GPU memory of the upstream backend: weights (the checkpoint's size), the detector and CUDA context,
        ViT-H activations per hand (two hands per frame assumed). MediaPipe runs on the CPU: none."""
        if config.backend != "upstream" or config.upstream is None:
            return 0
        weights_mb = config.upstream.checkpoint.stat().st_size / (1024 * 1024)
        return int(weights_mb + 900 + 2 * 60 * batch_size)

    def load(self) -> None:
        self.backend: Backend = create_backend(self.config, self.device)
        self.backend.load()

    def warmup(self) -> None:
        """A grey frame, once to detect in (finding nothing) and once with a given box (running the
        reconstruction), so the first request is not slow."""
        grey = np.full((256, 256, 3), 128, np.uint8)
        options = self.default_options()
        given = Query(grey, options, boxes=np.array([[64.0, 64.0, 192.0, 192.0]]), is_right=np.array([True]))
        self.backend.run([Query(grey, options), given])

    def default_options(self) -> Options:
        cfg = self.config
        return Options(cfg.detection_confidence, cfg.max_hands, cfg.rescale_factor, flat_hand_mean=cfg.flat_hand_mean)

    @property
    def filled_fields(self) -> tuple[str, ...]:
        return self.backend.filled_fields

    def infer(self, items: list[Query]) -> list[list[Hand] | Exception]:
        return self.backend.run(items)

    def info(self) -> dict[str, Any]:
        info = self.backend.info()
        details = info.setdefault("details", {})
        details["filled_fields"] = ",".join(self.backend.filled_fields)
        details["joint_order"] = ",".join(JOINT_NAMES)
        details["backend_name"] = self.backend.name
        return info

    def close(self) -> None:
        self.backend.close()
