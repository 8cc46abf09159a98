"""The local stack's supervisor: runs each process of `modelyard up` and restarts one that exits, with backoff.

`python -m modelyard.ops.supervisor STATE_DIR` reads the plan `up` wrote (`plan.json`: each program's
command, address, log and environment), starts every program and keeps `stack.json` current (pid, state,
restarts, last exit) for `modelyard status` and `modelyard down`. A program that exits is started again after
1 s, doubling up to 30 s while it keeps failing (reset once it has run for a minute); exit code 2 (a configuration
problem, which no restart fixes) is not restarted. SIGTERM stops the gateway first, then the services, and exits.
Restarts are logged, one JSON line each, in `logs/supervisor.log`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modelyard.runtime import logs

PLAN_FILE = "plan.json"
STATE_FILE = "stack.json"
CONFIG_EXIT = 2  # the runtime's "configuration problem": restarting cannot help
log = logging.getLogger("modelyard.supervisor")


@dataclass
class Program:
    """What to run: `argv` with `env` added to the supervisor's environment, its output appended to `log`."""

    name: str
    argv: list[str]
    address: str
    log: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Backoff:
    initial_s: float = 1.0
    max_s: float = 30.0
    stable_s: float = 60.0  # a run this long resets the backoff

    def delay(self, failures: int) -> float:
        return min(self.initial_s * 2 ** max(failures - 1, 0), self.max_s)


@dataclass
class _Child:
    program: Program
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    failures: int = 0  # consecutive short runs
    last_exit: int | None = None
    last_exit_at: str = ""
    restart_at: float | None = None
    state: str = "starting"


def write_plan(state_dir: Path, programs: list[Program]) -> None:
    (state_dir / PLAN_FILE).write_text(json.dumps([asdict(p) for p in programs], indent=2))


def read_plan(state_dir: Path) -> list[Program]:
    return [Program(**p) for p in json.loads((state_dir / PLAN_FILE).read_text())]


class Supervisor:
    def __init__(self, state_dir: Path, programs: list[Program], backoff: Backoff | None = None) -> None:
        self.state_dir = state_dir
        self.children = [_Child(p) for p in programs]
        self.backoff = backoff or Backoff()

    def run(self, stop: threading.Event, poll_s: float = 0.2) -> None:
        for child in self.children:
            self._start(child)
        self._write_state()
        while not stop.wait(poll_s):
            changed = False
            for child in self.children:
                changed |= self._check(child)
            if changed:
                self._write_state()
        self._stop_all()

    def _start(self, child: _Child) -> None:
        program = child.program
        Path(program.log).parent.mkdir(parents=True, exist_ok=True)
        with open(program.log, "ab") as out:
            child.process = subprocess.Popen(
                program.argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **program.env}
            )
        child.started = time.monotonic()
        child.restart_at = None
        child.state = "running"

    def _check(self, child: _Child) -> bool:
        """Notice an exit, schedule or perform a restart; True when something changed."""
        now = time.monotonic()
        if child.state == "backoff" and child.restart_at is not None and now >= child.restart_at:
            child.restarts += 1
            self._start(child)
            log.info(
                "restarted",
                extra={"fields": {"program": child.program.name, "pid": self._pid(child), "restarts": child.restarts}},
            )
            return True
        if child.state != "running" or child.process is None or child.process.poll() is None:
            return False
        code = int(child.process.returncode)
        child.last_exit, child.last_exit_at = code, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ran_s = now - child.started
        child.failures = 1 if ran_s >= self.backoff.stable_s else child.failures + 1
        fields: dict[str, Any] = {"program": child.program.name, "exit_code": code, "ran_s": round(ran_s, 1)}
        if code == CONFIG_EXIT:
            child.state = "failed"
            log.error("exited with a configuration problem; not restarted (see its log)", extra={"fields": fields})
            return True
        delay = self.backoff.delay(child.failures)
        child.state, child.restart_at = "backoff", now + delay
        log.warning("exited; restarting", extra={"fields": {**fields, "restart_in_s": delay}})
        return True

    def _stop_all(self, timeout: float = 40.0) -> None:
        """The gateway first (no new calls reach the services), then the services; SIGKILL after `timeout`."""
        ordered = sorted(self.children, key=lambda c: c.program.name != "gateway")
        for group in (ordered[:1], ordered[1:]) if ordered and ordered[0].program.name == "gateway" else (ordered,):
            running = [c.process for c in group if c.process is not None and c.process.poll() is None]
            for process in running:
                process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for process in running:
                try:
                    process.wait(max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for child in self.children:
            child.state = "stopped"
        self._write_state()

    @staticmethod
    def _pid(child: _Child) -> int:
        return child.process.pid if child.process is not None else 0

    def _write_state(self) -> None:
        processes = {
            c.program.name: {
                "name": c.program.name,
                "pid": self._pid(c),
                "address": c.program.address,
                "log": c.program.log,
                "state": c.state,
                "restarts": c.restarts,
                "last_exit": c.last_exit,
                "last_exit_at": c.last_exit_at,
            }
            for c in self.children
        }
        state = {"supervisor": {"pid": os.getpid()}, "processes": processes}
        temporary = self.state_dir / f".{STATE_FILE}.tmp"
        temporary.write_text(json.dumps(state, indent=2))
        temporary.replace(self.state_dir / STATE_FILE)  # readers never see half a file


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m modelyard.ops.supervisor STATE_DIR", file=sys.stderr)
        return 2
    logs.configure()
    state_dir = Path(args[0])
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    supervisor = Supervisor(state_dir, read_plan(state_dir))
    log.info("supervising", extra={"fields": {"programs": [c.program.name for c in supervisor.children]}})
    supervisor.run(stop)
    log.info("stopped", extra={"fields": {}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
