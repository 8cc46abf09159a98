"""Run a service as a local process (the embedded default, the demo and the integration tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from modelyard.runtime.client import channel, wait_until_serving


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_started(name: str, address: str, deadline: float, exited: Callable[[], str | None]) -> None:
    """Until the server `name` on `address` reports SERVING, before `deadline` (time.monotonic()).

    `exited` says why the process is gone (a message) or None while it runs: a process that exits while starting
    fails at once with that message instead of at the deadline. The one wait every local launcher uses."""
    with channel(address) as chan:
        while time.monotonic() < deadline:
            gone = exited()
            if gone is not None:
                raise RuntimeError(gone)
            try:
                wait_until_serving(chan, "", timeout=min(1.0, max(0.01, deadline - time.monotonic())))
                return
            except TimeoutError:
                continue
    raise TimeoutError(f"{name} on {address} not SERVING in time")


def log_tail(path: Path | None, lines: int = 5) -> str:
    """The last lines of a log, after a colon and a newline ("" with no log)."""
    if path is None or not path.exists():
        return ""
    return ":\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class LocalService:
    """`modelyard serve <name>` in a child process; `with` starts it and waits for SERVING, exit stops it."""

    def __init__(
        self,
        name: str,
        config: Path,
        port: int | None = None,
        metrics_port: int | None = None,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.name = name
        self.config = config
        self.port = port or free_port()
        self.metrics_port = metrics_port
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.python = python
        self.process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    def command(self) -> list[str]:
        """The command line `start` runs (a tool that wraps a process, e.g. a profiler, prefixes its own)."""
        cmd = [self.python, "-m", "modelyard.runtime.cli", "serve", self.name, "--config", str(self.config),
               "--port", str(self.port), "--bind", "127.0.0.1"]  # fmt: skip
        if self.metrics_port:
            cmd += ["--metrics-port", str(self.metrics_port)]
        return cmd

    def start(self) -> LocalService:
        cmd = self.command()
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            cmd, stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT, env=self.env
        )
        return self

    def wait_until_serving(self, timeout: float = 180.0) -> None:
        process = self.process
        assert process is not None

        def exited() -> str | None:
            if process.poll() is None:
                return None
            return f"{self.name} exited with code {process.returncode} while starting{self._log_tail()}"

        try:
            wait_until_started(self.name, self.address, time.monotonic() + timeout, exited)
        except TimeoutError:
            raise TimeoutError(
                f"{self.name} on {self.address} not SERVING after {timeout:.0f}s{self._log_tail()}"
            ) from None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (drain), then SIGKILL after `timeout`. Returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log:
            self._log.close()
            self._log = None
        return int(self.process.returncode)

    def _log_tail(self, lines: int = 5) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> LocalService:
        self.start()
        try:
            self.wait_until_serving()
        except BaseException:
            self.stop(5)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["LocalService", "free_port", "log_tail", "wait_until_started"]
