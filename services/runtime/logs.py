"""Structured logs: one JSON object per line, one line per request; plain text when a person reads a terminal.

Request lines are written by a thread of their own (`RequestLog`): formatting a JSON line and writing it costs
tens of microseconds, a noticeable share of a small call, and a blocking write when the reader of stderr is slow.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import sys
import threading
import time
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """For a terminal: `level logger: message (key=value ...)`, the message as written (no JSON escapes)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        extra = " (" + ", ".join(f"{k}={v}" for k, v in fields.items()) + ")" if fields else ""
        text = f"{record.levelname.lower()} {record.name}: {record.getMessage()}{extra}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure(level: str = "INFO") -> None:
    """JSON lines for collectors; readable text when stderr is a terminal (MODELYARD_LOG_FORMAT=json|text wins)."""
    handler = logging.StreamHandler(sys.stderr)
    chosen = os.environ.get("MODELYARD_LOG_FORMAT") or ("text" if sys.stderr.isatty() else "json")
    handler.setFormatter(TextFormatter() if chosen == "text" else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class RequestLog:
    """One `request` line per call at INFO on `logger`, written off the calling thread.

    The caller only appends the fields to a queue (well under a microsecond, and no thread is woken: waking a
    writer per line costs the caller a GIL hand-off); a writer thread takes what has queued every `interval_s`,
    makes each record with the time of its call and hands it to the logger's handlers, in the order of the
    calls. `flush` writes everything queued so far (at shutdown; also run at interpreter exit)."""

    def __init__(self, logger: logging.Logger, interval_s: float = 0.05) -> None:
        self._logger = logger
        self._interval = interval_s
        self._pending: collections.deque[tuple[float, dict[str, Any]]] = collections.deque()
        self._lock = threading.Lock()  # one writer at a time: the thread, or a flush
        self._writer: threading.Thread | None = None
        atexit.register(self.flush)

    def write(self, fields: dict[str, Any]) -> None:
        if not self._logger.isEnabledFor(logging.INFO):
            return
        self._pending.append((time.time(), fields))
        if self._writer is None:
            self._start()

    def flush(self) -> None:
        with self._lock:
            while self._pending:
                self._emit(*self._pending.popleft())

    def _start(self) -> None:
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_lines, name="request-log", daemon=True)
                self._writer.start()

    def _write_lines(self) -> None:
        while True:
            time.sleep(self._interval)
            self.flush()

    def _emit(self, created: float, fields: dict[str, Any]) -> None:
        try:
            record = self._logger.makeRecord(
                self._logger.name, logging.INFO, __file__, 0, "request", (), None, extra={"fields": fields}
            )
            record.created, record.msecs = created, int((created - int(created)) * 1000)
            self._logger.handle(record)
        except Exception:  # a broken handler must not end the writer; the logging module reports it
            logging.getLogger(__name__).exception("writing a request line failed")
