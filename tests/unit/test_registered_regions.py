"""Registered shared memory: the caller's pool of regions, the server's cache of mappings, nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from modelyard.runtime import arrays
from modelyard.runtime.arrays import (
    MappedRegions,
    OutputWriter,
    SharedRegion,
    numpy_to_tensor,
    remove_orphaned_regions,
    tensor_to_numpy,
)
from modelyard.runtime.client import SharedMemoryClient
from modelyard.runtime.errors import InvalidInput
from modelyard.v1 import types_pb2


@pytest.fixture
def shm(tmp_path: Path) -> Path:
    folder = tmp_path / "shm"
    folder.mkdir()
    return folder


class LocalPeer:
    """A peer in this process that answers the probe as a service would (it can open this folder's regions)."""

    def __init__(self, shm: Path) -> None:
        self.shm = shm

    def info(self, request: types_pb2.InfoRequest) -> types_pb2.ModelInfo:
        token = request.shared_memory_token
        region = SharedRegion.attach(self.shm, request.shared_memory_probe, span=(0, len(token)))
        with region:
            same = region.view(0, np.dtype("uint8"), (len(token),)).tobytes() == token
        return types_pb2.ModelInfo(shared_memory_ok=same)

    def echo(self, tensor: types_pb2.Tensor, output: types_pb2.OutputRegion) -> types_pb2.Tensor:
        array = tensor_to_numpy(tensor, self.shm)
        writer = OutputWriter.optional(output, self.shm)
        return numpy_to_tensor(array, writer)


def shared(region: SharedRegion, nbytes: int, offset: int = 0) -> types_pb2.Tensor:
    return types_pb2.Tensor(
        shared=types_pb2.SharedArray(region=region.name, offset=offset, dtype="uint8", shape=[nbytes])
    )


# -- the caller's pool -----------------------------------------------------------------------------------------
def test_a_region_is_reused_by_the_next_call_once_the_result_was_read(shm: Path) -> None:
    peer = LocalPeer(shm)
    with SharedMemoryClient(peer.info, shm) as client:
        assert client.enabled
        names = []
        for value in range(5):
            array = np.full(1000, value, np.uint8)
            tensor, output = client.tensor(array), client.output_region(array.nbytes)
            assert np.array_equal(client.read(peer.echo(tensor, output)), array)
            names.append((tensor.shared.region, output.region))
        assert len(set(names)) == 1 and len(client.regions) == 2
    assert list(shm.iterdir()) == []


def test_a_result_read_in_place_is_a_read_only_view_until_the_next_call(shm: Path) -> None:
    peer = LocalPeer(shm)
    with SharedMemoryClient(peer.info, shm) as client:
        first = np.arange(1000, dtype=np.uint8)
        result = client.read(peer.echo(client.tensor(first), client.output_region(first.nbytes)), copy=False)
        assert np.array_equal(result, first) and not result.flags.writeable and not result.flags.owndata
        with pytest.raises(ValueError, match="read-only"):
            result[0] = 1
        second = np.full(1000, 7, np.uint8)  # the next call reuses the region the view shows
        again = client.read(peer.echo(client.tensor(second), client.output_region(second.nbytes)))
        assert np.array_equal(again, second) and np.array_equal(result, second)
    assert list(shm.iterdir()) == []


def test_an_input_filled_in_place_travels_without_a_copy(shm: Path) -> None:
    peer = LocalPeer(shm)
    with SharedMemoryClient(peer.info, shm) as client:
        frame = client.array((20, 50), np.uint8)
        frame[:] = np.arange(50, dtype=np.uint8)
        tensor = client.tensor(frame)
        assert len(client.regions) == 1 and tensor.shared.region == client.regions[0]  # named where it lies
        part = client.tensor(frame[4:6])  # a contiguous part of it: the same region, at its offset
        assert (part.shared.region, part.shared.offset) == (tensor.shared.region, 200)
        result = client.read(peer.echo(tensor, client.output_region(frame.nbytes)))
        assert np.array_equal(result, np.tile(np.arange(50, dtype=np.uint8), (20, 1)))


def test_a_kept_input_is_sent_by_every_call_without_a_copy_and_never_lent_to_another(shm: Path) -> None:
    peer = LocalPeer(shm)
    with SharedMemoryClient(peer.info, shm) as client:
        kept = client.array(1000, np.uint8, keep=True)
        kept[:] = np.arange(1000) % 251
        home = client.regions[0]
        for value in range(3):
            other = client.tensor(np.full(10, value, np.uint8))  # a per-call input beside the kept one
            tensor, output = client.tensor(kept), client.output_region(kept.nbytes)
            assert (tensor.shared.region, tensor.shared.offset) == (home, 0)
            assert home not in (other.shared.region, output.region)
            assert np.array_equal(client.read(peer.echo(tensor, output)), np.arange(1000) % 251)
        assert len(client.regions) == 3  # the kept region, and the two the calls reused

        seen: list[str] = []  # any thread's call names it too
        worker = threading.Thread(target=lambda: seen.append(client.tensor(kept[10:20]).shared.region))
        worker.start()
        worker.join()
        assert seen == [home]

        client.discard(kept)  # back to the pool: the next call's three inputs take the three regions
        client.release()
        lent = {client.tensor(np.zeros(10, np.uint8)).shared.region for _ in range(3)}
        assert home in lent and len(client.regions) == 3
    assert list(shm.iterdir()) == []


def test_without_shared_memory_an_array_to_fill_is_an_ordinary_one(shm: Path) -> None:
    with SharedMemoryClient(lambda request: types_pb2.ModelInfo(shared_memory_ok=False), shm) as client:
        frame = client.array((2, 3), np.float32)
        assert frame.shape == (2, 3) and frame.dtype == np.float32 and client.regions == []
        frame[:] = 1
        assert client.tensor(frame).WhichOneof("payload") == "inline"


def test_arrays_of_one_call_each_get_their_own_region(shm: Path) -> None:
    peer = LocalPeer(shm)
    with SharedMemoryClient(peer.info, shm) as client:
        first, second = client.tensor(np.zeros(10, np.uint8)), client.tensor(np.ones(10, np.uint8))
        assert first.shared.region != second.shared.region
        assert tensor_to_numpy(first, shm).tolist() == [0] * 10  # the second array did not overwrite the first


def test_the_pool_grows_to_fit_a_larger_array_and_keeps_the_smaller_region_for_later(shm: Path) -> None:
    peer = LocalPeer(shm)
    with SharedMemoryClient(peer.info, shm) as client:
        small = client.tensor(np.zeros(10, np.uint8))
        client.read(peer.echo(small, types_pb2.OutputRegion()))
        big = client.tensor(np.zeros(3 << 20, np.uint8))
        assert big.shared.region != small.shared.region
        assert os.stat(shm / big.shared.region).st_size == 4 << 20  # a power of two, at least the array
        client.read(peer.echo(big, types_pb2.OutputRegion()))
        assert client.tensor(np.zeros(10, np.uint8)).shared.region == small.shared.region  # the smallest that fits


def test_concurrent_threads_never_hold_the_same_region_at_once(shm: Path) -> None:
    peer = LocalPeer(shm)
    lock, in_use = threading.Lock(), set[str]()
    problems: list[str] = []
    with SharedMemoryClient(peer.info, shm) as client:
        barrier = threading.Barrier(4)

        def work(index: int) -> None:
            barrier.wait()
            for _ in range(20):
                array = np.full(4096, index, np.uint8)
                tensor, output = client.tensor(array), client.output_region(4096)
                names = {tensor.shared.region, output.region}
                with lock:
                    if names & in_use:
                        problems.append(f"thread {index} was handed {names & in_use}, in use by another")
                    in_use.update(names)
                if not np.array_equal(client.read(peer.echo(tensor, output)), array):
                    problems.append(f"thread {index} read another thread's array")
                with lock:  # (the client frees them only at this thread's next call: a stricter rule than this)
                    in_use.difference_update(names)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert problems == []
        assert len(client.regions) <= 8  # regions freed by one thread's finished call are reused by others


def test_beyond_its_byte_limit_the_pool_sends_arrays_inline(shm: Path) -> None:
    peer = LocalPeer(shm)
    with SharedMemoryClient(peer.info, shm, max_bytes=2 << 20) as client:
        assert client.tensor(np.zeros(1 << 20, np.uint8)).WhichOneof("payload") == "shared"
        assert client.tensor(np.zeros(1 << 20, np.uint8)).WhichOneof("payload") == "shared"
        assert client.tensor(np.zeros(1 << 20, np.uint8)).WhichOneof("payload") == "inline"
        assert client.output_region(1 << 20) == types_pb2.OutputRegion()  # results come back inline
        client.release()
        assert client.tensor(np.zeros(1 << 20, np.uint8)).WhichOneof("payload") == "shared"
        assert sum(os.stat(shm / name).st_size for name in client.regions) <= 2 << 20


def test_a_result_naming_a_region_the_client_did_not_offer_is_refused(shm: Path) -> None:
    peer = LocalPeer(shm)
    with (
        SharedMemoryClient(peer.info, shm) as client,
        SharedRegion.create(64, shm) as other,
        pytest.raises(ValueError, match="which this client did not offer"),
    ):
        client.read(shared(other, 8))


def test_regions_of_a_killed_client_are_removed_by_the_next_one(shm: Path) -> None:
    script = (
        "import os, sys; from pathlib import Path; from modelyard.runtime.arrays import SharedRegion;"
        "region = SharedRegion.create(64, Path(sys.argv[1])); print(region.name, flush=True); os._exit(0)"
    )
    name = subprocess.run([sys.executable, "-c", script, str(shm)], capture_output=True, text=True, check=True)
    left = name.stdout.strip()
    assert (shm / left).exists()  # it died without unlinking
    (shm / "someone-elses-file").write_bytes(b"x")
    with SharedMemoryClient(LocalPeer(shm).info, shm):
        assert not (shm / left).exists()
    assert [p.name for p in shm.iterdir()] == ["someone-elses-file"]


def test_orphan_removal_leaves_live_processes_and_links_alone(shm: Path, tmp_path: Path) -> None:
    with SharedRegion.create(64, shm) as live:
        target = tmp_path / "target"
        target.write_bytes(b"keep")
        link = shm / f"modelyard-n{arrays._PID_NAMESPACE}-999999999-{'0' * 12}"  # a dead pid's name, but a link
        link.symlink_to(target)
        assert remove_orphaned_regions(shm) == []
        assert live.path.exists() and link.is_symlink() and target.read_bytes() == b"keep"


# -- the server's mappings --------------------------------------------------------------------------------------
def test_a_region_is_mapped_once_and_reused_while_its_file_is_unchanged(shm: Path) -> None:
    mappings = MappedRegions()
    with SharedRegion.create(1 << 16, shm) as region:
        first = mappings.get(shm, region.name, writable=False, span=(0, 16))
        assert mappings.get(shm, region.name, writable=False, span=(0, 16)) is first
        region.write(0, np.arange(16, dtype=np.uint8))  # new contents, same file: still the same mapping
        again = mappings.get(shm, region.name, writable=False, span=(0, 16))
        assert again is first and again.view(0, np.dtype("uint8"), (16,)).tolist() == list(range(16))


def test_a_mapping_is_dropped_when_its_file_goes(shm: Path) -> None:
    mappings = MappedRegions()
    region = SharedRegion.create(64, shm)
    mappings.get(shm, region.name, writable=False, span=(0, 8))
    region.close()  # the caller unlinks it
    assert mappings.sweep() == 0
    with pytest.raises(InvalidInput, match="not found"):
        mappings.get(shm, region.name, writable=False, span=(0, 8))


def test_the_sweep_runs_by_itself_while_mappings_are_held(shm: Path) -> None:
    mappings = MappedRegions(sweep_s=0.05)
    region = SharedRegion.create(64, shm)
    mappings.get(shm, region.name, writable=False, span=(0, 8))
    region.close()
    for _ in range(200):
        if len(mappings) == 0:
            break
        threading.Event().wait(0.05)
    assert len(mappings) == 0


def test_a_file_replaced_at_the_same_name_is_checked_again(shm: Path, tmp_path: Path) -> None:
    mappings = MappedRegions()
    region = SharedRegion.create(64, shm)
    mappings.get(shm, region.name, writable=True, span=(0, 8))
    region.close()
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 64)
    (shm / region.name).symlink_to(secret)
    with pytest.raises(InvalidInput, match="symbolic link"):
        mappings.get(shm, region.name, writable=True, span=(0, 8))
    assert secret.read_bytes() == b"s" * 64


def test_a_region_that_changed_size_is_mapped_again_and_bounds_follow_the_new_size(shm: Path) -> None:
    mappings = MappedRegions()
    with SharedRegion.create(64, shm) as region:
        first = mappings.get(shm, region.name, writable=False, span=(0, 64))
        os.truncate(region.path, 32)
        with pytest.raises(InvalidInput, match="overruns region"):
            mappings.get(shm, region.name, writable=False, span=(0, 64))
        again = mappings.get(shm, region.name, writable=False, span=(0, 32))
        assert again is not first and again.size == 32


def test_a_cached_region_is_refused_once_its_owner_is_no_longer_trusted(
    shm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mappings = MappedRegions()
    with SharedRegion.create(64, shm) as region:
        mappings.get(shm, region.name, writable=False, span=(0, 8))
        owner = os.stat(region.path).st_uid
        monkeypatch.setattr(os, "geteuid", lambda: owner + 4242)
        with pytest.raises(InvalidInput, match="owned by uid"):
            mappings.get(shm, region.name, writable=False, span=(0, 8))


def test_the_cache_keeps_at_most_its_limit_of_mappings(shm: Path) -> None:
    mappings = MappedRegions(max_regions=3)
    regions = [SharedRegion.create(64, shm) for _ in range(5)]
    try:
        for region in regions:
            mappings.get(shm, region.name, writable=False, span=(0, 8))
        assert len(mappings) == 3
    finally:
        for region in regions:
            region.close()


def test_the_server_never_creates_or_unlinks_a_file(shm: Path) -> None:
    with SharedRegion.create(4096, shm) as region:
        before = sorted(os.listdir(shm))
        for _ in range(3):
            array = tensor_to_numpy(shared(region, 64), shm)
            writer = OutputWriter(types_pb2.OutputRegion(region=region.name, offset=1024), shm)
            numpy_to_tensor(array, writer)
            writer.close()
        assert sorted(os.listdir(shm)) == before
