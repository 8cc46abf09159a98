"""A real gateway and real MedSAM services on loopback, facing inputs and events that used to wedge it or leave
things behind: FIFOs and folders named as images, cancel and SIGTERM while a call hangs, an item that keeps
cutting its job short, orphan temporary files, the data root as output, malformed CSVs, fast jobs' streams."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from modelyard.demo.samples import write_medvqa_inputs
from modelyard.gateway.client import GatewayClient
from modelyard.runtime.launch import LocalService
from tests.conftest import write_config
from tests.gateway.test_gateway_medvqa import GOLD, Gateway


@pytest.fixture(scope="module")
def medsam(tmp_path_factory: pytest.TempPathFactory, tiny_model_section: dict) -> Iterator[LocalService]:
    folder = tmp_path_factory.mktemp("medsam")
    config = write_config(folder, tiny_model_section, {"max_batch_size": 2}, "medsam.yaml")
    with LocalService("medsam", config, log_path=folder / "medsam.log") as service:
        yield service


@pytest.fixture(scope="module")
def slow_medsam(tmp_path_factory: pytest.TempPathFactory, tiny_model_section: dict) -> Iterator[LocalService]:
    """MedSAM told to wait 10 minutes for a batch to fill: every call hangs until the gateway gives up on it."""
    folder = tmp_path_factory.mktemp("slow-medsam")
    runtime = {"max_batch_size": 64, "batch_wait_ms": 600_000, "drain_seconds": 1}
    config = write_config(folder, tiny_model_section, runtime, "medsam.yaml")
    with LocalService("medsam", config, log_path=folder / "medsam.log") as service:
        yield service


@pytest.fixture(scope="module")
def unhurried_medsam(tmp_path_factory: pytest.TempPathFactory, tiny_model_section: dict) -> Iterator[LocalService]:
    """MedSAM gathering each batch for 4 s: every call takes that long, then is answered."""
    folder = tmp_path_factory.mktemp("unhurried-medsam")
    config = write_config(folder, tiny_model_section, {"max_batch_size": 64, "batch_wait_ms": 4000}, "medsam.yaml")
    with LocalService("medsam", config, log_path=folder / "medsam.log") as service:
        yield service


def gateway_config(root: Path, medsam: LocalService, **extra: object) -> Path:
    path = root / "gateway.yaml"
    services = {"medsam": {"addresses": [medsam.address], "backoff_initial_s": 0.1, "max_attempts": 5}}
    path.write_text(yaml.safe_dump({"data_root": str(root), "services": services, **extra}))
    return path


def add_rows(table: Path, images: list[str]) -> None:
    """Append rows naming `images`, copying the first row's question and boxes."""
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    rows += [{**rows[0], "image_path": image} for image in images]
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def errors_by_image(root: Path, job_id: str) -> dict[str, str]:
    with sqlite3.connect(root / ".modelyard" / "jobs.sqlite") as db:
        rows = db.execute("SELECT key, error FROM items WHERE job_id = ?", (job_id,)).fetchall()
    return {key.split(":")[1]: error for key, error in rows}


def wait_for(predicate: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)
    assert predicate(), "condition not reached"  # type: ignore[operator]


@pytest.mark.timeout(180)
def test_a_fifo_a_folder_and_garbage_named_as_images_fail_only_their_items(
    tmp_path: Path, medsam: LocalService
) -> None:
    table = write_medvqa_inputs(tmp_path / "in", count=2)
    os.mkfifo(tmp_path / "in" / "images" / "fifo.png")  # opening it to read would block forever
    (tmp_path / "in" / "images" / "folder.png").mkdir()
    (tmp_path / "in" / "images" / "garbage.png").write_bytes(b"not an image at all")
    add_rows(table, ["images/fifo.png", "images/folder.png", "images/garbage.png"])
    gateway = Gateway(gateway_config(tmp_path, medsam), tmp_path / "log").start()
    client = GatewayClient(gateway.address)
    try:
        final = list(client.run("medvqa", "in/questions.csv", "out", GOLD))[-1].job
        assert final.state == "failed" and final.done == 2 and final.failed == 3
        errors = errors_by_image(tmp_path, final.id)
        not_regular = "not a regular file: name a file"
        assert errors["images/fifo.png"] == f"image in/images/fifo.png is a FIFO (named pipe), {not_regular}"
        assert errors["images/folder.png"] == f"image in/images/folder.png is a folder, {not_regular}"
        assert "image in/images/garbage.png: the bytes are not a decodable image" in errors["images/garbage.png"]
        assert not any("object at 0x" in e or "Errno" in e for e in errors.values())
        assert len((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()) == 2
    finally:
        client.close()
        gateway.stop()


@pytest.mark.timeout(180)
def test_cancel_ends_a_job_whose_calls_hang_within_ten_seconds(tmp_path: Path, slow_medsam: LocalService) -> None:
    write_medvqa_inputs(tmp_path / "in", count=6)
    gateway = Gateway(gateway_config(tmp_path, slow_medsam), tmp_path / "log").start()
    client = GatewayClient(gateway.address)
    try:
        job = client.submit("medvqa", "in/questions.csv", "out", {**GOLD, "BATCH_SIZE": "3"})
        wait_for(lambda: client.get(job.id).running == 3)
        started = time.monotonic()
        client.cancel(job.id)
        wait_for(lambda: client.get(job.id).state == "cancelled", timeout=10)
        assert time.monotonic() - started < 10
        stopped = client.get(job.id)
        assert stopped.pending == 6 and stopped.running == 0 and stopped.failed == 0  # a later submit resumes all
    finally:
        client.close()
        gateway.stop()


@pytest.mark.timeout(180)
def test_sigterm_ends_a_gateway_with_hanging_items_within_drain_plus_five_seconds_and_its_job_resumes(
    tmp_path: Path, slow_medsam: LocalService, medsam: LocalService
) -> None:
    write_medvqa_inputs(tmp_path / "in", count=3)
    config = gateway_config(tmp_path, slow_medsam, drain_seconds=1)
    gateway = Gateway(config, tmp_path / "log").start()
    client = GatewayClient(gateway.address)
    job = client.submit("medvqa", "in/questions.csv", "out", GOLD)
    wait_for(lambda: client.get(job.id).running == 3)
    client.close()
    assert gateway.process is not None
    started = time.monotonic()
    gateway.process.send_signal(signal.SIGTERM)
    gateway.process.wait(30)
    assert time.monotonic() - started < 1 + 5 and gateway.process.returncode == 0
    gateway = Gateway(gateway_config(tmp_path, medsam), tmp_path / "log").start()  # resumes, now served quickly
    client = GatewayClient(gateway.address)
    try:
        wait_for(lambda: client.get(job.id).state == "done", timeout=120)
        assert client.get(job.id).done == 3
    finally:
        client.close()
        gateway.stop()


@pytest.mark.timeout(180)
def test_sigterm_lets_running_items_and_their_open_stream_finish_within_the_drain_then_the_gateway_leaves(
    tmp_path: Path, unhurried_medsam: LocalService
) -> None:
    write_medvqa_inputs(tmp_path / "in", count=3)
    gateway = Gateway(gateway_config(tmp_path, unhurried_medsam, drain_seconds=30), tmp_path / "log").start()
    client, other = GatewayClient(gateway.address), GatewayClient(gateway.address)
    stream = client.run("medvqa", "in/questions.csv", "out", GOLD)
    first = next(stream)
    wait_for(lambda: other.get(first.job.id).running == 3)
    other.close()
    assert gateway.process is not None
    started = time.monotonic()
    gateway.process.send_signal(signal.SIGTERM)
    events = [first, *stream]  # the stream in flight goes on until its job's run ends
    client.close()
    gateway.process.wait(30)
    assert events[-1].job.state == "done" and events[-1].job.done == 3
    assert gateway.process.returncode == 0 and time.monotonic() - started < 30  # gone once nothing runs
    with sqlite3.connect(tmp_path / ".modelyard" / "jobs.sqlite") as db:
        assert db.execute("SELECT state FROM jobs WHERE id = ?", (first.job.id,)).fetchone() == ("done",)


@pytest.mark.timeout(240)
def test_an_item_that_keeps_cutting_its_job_short_is_failed_with_its_attempts_instead_of_resumed_forever(
    tmp_path: Path, slow_medsam: LocalService
) -> None:
    write_medvqa_inputs(tmp_path / "in", count=1)
    config = gateway_config(tmp_path, slow_medsam, max_item_attempts=2)
    gateway = Gateway(config, tmp_path / "log").start()
    client = GatewayClient(gateway.address)
    job = client.submit("medvqa", "in/questions.csv", "out", GOLD)
    for _ in range(2):  # the item hangs each time, and each time the gateway dies under it
        wait_for(lambda c=client: c.get(job.id).running == 1)
        client.close()
        gateway.kill()
        gateway = Gateway(config, tmp_path / "log").start()  # resumes unfinished jobs by itself
        client = GatewayClient(gateway.address)
    try:
        wait_for(lambda: client.get(job.id).state == "failed", timeout=30)
        assert client.get(job.id).failed == 1
        (error,) = errors_by_image(tmp_path, job.id).values()
        assert error.startswith("failed after 2 attempts: the gateway stopped or hung while this item ran")
        assert "failed after 2 attempts" in (tmp_path / "out" / "report.txt").read_text()
    finally:
        client.close()
        gateway.stop()


@pytest.mark.timeout(180)
def test_a_resumed_job_removes_the_temporary_files_a_killed_gateway_left(tmp_path: Path, medsam: LocalService) -> None:
    write_medvqa_inputs(tmp_path / "in", count=2)
    gateway = Gateway(gateway_config(tmp_path, medsam), tmp_path / "log").start()
    client = GatewayClient(gateway.address)
    try:
        assert list(client.run("medvqa", "in/questions.csv", "out", GOLD))[-1].job.state == "done"
        out = tmp_path / "out"
        orphans = [out / ".vqa_manifest.csv.k2j4_x9q.tmp", out / "masks" / ".cxr_000_idx0_mask.png.a1b2c3d4.tmp"]
        for orphan in orphans:  # what kill -9 between writing and renaming leaves
            orphan.write_bytes(b"half a file")
        (out / "notes.tmp").write_text("the user's own file")
        kept = sorted(p.relative_to(out) for p in out.rglob("*") if p not in orphans)
        assert list(client.run("medvqa", "in/questions.csv", "out", GOLD))[-1].job.state == "done"
        assert not any(orphan.exists() for orphan in orphans)
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == kept
    finally:
        client.close()
        gateway.stop()


@pytest.mark.timeout(180)
def test_the_data_root_and_malformed_tables_are_refused_with_what_to_fix(tmp_path: Path, medsam: LocalService) -> None:
    table = write_medvqa_inputs(tmp_path / "in", count=2)
    (tmp_path / "in" / "broken.csv").write_text(table.read_text() + 'images/cxr_000.png,"an open quote\n')
    gateway = Gateway(gateway_config(tmp_path, medsam), tmp_path / "log").start()
    client = GatewayClient(gateway.address)
    try:
        for output in (".", "./", "in/.."):
            with pytest.raises(grpc.RpcError) as err:
                client.submit("medvqa", "in/questions.csv", output, GOLD)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as err:
            client.submit("medvqa", "in/questions.csv", ".", GOLD)
        assert "is the data root itself: name a folder under it" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            client.submit("medvqa", "in/broken.csv", "out", GOLD)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "broken.csv line 4: malformed CSV: a quote opened there is never closed" in err.value.details()
        assert not (tmp_path / ".modelyard" / "out").exists() and client.jobs() == []
    finally:
        client.close()
        gateway.stop()


def item_events(events: list) -> Counter:
    return Counter((e.item.key, e.item.state) for e in events if e.HasField("item"))


def once_each(keys: set[str]) -> Counter:
    """Each item started once and done once."""
    return Counter({(key, state): 1 for key in keys for state in ("running", "done")})


@pytest.mark.timeout(180)
def test_streams_of_a_job_that_ended_before_the_first_read_hold_every_item_event_once(
    tmp_path: Path, medsam: LocalService
) -> None:
    write_medvqa_inputs(tmp_path / "in", count=4)
    gateway = Gateway(gateway_config(tmp_path, medsam), tmp_path / "log").start()
    client, other = GatewayClient(gateway.address), GatewayClient(gateway.address)
    try:
        stream = client.run("medvqa", "in/questions.csv", "out/run", GOLD)
        first = next(stream)  # submitted; then nothing is read until the job is over
        wait_for(lambda: other.get(first.job.id).state == "done")
        events = [first, *stream]
        keys = {e.item.key for e in events if e.HasField("item")}
        assert len(keys) == 4 and item_events(events) == once_each(keys)
        assert events[-1].job.state == "done" and events[-1].job.done == 4

        job = other.submit("medvqa", "in/questions.csv", "out/watched", GOLD)
        wait_for(lambda: other.get(job.id).state == "done")
        watched = list(client.watch(job.id))  # watched only after it ended
        keys = {e.item.key for e in watched if e.HasField("item")}
        assert len(keys) == 4 and item_events(watched) == once_each(keys)
        assert watched[-1].job.state == "done"
    finally:
        client.close()
        other.close()
        gateway.stop()
