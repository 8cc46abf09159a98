"""Runs jobs: items concurrently across services (stage overlap), bounded in-flight calls per service, every
state change recorded before it is announced, progress to any number of watchers."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modelyard.gateway.calls import CallFailed, ServiceClient
from modelyard.gateway.jobs import Item, ItemState, JobRecord, JobState, JobStore, job_id
from modelyard.gateway.pipeline import Pipeline, StepContext
from modelyard.runtime.errors import ConfigError, InvalidInput, ModelyardError, NotFound, ResourceExhausted
from modelyard.runtime.paths import confined

log = logging.getLogger("modelyard.gateway")


@dataclass
class Event:
    job: JobRecord
    item: Item | None = None
    resumed: bool = False


def parse_config_text(text: str) -> dict[str, str]:
    """Options from a seed-style `.conf` (KEY=VALUE, `#` comments, quotes) or from YAML."""
    if not text.strip():
        return {}
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if all("=" in ln and ":" not in ln.split("=", 1)[0] for ln in lines):
        options = {}
        for line in lines:
            key, value = line.removeprefix("export ").split("=", 1)
            value = value.split(" #", 1)[0].strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            options[key.strip()] = value
        return options
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"config_text is neither KEY=VALUE lines nor valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput("config_text must be KEY=VALUE lines or a YAML mapping of option names to values")
    return {str(k): "" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for k, v in data.items()}


class Engine:
    def __init__(
        self,
        store: JobStore,
        pipelines: dict[str, Pipeline[Any]],
        clients: dict[str, ServiceClient],
        data_root: Path,
        workers: int = 8,
        max_running_jobs: int = 64,
    ) -> None:
        self.store = store
        self.pipelines = pipelines
        self.clients = clients
        self.data_root = data_root
        self.workers = workers
        self.max_running_jobs = max_running_jobs
        self._running: dict[str, threading.Event] = {}
        self._watchers: dict[str, list[queue.Queue[Event | None]]] = {}
        self._lock = threading.Lock()

    # -- submission -----------------------------------------------------------------------------------
    def submit(
        self, pipeline_name: str, input_rel: str, output_rel: str, options: dict[str, str], limited: bool = True
    ) -> Event:
        """Validate, record every item, start (or resume) the job in the background; returns the first event.
        Beyond max_running_jobs (when `limited`) the job is refused with ResourceExhausted and nothing recorded."""
        pipeline = self.pipelines.get(pipeline_name)
        if pipeline is None:
            raise InvalidInput(f"unknown pipeline '{pipeline_name}'; known: {', '.join(sorted(self.pipelines))}")
        parsed = _options(pipeline, options)
        input_path = confined(self.data_root, input_rel)
        request = {"input": input_rel, "output": output_rel, "options": parsed.model_dump(mode="json")}
        with self._lock:  # back-pressure: every running job holds threads; a resubmitted running job is no new one
            running = len(self._running)
            if limited and running >= self.max_running_jobs and job_id(pipeline_name, request) not in self._running:
                raise ResourceExhausted(
                    f"{running} jobs are running, the gateway's limit (max_running_jobs); retry when one has ended"
                )
        output_dir = _output_dir(self.data_root, output_rel)
        items = pipeline.plan(input_path, parsed, self.data_root)
        if not items:
            raise InvalidInput(f"input {input_rel} holds no items for pipeline {pipeline_name}")
        unreachable = [name for name in pipeline.services_needed(parsed) if name not in self.clients]
        if unreachable:  # refused whole (after the input's own checks), instead of failing every item
            raise ConfigError(
                f"pipeline {pipeline_name} needs {', '.join(unreachable)}, which this gateway has no address for: "
                f"add services.<name>.addresses to its config (modelyard up: a <name>.yaml in --config-dir)"
            )
        job, resumed = self.store.open_job(pipeline_name, request, items)
        with self._lock:
            already = job.id in self._running
            if not already:
                cancel = threading.Event()
                self._running[job.id] = cancel
        if not already:
            ctx = StepContext(job.id, parsed, self.data_root, output_dir, self.clients, cancel)
            threading.Thread(target=self._run, args=(pipeline, ctx), name=f"job-{job.id}", daemon=True).start()
        return Event(job, resumed=resumed)

    def resume_unfinished(self) -> list[str]:
        """After a restart: resume every job that was queued or running when the gateway stopped."""
        resumed = []
        for job in self.store.list_jobs(limit=10_000):
            if job.state in (JobState.QUEUED, JobState.RUNNING):
                req = job.request
                opts = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in req["options"].items()}
                try:
                    self.submit(job.pipeline, req["input"], req["output"], opts, limited=False)  # were admitted
                    resumed.append(job.id)
                except ModelyardError as exc:
                    self.store.set_job_state(job.id, JobState.FAILED, f"could not resume: {exc.message}")
        return resumed

    def cancel(self, jid: str) -> JobRecord:
        job = self.get(jid)
        with self._lock:
            flag = self._running.get(jid)
        if flag is not None:
            flag.set()
        elif job.state in (JobState.QUEUED, JobState.RUNNING):
            self.store.set_job_state(jid, JobState.CANCELLED)
        return self.get(jid)

    def get(self, jid: str) -> JobRecord:
        job = self.store.get_job(jid)
        if job is None:
            raise NotFound(f"no job '{jid}'")
        return job

    def is_running(self, jid: str) -> bool:
        with self._lock:
            return jid in self._running

    # -- progress -------------------------------------------------------------------------------------
    def watch(self, jid: str, stop: threading.Event | None = None) -> Iterator[Event]:
        """Events of a job: its current state, then every change until it ends."""
        inbox: queue.Queue[Event | None] = queue.Queue()
        with self._lock:
            self._watchers.setdefault(jid, []).append(inbox)
            running = jid in self._running
        try:
            yield Event(self.get(jid))
            if not running:
                return
            while not (stop and stop.is_set()):
                try:
                    event = inbox.get(timeout=0.5)
                except queue.Empty:
                    if not self.is_running(jid):
                        return
                    continue
                if event is None:
                    return
                yield event
        finally:
            with self._lock:
                self._watchers.get(jid, []).remove(inbox)

    def _announce(self, event: Event | None, jid: str) -> None:
        with self._lock:
            inboxes = list(self._watchers.get(jid, []))
        for inbox in inboxes:
            inbox.put(event)

    # -- running --------------------------------------------------------------------------------------
    def _run(self, pipeline: Pipeline[Any], ctx: StepContext[Any]) -> None:
        jid = ctx.job_id
        try:
            self.store.set_job_state(jid, JobState.RUNNING)
            self._announce(Event(self.get(jid)), jid)
            pending = self.store.items(jid, ItemState.PENDING)
            workers = max(1, min(self.workers, pipeline.concurrency(ctx.options)))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"job-{jid[:6]}") as pool:
                for item in pending:
                    pool.submit(self._process, pipeline, ctx, item)
            if ctx.cancelled.is_set():
                self.store.set_job_state(jid, JobState.CANCELLED)
            else:
                items = self.store.items(jid)
                summary = pipeline.finalize(self.get(jid), items, ctx)
                failed = any(i.state == ItemState.FAILED for i in items)
                self.store.set_job_state(jid, JobState.FAILED if failed else JobState.DONE, summary=summary)
            self._announce(Event(self.get(jid)), jid)
        except Exception as exc:
            log.exception("job %s stopped: %s", jid, exc)
            self.store.set_job_state(jid, JobState.FAILED, f"{type(exc).__name__}: {exc}")
            self._announce(Event(self.get(jid)), jid)
        finally:
            with self._lock:
                self._running.pop(jid, None)
            self._announce(None, jid)

    def _process(self, pipeline: Pipeline[Any], ctx: StepContext[Any], item: Item) -> None:
        jid = ctx.job_id
        if ctx.cancelled.is_set():
            return  # stays pending: a later submit resumes it
        self.store.start_item(jid, item.key)
        item.state, item.attempts = ItemState.RUNNING, item.attempts + 1
        self._announce(Event(self.get(jid), item), jid)
        try:
            outputs = pipeline.process(item, ctx)
        except (CallFailed, ModelyardError) as exc:
            message = str(exc) if isinstance(exc, CallFailed) else exc.message
            self.store.fail_item(jid, item.key, message)
            item.state, item.error = ItemState.FAILED, message
        except Exception as exc:  # a bug in a pipeline step fails the item, never the job
            log.exception("item %s of job %s failed", item.key, jid)
            message = f"{type(exc).__name__}: {exc}"
            self.store.fail_item(jid, item.key, message)
            item.state, item.error = ItemState.FAILED, message
        else:
            self.store.finish_item(jid, item.key, outputs)
            item.state, item.outputs = ItemState.DONE, outputs
        self._announce(Event(self.get(jid), item), jid)


def _options(pipeline: Pipeline[Any], options: dict[str, str]) -> Any:
    from pydantic import ValidationError

    try:
        return pipeline.options_schema.model_validate(options)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            if error["type"] == "extra_forbidden":
                problems.append(
                    f"unknown option '{where}' (known: {', '.join(sorted(pipeline.options_schema.model_fields))})"
                )
            else:
                problems.append(f"option '{where}': {error['msg']} (got {error.get('input')!r})")
        raise InvalidInput(f"invalid options for {pipeline.name}: " + "; ".join(problems)) from None


def _output_dir(root: Path, relative: str) -> Path:
    if not relative or Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise InvalidInput(f"output '{relative}' must be a folder relative to the data root, without '..'")
    target = confined(root, relative, must_exist=False)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file where a folder must be, a name too long, a read-only volume
        raise InvalidInput(
            f"output {relative!r} cannot be a folder under the data root: {exc.strerror or exc}"
        ) from None
    return target
