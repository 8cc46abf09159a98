"""Checkpoint identity: the digest a service reports in ModelInfo, so a caller can tell which weights answered."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of(path: Path) -> str:
    """The file's sha256 as hex, read in 1 MiB blocks so a multi-GB checkpoint is never held in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["sha256_of"]
