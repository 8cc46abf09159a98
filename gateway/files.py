"""Atomic output files: write to a temporary file beside the target, fsync, then rename over it.

A reader (or a rerun after a crash) sees either the old file or the whole new one, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # what write_atomic's mkstemp names look like


def remove_orphans(folder: Path) -> int:
    """Delete the temporary files a gateway killed mid-write left in `folder` and below (never a finished
    output: those were renamed into place). Returns how many were removed."""
    removed = 0
    for parent, _, names in os.walk(folder):  # does not follow symlinked folders
        for name in names:
            path = Path(parent) / name
            if _TEMP.match(name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def _read_umask() -> int:
    """The process umask, read without changing it (os.umask sets it, racing with other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc (not Linux): read it once, at import, before any worker thread
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; outputs get the mode a plain open() would give them (0644 under umask 022),
# so the host user who mounted the data folder can read what the stack wrote.
OUTPUT_MODE = 0o666 & ~_read_umask()


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(temp_path)`, then move the finished file to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, OUTPUT_MODE)
    finally:
        os.close(fd)
    temp = Path(tmp)
    try:
        write(temp)
        with temp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    def write(temp: Path) -> None:
        temp.write_bytes(data)

    return write_atomic(path, write)


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_png(path: Path, array: np.ndarray) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return write_bytes(path, buffer.getvalue())


def write_csv(path: Path, header: list[str], rows: Iterable[list[Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    return write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in records))
