"""Input tables of the medvqa pipeline: CSV, JSONL or Parquet, one row per (image, question)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from modelyard.gateway.inputs import read_regular
from modelyard.runtime.errors import InvalidInput


def read_table(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson", ".json", ".parquet"):
        raise InvalidInput(f"{path.name}: unsupported table format '{suffix}'; use .csv, .jsonl or .parquet")
    data = read_regular(path, path.name)  # a folder, or a FIFO whose reading would never end, is refused
    try:
        if suffix == ".csv":
            return _read_csv(data.decode("utf-8-sig"), path.name)
        if suffix in (".jsonl", ".ndjson"):
            rows = []
            for number, line in enumerate(data.decode().splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(_record(json.loads(line), f"{path.name} line {number}"))
                    except json.JSONDecodeError as exc:
                        raise InvalidInput(f"{path.name} line {number} is not JSON: {exc}") from None
            return rows
        if suffix == ".json":
            records = json.loads(data.decode())
            if isinstance(records, list):
                return [_record(row, f"{path.name} record {n}") for n, row in enumerate(records)]
            raise InvalidInput(f"{path.name}: a .json input must be a list of records")
        import pyarrow
        import pyarrow.parquet as pq

        try:
            return pq.read_table(pyarrow.BufferReader(data)).to_pylist()
        except pyarrow.ArrowException as exc:
            raise InvalidInput(f"{path.name} is not a readable Parquet table: {exc}") from None
    except (OSError, UnicodeDecodeError, csv.Error, json.JSONDecodeError) as exc:
        raise InvalidInput(f"cannot read {path.name}: {exc}") from None


def _read_csv(text: str, name: str) -> list[dict[str, Any]]:
    """Rows of a CSV, strictly: an unterminated quote or a row longer than the header is an error naming the
    line where that row starts (the csv module alone would swallow the rest of the file into one field)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[dict[str, Any]] = []
    header: list[str] | None = None
    start = 1
    try:
        for fields in reader:
            if header is None:
                header = fields
            elif fields:
                if len(fields) > len(header):
                    raise InvalidInput(
                        f"{name} line {start}: {len(fields)} fields, but the header has {len(header)}; "
                        "quote fields that hold commas"
                    )
                padded = fields + [None] * (len(header) - len(fields))  # short rows: None, as DictReader
                rows.append(dict(zip(header, padded, strict=True)))
            start = reader.line_num + 1
    except csv.Error as exc:
        hint = "a quote opened there is never closed" if "end of data" in str(exc) else str(exc)
        raise InvalidInput(f"{name} line {start}: malformed CSV: {hint}") from None
    return rows


def _record(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise InvalidInput(f"{where} is {type(row).__name__}, not a record: write one JSON object per row")
    return row


def parse_boxes(value: Any) -> list[list[float]]:
    """Gold boxes as [[x1,y1,x2,y2], ...] from a list or its JSON text (CSV cells hold text)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InvalidInput(f"boxes {value!r} are not JSON like [[x1,y1,x2,y2], ...]") from None
    if isinstance(value, (list, tuple)) and len(value) == 4 and all(isinstance(v, (int, float)) for v in value):
        value = [value]
    try:
        boxes = [[float(v) for v in box] for box in value]
    except (TypeError, ValueError):
        raise InvalidInput(f"boxes {value!r} are not [[x1,y1,x2,y2], ...]") from None
    if any(len(b) != 4 for b in boxes):
        raise InvalidInput(f"boxes {value!r}: each box needs 4 numbers")
    return boxes


def parse_regions(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return [part.strip() for part in value.split(",") if part.strip()]
        value = parsed
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]
