"""The contract between the runtime and a model: load, warm up, infer a list, close.

Like Triton's Python-backend `model.py` or KServe's `Model`: an adapter owns only the model. It never sees
gRPC, queues, threads or health. `infer` maps a list of items to a list of results of the same length and
order; a per-item problem goes into that item's slot as an exception (e.g. InvalidInput).

What callers see:
- A call's items succeed or fail together: an exception in any of a call's slots fails that call with that
  exception's status (an InvalidInput's message prefixed "item i: " when the call held several items). Callers
  that want items to fail independently send them in separate calls (the gateway sends each of its items in
  calls of their own), and the scheduler still batches those calls together.
- A slot exception never affects other calls batched with it.
- When `infer` raises for a batch that holds several calls, the runtime runs each call again on its own, so the
  error reaches only the call(s) that cause it; the others get their results. Errors that concern the whole
  batch go to every call in it at once: FatalModelError (a broken CUDA context; the service then turns
  NOT_SERVING), Cancelled, and ResourceExhausted (out of memory even at batch 1).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import grpc
from pydantic import BaseModel

ConfigT = TypeVar("ConfigT", bound=BaseModel)
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class ModelAdapter(ABC, Generic[ConfigT, ItemT, ResultT]):
    """Subclass per model. The runtime calls load() once, warmup() once, then infer() on its model thread."""

    # infer() runs under torch's inference mode; an adapter that runs no torch says False and skips the guard
    # (entering it costs ~10 µs per call on a serving thread: a sixth of a no-op model's step).
    inference_mode: ClassVar[bool] = True

    def __init__(self, config: ConfigT, device: str) -> None:
        self.config = config
        self.device = device

    @classmethod
    def memory_need_mb(cls, config: ConfigT, batch_size: int) -> int:
        """GPU memory the model needs at `batch_size` (weights + activations); checked before loading."""
        return 0

    @abstractmethod
    def load(self) -> None:
        """Build the model and read its weights. Raise ConfigError for missing or unusable files."""

    def warmup(self) -> None:
        """Run one representative inference so the first request is not slow."""

    @abstractmethod
    def infer(self, items: list[ItemT]) -> list[ResultT | Exception]:
        """Run the model on `items` (already validated). Results hold host (numpy) data only.

        Return one result per item, in order; an item's own problem goes in its slot as an exception, which
        fails only the call that sent that item. Anything raised fails the whole list; when the list holds the
        items of several calls, the runtime runs each call again on its own, so the error reaches only the
        call(s) behind it (FatalModelError, Cancelled and ResourceExhausted go to every call at once)."""

    def info(self) -> dict[str, Any]:
        """Fields for ModelInfo: model, backend, checkpoint, checkpoint_sha256, architecture, details,
        random_weights (a bool: the checkpoint declares itself randomly initialised)."""
        return {}

    def close(self) -> None:
        """Release what load() took."""


@dataclass(frozen=True)
class ServiceSpec:
    """What a service folder registers (entry point group `modelyard.services`)."""

    name: str  # the CLI name, e.g. "medsam"
    proto_service: str  # the full gRPC service name, e.g. "modelyard.v1.MedSAM"
    config_schema: type[BaseModel]  # the `model:` section of the YAML
    adapter: type[ModelAdapter[Any, Any, Any]]
    # Builds the servicer from the model host and adds it to the server (the generated add_*_to_server).
    make_servicer: Callable[[Any], object]
    add_to_server: Callable[[Any, grpc.Server], None]
    summary: str = ""  # one line for `modelyard services`
