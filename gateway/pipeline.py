"""What a declared pipeline is: options with defaults, the services it calls, how an input becomes items,
how one item is processed, and what is written when the job ends."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from modelyard.gateway.datarefs import DataVolumeProbe
from modelyard.gateway.jobs import Item, JobRecord
from modelyard.runtime.calls import ServiceClient

OptionsT = TypeVar("OptionsT", bound=BaseModel)


@dataclass
class StepContext(Generic[OptionsT]):
    """What processing one item may use: the services, the job's folder, its options, the cancel flag."""

    job_id: str
    options: OptionsT
    data_root: Path
    output_dir: Path
    clients: dict[str, ServiceClient]
    cancelled: threading.Event
    # Which services mount the data volume (images then go as DataRefs); None: send bytes to every service.
    data_volume: DataVolumeProbe | None = None

    def request_id(self, item: Item, step: str) -> str:
        """Stable per job, item and step: a retry of the same step carries the same id."""
        return f"{self.job_id}:{item.position}:{step}"


class Pipeline(ABC, Generic[OptionsT]):
    name: ClassVar[str]
    description: ClassVar[str]
    services: ClassVar[tuple[str, ...]]
    options_schema: ClassVar[type[BaseModel]]

    def services_needed(self, options: OptionsT) -> tuple[str, ...]:
        """The services a job with these options calls (the gateway refuses it when one has no address)."""
        return self.services

    def concurrency(self, options: OptionsT) -> int:
        """Items of one job in flight at once (each service also bounds its own in-flight calls)."""
        return 8

    @abstractmethod
    def plan(self, input_path: Path, options: OptionsT, data_root: Path) -> list[Item]:
        """The job's items, with stable keys. Raise InvalidInput for an unusable input."""

    @abstractmethod
    def process(self, item: Item, ctx: StepContext[OptionsT]) -> dict[str, Any]:
        """Run one item through the services; write its files atomically; return what to record.
        Raise CallFailed (from the service clients) or InvalidInput to fail just this item."""

    def finalize(self, job: JobRecord, items: list[Item], ctx: StepContext[OptionsT]) -> dict[str, str]:
        """Write job-level outputs from the recorded items (rewritten whole, so reruns never duplicate)."""
        return {}
