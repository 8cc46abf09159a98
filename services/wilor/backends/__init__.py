"""The backends behind the WiLoR service, chosen by `model.backend`: each turns queries into hands.

- `mediapipe` (backends/mediapipe_hands.py): MediaPipe Hands on the CPU, real pretrained weights from its PyPI
  wheel; fills box, side, scores, 2D and 3D keypoints — no MANO.
- `upstream` (backends/upstream.py): the official WiLoR code, detector, checkpoint and MANO files from the
  models volume; fills everything.
"""

from __future__ import annotations

from typing import Any, Protocol

from modelyard.wilor.config import WiLoRConfig
from modelyard.wilor.hands import Hand, Query


class Backend(Protocol):
    name: str
    # The Hand fields this backend fills (proto names); the others stay absent.
    filled_fields: tuple[str, ...]

    def load(self) -> None: ...

    def run(self, queries: list[Query]) -> list[list[Hand] | Exception]: ...

    def info(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def create_backend(config: WiLoRConfig, device: str) -> Backend:
    """The configured backend, not yet loaded. Imports only what that backend needs."""
    if config.backend == "upstream":
        from modelyard.wilor.backends.upstream import UpstreamWiLoR

        return UpstreamWiLoR(config, device)
    from modelyard.wilor.backends.mediapipe_hands import MediaPipeHands

    return MediaPipeHands(config, device)
