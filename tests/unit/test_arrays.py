"""Arrays on the wire: inline and shared memory, validated; data references confined to the data volume."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelyard.runtime.arrays import SHM_DIR, OutputWriter, SharedRegion, decode_image, numpy_to_tensor, tensor_to_numpy
from modelyard.runtime.errors import InvalidInput
from modelyard.runtime.paths import confined
from modelyard.v1 import types_pb2


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "float64", "bool"])
def test_inline_arrays_round_trip(dtype: str) -> None:
    array = (np.arange(24).reshape(2, 3, 4) % 7).astype(dtype)
    back = tensor_to_numpy(numpy_to_tensor(array), SHM_DIR)
    assert back.dtype == array.dtype and back.shape == array.shape and np.array_equal(back, array)


def test_big_endian_arrays_arrive_little_endian_with_the_same_values() -> None:
    array = np.arange(5, dtype=">f4")
    assert np.array_equal(tensor_to_numpy(numpy_to_tensor(array), SHM_DIR), array)


def test_a_byte_count_that_does_not_match_shape_and_dtype_is_refused() -> None:
    msg = types_pb2.Tensor(inline=types_pb2.NDArray(dtype="float32", shape=[2, 2], data=b"\0" * 15))
    with pytest.raises(InvalidInput, match="15 bytes of data, but dtype float32 and shape"):
        tensor_to_numpy(msg, SHM_DIR)


def test_unknown_dtypes_and_empty_tensors_are_refused() -> None:
    with pytest.raises(InvalidInput, match="dtype 'complex64' is not supported"):
        tensor_to_numpy(types_pb2.Tensor(inline=types_pb2.NDArray(dtype="complex64", shape=[1], data=b"")), SHM_DIR)
    with pytest.raises(InvalidInput, match="empty Tensor"):
        tensor_to_numpy(types_pb2.Tensor(), SHM_DIR)


def test_shared_memory_round_trip_leaves_no_region_behind(tmp_path: Path) -> None:
    array = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    with SharedRegion.create(array.nbytes, tmp_path) as region:
        region.write(0, array)
        msg = types_pb2.Tensor(
            shared=types_pb2.SharedArray(region=region.name, offset=0, dtype="float32", shape=[64, 64])
        )
        assert np.array_equal(tensor_to_numpy(msg, tmp_path), array)
        with SharedRegion.create(1 << 16, tmp_path) as out_region:
            writer = OutputWriter(types_pb2.OutputRegion(region=out_region.name, capacity=out_region.size), tmp_path)
            placed = numpy_to_tensor(array, writer)
            assert placed.WhichOneof("payload") == "shared"
            assert np.array_equal(out_region.view(placed.shared.offset, np.dtype("float32"), (64, 64)), array)
            too_big = numpy_to_tensor(np.zeros(1 << 16, np.uint8), writer)
            assert too_big.WhichOneof("payload") == "inline"  # falls back when the region is full
            writer.close()
    assert list(tmp_path.iterdir()) == []


def test_region_names_cannot_escape_the_shared_memory_folder(tmp_path: Path) -> None:
    msg = types_pb2.Tensor(shared=types_pb2.SharedArray(region="../etc/passwd", dtype="uint8", shape=[1]))
    with pytest.raises(InvalidInput, match="region name"):
        tensor_to_numpy(msg, tmp_path)
    missing = types_pb2.Tensor(shared=types_pb2.SharedArray(region="nope", dtype="uint8", shape=[1]))
    with pytest.raises(InvalidInput, match="send the array inline"):
        tensor_to_numpy(missing, tmp_path)


def test_reading_past_the_end_of_a_region_is_refused(tmp_path: Path) -> None:
    with SharedRegion.create(16, tmp_path) as region:
        msg = types_pb2.Tensor(shared=types_pb2.SharedArray(region=region.name, dtype="float32", shape=[8]))
        with pytest.raises(InvalidInput, match="overruns region"):
            tensor_to_numpy(msg, tmp_path)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_images_decode_from_png_bytes_in_their_own_mode() -> None:
    grey = np.arange(60, dtype=np.uint8).reshape(6, 10)
    assert np.array_equal(decode_image(types_pb2.Image(encoded=png(grey)), SHM_DIR, None, 10**6), grey)
    rgba = np.zeros((4, 5, 4), np.uint8)
    assert decode_image(types_pb2.Image(encoded=png(rgba)), SHM_DIR, None, 10**6).shape == (4, 5, 4)
    grey16 = (np.arange(20, dtype=np.uint16) * 3000).reshape(4, 5)
    assert np.array_equal(decode_image(types_pb2.Image(encoded=png(grey16)), SHM_DIR, None, 10**6), grey16)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (types_pb2.Image(encoded=b"not an image"), "not a decodable image"),
        (types_pb2.Image(encoded=b""), "no bytes"),
        (types_pb2.Image(), "empty Image"),
        (types_pb2.Image(array=numpy_to_tensor(np.zeros((0, 4), np.uint8))), "empty image"),
        (types_pb2.Image(array=numpy_to_tensor(np.zeros((4, 4, 2), np.uint8))), "is not (H,W), (H,W,3) or (H,W,4)"),
        (types_pb2.Image(array=numpy_to_tensor(np.zeros(4, np.uint8))), "is not (H,W)"),
        (types_pb2.Image(array=numpy_to_tensor(np.full((2, 2), np.nan, np.float32))), "NaN"),
        (types_pb2.Image(array=numpy_to_tensor(np.zeros((100, 100), np.uint8))), "over this service's limit"),
        (types_pb2.Image(encoded=png(np.zeros((100, 100), np.uint8))), "over this service's limit"),
        (types_pb2.Image(ref=types_pb2.DataRef(path="a.png")), "no data volume"),
    ],
)
def test_bad_images_say_what_is_wrong(image: types_pb2.Image, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        decode_image(image, SHM_DIR, None, max_pixels=5000)
    assert message in err.value.message


def test_data_references_stay_inside_the_data_volume(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "a.npz").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("no")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    assert confined(root, "videos/a.npz") == (root / "videos" / "a.npz").resolve()
    for bad, message in [
        ("../secret.txt", "escapes the data volume"),
        ("link.txt", "escapes the data volume"),
        (str(tmp_path / "secret.txt"), "is absolute"),
        ("videos/missing.npz", "does not exist"),
        ("", "empty"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            confined(root, bad)


def test_images_load_from_data_references(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(png(np.full((3, 3), 7, np.uint8)))
    image = decode_image(types_pb2.Image(ref=types_pb2.DataRef(path="x.png")), SHM_DIR, tmp_path, 100)
    assert image.shape == (3, 3) and image[0, 0] == 7
