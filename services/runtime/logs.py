"""Structured logs: one JSON object per line, one line per request; plain text when a person reads a terminal.

Request lines are written by a thread of their own (`RequestLog`): formatting a JSON line and writing it costs
tens of microseconds, a noticeable share of a small call, and a blocking write when the reader of stderr is slow.
"""

from __future__ import annotations

import atexit
import collections
import functools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        exc = self.formatException(record.exc_info) if record.exc_info else None
        fields = getattr(record, "fields", {})
        return json_line(record.created, record.levelname, record.name, record.getMessage(), fields, exc)


def json_line(
    created: float, level: str, logger: str, message: str, fields: Mapping[str, Any], exc: str | None = None
) -> str:
    """One log line as JSON: time, level, logger and message, then `fields` (what a log call passes as
    extra={"fields": ...}), then the exception's traceback if any."""
    entry: dict[str, Any] = {"ts": _timestamp(created), "level": level.lower(), "logger": logger, "msg": message}
    entry.update(fields)
    if exc:
        entry["exc"] = exc
    return _encode(entry)


# One encoder for every line: json.dumps with an option set builds a new one per call (a third of a line's cost).
_encode = json.JSONEncoder(default=str).encode


def _timestamp(created: float) -> str:
    """UTC, to the millisecond: 2026-12-03T12:00:00.123Z (the milliseconds truncated, as LogRecord.msecs)."""
    whole = int(created)
    return f"{_utc_second(whole)}.{int((created - whole) * 1000):03d}Z"


@functools.lru_cache(maxsize=4)  # lines come in order: one strftime per second, not per line
def _utc_second(whole: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


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
    calls. `flush` writes everything queued so far (at shutdown; also run at interpreter exit).

    Where the lines go only to one JSON stream (what `configure` sets up for collectors), the writer formats
    them itself and writes what has queued at once: a LogRecord and a write per line cost a small call as
    many instructions as a sixth of the call itself. The lines are the ones JsonFormatter writes."""

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
            stream = self._json_stream()
            if stream is not None:
                self._write_json(stream)
            while self._pending:
                self._emit(*self._pending.popleft())

    def _json_stream(self) -> logging.StreamHandler[Any] | None:
        """The handler when INFO lines from the logger reach exactly one handler, a plain stream handler with a
        JsonFormatter and no filters (nor filters on the logger); None otherwise."""
        logger: logging.Logger | None = self._logger
        if self._logger.filters:
            return None
        handlers: list[logging.Handler] = []
        while logger is not None:
            handlers += logger.handlers
            logger = logger.parent if logger.propagate else None
        if len(handlers) != 1:
            return None
        (handler,) = handlers
        if type(handler) is not logging.StreamHandler or handler.filters or handler.level > logging.INFO:
            return None
        return handler if isinstance(handler.formatter, JsonFormatter) else None

    def _write_json(self, handler: logging.StreamHandler[Any]) -> None:
        pending, name, lines = self._pending, self._logger.name, []
        while pending:
            created, fields = pending.popleft()
            lines.append(json_line(created, "info", name, "request", fields))
        if not lines:
            return
        terminator = handler.terminator
        text = terminator.join(lines) + terminator
        handler.acquire()
        try:
            handler.stream.write(text)
            handler.flush()
        except Exception:  # as StreamHandler.emit does: the logging module reports it, the writer goes on
            handler.handleError(logging.makeLogRecord({"name": name, "msg": "request", "levelno": logging.INFO}))
        finally:
            handler.release()

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
