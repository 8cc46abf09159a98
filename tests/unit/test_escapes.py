"""No escape through shared memory or data references, and no allocation a request's real size does not justify:
links, FIFOs, foreign files and bombs are refused with a message before anything is read, mapped or allocated."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelyard.runtime import arrays
from modelyard.runtime.arrays import (
    SHM_DIR,
    OutputWriter,
    SharedRegion,
    decode_image,
    decode_image_bytes,
    numpy_to_tensor,
    tensor_to_numpy,
)
from modelyard.runtime.budget import RequestBudget
from modelyard.runtime.errors import Cancelled, DeadlineExceeded, InvalidInput
from modelyard.runtime.frames import read_frames
from modelyard.runtime.npyfiles import npz_headers
from modelyard.runtime.paths import read_confined
from modelyard.tapip3d import sequence
from modelyard.v1 import types_pb2

SECRET = b"the contents of a file nobody offered" * 4


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def shm(tmp_path: Path) -> Path:
    folder = tmp_path / "shm"
    folder.mkdir()
    return folder


@pytest.fixture
def target(tmp_path: Path) -> Path:
    file = tmp_path / "elsewhere" / "precious.bin"
    file.parent.mkdir()
    file.write_bytes(SECRET)
    return file


def shared(name: str, shape: list[int], dtype: str = "uint8") -> types_pb2.Tensor:
    return types_pb2.Tensor(shared=types_pb2.SharedArray(region=name, dtype=dtype, shape=shape))


# -- shared memory ------------------------------------------------------------------------------------------
def test_a_region_that_is_a_symlink_is_neither_read_nor_written(shm: Path, target: Path) -> None:
    (shm / "x").symlink_to(target)
    with pytest.raises(InvalidInput, match="is a symbolic link"):
        tensor_to_numpy(shared("x", [16]), shm)
    with pytest.raises(InvalidInput, match="is a symbolic link"):
        OutputWriter(types_pb2.OutputRegion(region="x"), shm)
    assert target.read_bytes() == SECRET


def test_a_region_that_is_a_hard_link_to_another_file_is_refused(shm: Path, target: Path) -> None:
    twin = shm.parent / "elsewhere" / "twin.bin"
    twin.write_bytes(SECRET)
    os.link(twin, shm / "x")
    with pytest.raises(InvalidInput, match="a link to another file"):
        OutputWriter(types_pb2.OutputRegion(region="x"), shm)
    assert twin.read_bytes() == SECRET


def test_a_region_that_is_a_fifo_or_a_folder_is_refused_without_blocking(shm: Path) -> None:
    os.mkfifo(shm / "fifo")
    (shm / "folder").mkdir()
    for name in ("fifo", "folder"):
        with pytest.raises(InvalidInput, match="not a regular file"):
            tensor_to_numpy(shared(name, [4]), shm)
        with pytest.raises(InvalidInput, match=r"not a regular file|cannot be opened"):
            OutputWriter(types_pb2.OutputRegion(region=name), shm)


def test_a_region_owned_by_an_untrusted_uid_is_refused_unless_the_config_trusts_it(
    shm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SharedRegion.create(64, shm) as region:
        region.write(0, np.arange(4, dtype=np.uint8))
        owner = os.stat(region.path).st_uid
        monkeypatch.setattr(os, "geteuid", lambda: owner + 4242)  # the service now runs as someone else
        with pytest.raises(InvalidInput, match=r"owned by uid .*runtime.shared_memory_uids"):
            tensor_to_numpy(shared(region.name, [4]), shm)
        arrays.trust_region_owners([owner])
        try:
            assert tensor_to_numpy(shared(region.name, [4]), shm).tolist() == [0, 1, 2, 3]
        finally:
            arrays.trust_region_owners([])


def test_an_array_past_the_end_of_its_region_is_refused_before_mapping(shm: Path) -> None:
    with SharedRegion.create(16, shm) as region:
        msg = types_pb2.Tensor(shared=types_pb2.SharedArray(region=region.name, offset=8, dtype="uint8", shape=[9]))
        with pytest.raises(InvalidInput, match=r"9 bytes at offset 8 overruns region .* \(16 bytes\)"):
            tensor_to_numpy(msg, shm)


def test_input_regions_are_mapped_read_only(shm: Path) -> None:
    with SharedRegion.create(16, shm) as region:
        view = tensor_to_numpy(shared(region.name, [16]), shm)
        assert not view.flags.writeable
        with pytest.raises(ValueError):
            view.flags.writeable = True


def test_every_view_of_a_read_only_mapping_is_read_only(shm: Path) -> None:
    # (the service's input views rely on it: a write to pages mapped without write access would crash it)
    with SharedRegion.create(64, shm) as region:
        attached = SharedRegion.attach(shm, region.name)
        try:
            for shape in ((64,), (4, 16)):
                view = attached.view(0, np.dtype("uint8"), shape)
                assert not view.flags.writeable
                with pytest.raises(ValueError):
                    view.flags.writeable = True
                with pytest.raises(ValueError):
                    view[0] = 1
        finally:
            attached.close()


def test_a_result_that_does_not_fit_the_callers_region_travels_inline(shm: Path) -> None:
    with SharedRegion.create(64, shm) as region:
        writer = OutputWriter(types_pb2.OutputRegion(region=region.name), shm)
        small = numpy_to_tensor(np.arange(4, dtype=np.int32), writer)
        large = numpy_to_tensor(np.arange(100, dtype=np.int32), writer)
        assert small.WhichOneof("payload") == "shared" and large.WhichOneof("payload") == "inline"
        assert not large.HasField("shared")
        assert tensor_to_numpy(large, shm).tolist() == list(range(100))


def test_results_still_go_into_a_callers_own_region(shm: Path) -> None:
    with SharedRegion.create(4096, shm) as region:
        writer = OutputWriter(types_pb2.OutputRegion(region=region.name), shm)
        tensor = numpy_to_tensor(np.arange(10, dtype=np.int32), writer)
        writer.close()
        assert tensor.WhichOneof("payload") == "shared"
        assert region.view(tensor.shared.offset, np.dtype("int32"), (10,)).tolist() == list(range(10))


# -- data references ----------------------------------------------------------------------------------------
@pytest.fixture
def root(tmp_path: Path, target: Path) -> Path:
    data = tmp_path / "data"
    clip = data / "clip"
    clip.mkdir(parents=True)
    for index in range(3):
        (clip / f"frame_{index}.png").write_bytes(png(np.full((8, 8), index * 40, np.uint8)))
    outside = tmp_path / "elsewhere" / "outside.png"
    outside.write_bytes(png(np.full((8, 8), 255, np.uint8)))
    leaky = data / "leaky"
    leaky.mkdir()
    (leaky / "frame_0.png").write_bytes(png(np.zeros((8, 8), np.uint8)))
    (leaky / "frame_1.png").symlink_to(outside)  # a frame leading out of the data volume
    deep = data / "deep" / "er"
    deep.mkdir(parents=True)
    (deep / "frame_0.png").symlink_to(outside)
    (data / "linked_folder").symlink_to(tmp_path / "elsewhere")
    with_fifo = data / "with_fifo"
    with_fifo.mkdir()
    os.mkfifo(with_fifo / "frame_0.png")
    (with_fifo / "frame_1.png").write_bytes(png(np.zeros((8, 8), np.uint8)))
    with_link_to_fifo = data / "with_link_to_fifo"
    with_link_to_fifo.mkdir()
    (with_link_to_fifo / "frame_0.png").symlink_to(with_fifo / "frame_0.png")
    return data


def test_a_folder_sequence_reads_its_frames_in_order(root: Path) -> None:
    frames = read_frames(root, "clip")
    assert [int(f[0, 0]) for f in frames.frames] == [0, 40, 80]


@pytest.mark.parametrize("ref", ["leaky", "deep/er", "linked_folder"])
def test_a_frame_or_folder_linking_out_of_the_data_volume_is_refused(root: Path, ref: str) -> None:
    with pytest.raises(InvalidInput, match="escapes the data volume"):
        read_frames(root, ref)


def test_a_fifo_is_never_read_as_a_frame_nor_blocks_the_call(root: Path) -> None:
    assert read_frames(root, "with_fifo").total == 1  # a FIFO in the folder is not one of its frames
    with pytest.raises(InvalidInput, match="not a regular file"):  # nor is one behind a link named like a frame
        read_frames(root, "with_link_to_fifo")


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(root: Path) -> None:
    with pytest.raises(InvalidInput, match=r"over this service's limit of 10 bytes per file \(runtime.max_file_mb\)"):
        read_confined(root, "clip/frame_0.png", max_bytes=10)
    assert read_confined(root, "clip/frame_0.png", max_bytes=10_000).startswith(b"\x89PNG")


# -- bombs --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1.1 MB .npz declaring a 1.2 GB video (the issue's reproduction)."""
    path = tmp_path_factory.mktemp("bombs") / "bomb.npz"
    np.savez_compressed(path, video=np.zeros((1, 20000, 20000, 3), np.uint8))
    return path


def test_an_npz_bomb_is_refused_from_its_header_by_frame_sequences(bomb: Path) -> None:
    budget = RequestBudget(512, 300_000_000)
    with pytest.raises(InvalidInput, match="20000x20000 frames are over the limit of 50000000 pixels"):
        read_frames(bomb.parent, bomb.name, max_pixels=50_000_000, budget=budget)
    assert budget.used == 0  # refused before anything was charged, let alone inflated


def test_an_npz_bomb_is_refused_from_its_header_by_tapip3d(bomb: Path) -> None:
    limits = sequence.Limits(max_frames=2000, max_points=4096, max_pixels=1_500_000, max_voxels=600_000_000)
    with pytest.raises(InvalidInput, match="over this service's limit of 1500000 "):
        sequence.read_npz(bomb, limits)


def test_a_clip_over_the_voxel_budget_is_refused_before_loading(tmp_path: Path) -> None:
    path = tmp_path / "long.npz"
    np.savez(path, video=np.zeros((50, 10, 10, 3), np.uint8), depths=np.ones((50, 10, 10), np.float32))
    limits = sequence.Limits(max_frames=2000, max_points=4096, max_pixels=1_000, max_voxels=4_000)
    with pytest.raises(InvalidInput, match=r"5000 voxels, over this service's budget of 4000 .*max_request_pixels"):
        sequence.read_npz(path, limits)


def test_an_npz_member_declaring_more_than_the_limit_is_refused_before_inflating(bomb: Path) -> None:
    with pytest.raises(InvalidInput, match="declares 1200000128 bytes uncompressed, over this service's limit"):
        npz_headers(bomb, 1_000_000, "bomb.npz")


def test_an_npz_whose_header_promises_more_than_its_member_holds_is_refused(tmp_path: Path) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (1000, 1000)})
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("video.npy", header.getvalue() + b"\0" * 10)
    with pytest.raises(InvalidInput, match="the file is damaged"):
        npz_headers(path, 1 << 30, "liar.npz")


def test_an_npz_with_a_member_that_is_not_an_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(InvalidInput, match=r"'notes\.txt' is not an \.npy array"):
        npz_headers(path, 1 << 30, "odd.npz")


def test_an_image_bomb_is_refused_from_its_header_before_decoding() -> None:
    # 20000 x 20000 of zeros: a 1.2 MB PNG that would decode into 400 MB
    image = Image.new("L", (20000, 20000))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    with pytest.raises(InvalidInput, match=r"pixels than this service's limit of 1000000 \(model.max_pixels\)"):
        decode_image_bytes(buffer.getvalue(), 1_000_000, "image")  # PIL's own guard refuses it on open
    small = io.BytesIO()
    Image.new("L", (2000, 2000)).save(small, format="PNG")
    with pytest.raises(InvalidInput, match="2000x2000 is over this service's limit of 1000000 pixels"):
        decode_image_bytes(small.getvalue(), 1_000_000, "image")  # and ours, from the header


def test_decode_errors_never_show_object_reprs() -> None:
    noise = png(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8))
    for data in (b"not an image at all", noise[:300]):
        with pytest.raises(InvalidInput) as err:
            decode_image_bytes(data, 1_000_000, "image 3")
        assert "object at 0x" not in err.value.message and "not a decodable image" in err.value.message


# -- per-request budgets ------------------------------------------------------------------------------------
class Context:
    def __init__(self, remaining: float | None = 10.0, active: bool = True) -> None:
        self.remaining, self.active = remaining, active

    def is_active(self) -> bool:
        return self.active

    def time_remaining(self) -> float | None:
        return self.remaining


def test_a_budget_refuses_too_many_items_naming_its_config_key() -> None:
    budget = RequestBudget(64, 1000, items_key="model.max_items_per_request")
    budget.count(64)
    with pytest.raises(InvalidInput, match=r"4000 items in one request, over the limit of 64 .*max_items_per_request"):
        budget.count(4000)


def test_a_budget_refuses_once_the_request_s_pixels_add_up_past_it() -> None:
    budget = RequestBudget(10, 1000)
    images = [types_pb2.Image(encoded=png(np.zeros((16, 16), np.uint8))) for _ in range(4)]
    for index in range(3):
        decode_image(images[index], SHM_DIR, None, 10_000, f"item {index}", budget)
    with pytest.raises(InvalidInput, match=r"item 3: .* over 1000 pixels, .*\(model.max_request_pixels\)"):
        decode_image(images[3], SHM_DIR, None, 10_000, "item 3", budget)


def test_preparation_stops_when_the_deadline_passed_or_the_caller_cancelled() -> None:
    with pytest.raises(DeadlineExceeded, match="while the request's items were being prepared"):
        RequestBudget(10, 1000, Context(remaining=0.0)).charge(1, "item 0")
    with pytest.raises(Cancelled):
        RequestBudget(10, 1000, Context(active=False)).charge(1, "item 0")
    RequestBudget(10, 1000, Context(remaining=None)).charge(1, "item 0")  # no deadline: fine


def test_the_gateway_decodes_images_with_the_services_guard() -> None:
    from modelyard.gateway.pipelines.medvqa import _decode

    bomb = io.BytesIO()
    Image.new("L", (8000, 8000)).save(bomb, format="PNG")  # 64 M pixels from a few tens of KB
    with pytest.raises(InvalidInput, match="8000x8000 is over this service's limit of 50000000 pixels"):
        _decode(bomb.getvalue(), "scan.png")
    with pytest.raises(InvalidInput) as err:
        _decode(b"not an image", "notes.png")
    assert "object at 0x" not in err.value.message
    assert _decode(png(np.zeros((4, 4), np.uint8)), "ok.png").shape == (4, 4)
