"""Arrays and images on the wire: inline bytes, or shared memory on one host (the fast path).

Shared memory works like Triton's system shared-memory extension: the caller creates a region (a file in a
tmpfs folder both processes see, /dev/shm by default), writes the array there and sends only its name, offset,
dtype and shape. Results come back the same way into a region the caller offers. The server never creates
regions, so a crashed server leaks nothing; the caller unlinks its regions when done.

As with Triton's registered regions, both sides set a region up once and reuse it: the caller keeps a pool of
regions (`modelyard.runtime.client.SharedMemoryClient`), and the server maps each region once (`MappedRegions`)
and reuses the mapping while the file at that name is the same file, so a call costs a stat instead of an open,
an mmap and a page fault per page.
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import mmap
import os
import re
import secrets
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from modelyard.runtime.budget import RequestBudget
from modelyard.runtime.errors import InvalidInput, ModelyardError
from modelyard.runtime.paths import DEFAULT_MAX_FILE_BYTES, read_confined
from modelyard.v1 import types_pb2

# Where regions live unless a service's config says otherwise (runtime.shared_memory_dir): Linux's tmpfs,
# which every process on the host, and every container given the host's, can map.
SHM_DIR = Path("/dev/shm")
ALLOWED_DTYPES = {"uint8", "uint16", "int16", "int32", "int64", "float16", "float32", "float64", "bool"}
_REGION_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
MAX_ELEMENTS = 1 << 48  # far beyond any message or region, and within numpy's int64 size arithmetic
# Looked up once: np.dtype(name) and dtype.name cost microseconds each, on every array of every call.
_DTYPES = {name: np.dtype(name).newbyteorder("<") for name in ALLOWED_DTYPES}
_DTYPE_NAMES = {dtype: name for name in ALLOWED_DTYPES for dtype in (np.dtype(name), _DTYPES[name])}


def dtype_of(name: str) -> np.dtype:
    dtype = _DTYPES.get(name)
    if dtype is None:
        raise InvalidInput(f"dtype '{name}' is not supported; use one of {', '.join(sorted(ALLOWED_DTYPES))}")
    return dtype


def dtype_name(dtype: np.dtype) -> str:
    """`dtype.name`, from a table for the dtypes on the wire."""
    return _DTYPE_NAMES.get(dtype) or dtype.name


def _shape(shape: Sequence[int], what: str) -> tuple[int, ...]:
    """`shape` (a message's repeated int64, or a sequence of ints) checked: no negative dimension, and no more
    elements than any array can hold, zero dimensions aside."""
    dims = tuple(shape[:])  # (a slice of a repeated field: half the cost of iterating over it)
    if dims and min(dims) < 0:
        raise InvalidInput(f"{what}: negative dimension in shape {dims}")
    # Sizes are computed with Python ints: int64 arithmetic would wrap (2**32 x 2**32 elements "need" 0 bytes).
    # A zero dimension makes the product 0 however large the others are: then they are checked without it.
    elements = math.prod(dims)
    if elements > MAX_ELEMENTS or (elements == 0 and math.prod(d for d in dims if d) > MAX_ELEMENTS):
        raise InvalidInput(f"{what}: shape {dims} has more elements than any array can ({MAX_ELEMENTS})")
    return dims


def region_path(shm_dir: Path, name: str) -> Path:
    if not _REGION_NAME.match(name) or name.startswith("."):
        raise InvalidInput(f"shared-memory region name '{name}' is invalid: a plain file name, no slashes")
    return shm_dir / name


def _open_region(shm_dir: Path, name: str, writable: bool) -> int:
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        dir_fd = os.open(shm_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidInput(
            f"shared-memory folder {shm_dir} cannot be opened here ({exc.strerror}): send the array inline"
        ) from None
    try:
        return os.open(name, flags, dir_fd=dir_fd)  # O_NONBLOCK: a FIFO opens at once (and is refused below)
    except FileNotFoundError:
        raise InvalidInput(
            f"shared-memory region '{name}' not found in {shm_dir}: the caller and the service must share "
            "that folder (same host, or a tmpfs volume both mount); otherwise send the array inline"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidInput(
                f"shared-memory region '{name}' in {shm_dir} is a symbolic link: a region must be the plain file "
                "the caller created there"
            ) from None
        raise InvalidInput(f"shared-memory region '{name}' cannot be opened: {exc.strerror}") from None
    finally:
        os.close(dir_fd)


def _check_region(fd: int, shm_dir: Path, name: str) -> os.stat_result:
    """The region's stat, once the open file is known to be a caller's own region (else InvalidInput)."""
    st, folder = os.fstat(fd), os.stat(shm_dir)
    where = f"shared-memory region '{name}' in {shm_dir}"
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInput(f"{where} is not a regular file (a FIFO, device or folder): create the region as a file")
    if st.st_dev != folder.st_dev or st.st_nlink != 1:
        raise InvalidInput(f"{where} is a link to another file: a region must be the plain file the caller created")
    trusted = trusted_region_owners()
    if st.st_uid not in trusted:
        raise InvalidInput(
            f"{where} is owned by uid {st.st_uid}, which this service does not trust (it accepts regions of uids "
            f"{', '.join(map(str, sorted(trusted)))}): create it as one of them, or add the uid to "
            "runtime.shared_memory_uids"
        )
    return st


_TRUSTED_UIDS: set[int] = set()


def trust_region_owners(uids: Iterable[int]) -> None:
    """Also accept regions owned by these uids (runtime.shared_memory_uids; the service's own is always trusted).
    Set once at start-up: a region's owner is who may write it while the service reads it."""
    _TRUSTED_UIDS.clear()
    _TRUSTED_UIDS.update(int(u) for u in uids)


def trusted_region_owners() -> set[int]:
    return {os.geteuid(), *_TRUSTED_UIDS}


def _pid_namespace() -> int:
    """This process's pid namespace (its inode number, unique on the host), 0 where it cannot be read. Regions are
    named after it and the pid, so a folder shared between containers tells whose process created a region."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


_PID_NAMESPACE = _pid_namespace()
_CREATED_NAME = re.compile(r"^[A-Za-z0-9_]+-n(\d+)-(\d+)-[0-9a-f]{12}$")


def _process_tag() -> str:
    return f"n{_PID_NAMESPACE}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_orphaned_regions(shm_dir: Path) -> list[str]:
    """Unlink the regions that processes of this pid namespace created in `shm_dir` and left behind when they
    died (killed before they could unlink them): plain files of this uid whose creator's pid no longer runs.
    Regions of other namespaces (another container) and of other users are left alone. Returns the names."""
    if not _PID_NAMESPACE:
        return []
    removed = []
    try:
        entries = list(os.scandir(shm_dir))
    except OSError:
        return []
    for entry in entries:
        match = _CREATED_NAME.match(entry.name)
        if not match or int(match.group(1)) != _PID_NAMESPACE or _alive(int(match.group(2))):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:  # gone meanwhile, or not ours to remove
            continue
    return removed


def _check_span(name: str, span: tuple[int, int], size: int) -> None:
    """`span` (offset, bytes) lies within region `name` of `size` bytes, else InvalidInput."""
    if span[0] < 0 or span[0] + span[1] > size:
        raise InvalidInput(
            f"array of {span[1]} bytes at offset {span[0]} overruns region '{name}' ({size} bytes): "
            "the array must lie within the region"
        )


class SharedRegion:
    """A named shared-memory region mapped into this process."""

    identity: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of the file mapped
    owner = -1  # its owner's uid, when attached

    def __init__(self, path: Path, size: int, create: bool) -> None:
        self.path = path
        self.name = path.name
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
            self._map_fd(fd, size, writable=True)
        finally:
            os.close(fd)
        self._owner = create

    def _map_fd(self, fd: int, size: int, writable: bool) -> None:
        self.size = size
        # A read-only mapping exports a read-only buffer: every array viewed on it is read-only, no flag to set.
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        self._map: mmap.mmap | None = mmap.mmap(fd, size, access=access) if size else None

    @classmethod
    def create(cls, size: int, shm_dir: Path = SHM_DIR, prefix: str = "modelyard") -> SharedRegion:
        """A new region of `size` bytes, named after this process (see `remove_orphaned_regions`)."""
        return cls(shm_dir / f"{prefix}-{_process_tag()}-{secrets.token_hex(6)}", size, create=True)

    @classmethod
    def attach(
        cls, shm_dir: Path, name: str, writable: bool = False, span: tuple[int, int] | None = None
    ) -> SharedRegion:
        """Open a region a caller created, refusing anything but a regular file directly in `shm_dir` owned by a
        trusted uid (see `trust_region_owners`). The checks run on the open file (fstat), never on the path
        beforehand, and links are not followed: /dev/shm is world-writable, so a name there may be a symlink or
        a hard link to any file. `span` (offset, bytes) must lie within the file; it is checked before mapping."""
        path = region_path(shm_dir, name)
        region = cls.__new__(cls)
        region.path, region.name, region._owner, region._map, region.size = path, name, False, None, 0
        fd = _open_region(shm_dir, name, writable)
        try:
            st = _check_region(fd, shm_dir, name)
            size, region.identity, region.owner = int(st.st_size), (st.st_dev, st.st_ino), st.st_uid
            if span is not None:
                _check_span(name, span, size)
            region._map_fd(fd, size, writable)
        finally:
            os.close(fd)
        return region

    def view(self, offset: int, dtype: np.dtype, shape: Sequence[int]) -> np.ndarray:
        count = math.prod(shape)
        end = offset + count * dtype.itemsize
        if self._map is None or end > self.size:
            raise InvalidInput(f"array of {end - offset} bytes at offset {offset} overruns region '{self.name}'")
        array = np.frombuffer(self._map, dtype, count, offset)  # (positional: keywords cost a lookup each)
        return array if len(shape) == 1 else array.reshape(shape)

    @property
    def address(self) -> int:
        """Where the mapping starts in this process's memory (0 when nothing is mapped)."""
        if self._map is None:
            return 0
        return int(np.frombuffer(self._map, np.uint8, count=1).ctypes.data)

    def write(self, offset: int, array: np.ndarray) -> None:
        assert self._map is not None
        target = np.frombuffer(self._map, array.dtype, array.size, offset)
        target[...] = array if array.ndim == 1 else array.reshape(-1)

    def close(self) -> None:
        if self._map is not None:
            with contextlib.suppress(BufferError):  # a numpy view still exists; the mapping goes with it
                self._map.close()
            self._map = None
        if self._owner:
            self.path.unlink(missing_ok=True)
            self._owner = False

    def __enter__(self) -> SharedRegion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tensor_to_numpy(msg: types_pb2.Tensor, shm_dir: Path, what: str = "array") -> np.ndarray:
    """Decode a Tensor message into a read-only numpy array, validating dtype, shape and size."""
    kind = msg.WhichOneof("payload")
    if kind == "inline":
        inline = msg.inline
        dtype = dtype_of(inline.dtype)
        shape = _shape(inline.shape, what)
        expected = math.prod(shape) * dtype.itemsize
        data = inline.data  # read once: each read of a bytes field copies the payload
        if len(data) != expected:
            raise InvalidInput(
                f"{what}: {len(data)} bytes of data, but dtype {dtype.name} and shape {shape} need {expected}"
            )
        array = np.frombuffer(data, dtype=dtype)  # (1-D already: the length was checked)
        return array if len(shape) == 1 else array.reshape(shape)
    if kind == "shared":
        shared = msg.shared  # (each attribute read of a message builds a wrapper: read it once)
        dtype = dtype_of(shared.dtype)
        shape = _shape(shared.shape, what)
        offset = shared.offset
        region = MAPPED_REGIONS.get(shm_dir, shared.region, False, (offset, math.prod(shape) * dtype.itemsize))
        # Zero-copy and read-only (a view of a read-only mapping): the caller's region stays untouched and is only
        # read while the call lasts (the view keeps the mapping alive; results never alias it: outputs are
        # written out).
        return region.view(offset, dtype, shape)
    raise InvalidInput(f"{what}: empty Tensor; set `inline` or `shared`")


def numpy_to_tensor(
    array: np.ndarray, out: OutputWriter | None = None, into: types_pb2.Tensor | None = None
) -> types_pb2.Tensor:
    """Encode an array inline, or into the caller's output region when one was offered and it fits. With `into`
    (a Tensor field of the response being built) it is filled in place: building a message from nested
    constructors copies an inline payload once per level."""
    array = np.asarray(array)
    if not array.flags.c_contiguous:  # (np.ascontiguousarray alone would turn a 0-d array into shape (1,))
        array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    tensor = types_pb2.Tensor() if into is None else into
    if out is not None and out.place(array, tensor.shared):
        return tensor
    inline = tensor.inline
    inline.dtype = dtype_name(array.dtype)
    inline.shape[:] = array.shape
    inline.data = array.tobytes()
    return tensor


class OutputWriter:
    """Places results in the caller's output region, one after another, 64-byte aligned."""

    def __init__(self, msg: types_pb2.OutputRegion, shm_dir: Path) -> None:
        offset, capacity = msg.offset, msg.capacity
        self._region = MAPPED_REGIONS.get(shm_dir, msg.region, True, (offset, 0))
        self._cursor = offset
        self._end = min(self._region.size, offset + (capacity or self._region.size))

    @classmethod
    def optional(cls, msg: types_pb2.OutputRegion, shm_dir: Path) -> OutputWriter | None:
        return cls(msg, shm_dir) if msg.region else None

    def place(self, array: np.ndarray, into: types_pb2.SharedArray) -> bool:
        """Write `array` into the region and describe it in `into` (a field of the message being built); False,
        with `into` untouched, when it does not fit or is empty (it then travels inline)."""
        start = (self._cursor + 63) // 64 * 64
        if array.nbytes == 0 or start + array.nbytes > self._end:
            return False
        self._region.write(start, array)
        self._cursor = start + array.nbytes
        into.region, into.offset, into.dtype = self._region.name, start, dtype_name(array.dtype)
        into.shape[:] = array.shape
        return True

    def close(self) -> None:
        """Done writing (the mapping stays in MAPPED_REGIONS for the caller's next call)."""


@dataclass(frozen=True)
class _Mapping:
    region: SharedRegion
    path: str  # where it was opened: each use stats this name
    dev: int
    ino: int
    uid: int
    size: int


class MappedRegions:
    """The server's mappings of callers' regions: each opened, checked and mapped once (`SharedRegion.attach`),
    then reused while the file at that name is still that file.

    Every use stats the name without following links and reuses the mapping only when it is the same inode
    (still mapped here, so its number cannot have been reused), a single link, the same size and still owned
    by a trusted uid; anything else is dropped and opened afresh with the full checks and their messages. A
    mapping whose file is gone (the caller unlinked it, or exited and its regions were removed) is dropped at
    its next use or by the sweep, which runs every `sweep_s` while any mapping is held, so no mapping keeps a
    deleted region's memory alive for long. At most `max_regions` mappings of `max_bytes` in all are kept (the
    least recently used go first). Nothing here ever creates or unlinks a file."""

    def __init__(self, max_regions: int = 64, max_bytes: int = 16 << 30, sweep_s: float = 1.0) -> None:
        self.max_regions = max_regions
        self.max_bytes = max_bytes
        self.sweep_s = sweep_s
        self._lock = threading.Lock()
        self._mappings: OrderedDict[tuple[str, str, bool], _Mapping] = OrderedDict()
        self._sweeper: threading.Thread | None = None

    def get(self, shm_dir: Path, name: str, writable: bool, span: tuple[int, int]) -> SharedRegion:
        """The mapping of region `name` in `shm_dir`, with `span` (offset, bytes) checked to lie within it."""
        key = (str(shm_dir), name, writable)
        with self._lock:
            mapping = self._mappings.get(key)
            if mapping is not None:
                self._mappings.move_to_end(key)
        # (a name in the table was checked when it was opened; what is left per use is one lstat)
        if mapping is not None and self._unchanged(mapping):
            _check_span(name, span, mapping.size)
            return mapping.region
        self.drop(shm_dir, name)
        region = SharedRegion.attach(shm_dir, name, writable=writable, span=span)
        dev, ino = region.identity
        with self._lock:
            self._mappings[key] = _Mapping(region, str(region.path), dev, ino, region.owner, region.size)
            self._evict()
            self._start_sweeper()
        return region

    @staticmethod
    def _unchanged(mapping: _Mapping) -> bool:
        try:
            st = os.lstat(mapping.path)
        except OSError:
            return False
        return (
            st.st_ino == mapping.ino
            and st.st_dev == mapping.dev
            and st.st_nlink == 1
            and st.st_size == mapping.size
            and st.st_uid == mapping.uid
            and stat.S_ISREG(st.st_mode)
            and (st.st_uid == os.geteuid() or st.st_uid in _TRUSTED_UIDS)  # (trusted_region_owners, without a set)
        )

    def drop(self, shm_dir: Path, name: str) -> None:
        """Forget the mappings of `name` (a view still in use keeps its own until it goes)."""
        with self._lock:
            for writable in (False, True):
                self._mappings.pop((str(shm_dir), name, writable), None)

    def sweep(self) -> int:
        """Drop every mapping whose file is gone or changed; returns how many are still held."""
        with self._lock:
            held = list(self._mappings.items())
        gone = [key for key, mapping in held if not self._unchanged(mapping)]
        with self._lock:
            for key in gone:
                self._mappings.pop(key, None)
            return len(self._mappings)

    def __len__(self) -> int:
        return len(self._mappings)

    def _evict(self) -> None:
        total = sum(m.size for m in self._mappings.values())
        while self._mappings and (len(self._mappings) > self.max_regions or total > self.max_bytes):
            _, oldest = self._mappings.popitem(last=False)
            total -= oldest.size

    def _start_sweeper(self) -> None:
        if self._sweeper is None or not self._sweeper.is_alive():
            self._sweeper = threading.Thread(target=self._sweep_while_held, name="shm-sweep", daemon=True)
            self._sweeper.start()

    def _sweep_while_held(self) -> None:
        while True:
            time.sleep(self.sweep_s)
            with self._lock:
                if not self._mappings:
                    self._sweeper = None
                    return
            self.sweep()


MAPPED_REGIONS = MappedRegions()


def decode_image(
    msg: types_pb2.Image,
    shm_dir: Path,
    data_root: Path | None,
    max_pixels: int,
    what: str = "image",
    budget: RequestBudget | None = None,
    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
) -> np.ndarray:
    """An Image message as an (H,W) or (H,W,C) array with C in 3/4, within the pixel limit and the request's
    budget (charged before anything is decoded)."""
    kind = msg.WhichOneof("source")
    if kind == "array":
        image = tensor_to_numpy(msg.array, shm_dir, what)
        if budget is not None and image.ndim >= 2:
            budget.charge(image.shape[0] * image.shape[1], what)
    elif kind in ("encoded", "ref"):
        if kind == "ref":
            if data_root is None:
                raise InvalidInput(f"{what}: this service has no data volume configured; send the image bytes")
            data = read_confined(data_root, msg.ref.path, max_file_bytes)
        else:
            data = msg.encoded
        image = decode_image_bytes(data, max_pixels, what, budget)
    else:
        raise InvalidInput(f"{what}: empty Image; set `encoded` (PNG/JPEG bytes), `array` or `ref`")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise InvalidInput(f"{what}: shape {image.shape} is not (H,W), (H,W,3) or (H,W,4)")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidInput(f"{what}: empty image of shape {image.shape}")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise InvalidInput(
            f"{what}: {image.shape[1]}x{image.shape[0]} is {image.shape[0] * image.shape[1]} pixels, over this "
            f"service's limit of {max_pixels} (model.max_pixels); downscale or crop it"
        )
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise InvalidInput(f"{what}: contains NaN or infinite values")
    return image


def guard_decoding(max_pixels: int) -> None:
    """Set PIL's decompression-bomb guard (Image.MAX_IMAGE_PIXELS) from a service's pixel limit, so no decoder
    PIL runs on open works on more than that. One process-wide setting: the largest limit asked for wins, and each
    decode also checks its own limit from the header before decoding."""
    _GUARD["pixels"] = max(_GUARD["pixels"], max_pixels)
    PILImage.MAX_IMAGE_PIXELS = _GUARD["pixels"]


_GUARD = {"pixels": 0}
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-f]+>")


@contextlib.contextmanager
def open_image(
    data: bytes, max_pixels: int, what: str, budget: RequestBudget | None = None
) -> Iterator[PILImage.Image]:
    """Encoded image bytes opened with PIL, once the size its header declares is within `max_pixels` and the
    request's `budget`; nothing is decoded before that. Whatever goes wrong in the block becomes an InvalidInput
    that says what to fix (never an object's repr)."""
    if not data:
        raise InvalidInput(f"{what}: no bytes were sent")
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise InvalidInput(
                    f"{what}: {img.width}x{img.height} is over this service's limit of {max_pixels} pixels "
                    "(model.max_pixels); downscale or crop it"
                )
            if budget is not None:
                budget.charge(img.width * img.height, what)
            yield img
    except ModelyardError:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
        raise InvalidInput(
            f"{what}: the image declares more pixels than this service's limit of {max_pixels} (model.max_pixels); "
            "downscale or crop it"
        ) from None
    except PILImage.UnidentifiedImageError:
        raise InvalidInput(
            f"{what}: the bytes are not a decodable image: they begin with {data[:8]!r}, which no format this "
            "service reads (PNG, JPEG, TIFF, BMP, WebP, ...) starts with"
        ) from None
    except Exception as exc:
        detail = _OBJECT_REPR.sub("the image", str(exc)) or type(exc).__name__
        raise InvalidInput(f"{what}: the bytes are not a decodable image: damaged or truncated ({detail})") from None


def decode_image_bytes(data: bytes, max_pixels: int, what: str, budget: RequestBudget | None = None) -> np.ndarray:
    """Encoded image bytes as an array (palette, CMYK and the like as RGB/RGBA), checked as `open_image` does."""
    with open_image(data, max_pixels, what, budget) as img:
        if img.mode in ("P", "PA", "LA", "CMYK", "YCbCr", "1"):
            img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
        return np.array(img)


def check_box(box: np.ndarray, height: int, width: int, where: str) -> None:
    """An xyxy pixel box must be finite, ordered and inside the image; else InvalidInput saying how to fix it."""
    x1, y1, x2, y2 = (float(v) for v in box)
    where = f"{where} ({x1:g}, {y1:g}, {x2:g}, {y2:g})"
    if not np.isfinite([x1, y1, x2, y2]).all():
        raise InvalidInput(f"{where}: coordinates must be finite numbers")
    if x2 <= x1 or y2 <= y1:
        raise InvalidInput(f"{where}: needs x2 > x1 and y2 > y1 (xyxy order, in pixels)")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise InvalidInput(f"{where}: lies outside the {width}x{height} image; clip it to [0,{width}]x[0,{height}]")


def encode_png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
