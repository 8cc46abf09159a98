"""Gateway commands: `modelyard up | status | down | run | jobs | pipelines | gateway serve | plan | doctor`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc
import yaml

from modelyard.gateway.doctor import add_doctor_command
from modelyard.gateway.planner import add_plan_command

DEFAULT_STATE = ".modelyard"


def _gateway_address(args: argparse.Namespace) -> str:
    if args.gateway:
        return str(args.gateway)
    from modelyard.gateway.local import read_state

    state = read_state(Path(args.state_dir))
    if "gateway" not in state:
        raise SystemExit("no gateway: pass --gateway host:port, or start the local stack with `modelyard up`")
    return state["gateway"].address


def _data_relative(path: str, args: argparse.Namespace) -> str:
    """With the local stack, paths are this machine's (existing or not) and must lie under its data root; with
    --gateway they are sent as given, relative to that gateway's data root."""
    config = Path(args.state_dir) / "gateway.yaml"
    if args.gateway or not config.exists():
        return path
    root = Path(yaml.safe_load(config.read_text())["data_root"]).resolve()
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(root):
        raise SystemExit(f"{path} is outside the stack's data root {root}")
    return str(resolved.relative_to(root))


def _client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from modelyard.gateway.client import GatewayClient

    token = Path(args.token_file).read_text().strip() if args.token_file else os.environ.get("MODELYARD_TOKEN")
    return GatewayClient(_gateway_address(args), token=token)


def _run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    options = dict(kv.split("=", 1) for kv in args.option or [])
    config_text = Path(args.config).read_text() if args.config else ""
    client = _client(args)
    last = None
    try:
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), transient=False,
        ) as progress:  # fmt: skip
            task = progress.add_task(args.pipeline, total=None, status="")
            for event in client.run(
                args.pipeline, _data_relative(args.input, args), _data_relative(args.out, args), options, config_text
            ):
                job = event.job
                last = job
                if job.resumed:
                    progress.console.print(f"resuming job {job.id}: {job.done} of {job.total} already done")
                status = f"{job.failed} failed" if job.failed else ""
                progress.update(task, total=job.total, completed=job.done + job.failed, status=status)
                if event.HasField("item") and event.item.state == "failed":
                    progress.console.print(f"[red]item {event.item.key} failed:[/red] {event.item.error}")
    except grpc.RpcError as exc:
        print(f"modelyard run: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    finally:
        client.close()
    assert last is not None
    print(
        f"job {last.id} {last.state}: {last.done} done, {last.failed} failed, {last.pending} not run; "
        f"output: {last.output}"
    )
    for name, value in sorted(last.summary.items()):
        print(f"  {name}: {value}")
    return 0 if last.state == "done" else 1


def _jobs(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        if args.action == "list":
            for job in client.jobs():
                print(
                    f"{job.id}  {job.pipeline:8} {job.state:9} {job.done}/{job.total} done, "
                    f"{job.failed} failed  {job.output}"
                )
        elif args.action == "show":
            print(client.get(args.id))
        elif args.action == "cancel":
            print(client.cancel(args.id))
    except grpc.RpcError as exc:
        print(f"modelyard jobs: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


def _pipelines(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        for info in client.pipelines():
            print(f"{info.name}: {info.description} (services: {', '.join(info.services)})")
            for option in info.options:
                print(f"  {option.name} = {option.default!r}  {option.help}")
    finally:
        client.close()
    return 0


def _up(args: argparse.Namespace) -> int:
    from modelyard.gateway.local import up

    config_dir = Path(args.config_dir)
    names = args.services.split(",") if args.services else sorted(p.stem for p in config_dir.glob("*.yaml"))
    configs = {name: config_dir / f"{name}.yaml" for name in names if name != "gateway"}
    processes = up(configs, Path(args.data_root), Path(args.state_dir), args.port)
    for p in processes.values():
        print(f"{p.name:10} {p.address:22} pid {p.pid}  log {p.log}")
    return 0


def _status(args: argparse.Namespace) -> int:
    """What the local stack runs: each process's address, health, pid, restarts and last exit."""
    from modelyard.gateway.local import read_state, supervisor_pid
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
    from modelyard.gateway.local import down

    stopped = down(Path(args.state_dir))
    print("stopped: " + (", ".join(stopped) or "nothing was running"))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from modelyard.gateway.server import serve_gateway

    return serve_gateway(args.config, args.port, args.bind, args.metrics_port)


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--gateway", help="host:port of the gateway (default: the local stack's)")
        p.add_argument("--state-dir", default=DEFAULT_STATE, help="the local stack's state folder")
        p.add_argument("--token-file", help="bearer token file (default: $MODELYARD_TOKEN)")

    run = sub.add_parser("run", help="run a pipeline through the gateway, with progress")
    run.add_argument("pipeline", help="medvqa | hand3d (see `modelyard pipelines`)")
    run.add_argument("--input", required=True, help="input table / video / folder (under the data root)")
    run.add_argument("--out", required=True, help="output folder (under the data root)")
    run.add_argument("--config", help="options file: a .conf of KEY=VALUE lines or YAML")
    run.add_argument("--option", action="append", help="KEY=VALUE (repeatable; wins over --config)")
    common(run)
    run.set_defaults(func=_run)

    jobs = sub.add_parser("jobs", help="list, show or cancel jobs")
    jobs.add_argument("action", choices=["list", "show", "cancel"])
    jobs.add_argument("id", nargs="?")
    common(jobs)
    jobs.set_defaults(func=_jobs)

    pipelines = sub.add_parser("pipelines", help="list pipelines with their options and defaults")
    common(pipelines)
    pipelines.set_defaults(func=_pipelines)

    upp = sub.add_parser("up", help="start every service and the gateway as local processes")
    upp.add_argument("--config-dir", required=True, help="folder with <service>.yaml configs")
    upp.add_argument("--services", help="comma-separated subset (default: every config in the folder)")
    upp.add_argument("--data-root", default=".", help="the data root the gateway serves (default: .)")
    upp.add_argument("--state-dir", default=DEFAULT_STATE)
    upp.add_argument("--port", type=int, default=0, help="gateway port (default: a free one)")
    upp.set_defaults(func=_up)

    status = sub.add_parser("status", help="the local stack: health, restarts and last exit of each process")
    status.add_argument("--state-dir", default=DEFAULT_STATE)
    status.set_defaults(func=_status)

    downp = sub.add_parser("down", help="stop what `modelyard up` started")
    downp.add_argument("--state-dir", default=DEFAULT_STATE)
    downp.set_defaults(func=_down)

    gateway = sub.add_parser("gateway", help="the gateway server")
    actions = gateway.add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", help="serve modelyard.v1.Gateway")
    serve.add_argument("--config", required=True, help="gateway YAML (data_root, services, token_file, tls)")
    serve.add_argument("--port", type=int, default=50050)
    serve.add_argument("--bind", default="0.0.0.0")
    serve.add_argument("--metrics-port", type=int, default=None)
    serve.set_defaults(func=_serve)

    add_plan_command(sub)
    add_doctor_command(sub)
