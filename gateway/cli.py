"""Gateway commands: `modelyard run | jobs | pipelines | gateway serve`."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from modelyard.gateway.config import load_gateway_config
from modelyard.runtime.cli import INTERRUPTED, USAGE_ERROR, UsageError
from modelyard.runtime.client import LOCAL_STATE_DIR
from modelyard.runtime.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from modelyard.gateway.client import GatewayClient
    from modelyard.v1 import gateway_pb2

# A refused request is the user's to fix (exit 2); anything else failed the work (exit 1).
USER_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAVAILABLE,
}


def _gateway_address(args: argparse.Namespace) -> str:
    if args.gateway:
        return str(args.gateway)
    from modelyard.ops.local import read_state

    state = read_state(Path(args.state_dir))
    if "gateway" not in state:
        raise UsageError("no gateway: pass --gateway host:port, or start the local stack with `modelyard up`")
    return state["gateway"].address


def _data_relative(path: str, args: argparse.Namespace) -> str:
    """A path as the gateway takes it: relative to its data root.

    With --gateway it is sent as given. With the local stack a relative path is read from the working directory
    when that lands under the data root (what the shell completed), else from the data root itself (as with
    --gateway); an absolute one must lie under the data root."""
    config = Path(args.state_dir) / "gateway.yaml"
    if args.gateway or not config.exists():
        return path
    try:
        root = load_gateway_config(config).data_root.resolve()
    except ConfigError as exc:
        raise UsageError(exc.message) from None
    here = Path(path).resolve()
    resolved = here if here.is_relative_to(root) or Path(path).is_absolute() else (root / path).resolve()
    if not resolved.is_relative_to(root):
        raise UsageError(f"{path} is outside the stack's data root {root}")
    return str(resolved.relative_to(root))


def _client(args: argparse.Namespace) -> GatewayClient:
    from modelyard.gateway.client import GatewayClient

    token = Path(args.token_file).read_text().strip() if args.token_file else os.environ.get("MODELYARD_TOKEN")
    return GatewayClient(_gateway_address(args), token=token)


def _failed_call(args: argparse.Namespace, exc: grpc.RpcError) -> int:
    code, details = exc.code(), exc.details()  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE:
        where = args.gateway or "the local stack's gateway"
        details = f"no gateway answers at {where} ({details}); start it (`modelyard up`) or pass --gateway host:port"
    print(f"modelyard {args.command}: {code.name}: {details}", file=sys.stderr)
    return USAGE_ERROR if code in USER_CODES else 1


def _option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE (e.g. TOPK=16; `modelyard pipelines` lists keys)")
    return key.strip(), value


def _interrupted(job: gateway_pb2.Job | None) -> int:
    if job is None:
        print(
            "\ninterrupted before the gateway answered: the job may have started there; `modelyard jobs list` shows it",
            file=sys.stderr,
        )
    else:
        print(
            f"\ninterrupted: job {job.id} continues on the gateway ({job.done + job.failed}/{job.total} items so far). "
            f"Follow it: `modelyard jobs watch {job.id}` (or `jobs show {job.id}`, or run the same command again); "
            f"stop it: `modelyard jobs cancel {job.id}`",
            file=sys.stderr,
        )
    return INTERRUPTED


@contextlib.contextmanager
def _ctrl_c_ends_the_stream(client: GatewayClient) -> Iterator[threading.Event]:
    """While following a job, Ctrl-C closes the client (from a thread of its own), so the stream ends at once and
    the caller reports the interruption; a KeyboardInterrupt raised wherever the main thread happens to be (inside
    gRPC's or rich's locks) could leave the CLI hanging instead of exiting."""
    pressed = threading.Event()

    def on_ctrl_c(signum: int, frame: object) -> None:
        if not pressed.is_set():
            pressed.set()
            threading.Thread(target=client.close, name="ctrl-c", daemon=True).start()

    try:
        previous = signal.signal(signal.SIGINT, on_ctrl_c)
    except ValueError:  # not the main thread (the CLI called from a program's thread): Ctrl-C stays as it was
        yield pressed
        return
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def _run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    options = dict(args.option or [])
    if args.config and not Path(args.config).is_file():
        raise UsageError(f"--config {args.config}: no such file")
    config_text = Path(args.config).read_text() if args.config else ""
    input_rel, output_rel = _data_relative(args.input, args), _data_relative(args.out, args)
    client = _client(args)
    last = None
    try:
        with _ctrl_c_ends_the_stream(client) as pressed, Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), transient=False,
        ) as progress:  # fmt: skip
            task = progress.add_task(args.pipeline, total=None, status="")
            for event in client.run(args.pipeline, input_rel, output_rel, options, config_text):
                job = event.job
                last = job
                if job.resumed:
                    progress.console.print(f"resuming job {job.id}: {job.done} of {job.total} already done")
                status = f"{job.failed} failed" if job.failed else ""
                progress.update(task, total=job.total, completed=job.done + job.failed, status=status)
                if event.HasField("item") and event.item.state == "failed":
                    progress.console.print(f"[red]item {event.item.key} failed:[/red] {event.item.error}")
    except grpc.RpcError as exc:
        if pressed.is_set():  # the stream ended because Ctrl-C closed the client
            return _interrupted(last)
        return _failed_call(args, exc)
    except KeyboardInterrupt:  # before the handler was in place
        return _interrupted(last)
    finally:
        client.close()
    if pressed.is_set() and (last is None or last.state not in ("done", "failed", "cancelled")):
        return _interrupted(last)  # Ctrl-C ended the stream before the job did
    assert last is not None
    print(
        f"job {last.id} {last.state}: {last.done} done, {last.failed} failed, {last.pending} not run; "
        f"output: {last.output}"
    )
    for name, value in sorted(last.summary.items()):
        print(f"  {name}: {value}")
    return 0 if last.state == "done" else 1


def _when(seconds: float) -> str:
    if not seconds:
        return ""
    return dt.datetime.fromtimestamp(seconds).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _console() -> Console:
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)  # piped: no column cut to 80


def _show_job(job: gateway_pb2.Job) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("job", job.id),
        ("pipeline", job.pipeline),
        ("state", job.state + (" (resumed)" if job.resumed else "")),
        ("items", f"{job.total}: {job.done} done, {job.failed} failed, {job.running} running, {job.pending} pending"),
        ("output", job.output),
        ("created", _when(job.created)),
        ("updated", _when(job.updated)),
        *((("error", job.error),) if job.error else ()),
        *sorted(job.summary.items()),
    ]
    for name, value in rows:
        table.add_row(name, value)
    _console().print(table)


def _jobs(args: argparse.Namespace) -> int:
    from rich.table import Table

    if args.action != "list" and not args.id:
        raise UsageError(f"`jobs {args.action}` needs a job id (`modelyard jobs list` shows them)")
    client = _client(args)
    try:
        if args.action == "list":
            table = Table("job", "pipeline", "state", "done", "failed", "output", "updated", box=None)
            for job in client.jobs(args.limit):
                table.add_row(job.id, job.pipeline, job.state, f"{job.done}/{job.total} done", str(job.failed),
                              job.output, _when(job.updated))  # fmt: skip
            _console().print(table)
        elif args.action == "show":
            _show_job(client.get(args.id))
        elif args.action == "watch":
            last = None
            try:
                with _ctrl_c_ends_the_stream(client) as pressed:
                    for event in client.watch(args.id):
                        last = event.job
                        if event.HasField("item") and event.item.state in ("done", "failed"):
                            print(f"{event.item.state:6} {event.item.key} {event.item.error}".rstrip(), flush=True)
            except grpc.RpcError:
                if pressed.is_set():
                    return _interrupted(last)
                raise
            except KeyboardInterrupt:
                return _interrupted(last)
            if last is not None:
                _show_job(last)
            return 0 if last is None or last.state == "done" else 1
        elif args.action == "cancel":
            _show_job(client.cancel(args.id))
    except grpc.RpcError as exc:
        return _failed_call(args, exc)
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
    except grpc.RpcError as exc:
        return _failed_call(args, exc)
    finally:
        client.close()
    return 0


def _serve(args: argparse.Namespace) -> int:
    from modelyard.gateway.server import serve_gateway

    return serve_gateway(args.config, args.port, args.bind, args.metrics_port)


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--gateway", help="host:port of the gateway (default: the local stack's)")
        p.add_argument("--state-dir", default=str(LOCAL_STATE_DIR), help="the local stack's state folder")
        p.add_argument("--token-file", help="bearer token file (default: $MODELYARD_TOKEN)")

    run = sub.add_parser("run", help="run a pipeline through the gateway, with progress")
    run.add_argument("pipeline", help="medvqa | hand3d (see `modelyard pipelines`)")
    run.add_argument("--input", required=True, help="input table / video / folder (under the data root)")
    run.add_argument("--out", required=True, help="output folder (under the data root)")
    run.add_argument("--config", help="options file: a .conf of KEY=VALUE lines or YAML")
    run.add_argument("--option", action="append", type=_option, help="KEY=VALUE (repeatable; wins over --config)")
    common(run)
    run.set_defaults(func=_run)

    jobs = sub.add_parser("jobs", help="list, show, watch or cancel jobs")
    jobs.add_argument(
        "action",
        choices=["list", "show", "watch", "cancel"],
        help="list: newest jobs; show ID: one job; watch ID: follow it until it ends; cancel ID: stop scheduling it",
    )
    jobs.add_argument("id", nargs="?", help="a job id (from `jobs list` or `run`)")
    jobs.add_argument("--limit", type=int, default=50, help="jobs listed (default 50)")
    common(jobs)
    jobs.set_defaults(func=_jobs)

    pipelines = sub.add_parser("pipelines", help="list pipelines with their options and defaults")
    common(pipelines)
    pipelines.set_defaults(func=_pipelines)

    gateway = sub.add_parser("gateway", help="the gateway server")
    actions = gateway.add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", help="serve modelyard.v1.Gateway")
    serve.add_argument("--config", required=True, help="gateway YAML (data_root, services, token_file, tls)")
    serve.add_argument("--port", type=int, default=50050)
    serve.add_argument("--bind", default="0.0.0.0")
    serve.add_argument("--metrics-port", type=int, default=None)
    serve.set_defaults(func=_serve)
