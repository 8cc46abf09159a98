"""The embedded default: every service as its own local process, in the environment it needs, plus the gateway.

`modelyard up` writes the plan and starts the supervisor (modelyard.ops.supervisor), detached: it runs each
process and restarts one that exits, with backoff. `up` waits for health; `modelyard status` shows what runs and
its restarts; `modelyard down` stops the supervisor, which stops the rest. The services require a token only the
gateway is given (a random one per stack, in the state folder, readable by this user only), so other users of a
shared machine cannot call them past the gateway.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from modelyard.ops.supervisor import PLAN_FILE, STATE_FILE, Program, write_plan
from modelyard.runtime.launch import free_port, log_tail, wait_until_started

REPO_ROOT = Path(__file__).resolve().parent.parent
TOKEN_FILE = "service.token"
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
    state: str = "running"  # running | backoff (restarting) | failed (configuration problem) | stopped
    restarts: int = 0
    last_exit: int | None = None
    last_exit_at: str = ""


def _cli(python: str, *args: str) -> list[str]:
    return [python, "-m", "modelyard.runtime.cli", *args]


def _write_token(state_dir: Path) -> Path:
    path = state_dir / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(32) + "\n")
    return path


def _wait(name: str, state_dir: Path, deadline: float) -> None:
    """Until `name` is SERVING; fails when it exits while starting (the supervisor would restart it)."""

    def exited() -> str | None:
        p = read_state(state_dir).get(name)
        if p is None or not (p.restarts or p.state in ("backoff", "failed")):
            return None
        return f"{name} exited with code {p.last_exit} while starting{log_tail(Path(p.log))}"

    try:
        wait_until_started(name, read_state(state_dir)[name].address, deadline, exited)
    except TimeoutError:
        raise TimeoutError(f"{name} not SERVING in time (log: {read_state(state_dir)[name].log})") from None


def up(
    configs: dict[str, Path],
    data_root: Path,
    state_dir: Path,
    gateway_port: int = 0,
    timeout: float = 300.0,
    gateway_settings: dict[str, object] | None = None,
) -> dict[str, Process]:
    """Start each service from its config, then the gateway wired to them (plus `gateway_settings`, keys of
    gateway.yaml), under the supervisor. Returns what runs where."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if (state_dir / STATE_FILE).exists():
        raise RuntimeError(f"a stack is already up ({state_dir / STATE_FILE}); run `modelyard down` first")
    token = _write_token(state_dir)
    logs_dir = state_dir / "logs"
    programs = []
    for name, config in configs.items():
        address = f"127.0.0.1:{free_port()}"
        args = ["serve", name, "--config", str(config), "--port", address.rsplit(":", 1)[1], "--bind", "127.0.0.1"]
        env = {"MODELYARD_TOKEN_FILE": str(token.resolve())}
        programs.append(Program(name, _cli(python_for(name), *args), address, str(logs_dir / f"{name}.log"), env))
    settings = dict(gateway_settings or {})
    services = {p.name: {"addresses": [p.address], "token_file": str(token.resolve())} for p in programs}
    for name, extra in dict(settings.pop("services", None) or {}).items():  # type: ignore[call-overload]
        services[name] = {**services.get(name, {}), **extra}
    gateway_config = state_dir / "gateway.yaml"
    gateway_config.write_text(yaml.safe_dump({"data_root": str(data_root.resolve()), "services": services, **settings}))
    port = gateway_port or free_port()
    gateway_args = ["gateway", "serve", "--config", str(gateway_config), "--port", str(port), "--bind", "127.0.0.1"]
    programs.append(Program("gateway", _cli(sys.executable, *gateway_args), f"127.0.0.1:{port}",
                            str(logs_dir / "gateway.log")))  # fmt: skip
    write_plan(state_dir, programs)
    logs_dir.mkdir(parents=True, exist_ok=True)
    with (logs_dir / "supervisor.log").open("ab") as out:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "modelyard.ops.supervisor", str(state_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the `up` command; stopped by `down`
        )
    try:
        deadline = time.monotonic() + timeout
        while not (state_dir / STATE_FILE).exists():
            if supervisor.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the supervisor did not start (log: {logs_dir / 'supervisor.log'})")
            time.sleep(0.05)
        for program in programs:  # they load in parallel
            _wait(program.name, state_dir, deadline)
    except BaseException:
        down(state_dir)
        if supervisor.poll() is None:  # it never wrote its state: stop it here
            supervisor.terminate()
            supervisor.wait(60)
        raise
    return read_state(state_dir)


def read_state(state_dir: Path) -> dict[str, Process]:
    """What the supervisor runs (empty when no stack is up)."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return {}
    return {name: Process(**p) for name, p in json.loads(path.read_text())["processes"].items()}


def supervisor_pid(state_dir: Path) -> int | None:
    path = state_dir / STATE_FILE
    return int(json.loads(path.read_text())["supervisor"]["pid"]) if path.exists() else None


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


def down(state_dir: Path, timeout: float = 60.0) -> list[str]:
    """Stop everything `up` started: the supervisor stops the gateway first, then the services. Processes left
    behind by a supervisor that died are stopped here."""
    processes = read_state(state_dir)
    pid = supervisor_pid(state_dir)
    if pid is not None and _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    for p in processes.values():  # only when the supervisor could not stop them
        if p.pid and p.state != "stopped" and _alive(p.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
    for name in (STATE_FILE, PLAN_FILE, TOKEN_FILE):
        (state_dir / name).unlink(missing_ok=True)
    ordered = [n for n in ("gateway",) if n in processes] + [n for n in processes if n != "gateway"]
    return ordered
