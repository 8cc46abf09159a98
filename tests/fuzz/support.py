"""What every fuzz test asserts about a running server, and the gateway as a child process.

A clean answer is OK or an error status a caller can act on (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED,
FAILED_PRECONDITION, OUT_OF_RANGE) with a message saying what happened. INTERNAL and UNKNOWN are bugs; so are
UNAVAILABLE (the server was up and should have stayed so), DEADLINE_EXCEEDED (a hang) and a dead process.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, settings
from hypothesis.errors import InvalidArgument

from modelyard.runtime.client import channel, wait_until_serving
from modelyard.runtime.launch import free_port

CLEAN_ERRORS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
# Per-call deadline: every request here is small, so running into it means the server hangs.
CALL_TIMEOUT_S = 30.0
# Derandomised by default (the same examples on every run, no example database in the checkout);
# MODELYARD_FUZZ_SEARCH=1 draws new examples each run, MODELYARD_FUZZ_SCALE multiplies their number.
RANDOM = bool(os.environ.get("MODELYARD_FUZZ_SEARCH"))
SCALE = float(os.environ.get("MODELYARD_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> settings:
    """Hypothesis settings for one RPC: `examples` requests, no per-example deadline (the servers share 2 cores)."""
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
        print_blob=RANDOM,
    )


def note(outcome: str) -> None:
    """Record what an example reached, for `pytest --hypothesis-show-statistics` (a no-op outside a fuzz test)."""
    with contextlib.suppress(InvalidArgument):
        event(outcome)


def _gist(message: str | None) -> str:
    """A message without its numbers and quoted values, so that statistics group alike errors."""
    words = re.sub(r"'[^']*'|\"[^\"]*\"|[-+]?\d[\w.+-]*", "_", message or "").split()
    return " ".join(words[:8])


class Target:
    """A server under fuzz. Every call must end in a clean status, and the server must still be up and SERVING."""

    def __init__(self, name: str, address: str, process: subprocess.Popen[bytes] | None, log: Path | None) -> None:
        self.name, self.address, self.process, self.log = name, address, process, log
        self.channel = channel(address)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def call(self, method: Callable[..., Any], request: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        """The response, or the RpcError of a clean error status."""
        try:
            response = method(request, timeout=timeout)
            note("OK")
            return response
        except grpc.RpcError as err:
            return self._clean(err)
        finally:
            self.assert_serving()

    def stream(self, method: Callable[..., Iterator[Any]], request: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        """Every message of a server stream (a list), or the RpcError of a clean error status that ended it."""
        try:
            messages = list(method(request, timeout=timeout))
            note("OK")
            return messages
        except grpc.RpcError as err:
            return self._clean(err)
        finally:
            self.assert_serving()

    def _clean(self, err: grpc.RpcError) -> grpc.RpcError:
        code, details = err.code(), err.details()
        note(f"{code.name}: {_gist(details)}")  # pytest --hypothesis-show-statistics lists what was reached
        assert code in CLEAN_ERRORS, f"{self.name} answered {code.name}: {details}{self._log_tail()}"
        assert details and details.strip(), f"{self.name} answered {code.name} without a message"
        return err

    def assert_serving(self) -> None:
        if self.process is not None:
            assert self.process.poll() is None, f"{self.name} died (exit {self.process.returncode}){self._log_tail()}"
        status = self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING, f"{self.name} is no longer SERVING"

    def _log_tail(self, lines: int = 3) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n" + "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        self.channel.close()


class GatewayProcess:
    """`modelyard gateway serve` as a child process on a loopback port."""

    def __init__(self, config: Path, log: Path) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.config, self.log = config, log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> GatewayProcess:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "modelyard.runtime.cli", "gateway", "serve", "--config", str(self.config),
                 "--port", self.address.rsplit(":", 1)[1], "--bind", "127.0.0.1"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        with channel(self.address) as chan:
            wait_until_serving(chan, "", timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
