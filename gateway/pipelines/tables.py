"""Input tables of the medvqa pipeline: CSV, JSONL or Parquet, one row per (image, question)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from modelyard.runtime.errors import InvalidInput


def read_table(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson", ".json", ".parquet"):
        raise InvalidInput(f"{path.name}: unsupported table format '{suffix}'; use .csv, .jsonl or .parquet")
    if not path.is_file():  # a folder, or a FIFO whose reading would never end
        raise InvalidInput(f"{path.name} is not a regular file")
    try:
        if suffix == ".csv":
            with path.open(newline="") as f:
                return [dict(row) for row in csv.DictReader(f)]
        if suffix in (".jsonl", ".ndjson"):
            rows = []
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(_record(json.loads(line), f"{path.name} line {number}"))
                    except json.JSONDecodeError as exc:
                        raise InvalidInput(f"{path.name} line {number} is not JSON: {exc}") from None
            return rows
        if suffix == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, list):
                return [_record(row, f"{path.name} record {n}") for n, row in enumerate(data)]
            raise InvalidInput(f"{path.name}: a .json input must be a list of records")
        import pyarrow
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except pyarrow.ArrowException as exc:
            raise InvalidInput(f"{path.name} is not a readable Parquet table: {exc}") from None
    except (OSError, UnicodeDecodeError, csv.Error, json.JSONDecodeError) as exc:
        raise InvalidInput(f"cannot read {path.name}: {exc}") from None


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
