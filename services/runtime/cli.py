"""The `modelyard` command. `serve` belongs to the runtime; other packages add their commands through the
entry-point group `modelyard.commands` (a function that adds a subparser).

No command shows a traceback for a user error: it prints one line saying what to fix and exits 2 (1 when the
work itself failed, 130 when interrupted)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

from modelyard.runtime import __version__

COMMANDS_GROUP = "modelyard.commands"
USAGE_ERROR = 2
INTERRUPTED = 130
FALLBACK_ADDRESS = "127.0.0.1:50051"
log = logging.getLogger("modelyard")


class UsageError(Exception):
    """A user error a command detected: `main` prints the message as one line and exits 2."""


def service_address(service: str, stack_file: Path | None = None) -> str:
    """The address of `service` in the local stack of `modelyard up` (in this folder), else 127.0.0.1:50051."""
    from modelyard.runtime.client import LOCAL_STACK, local_stack_addresses

    return local_stack_addresses(stack_file or LOCAL_STACK).get(service, FALLBACK_ADDRESS)


def _serve(args: argparse.Namespace) -> int:
    from modelyard.runtime.errors import ConfigError
    from modelyard.runtime.registry import load_service
    from modelyard.runtime.server import serve

    try:
        spec = load_service(args.service)
    except ConfigError as exc:
        print(f"modelyard serve: {exc.message}", file=sys.stderr)
        return 2
    return serve(spec, args.config, args.port, args.metrics_port, args.bind)


def _services(args: argparse.Namespace) -> int:
    from modelyard.runtime.errors import ConfigError
    from modelyard.runtime.registry import load_service, service_names

    for name in service_names():
        try:
            spec = load_service(name)
        except ConfigError as exc:  # registered, but its extra is not installed here
            print(f"{name:<11} (not installed here: {exc.message})")
            continue
        print(f"{name:<11} {spec.proto_service:<24} {spec.summary}")
    return 0


def _gpus(args: argparse.Namespace) -> int:
    from modelyard.runtime.devices import read_gpus

    snapshot = read_gpus()
    print(snapshot.reason)
    for g in snapshot.gpus:
        print(
            f"GPU {g.index} {g.name}: {g.used_mb}/{g.total_mb} MiB used, {g.free_mb} MiB free, "
            f"{g.utilization_pct}% busy"
        )
    return 0


def _health(args: argparse.Namespace) -> int:
    """grpc.health.v1 Check, for container healthchecks: exit 0 only when SERVING. Imports grpc only, so it is
    quick and works in every service's environment (wilor's protobuf 4 included)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(args.address) as chan:
        try:
            request = health_pb2.HealthCheckRequest(service=args.service)
            status = health_pb2_grpc.HealthStub(chan).Check(request, timeout=args.timeout).status
        except grpc.RpcError as exc:
            print(f"{args.address}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print(f"{args.address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelyard", description="Serve and orchestrate vision models.")
    parser.add_argument("--version", action="version", version=f"modelyard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one model service (gRPC)")
    serve.add_argument("service", help="service name, e.g. medsam (see `modelyard services`)")
    serve.add_argument("--config", help="YAML config (default: $MODELYARD_CONFIG)")
    serve.add_argument("--port", type=int, default=50051, help="gRPC port (default 50051)")
    serve.add_argument("--metrics-port", type=int, default=None, help="Prometheus metrics port (default: off)")
    serve.add_argument("--bind", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    serve.set_defaults(func=_serve)

    services = sub.add_parser("services", help="list the registered model services")
    services.set_defaults(func=_services)

    gpus = sub.add_parser("gpus", help="show what NVML sees: GPUs, memory, utilisation")
    gpus.set_defaults(func=_gpus)

    health = sub.add_parser("health", help="ask a server's grpc.health.v1: exit 0 when SERVING (healthchecks)")
    health.add_argument("--address", default="127.0.0.1:50051", help="host:port (default 127.0.0.1:50051)")
    health.add_argument("--service", default="", help="a service name; default: the whole server")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    health.set_defaults(func=_health)

    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            add_commands = ep.load()
        except ImportError as exc:
            from modelyard.runtime.registry import missing_dependency

            if missing_dependency(exc) is not None:  # a service whose packages live in another environment
                log.debug("commands of %s unavailable here: %s", ep.name, exc)
            else:  # an error in our own module: the other commands still work, and this says why these are gone
                print(f"modelyard: the {ep.name} commands failed to load: {exc!r}", file=sys.stderr)
            continue
        add_commands(sub)
    return parser


def add_address_argument(parser: argparse.ArgumentParser, service: str, title: str) -> None:
    """--address of a service CLI; without it, the local stack's address of `service` (see service_address)."""
    parser.add_argument(
        "--address",
        default=None,
        help=f"host:port of the {title} service (default: the local stack of `modelyard up`, else {FALLBACK_ADDRESS})",
    )
    parser.set_defaults(address_of=service)


def _say(args: argparse.Namespace, message: str) -> None:
    name = " ".join(str(v) for v in (args.command, getattr(args, "action", None)) if v)
    print(f"modelyard {name}: {message}", file=sys.stderr)


def name_a_nameless_user() -> None:
    """Give the process a user name when its uid has none. Containers run as uids without a passwd entry
    (compose's MODELYARD_UID, OpenShift's arbitrary uids), and getpass.getuser(), which torch calls while it is
    imported (its compile cache folder), raises KeyError for them; it reads USER first."""
    if any(os.environ.get(name) for name in ("LOGNAME", "USER", "LNAME", "USERNAME")):
        return
    try:
        import pwd
    except ImportError:  # no passwd database on this platform: getuser() reads the variables only
        return
    try:
        pwd.getpwuid(os.getuid())
    except KeyError:
        os.environ["USER"] = f"uid{os.getuid()}"


def main(argv: Sequence[str] | None = None) -> int:
    name_a_nameless_user()
    args = build_parser().parse_args(argv)
    if getattr(args, "address_of", None) and args.address is None:
        args.address = service_address(args.address_of)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit: a reader that left (`| head`) is handled below
        return code
    except UsageError as exc:
        _say(args, str(exc))
        return USAGE_ERROR
    except KeyboardInterrupt:
        _say(args, "interrupted")
        return INTERRUPTED
    except BrokenPipeError:  # `modelyard pipelines | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        if exc.filename is None:
            raise
        # A file named on the command line that cannot be read or written (missing, a folder, no permission).
        _say(args, f"{exc.filename}: {exc.strerror or exc}")
        return USAGE_ERROR


if __name__ == "__main__":
    # `python -m` runs this file as __main__: take main from the module other packages import, so the
    # UsageError they raise is the one caught.
    from modelyard.runtime.cli import main as package_main

    sys.exit(package_main())
