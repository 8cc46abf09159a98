"""medvqa sends images as DataRefs to services that mount the data volume, and the file's bytes to those that do
not; either way the results are the same, and the gateway never encodes an image again to send it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.demo.samples import write_medvqa_inputs
from modelyard.gateway.datarefs import PROBE_FOLDER, DataVolumeProbe
from modelyard.gateway.pipeline import StepContext
from modelyard.gateway.pipelines.medvqa import MedVQA, MedVQAOptions
from modelyard.gateway.server import STUBS
from modelyard.runtime.calls import EndpointConfig, ServiceClient
from modelyard.runtime.launch import LocalService
from tests.conftest import write_config


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory, tiny_model_section: dict) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("data")
    table = write_medvqa_inputs(root / "medvqa", count=3)
    elsewhere = tmp_path_factory.mktemp("another-volume")
    runtimes = {"sharing": {"data_root": str(root)}, "apart": {"data_root": str(elsewhere)}, "none": {}}
    started = {}
    try:
        for name, runtime in runtimes.items():
            config = write_config(root.parent / f"cfg-{name}", tiny_model_section, runtime, "medsam.yaml")
            started[name] = LocalService("medsam", config, log_path=root.parent / f"medsam-{name}.log").start()
        for service in started.values():
            service.wait_until_serving()
        clients = {
            name: ServiceClient("medsam", STUBS["medsam"], EndpointConfig(addresses=[service.address]))
            for name, service in started.items()
        }
        yield {"root": root, "table": table, "clients": clients}
        for client in clients.values():
            client.close()
    finally:
        for service in started.values():
            service.stop()


def test_only_a_service_that_mounts_the_same_volume_is_sent_data_references(services: dict) -> None:
    probe = DataVolumeProbe(services["root"])
    answers = {name: probe.shares(client) for name, client in services["clients"].items()}
    assert answers == {"sharing": True, "apart": False, "none": False}
    assert list((services["root"] / PROBE_FOLDER).iterdir()) == []  # every probe file removed


def test_a_data_reference_and_the_files_bytes_give_the_same_masks(services: dict) -> None:
    pipeline, root = MedVQA(), services["root"]
    options = MedVQAOptions.model_validate({"MODE": "gold", "STAGE": "segmentation"})
    items = pipeline.plan(services["table"], options, root)
    written = {}
    for name in ("sharing", "none"):
        out = root / "out" / name
        out.mkdir(parents=True)
        ctx = StepContext(
            "job", options, root, out, {"medsam": services["clients"][name]}, threading.Event(), DataVolumeProbe(root)
        )
        image = MedVQA._image_message(ctx, items[0].payload["image"], b"the file's bytes")("medsam")
        assert image.WhichOneof("source") == ("ref" if name == "sharing" else "encoded")
        if name == "sharing":
            assert image.ref.path == items[0].payload["image"]
        for item in items:
            pipeline.process(item, ctx)
        written[name] = {p.name: p.read_bytes() for p in sorted((out / "masks").glob("*.png"))}
    assert len(written["sharing"]) == len(items) and written["sharing"] == written["none"]


def test_without_a_probe_every_service_gets_the_files_bytes(services: dict) -> None:
    root = services["root"]
    options = MedVQAOptions.model_validate({"MODE": "gold", "STAGE": "segmentation"})
    ctx = StepContext("job", options, root, root, {"medsam": services["clients"]["sharing"]}, threading.Event())
    image = MedVQA._image_message(ctx, "medvqa/images/x.png", b"bytes")("medsam")
    assert image.WhichOneof("source") == "encoded" and image.encoded == b"bytes"


def test_a_probe_that_cannot_write_on_a_read_only_volume_answers_no(services: dict, tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    (locked / ".modelyard").mkdir()
    (locked / ".modelyard" / "probes").write_text("a file where the probe folder would be")
    assert DataVolumeProbe(locked).shares(services["clients"]["sharing"]) is False
