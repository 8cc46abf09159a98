"""Shapes and dtypes of .npy and .npz files read from their headers, so limits are checked before anything is
allocated: a 1 MB compressed .npz can declare a 1 GB array, and np.load allocates what the header says.

For an .npz, every member must be an .npy array whose declared (uncompressed) size, `ZipInfo.file_size`, is
within the caller's limit and large enough for the data its header declares; zipfile never inflates a member
past its declared size, so the declared sizes bound what loading can cost.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

from modelyard.runtime.errors import InvalidInput

NPY_SUFFIX = ".npy"


@dataclass(frozen=True)
class ArrayHeader:
    name: str  # the key np.load gives it (for .npy files: the file name)
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _header(stream: IO[bytes], name: str, what: str) -> ArrayHeader:
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = npy_format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidInput(f"{what}: '{name}' cannot be read as a numpy array ({exc})") from None
    if dtype.hasobject:
        raise InvalidInput(f"{what}: '{name}' holds Python objects (pickles), never loaded here; save plain arrays")
    return ArrayHeader(name, tuple(int(d) for d in shape), dtype)


def npy_header(path: Path, what: str) -> ArrayHeader:
    """The header of a .npy file (its data is not read)."""
    with path.open("rb") as stream:
        return _header(stream, path.name, what)


def npz_headers(path: Path, max_member_bytes: int, what: str) -> dict[str, ArrayHeader]:
    """The headers of an .npz's arrays by key, after checking every member's declared size against
    `max_member_bytes` (only the few bytes of each header are inflated)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidInput(f"{what}: not a readable .npz (zip) file ({exc})") from None
    headers = {}
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            if not info.filename.endswith(NPY_SUFFIX):
                raise InvalidInput(f"{what}: member '{info.filename}' is not an .npy array; an .npz holds arrays only")
            if info.file_size > max_member_bytes:
                raise InvalidInput(
                    f"{what}: member '{info.filename}' declares {info.file_size} bytes uncompressed, over this "
                    f"service's limit of {max_member_bytes} bytes per array"
                )
            try:
                with archive.open(info) as stream:
                    header = _header(stream, info.filename[: -len(NPY_SUFFIX)], what)
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
                raise InvalidInput(f"{what}: member '{info.filename}' cannot be read ({exc})") from None
            if header.nbytes > info.file_size:
                raise InvalidInput(
                    f"{what}: array '{header.name}' declares shape {header.shape} of {header.dtype} "
                    f"({header.nbytes} bytes) but its member holds only {info.file_size}: the file is damaged"
                )
            headers[header.name] = header
    return headers
