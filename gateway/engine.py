"""Runs jobs: items concurrently across services (stage overlap), bounded in-flight calls per service, every
state change recorded before it is announced, progress to any number of watchers."""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelyard.gateway import files
from modelyard.gateway.datarefs import DataVolumeProbe
from modelyard.gateway.inputs import plain
from modelyard.gateway.jobs import Item, ItemState, JobRecord, JobState, JobStore, job_id
from modelyard.gateway.pipeline import Pipeline, StepContext
from modelyard.runtime import cancel
from modelyard.runtime.calls import CallFailed, ServiceClient
from modelyard.runtime.cancel import Cancellation
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


CANCEL_GRACE_S = 2.0  # after a cancel, how long workers get to notice before their items are given up on
FINISHED_HISTORIES = 32  # event histories kept for jobs that ended (a watcher may arrive after a fast job)


@dataclass
class _Run:
    """One run of a job: its cancel flag, whether it stops for a shutdown, the items its workers hold."""

    cancel: Cancellation
    output_dir: Path
    request: dict[str, Any]
    no_more: threading.Event = field(default_factory=threading.Event)  # start no further item
    stopping: bool = False  # the gateway is shutting down: the job stays unfinished, to resume on restart
    held: dict[str, Item] = field(default_factory=dict)  # items being processed, by key
    lock: threading.Lock = field(default_factory=threading.Lock)


class Engine:
    def __init__(
        self,
        store: JobStore,
        pipelines: dict[str, Pipeline[Any]],
        clients: dict[str, ServiceClient],
        data_root: Path,
        workers: int = 8,
        max_running_jobs: int = 64,
        max_item_attempts: int = 3,
    ) -> None:
        self.store = store
        self.pipelines = pipelines
        self.clients = clients
        self.data_root = data_root
        self.data_volume = DataVolumeProbe(data_root)
        self.workers = workers
        self.max_running_jobs = max_running_jobs
        self.max_item_attempts = max_item_attempts
        self._running: dict[str, _Run] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._watchers: dict[str, list[queue.Queue[Event | None]]] = {}
        self._history: dict[str, list[Event]] = {}  # every event of a job's current (or last) run, in order
        self._lock = threading.Lock()

    # -- submission -----------------------------------------------------------------------------------
    def submit(
        self,
        pipeline_name: str,
        input_rel: str,
        output_rel: str,
        options: dict[str, str],
        limited: bool = True,
        automatic: bool = False,
    ) -> Event:
        """Validate, record every item, start (or resume) the job in the background; returns the first event.
        Beyond max_running_jobs (when `limited`) the job is refused with ResourceExhausted and nothing recorded.
        `automatic`: the gateway resuming after a restart (items that keep wedging it stay failed)."""
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
        with self._lock:
            jid = job_id(pipeline_name, request)
            if jid in self._running:  # already running: nothing to reopen, the caller watches it
                job = self.store.get_job(jid)
                assert job is not None
                return Event(job, resumed=True)
            job, resumed = self.store.open_job(pipeline_name, request, items, self.max_item_attempts, automatic)
            run = _Run(Cancellation(), output_dir, request)
            self._running[job.id] = run
            self._history.pop(job.id, None)  # re-inserted last: histories are evicted oldest first
            self._history[job.id] = []  # a watcher arriving from now on sees this run from its first event
            ctx = StepContext(job.id, parsed, self.data_root, output_dir, self.clients, run.cancel, self.data_volume)
            thread = threading.Thread(target=self._run, args=(pipeline, ctx, run), name=f"job-{job.id}", daemon=True)
            self._threads[job.id] = thread
            thread.start()
        return Event(job, resumed=resumed)

    def resume_unfinished(self) -> list[str]:
        """After a restart: resume every job that was queued or running when the gateway stopped."""
        resumed = []
        for job in self.store.list_jobs(limit=10_000):
            if job.state in (JobState.QUEUED, JobState.RUNNING):
                req = job.request
                opts = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in req["options"].items()}
                try:  # they were admitted once: no limit
                    self.submit(job.pipeline, req["input"], req["output"], opts, limited=False, automatic=True)
                    resumed.append(job.id)
                except ModelyardError as exc:
                    self.store.set_job_state(job.id, JobState.FAILED, f"could not resume: {exc.message}")
        return resumed

    def cancel(self, jid: str) -> JobRecord:
        """Stop a job: no further item starts, calls in flight are cancelled, its items go back to pending
        (a later submit resumes them). The job is `cancelled` within CANCEL_GRACE_S and a moment."""
        job = self.get(jid)
        with self._lock:
            run = self._running.get(jid)
        if run is not None:
            run.no_more.set()
            run.cancel.set()
        elif job.state in (JobState.QUEUED, JobState.RUNNING):
            self.store.set_job_state(jid, JobState.CANCELLED)
        return self.get(jid)

    def shutdown(self, drain_s: float) -> bool:
        """The gateway stops: no item starts any more; items running get `drain_s` to finish, then their calls
        are cancelled. Jobs stay unfinished in the store and resume on restart. True if every job thread ended
        (a worker stuck in the operating system may not: its item counts as interrupted on restart)."""
        deadline = time.monotonic() + drain_s
        with self._lock:
            runs = list(self._running.values())
            threads = list(self._threads.values())
        for run in runs:
            run.stopping = True
            run.no_more.set()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for run in runs:
            run.cancel.set()
        for thread in threads:
            thread.join(max(0.0, deadline + CANCEL_GRACE_S + 0.5 - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)

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
        """Events of a job: every event of its current (or last) run from the first, however fast it ran,
        then each change until it ends. A job with no run since the gateway started: its current state."""
        inbox: queue.Queue[Event | None] = queue.Queue()
        with self._lock:  # the history and the inbox are taken together: no event missed, none twice
            history = list(self._history.get(jid, []))
            running = jid in self._running
            if running:
                self._watchers.setdefault(jid, []).append(inbox)
        try:
            if not history:
                yield Event(self.get(jid))
            yield from history
            if not running:
                return
            while not (stop and stop.is_set()):
                try:
                    event = inbox.get(timeout=0.5)
                except queue.Empty:
                    continue
                if event is None:
                    return
                yield event
        finally:
            with self._lock:
                inboxes = self._watchers.get(jid, [])
                if inbox in inboxes:
                    inboxes.remove(inbox)

    def _announce(self, event: Event, jid: str, run: _Run) -> None:
        event.job.request = run.request  # one copy per run, not one per event kept in the history
        if event.item is not None:  # a snapshot: the worker goes on changing its item
            event.item = copy.copy(event.item)
        with self._lock:
            self._history.setdefault(jid, []).append(event)
            for inbox in self._watchers.get(jid, []):
                inbox.put(event)

    def _ended(self, jid: str) -> None:
        """The run is over: watchers get the end of the stream, the history stays for late watchers."""
        with self._lock:
            self._running.pop(jid, None)
            self._threads.pop(jid, None)
            for inbox in self._watchers.pop(jid, []):
                inbox.put(None)
            finished = [j for j in self._history if j not in self._running]
            for old in finished[: max(0, len(finished) - FINISHED_HISTORIES)]:
                del self._history[old]

    # -- running --------------------------------------------------------------------------------------
    def _run(self, pipeline: Pipeline[Any], ctx: StepContext[Any], run: _Run) -> None:
        jid = ctx.job_id
        try:
            if self._sole_writer(jid, run.output_dir):
                files.remove_orphans(run.output_dir)  # temporary files a killed gateway left behind
            self.store.set_job_state(jid, JobState.RUNNING)
            self._announce(Event(self.get(jid)), jid, run)
            todo: queue.Queue[Item] = queue.Queue()
            for item in self.store.items(jid, ItemState.PENDING):
                todo.put(item)
            count = max(1, min(self.workers, pipeline.concurrency(ctx.options), todo.qsize()))
            workers = [
                threading.Thread(
                    target=self._work, args=(pipeline, ctx, run, todo), name=f"job-{jid[:6]}-{n}", daemon=True
                )
                for n in range(count)
            ]  # daemon threads: one stuck in a read the OS never ends cannot keep the gateway from exiting
            for worker in workers:
                worker.start()
            given_up = None
            while alive := [w for w in workers if w.is_alive()]:
                alive[0].join(0.1)
                if run.cancel.is_set():
                    given_up = given_up or time.monotonic() + CANCEL_GRACE_S
                    if time.monotonic() > given_up:
                        break
            with run.lock:  # workers still busy are given up on: their late results are dropped
                stuck, run.held = list(run.held.values()), {}
            if stuck:
                log.warning("job %s: %d items did not stop when cancelled", jid, len(stuck))
            if run.no_more.is_set() and self.store.items(jid, ItemState.PENDING) + stuck:
                if run.stopping:  # left unfinished, stuck items still `running`: counted as interrupted on resume
                    return
                for item in stuck:
                    self.store.requeue_item(jid, item.key)
                self.store.set_job_state(jid, JobState.CANCELLED)
            else:
                items = self.store.items(jid)
                summary = pipeline.finalize(self.get(jid), items, ctx)
                failed = any(i.state == ItemState.FAILED for i in items)
                self.store.set_job_state(jid, JobState.FAILED if failed else JobState.DONE, summary=summary)
            self._announce(Event(self.get(jid)), jid, run)
        except Exception as exc:
            log.exception("job %s stopped: %s", jid, exc)
            self.store.set_job_state(jid, JobState.FAILED, f"{type(exc).__name__}: {plain(str(exc))}")
            self._announce(Event(self.get(jid)), jid, run)
        finally:
            self._ended(jid)

    def _sole_writer(self, jid: str, output_dir: Path) -> bool:
        """No other running job writes into this folder (its temporary files are not orphans)."""
        with self._lock:
            return not any(j != jid and r.output_dir == output_dir for j, r in self._running.items())

    def _work(self, pipeline: Pipeline[Any], ctx: StepContext[Any], run: _Run, todo: queue.Queue[Item]) -> None:
        cancel.current.set(run.cancel)  # this thread's service calls are cancelled with the job
        while not run.no_more.is_set():
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            self._process(pipeline, ctx, run, item)

    def _process(self, pipeline: Pipeline[Any], ctx: StepContext[Any], run: _Run, item: Item) -> None:
        jid = ctx.job_id
        with run.lock:
            self.store.start_item(jid, item.key)
            run.held[item.key] = item
        item.state, item.attempts = ItemState.RUNNING, item.attempts + 1
        self._announce(Event(self.get(jid), item), jid, run)
        outputs: dict[str, Any] | None = None
        message = ""
        try:
            outputs = pipeline.process(item, ctx)
        except (CallFailed, ModelyardError) as exc:
            message = str(exc) if isinstance(exc, CallFailed) else exc.message
        except Exception as exc:  # a bug in a pipeline step fails the item, never the job
            if not run.cancel.is_set():
                log.exception("item %s of job %s failed", item.key, jid)
            message = f"{type(exc).__name__}: {plain(str(exc))}"
        with run.lock:
            if run.held.pop(item.key, None) is None:
                return  # given up on after a cancel: the job already put it back
            if outputs is not None:
                self.store.finish_item(jid, item.key, outputs)
                item.state, item.outputs = ItemState.DONE, outputs
            elif run.cancel.is_set():  # cut short by the cancel, not failed: a later submit resumes it
                self.store.requeue_item(jid, item.key)
                item.state, item.error = ItemState.PENDING, ""
            else:
                self.store.fail_item(jid, item.key, message)
                item.state, item.error = ItemState.FAILED, message
        self._announce(Event(self.get(jid), item), jid, run)


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
    if target == root.resolve():
        raise InvalidInput(f"output '{relative}' is the data root itself: name a folder under it, such as runs/out")
    if target.is_relative_to(root.resolve() / ".modelyard"):
        raise InvalidInput(f"output '{relative}' is inside .modelyard, the gateway's own folder; name another")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file where a folder must be, a name too long, a read-only volume
        raise InvalidInput(
            f"output {relative!r} cannot be a folder under the data root: {exc.strerror or exc}"
        ) from None
    return target
