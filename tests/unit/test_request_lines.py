"""Request lines: one JSON line per call, written off the request thread, in the order of the calls."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import time

import pytest

from modelyard.runtime.logs import JsonFormatter, RequestLog


class Writes(io.StringIO):
    """A stream that counts its writes."""

    count = 0

    def write(self, text: str) -> int:
        self.count += 1
        return super().write(text)


def json_logger(name: str, stream: io.StringIO) -> logging.Logger:
    """A logger whose lines go only to `stream` as JSON (what `logs.configure` sets up for collectors)."""
    logger = logging.getLogger(name)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_request_lines_are_written_in_order_with_the_time_of_the_call() -> None:
    logger = logging.getLogger("modelyard.test.requests")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    lines = RequestLog(logger, interval_s=10)  # the writer would wait 10 s: flush writes them now
    for index in range(3):
        lines.write({"request_id": f"r{index}"})
    lines.flush()
    assert [r.fields["request_id"] for r in records] == ["r0", "r1", "r2"]  # type: ignore[attr-defined]
    assert all(r.getMessage() == "request" and r.created > 0 for r in records)


def test_on_a_json_stream_the_lines_are_those_the_formatter_writes_for_each_record() -> None:
    # Written at once where the lines go only to one JSON stream; record by record where a filter could
    # drop some. Both must give the same lines.
    batched, per_record = Writes(), Writes()
    loggers = [json_logger("modelyard.test.batched", batched), json_logger("modelyard.test.per_record", per_record)]
    loggers[1].handlers[0].addFilter(lambda record: True)
    fields = [{"service": "echo", "request_id": f"r{i}", "duration_ms": 0.25 * i, "status": "OK"} for i in range(3)]
    fields[2] |= {"status": "INVALID_ARGUMENT", "error": 'a "quoted" message\non two lines'}
    before = time.time()
    for logger in loggers:
        lines = RequestLog(logger, interval_s=10)
        for entry in fields:
            lines.write(dict(entry))
        lines.flush()
    after = time.time()
    written = [[json.loads(line) for line in out.getvalue().splitlines()] for out in (batched, per_record)]
    for entries in written:
        assert [{k: v for k, v in e.items() if k not in ("ts", "logger")} for e in entries] == [
            {"level": "info", "msg": "request", **entry} for entry in fields
        ]
        for entry in entries:
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"])
            stamp = time.mktime(time.strptime(entry["ts"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
            assert int(before) <= stamp + float(entry["ts"][19:-1]) <= after + 0.001
    assert [e["logger"] for e in written[0]] == ["modelyard.test.batched"] * 3
    assert list(written[0][2]) == list(written[1][2])  # the same keys in the same order
    assert (batched.count, per_record.count) == (1, 3)  # what had queued, in one write


def test_a_json_line_holds_time_level_logger_message_fields_then_the_traceback() -> None:
    record = logging.LogRecord("modelyard.runtime", logging.ERROR, __file__, 1, "failed: %s", ("x",), None)
    record.created, record.msecs = 1_764_763_200.0421, 42.0
    record.fields = {"service": "echo"}
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert list(entry) == ["ts", "level", "logger", "msg", "service", "exc"]
    assert entry["ts"] == "2025-12-03T12:00:00.042Z"
    assert (entry["level"], entry["logger"], entry["msg"]) == ("error", "modelyard.runtime", "failed: x")
    assert entry["exc"].startswith("Traceback") and "ValueError: boom" in entry["exc"]


def test_a_stream_that_fails_is_reported_and_later_lines_are_still_written(capsys: pytest.CaptureFixture[str]) -> None:
    class Flaky(io.StringIO):
        fail = True

        def write(self, text: str) -> int:
            if self.fail:
                self.fail = False
                raise OSError("the disk is full")
            return super().write(text)

    stream = Flaky()
    lines = RequestLog(json_logger("modelyard.test.flaky", stream), interval_s=10)
    lines.write({"request_id": "lost"})
    lines.flush()  # reported on stderr by the logging module, as a failing handler is
    lines.write({"request_id": "kept"})
    lines.flush()
    assert [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()] == ["kept"]
    assert "the disk is full" in capsys.readouterr().err


def test_a_disabled_logger_writes_no_request_lines() -> None:
    stream = Writes()
    logger = json_logger("modelyard.test.disabled", stream)
    logger.disabled = True  # as logging.config does to loggers it was not told about
    lines = RequestLog(logger, interval_s=10)
    lines.write({"request_id": "r0"})
    lines.flush()
    assert stream.getvalue() == ""
