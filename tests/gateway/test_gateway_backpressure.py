"""Back-pressure in the gateway: beyond max_running_jobs a new job is refused with RESOURCE_EXHAUSTED (retry
later) and leaves nothing behind; jobs already running can still be resubmitted (watched, resumed)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from modelyard.gateway.engine import Engine
from modelyard.gateway.jobs import Item, JobState, JobStore
from modelyard.gateway.pipeline import Pipeline, StepContext
from modelyard.runtime.config import Strict
from modelyard.runtime.errors import ResourceExhausted


class NoOptions(Strict):
    pass


class Held(Pipeline[NoOptions]):
    """One item per job, held until the test lets go."""

    name: ClassVar[str] = "held"
    description: ClassVar[str] = "an item that waits for the test"
    services: ClassVar[tuple[str, ...]] = ()
    options_schema: ClassVar[type[NoOptions]] = NoOptions

    def __init__(self) -> None:
        self.release = threading.Event()

    def plan(self, input_path: Path, options: NoOptions, data_root: Path) -> list[Item]:
        return [Item(key="only", position=0, payload={})]

    def process(self, item: Item, ctx: StepContext[NoOptions]) -> dict[str, Any]:
        self.release.wait(30)
        return {}


def wait_until_ended(engine: Engine, job_ids: list[str]) -> None:
    deadline = time.monotonic() + 30
    while any(engine.is_running(j) for j in job_ids) and time.monotonic() < deadline:
        time.sleep(0.02)


def test_jobs_beyond_the_limit_are_refused_until_one_ends(tmp_path: Path) -> None:
    (tmp_path / "input.txt").write_text("x")
    pipeline = Held()
    engine = Engine(JobStore(tmp_path / "jobs.sqlite"), {"held": pipeline}, {}, tmp_path, max_running_jobs=2)
    first = engine.submit("held", "input.txt", "out/1", {})
    second = engine.submit("held", "input.txt", "out/2", {})
    with pytest.raises(ResourceExhausted, match="2 jobs are running, the gateway's limit"):
        engine.submit("held", "input.txt", "out/3", {})
    assert not (tmp_path / "out" / "3").exists() and len(engine.store.list_jobs()) == 2  # nothing recorded
    assert engine.submit("held", "input.txt", "out/1", {}).job.id == first.job.id  # a running job: no new slot
    pipeline.release.set()
    wait_until_ended(engine, [first.job.id, second.job.id])
    third = engine.submit("held", "input.txt", "out/3", {})
    wait_until_ended(engine, [third.job.id])
    assert engine.get(third.job.id).state == JobState.DONE
