"""Structured logs: one JSON object per line, one line per request; plain text when a person reads a terminal."""

from __future__ import annotations

import json
import logging
import os
import sys
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


def request_line(logger: logging.Logger, **fields: Any) -> None:
    logger.info("request", extra={"fields": fields})
