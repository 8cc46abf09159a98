"""Arrays and images on the wire: inline bytes, or shared memory on one host (the fast path).

Shared memory works like Triton's system shared-memory extension: the caller creates a region (a file in a
tmpfs folder both processes see, /dev/shm by default), writes the array there and sends only its name, offset,
dtype and shape. Results come back the same way into a region the caller offers. The server never creates
regions, so a crashed server leaks nothing; the caller unlinks its regions when done.
"""

from __future__ import annotations

import contextlib
import io
import math
import mmap
import os
import re
import secrets
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from modelyard.runtime.errors import InvalidInput
from modelyard.runtime.paths import read_confined
from modelyard.v1 import types_pb2

ALLOWED_DTYPES = {"uint8", "uint16", "int16", "int32", "int64", "float16", "float32", "float64", "bool"}
_REGION_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
MAX_ELEMENTS = 1 << 48  # far beyond any message or region, and within numpy's int64 size arithmetic


def dtype_of(name: str) -> np.dtype:
    if name not in ALLOWED_DTYPES:
        raise InvalidInput(f"dtype '{name}' is not supported; use one of {', '.join(sorted(ALLOWED_DTYPES))}")
    return np.dtype(name).newbyteorder("<")


def _shape(shape: list[int] | tuple[int, ...], what: str) -> tuple[int, ...]:
    if any(d < 0 for d in shape):
        raise InvalidInput(f"{what}: negative dimension in shape {tuple(shape)}")
    dims = tuple(int(d) for d in shape)
    # Sizes are computed with Python ints: int64 arithmetic would wrap (2**32 x 2**32 elements "need" 0 bytes).
    if math.prod(d for d in dims if d) > MAX_ELEMENTS:
        raise InvalidInput(f"{what}: shape {dims} has more elements than any array can ({MAX_ELEMENTS})")
    return dims


def region_path(shm_dir: Path, name: str) -> Path:
    if not _REGION_NAME.match(name) or name.startswith("."):
        raise InvalidInput(f"shared-memory region name '{name}' is invalid: a plain file name, no slashes")
    return shm_dir / name


class SharedRegion:
    """A named shared-memory region mapped into this process."""

    def __init__(self, path: Path, size: int, create: bool) -> None:
        self.path = path
        self.name = path.name
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            else:
                size = os.fstat(fd).st_size
            self.size = size
            self._map = mmap.mmap(fd, size) if size else None
        finally:
            os.close(fd)
        self._owner = create

    @classmethod
    def create(cls, size: int, shm_dir: Path = Path("/dev/shm"), prefix: str = "modelyard") -> SharedRegion:
        return cls(shm_dir / f"{prefix}-{os.getpid()}-{secrets.token_hex(6)}", size, create=True)

    @classmethod
    def attach(cls, shm_dir: Path, name: str) -> SharedRegion:
        path = region_path(shm_dir, name)
        if not path.is_file():
            raise InvalidInput(
                f"shared-memory region '{name}' not found in {shm_dir}: the caller and the service must share "
                "that folder (same host, or a tmpfs volume both mount); otherwise send the array inline"
            )
        return cls(path, 0, create=False)

    def view(self, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        count = math.prod(shape)
        end = offset + count * dtype.itemsize
        if self._map is None or end > self.size:
            raise InvalidInput(f"array of {end - offset} bytes at offset {offset} overruns region '{self.name}'")
        return np.frombuffer(self._map, dtype=dtype, count=count, offset=offset).reshape(shape)

    def write(self, offset: int, array: np.ndarray) -> None:
        assert self._map is not None
        target = np.frombuffer(self._map, dtype=array.dtype, count=array.size, offset=offset)
        target[...] = array.reshape(-1)

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
        dtype = dtype_of(msg.inline.dtype)
        shape = _shape(msg.inline.shape, what)
        expected = math.prod(shape) * dtype.itemsize
        if len(msg.inline.data) != expected:
            raise InvalidInput(
                f"{what}: {len(msg.inline.data)} bytes of data, but dtype {dtype.name} and shape {shape} "
                f"need {expected}"
            )
        return np.frombuffer(msg.inline.data, dtype=dtype).reshape(shape)
    if kind == "shared":
        dtype = dtype_of(msg.shared.dtype)
        shape = _shape(msg.shared.shape, what)
        region = SharedRegion.attach(shm_dir, msg.shared.region)
        try:
            # Zero-copy and read-only: the caller's region stays untouched and is only read while the call lasts
            # (the view keeps the mapping alive; results never alias it because outputs are written out).
            view = region.view(msg.shared.offset, dtype, shape)
            view.flags.writeable = False
            return view
        finally:
            region.close()
    raise InvalidInput(f"{what}: empty Tensor; set `inline` or `shared`")


def numpy_to_tensor(array: np.ndarray, out: OutputWriter | None = None) -> types_pb2.Tensor:
    """Encode an array inline, or into the caller's output region when one was offered and it fits."""
    array = np.asarray(array)
    if not array.flags.c_contiguous:  # (np.ascontiguousarray alone would turn a 0-d array into shape (1,))
        array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    if out is not None:
        placed = out.place(array)
        if placed is not None:
            return types_pb2.Tensor(shared=placed)
    return types_pb2.Tensor(
        inline=types_pb2.NDArray(dtype=array.dtype.name, shape=list(array.shape), data=array.tobytes())
    )


class OutputWriter:
    """Places results in the caller's output region, one after another, 64-byte aligned."""

    def __init__(self, msg: types_pb2.OutputRegion, shm_dir: Path) -> None:
        self._region = SharedRegion.attach(shm_dir, msg.region)
        self._cursor = int(msg.offset)
        self._end = min(self._region.size, int(msg.offset) + int(msg.capacity or self._region.size))

    @classmethod
    def optional(cls, msg: types_pb2.OutputRegion, shm_dir: Path) -> OutputWriter | None:
        return cls(msg, shm_dir) if msg.region else None

    def place(self, array: np.ndarray) -> types_pb2.SharedArray | None:
        start = (self._cursor + 63) // 64 * 64
        if array.nbytes == 0 or start + array.nbytes > self._end:  # (nothing to place: it travels inline)
            return None
        self._region.write(start, array)
        self._cursor = start + array.nbytes
        return types_pb2.SharedArray(
            region=self._region.name, offset=start, dtype=array.dtype.name, shape=list(array.shape)
        )

    def close(self) -> None:
        self._region.close()


def decode_image(
    msg: types_pb2.Image, shm_dir: Path, data_root: Path | None, max_pixels: int, what: str = "image"
) -> np.ndarray:
    """An Image message as an (H,W) or (H,W,C) array with C in 3/4, within the pixel limit."""
    kind = msg.WhichOneof("source")
    if kind == "array":
        image = tensor_to_numpy(msg.array, shm_dir, what)
    elif kind in ("encoded", "ref"):
        if kind == "ref":
            if data_root is None:
                raise InvalidInput(f"{what}: this service has no data volume configured; send the image bytes")
            data = read_confined(data_root, msg.ref.path)
        else:
            data = msg.encoded
        image = _decode_bytes(data, max_pixels, what)
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


def _decode_bytes(data: bytes, max_pixels: int, what: str) -> np.ndarray:
    if not data:
        raise InvalidInput(f"{what}: no bytes were sent")
    try:
        with PILImage.open(io.BytesIO(data)) as opened:
            img: PILImage.Image = opened
            if img.width * img.height > max_pixels:
                raise InvalidInput(
                    f"{what}: {img.width}x{img.height} is over this service's limit of {max_pixels} pixels "
                    "(model.max_pixels); downscale or crop it"
                )
            if img.mode in ("P", "PA", "LA", "CMYK", "YCbCr", "1"):
                img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
            return np.array(img)
    except InvalidInput:
        raise
    except Exception as exc:
        raise InvalidInput(f"{what}: the bytes are not a decodable image (PNG, JPEG, TIFF, ...): {exc}") from None


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
