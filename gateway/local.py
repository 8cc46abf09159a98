"""The embedded default: every service as its own local process, in the environment it needs, plus the gateway.

`modelyard up` starts them detached, waits for health and writes a state file; `modelyard down` stops them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from modelyard.runtime.client import channel, wait_until_serving
from modelyard.runtime.launch import free_port

STATE_FILE = "stack.json"
REPO_ROOT = Path(__file__).resolve().parent.parent
# Services whose backends pin dependencies the main environment cannot hold run in their own (make setup):
# MODELYARD_<SERVICE>_PYTHON names its interpreter (a pip install has no .venv-wilor beside it).
SERVICE_ENVS = {"wilor": REPO_ROOT / ".venv-wilor" / "bin" / "python"}


def python_for(service: str) -> str:
    named = os.environ.get(f"MODELYARD_{service.upper()}_PYTHON")
    if named:
        return named
    own = SERVICE_ENVS.get(service)
    return str(own) if own is not None and own.exists() else sys.executable


@dataclass
class Process:
    name: str
    pid: int
    address: str
    log: str


def _spawn(name: str, args: list[str], python: str, log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            [python, "-m", "modelyard.runtime.cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the `up` command; stopped by `down`
        )


def _wait(process: subprocess.Popen[bytes], address: str, name: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with channel(address) as chan:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:])
                raise RuntimeError(f"{name} exited with code {process.returncode} while starting:\n{tail}")
            try:
                wait_until_serving(chan, "", timeout=1.0)
                return
            except TimeoutError:
                continue
    raise TimeoutError(f"{name} not SERVING after {timeout:.0f}s (log: {log})")


def up(
    configs: dict[str, Path],
    data_root: Path,
    state_dir: Path,
    gateway_port: int = 0,
    timeout: float = 300.0,
    gateway_settings: dict[str, object] | None = None,
) -> dict[str, Process]:
    """Start each service from its config, then the gateway wired to them (plus `gateway_settings`, keys of
    gateway.yaml). Returns what runs where."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if (state_dir / STATE_FILE).exists():
        raise RuntimeError(f"a stack is already up ({state_dir / STATE_FILE}); run `modelyard down` first")
    started: dict[str, Process] = {}
    try:
        pending = []
        for name, config in configs.items():
            port = free_port()
            log = state_dir / "logs" / f"{name}.log"
            args = ["serve", name, "--config", str(config), "--port", str(port), "--bind", "127.0.0.1"]
            process = _spawn(name, args, python_for(name), log)
            started[name] = Process(name, process.pid, f"127.0.0.1:{port}", str(log))
            pending.append((process, name, log))
        for process, name, log in pending:  # they load in parallel
            _wait(process, started[name].address, name, log, timeout)
        gateway_config = state_dir / "gateway.yaml"
        gateway_config.write_text(
            yaml.safe_dump(
                {
                    "data_root": str(data_root.resolve()),
                    "services": {name: {"addresses": [p.address]} for name, p in started.items()},
                    **(gateway_settings or {}),
                }
            )
        )
        port = gateway_port or free_port()
        log = state_dir / "logs" / "gateway.log"
        gateway_args = ["gateway", "serve", "--config", str(gateway_config), "--port", str(port), "--bind", "127.0.0.1"]
        process = _spawn("gateway", gateway_args, sys.executable, log)
        started["gateway"] = Process("gateway", process.pid, f"127.0.0.1:{port}", str(log))
        _wait(process, started["gateway"].address, "gateway", log, timeout)
    except BaseException:
        _stop(list(started.values()))
        raise
    (state_dir / STATE_FILE).write_text(json.dumps({n: asdict(p) for n, p in started.items()}, indent=2))
    return started


def read_state(state_dir: Path) -> dict[str, Process]:
    path = state_dir / STATE_FILE
    if not path.exists():
        return {}
    return {name: Process(**p) for name, p in json.loads(path.read_text()).items()}


def _stop(processes: list[Process], timeout: float = 30.0) -> None:
    for p in processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in processes:
        while time.monotonic() < deadline and _alive(p.pid):
            time.sleep(0.1)
        if _alive(p.pid):
            os.kill(p.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap our own children
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def down(state_dir: Path) -> list[str]:
    """Stop everything `up` started (gateway first, so no new calls reach the services)."""
    processes = read_state(state_dir)
    ordered = [processes[n] for n in ("gateway",) if n in processes] + [
        p for n, p in processes.items() if n != "gateway"
    ]
    _stop(ordered)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return [p.name for p in ordered]
