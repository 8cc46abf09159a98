"""Operations commands: the local stack (`modelyard up | status | down`), the GPU planner (`modelyard plan`) and
`modelyard doctor`."""

from __future__ import annotations

import argparse
from pathlib import Path

from modelyard.ops.doctor import add_doctor_command
from modelyard.ops.planner import add_plan_command
from modelyard.runtime.cli import UsageError
from modelyard.runtime.client import LOCAL_STATE_DIR


def _up(args: argparse.Namespace) -> int:
    from modelyard.ops.local import up

    config_dir = Path(args.config_dir)
    if not config_dir.is_dir():
        raise UsageError(f"--config-dir {config_dir}: no such folder (it holds <service>.yaml configs)")
    names = args.services.split(",") if args.services else sorted(p.stem for p in config_dir.glob("*.yaml"))
    configs = {name: config_dir / f"{name}.yaml" for name in names if name != "gateway"}
    if not configs:
        raise UsageError(f"--config-dir {config_dir} holds no <service>.yaml (medsam.yaml, biomedclip.yaml, ...)")
    missing = [str(path) for path in configs.values() if not path.is_file()]
    if missing:
        raise UsageError(f"no config {', '.join(missing)} (--services names <service>.yaml files of --config-dir)")
    try:
        processes = up(configs, Path(args.data_root), Path(args.state_dir), args.port)
    except (RuntimeError, TimeoutError) as exc:  # already up, or a service that failed to start (its log named)
        raise UsageError(str(exc)) from None
    for p in processes.values():
        print(f"{p.name:10} {p.address:22} pid {p.pid}  log {p.log}")
    return 0


def _status(args: argparse.Namespace) -> int:
    """What the local stack runs: each process's address, health, pid, restarts and last exit."""
    from modelyard.ops.local import read_state, supervisor_pid
    from modelyard.runtime.client import channel, wait_until_serving

    state_dir = Path(args.state_dir)
    processes = read_state(state_dir)
    if not processes:
        print(f"no local stack in {state_dir} (start one with `modelyard up`)")
        return 1
    print(f"supervisor pid {supervisor_pid(state_dir)}  log {state_dir / 'logs' / 'supervisor.log'}")
    healthy = True
    for p in processes.values():
        with channel(p.address) as chan:
            try:
                wait_until_serving(chan, "", timeout=1.0)
                health = "SERVING"
            except TimeoutError:
                health, healthy = "not serving", False
        exited = f", last exit {p.last_exit} at {p.last_exit_at}" if p.last_exit is not None else ""
        print(f"{p.name:10} {p.address:22} {health:11} {p.state:8} pid {p.pid}  restarts {p.restarts}{exited}")
    return 0 if healthy else 1


def _down(args: argparse.Namespace) -> int:
    from modelyard.ops.local import down

    stopped = down(Path(args.state_dir))
    print("stopped: " + (", ".join(stopped) or "nothing was running"))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    upp = sub.add_parser("up", help="start every service and the gateway as local processes")
    upp.add_argument("--config-dir", required=True, help="folder with <service>.yaml configs")
    upp.add_argument("--services", help="comma-separated subset (default: every config in the folder)")
    upp.add_argument("--data-root", default=".", help="the data root the gateway serves (default: .)")
    upp.add_argument("--state-dir", default=str(LOCAL_STATE_DIR))
    upp.add_argument("--port", type=int, default=0, help="gateway port (default: a free one)")
    upp.set_defaults(func=_up)

    status = sub.add_parser("status", help="the local stack: health, restarts and last exit of each process")
    status.add_argument("--state-dir", default=str(LOCAL_STATE_DIR))
    status.set_defaults(func=_status)

    downp = sub.add_parser("down", help="stop what `modelyard up` started")
    downp.add_argument("--state-dir", default=str(LOCAL_STATE_DIR))
    downp.set_defaults(func=_down)

    add_plan_command(sub)
    add_doctor_command(sub)
