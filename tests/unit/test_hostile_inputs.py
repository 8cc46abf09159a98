"""Requests the fuzz tests (tests/fuzz) found answered with INTERNAL, or hanging: each is now refused with
INVALID_ARGUMENT and a message, or answered correctly."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from modelyard.runtime.arrays import SHM_DIR, OutputWriter, SharedRegion, decode_image, numpy_to_tensor, tensor_to_numpy
from modelyard.runtime.errors import InvalidInput
from modelyard.runtime.frames import read_frames
from modelyard.runtime.paths import confined
from modelyard.v1 import types_pb2


# -- arrays -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [np.float32(1.5), np.array(7, np.int64), np.array(True)])
def test_a_zero_dimensional_array_keeps_its_shape_on_the_wire(value: np.ndarray) -> None:
    back = tensor_to_numpy(numpy_to_tensor(value), SHM_DIR)
    assert back.shape == () and back.dtype == np.asarray(value).dtype and back == value


@pytest.mark.parametrize("shape", [[2**32, 2**32], [2**62, 4], [2**40, 2**40, 0], [0, 2**63 - 1]])
def test_shapes_whose_element_count_overflows_int64_are_refused(shape: list[int], tmp_path: Path) -> None:
    # 2**32 x 2**32 elements "need" 0 bytes in int64 arithmetic, so no data used to pass the size check
    inline = types_pb2.Tensor(inline=types_pb2.NDArray(dtype="uint8", shape=shape, data=b""))
    with SharedRegion.create(64, tmp_path) as region:
        shared = types_pb2.Tensor(shared=types_pb2.SharedArray(region=region.name, dtype="uint8", shape=shape))
        for tensor in (inline, shared):
            with pytest.raises(InvalidInput, match="more elements than any array can"):
                tensor_to_numpy(tensor, tmp_path)


def test_an_empty_result_offered_a_zero_byte_output_region_travels_inline(tmp_path: Path) -> None:
    with SharedRegion.create(0, tmp_path) as region:
        writer = OutputWriter(types_pb2.OutputRegion(region=region.name), tmp_path)
        tensor = numpy_to_tensor(np.zeros((0, 3), np.float32), writer)
        writer.close()
    assert tensor.WhichOneof("payload") == "inline" and tuple(tensor.inline.shape) == (0, 3)


# -- data references --------------------------------------------------------------------------------------
@pytest.fixture
def root(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "notes.txt").write_text("a file")
    (data / "loop").symlink_to(data / "loop")
    os.mkfifo(data / "fifo.png")
    os.mkfifo(data / "fifo.npz")
    return data


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("loop", "cannot be resolved"),  # a symlink to itself
        ("loop/x.png", "cannot be resolved"),
        ("a\x00b.png", "cannot be resolved"),  # a NUL byte
        ("x" * 300, "cannot be resolved"),  # a name longer than the filesystem allows
        ("images/" + "y" * 300 + ".png", "cannot be resolved"),
    ],
)
def test_references_that_cannot_be_resolved_are_refused(root: Path, ref: str, message: str) -> None:
    for must_exist in (True, False):
        with pytest.raises(InvalidInput, match=message):
            confined(root, ref, must_exist=must_exist)


@pytest.mark.parametrize("ref", ["notes.txt/result.npz", "notes.txt/a/b/result.npz"])
def test_an_output_reference_under_a_file_is_refused_before_any_work(root: Path, ref: str) -> None:
    with pytest.raises(InvalidInput, match="is a file, not a folder"):
        confined(root, ref, must_exist=False)
    assert confined(root, "new/folder/result.npz", must_exist=False) == (root / "new/folder/result.npz").resolve()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("ref", ["images", ".", "fifo.png"])
def test_an_image_reference_to_a_folder_or_fifo_is_refused_not_read(root: Path, ref: str) -> None:
    image = types_pb2.Image(ref=types_pb2.DataRef(path=ref))
    with pytest.raises(InvalidInput, match="is not a regular file"):
        decode_image(image, SHM_DIR, root, max_pixels=10_000)


@pytest.mark.timeout(20)
def test_a_frame_sequence_that_is_a_fifo_is_refused_not_read(root: Path) -> None:
    with pytest.raises(InvalidInput, match="not a regular file or a folder"):
        read_frames(root, "fifo.npz")
