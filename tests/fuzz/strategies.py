"""Hypothesis strategies for hostile requests: arrays of any dtype and shape (NaN, inf, huge dimensions, data of the
wrong length), images that are corrupt, truncated, of odd modes or that claim huge sizes, shared-memory references
that overrun or name nothing, data references that escape (absolute, `..`, symlinks) or name odd files, odd option
values and texts.

Arrays are drawn from a seed (numpy fills them), so an example stays cheap to generate whatever its size.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Sequence

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from modelyard.runtime.arrays import ALLOWED_DTYPES
from modelyard.v1 import types_pb2

DTYPES = sorted(ALLOWED_DTYPES)
ODD_DTYPES = ["", "object", "int8", "uint32", "complex64", "float128", "<f4", ">f4", "U8", "S4", "V8", "M8", "UINT8"]
HUGE_DIMS = [2**31, 2**32, 2**40, 2**62, 2**63 - 1]
# Element counts that wrap around in int64 arithmetic (2**64 elements "need" 0 bytes), or that numpy cannot hold.
OVERFLOWING_SHAPES = [[2**32, 2**32], [2**62, 4], [2**40, 2**40, 0], [0, 2**63 - 1], [2**63 - 1, 2**63 - 1]]
SPECIAL_FLOATS = [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1e-45, 3.4e38, -3.4e38, 1e300]

ANY_DTYPE = st.sampled_from(DTYPES)  # of the dtypes the runtime accepts
dtype_names = st.one_of(st.sampled_from(DTYPES), st.sampled_from(ODD_DTYPES), st.text(max_size=6))
# Any float a proto float field can hold, specials included.
floats = st.one_of(st.floats(width=32), st.sampled_from(SPECIAL_FLOATS))
uint32s = st.one_of(st.integers(0, 16), st.integers(0, 2**32 - 1))
int32s = st.one_of(st.integers(-2, 16), st.integers(-(2**31), 2**31 - 1))
uint64s = st.one_of(st.integers(0, 4096), st.integers(0, 2**64 - 1))
enum_values = st.one_of(st.integers(0, 5), st.integers(-(2**31), 2**31 - 1))


def mostly(good: st.SearchStrategy, odd: st.SearchStrategy, weight: int = 3) -> st.SearchStrategy:
    """`good` values `weight` times as often as `odd` ones: most requests get past validation to the model, the
    rest probe it."""
    return st.sampled_from(range(weight + 1)).flatmap(lambda i: odd if i == weight else good)


texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "\t\n", "{}", "{} {}", "{0}", "%s", "\x00", "a" * 3000, "ü漢字🙂", "\u202e\u200b"]),
)


# -- arrays -----------------------------------------------------------------------------------------------
def filled(dtype: np.dtype, shape: tuple[int, ...], seed: int, special: str) -> np.ndarray:
    """A random array of `dtype` and `shape`, with `special` values put in (floats only)."""
    rng = np.random.default_rng(seed)
    if dtype.kind == "b":
        return rng.random(shape) > 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    if array.size and special != "none":
        flat = array.reshape(-1)
        value = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "max": np.finfo(dtype).max}[special]
        if special == "max":
            flat[:] = value
            flat[::2] = -value
        else:
            flat[rng.integers(0, flat.size)] = value
    return array


@st.composite
def arrays(
    draw: st.DrawFn,
    shapes: st.SearchStrategy[tuple[int, ...]],
    dtypes: st.SearchStrategy[str] = ANY_DTYPE,
) -> np.ndarray:
    dtype = np.dtype(draw(dtypes))
    special = draw(st.sampled_from(["none", "none", "nan", "inf", "-inf", "max"]))
    return filled(dtype, draw(shapes), draw(st.integers(0, 2**32 - 1)), special)


def image_shapes(max_side: int = 48) -> st.SearchStrategy[tuple[int, ...]]:
    side = st.integers(0, max_side)
    return st.one_of(
        st.tuples(side, side),
        st.tuples(side, side, st.sampled_from([1, 2, 3, 4, 5])),
        st.lists(st.integers(0, 6), max_size=5).map(tuple),
    )


def any_shapes() -> st.SearchStrategy[list[int]]:
    """Shapes as the wire carries them: any int64s, negative and overflowing products included."""
    dim = st.one_of(st.integers(0, 8), st.integers(-3, -1), st.sampled_from(HUGE_DIMS))
    return st.one_of(
        st.lists(dim, max_size=4),
        st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3),
        st.sampled_from(OVERFLOWING_SHAPES),
    )


def inline(array: np.ndarray) -> types_pb2.Tensor:
    return types_pb2.Tensor(
        inline=types_pb2.NDArray(dtype=array.dtype.name, shape=list(array.shape), data=array.tobytes())
    )


@st.composite
def tensors(
    draw: st.DrawFn,
    good: st.SearchStrategy[np.ndarray],
    regions: Sequence[str] = (),
) -> types_pb2.Tensor:
    """Mostly well-formed arrays (of any content); else a Tensor whose header lies about its bytes, names an odd
    dtype, or points into a shared-memory region (real or not) at any offset."""
    form = draw(st.sampled_from(["good", "good", "good", "lying", "shared", "empty"]))
    if form == "good":
        return inline(draw(good))
    if form == "lying":
        data = draw(st.one_of(st.binary(max_size=64), st.just(b"\x00" * 4096)))
        return types_pb2.Tensor(inline=types_pb2.NDArray(dtype=draw(dtype_names), shape=draw(any_shapes()), data=data))
    if form == "shared":
        shared = types_pb2.SharedArray(
            region=draw(region_names(regions)), offset=draw(uint64s), dtype=draw(dtype_names), shape=draw(any_shapes())
        )
        return types_pb2.Tensor(shared=shared)
    return types_pb2.Tensor()


def region_names(regions: Sequence[str]) -> st.SearchStrategy[str]:
    odd = ["", ".", "..", ".hidden", "../etc/passwd", "/dev/shm/x", "a/b", "x" * 300, "nonexistent-region", "\x00"]
    anything = st.one_of(st.sampled_from(odd), st.text(max_size=12))
    return mostly(st.sampled_from(list(regions)), anything, weight=2) if regions else anything


def output_regions(regions: Sequence[str]) -> st.SearchStrategy[types_pb2.OutputRegion]:
    return st.builds(types_pb2.OutputRegion, region=region_names(regions), offset=uint64s, capacity=uint64s)


# -- images -----------------------------------------------------------------------------------------------
def png_claiming(width: int, height: int) -> bytes:
    """A PNG header that claims width x height pixels, with no pixels (a decompression bomb's signature)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + header
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))


MODES = ["L", "RGB", "RGBA", "1", "P", "I;16", "I", "F", "LA", "CMYK", "YCbCr", "PA"]
FORMATS = ["PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP"]


def encode(width: int, height: int, mode: str, fmt: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (max(height, 1), max(width, 1), 3), dtype=np.uint8))
    image = base.convert(mode) if mode not in ("I;16", "PA") else base.convert("L" if mode == "I;16" else "P")
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257)  # mode I;16
    elif mode == "PA":
        image = image.convert("PA")
    for attempt in (fmt, "TIFF", "PNG"):
        buffer = io.BytesIO()
        try:
            with warnings.catch_warnings():  # Pillow deprecates some mode/format pairs; clients still send them
                warnings.simplefilter("ignore", DeprecationWarning)
                image.save(buffer, format=attempt)
        except (OSError, ValueError, KeyError):
            continue
        return buffer.getvalue()
    raise AssertionError("PNG takes every mode drawn here")


@st.composite
def encoded_images(draw: st.DrawFn, max_side: int = 64) -> bytes:
    form = draw(st.sampled_from(["image", "image", "image", "truncated", "flipped", "random", "empty", "huge"]))
    if form == "random":
        return draw(st.binary(max_size=256))
    if form == "empty":
        return b""
    if form == "huge":
        return png_claiming(draw(st.sampled_from([1, 100_000, 2**31 - 1])), draw(st.sampled_from([0, 100_000])))
    side = st.integers(1, max_side)
    data = encode(
        draw(side), draw(side), draw(st.sampled_from(MODES)), draw(st.sampled_from(FORMATS)), draw(st.integers(0, 99))
    )
    if form == "truncated":
        return data[: draw(st.integers(0, len(data) - 1))]
    if form == "flipped":
        position = draw(st.integers(0, len(data) - 1))
        return data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1 :]
    return data


@st.composite
def images(
    draw: st.DrawFn,
    refs: Sequence[str],
    regions: Sequence[str] = (),
    max_side: int = 48,
    dtypes: st.SearchStrategy[str] = ANY_DTYPE,
) -> types_pb2.Image:
    """An Image message of every kind: encoded bytes, a raw array, a data reference, or nothing; about half of them
    a decodable image within the services' limits."""
    kind = draw(st.sampled_from(["good", "good", "good", "encoded", "array", "ref", "unset"]))
    if kind == "good":
        form = draw(st.sampled_from(["png", "array", "ref"]))
        h, w = draw(st.integers(8, max_side)), draw(st.integers(8, max_side))
        if form == "png":
            mode = draw(st.sampled_from(["L", "RGB", "RGBA"]))
            return types_pb2.Image(encoded=encode(w, h, mode, "PNG", draw(st.integers(0, 99))))
        if form == "array":
            shape = draw(st.sampled_from([(h, w), (h, w, 3), (h, w, 4)]))
            return types_pb2.Image(array=inline(filled(np.dtype(np.uint8), shape, draw(st.integers(0, 99)), "none")))
        return types_pb2.Image(ref=types_pb2.DataRef(path=draw(st.sampled_from(list(refs)))))
    if kind == "encoded":
        return types_pb2.Image(encoded=draw(encoded_images(max_side)))
    if kind == "array":
        return types_pb2.Image(array=draw(tensors(arrays(image_shapes(max_side), dtypes), regions)))
    if kind == "ref":
        return types_pb2.Image(ref=types_pb2.DataRef(path=draw(data_refs(refs))))
    return types_pb2.Image()


@st.composite
def sized_images(draw: st.DrawFn, max_side: int = 48) -> tuple[types_pb2.Image, int, int]:
    """A valid 8-bit image of any size from 1x1 (PNG bytes or a raw array), with its height and width."""
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    channels = draw(st.sampled_from([0, 3, 4]))
    array = filled(np.dtype(np.uint8), (h, w, channels) if channels else (h, w), draw(st.integers(0, 99)), "none")
    if draw(st.booleans()):
        return types_pb2.Image(array=inline(array)), h, w
    return types_pb2.Image(encoded=encode_array(array)), h, w


def encode_array(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@st.composite
def boxes_inside(draw: st.DrawFn, height: int, width: int) -> types_pb2.BoxXYXY:
    """A box inside a height x width image: from a whole image down to a sliver."""
    x1, x2 = sorted(draw(st.tuples(st.floats(0, width, width=32), st.floats(0, width, width=32))))
    y1, y2 = sorted(draw(st.tuples(st.floats(0, height, width=32), st.floats(0, height, width=32))))
    return types_pb2.BoxXYXY(x1=x1, y1=y1, x2=x2, y2=y2)


def counts(limit: int) -> st.SearchStrategy[int]:
    """How many items a request holds: mostly 1..limit, sometimes none or one too many."""
    return mostly(st.integers(1, limit), st.sampled_from([0, limit + 1]))


@st.composite
def boxes(draw: st.DrawFn, side: int = 64) -> types_pb2.BoxXYXY:
    """Mostly plausible boxes near an image of about `side` pixels; sometimes any floats."""
    coord = mostly(st.floats(-4, side + 4, width=32), floats, weight=2)
    return types_pb2.BoxXYXY(x1=draw(coord), y1=draw(coord), x2=draw(coord), y2=draw(coord))


# -- data references --------------------------------------------------------------------------------------
# Names the fuzz data root (conftest.data_root) holds, and the ways a reference can go wrong.
ODD_REFS = [
    "", ".", "..", "/", "/etc/passwd", "/etc", "../escape.png", "images/../../escape.png", "images/..",
    "link_outside.png", "link_dir_outside", "link_dir_outside/secret.png", "loop", "loop/x.png", "dangling.png",
    "fifo.png", "fifo.npz", "dir.npz", "dir.png", "empty.png", "corrupt.png", "notes.txt", "broken.npz",
    "pickled.npz", "x" * 300, "images/" + "y" * 300 + ".png", "a\x00b.png", "~/x.png", "C:\\x.png", "\\\\host\\x",
    "images//grey.png", "./images/grey.png", "images/grey.png/", "images/grey.png/x", " images/grey.png",
    "images/grey.png\n", "%2e%2e/escape.png", "ü.png", "notes.txt/x.npz",
    "clips/leaky_frames", "clips/leaky_frames/frame_2.png", "clips/deep", "clips/deep/er", "clips/fifo_frames",
    "bomb.npz", "bomb.png",
]  # fmt: skip


def data_refs(good: Sequence[str]) -> st.SearchStrategy[str]:
    """Relative paths into the data root: ones that work, ones that must be refused, and anything else."""
    joined = st.lists(st.sampled_from(["..", ".", "images", "clips", "link_dir_outside", "loop", "x", ""]), max_size=4)
    anything = st.one_of(joined.map("/".join), st.text(max_size=16))
    return st.one_of(st.sampled_from(list(good)), mostly(st.sampled_from(ODD_REFS), anything, weight=2))
