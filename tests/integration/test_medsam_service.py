"""The MedSAM service on a loopback port, with a tiny checkpoint in MedSAM's format."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from modelyard.medsam.client import MedSAMClient
from modelyard.medsam.config import MedSAMConfig
from modelyard.medsam.model import MedSAMAdapter, SegmentItem
from modelyard.medsam.preprocess import resize_normalise, to_rgb_uint8
from modelyard.runtime.arrays import SHM_DIR, numpy_to_tensor, tensor_to_numpy
from modelyard.runtime.launch import LocalService
from modelyard.v1 import medsam_pb2, medsam_pb2_grpc, types_pb2
from tests.conftest import write_config


def sample(seed: int = 0, shape: tuple[int, int] = (96, 80)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = (rng.random(shape) * 80).astype(np.uint8)
    img[20:60, 15:55] += 120
    return img


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def box(x1: float, y1: float, x2: float, y2: float) -> types_pb2.BoxXYXY:
    return types_pb2.BoxXYXY(x1=x1, y1=y1, x2=x2, y2=y2)


@pytest.fixture(scope="module")
def stub(medsam_service: LocalService) -> medsam_pb2_grpc.MedSAMStub:
    return medsam_pb2_grpc.MedSAMStub(grpc.insecure_channel(medsam_service.address))


@pytest.fixture(scope="module")
def in_process(tiny_model_section: dict) -> MedSAMAdapter:
    adapter = MedSAMAdapter(MedSAMConfig.model_validate(tiny_model_section), "cpu")
    adapter.load()
    return adapter


def serving(service: LocalService) -> int:
    with grpc.insecure_channel(service.address) as chan:
        return (
            health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(service="modelyard.v1.MedSAM")).status
        )


def test_segment_equals_the_in_process_model(stub, in_process: MedSAMAdapter) -> None:
    images = [sample(0), sample(1, (64, 120))]
    boxes = [[[10, 15, 60, 65], [0, 0, 40, 40]], [[30, 5, 110, 60]]]
    request = medsam_pb2.SegmentRequest(
        items=[
            medsam_pb2.SegmentItem(image=types_pb2.Image(encoded=png(img)), boxes=[box(*b) for b in bxs])
            for img, bxs in zip(images, boxes, strict=True)
        ]
    )
    response = stub.Segment(request, timeout=60)
    with torch.inference_mode():
        expected = in_process.infer(
            [
                SegmentItem(resize_normalise(to_rgb_uint8(img), 128), np.array(bxs, float), *img.shape)
                for img, bxs in zip(images, boxes, strict=True)
            ]
        )
    assert len(response.results) == 2
    for got, want, img, bxs in zip(response.results, expected, images, boxes, strict=True):
        masks = tensor_to_numpy(got.masks, SHM_DIR)
        assert masks.shape == (len(bxs), *img.shape) and masks.dtype == np.uint8
        assert np.array_equal(masks, want.masks)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)


@pytest.mark.parametrize(
    "image",
    [
        sample(2),
        np.dstack([sample(2)] * 3),
        np.dstack([sample(2)] * 3 + [np.full((96, 80), 255, np.uint8)]),
        sample(2).astype(np.uint16) * 250,
        sample(2).astype(np.float32) / 255.0,
    ],
    ids=["grey-uint8", "rgb", "rgba", "uint16", "float32"],
)
def test_raw_arrays_of_every_accepted_kind_segment_at_their_own_size(stub, image: np.ndarray) -> None:
    item = medsam_pb2.SegmentItem(image=types_pb2.Image(array=numpy_to_tensor(image)), boxes=[box(10, 10, 50, 60)])
    (result,) = stub.Segment(medsam_pb2.SegmentRequest(items=[item]), timeout=60).results
    assert tuple(result.masks.inline.shape) == (1, 96, 80)


def test_ct_arrays_can_use_medsams_window(stub) -> None:
    hu = (sample(4).astype(np.int16) * 4) - 300
    item = medsam_pb2.SegmentItem(
        image=types_pb2.Image(array=numpy_to_tensor(hu)), boxes=[box(5, 5, 60, 60)], intensity=medsam_pb2.INTENSITY_CT
    )
    (result,) = stub.Segment(medsam_pb2.SegmentRequest(items=[item]), timeout=60).results
    assert tuple(result.masks.inline.shape) == (1, 96, 80)


BAD_INPUTS = {
    "no items": (medsam_pb2.SegmentRequest(), "holds no items"),
    "undecodable bytes": (
        medsam_pb2.SegmentRequest(
            items=[medsam_pb2.SegmentItem(image=types_pb2.Image(encoded=b"\x89PNG garbage"), boxes=[box(0, 0, 5, 5)])]
        ),
        "not a decodable image",
    ),
    "wrong dtype": (
        medsam_pb2.SegmentRequest(
            items=[
                medsam_pb2.SegmentItem(
                    image=types_pb2.Image(array=numpy_to_tensor(np.zeros((8, 8), bool))), boxes=[box(0, 0, 5, 5)]
                )
            ]
        ),
        "dtype bool is not accepted",
    ),
    "wrong shape": (
        medsam_pb2.SegmentRequest(
            items=[
                medsam_pb2.SegmentItem(
                    image=types_pb2.Image(array=numpy_to_tensor(np.zeros((8, 8, 5), np.uint8))), boxes=[box(0, 0, 5, 5)]
                )
            ]
        ),
        "is not (H,W), (H,W,3) or (H,W,4)",
    ),
    "empty image": (
        medsam_pb2.SegmentRequest(
            items=[
                medsam_pb2.SegmentItem(
                    image=types_pb2.Image(array=numpy_to_tensor(np.zeros((0, 8), np.uint8))), boxes=[box(0, 0, 5, 5)]
                )
            ]
        ),
        "empty image",
    ),
    "no box": (
        medsam_pb2.SegmentRequest(items=[medsam_pb2.SegmentItem(image=types_pb2.Image(encoded=png(sample())))]),
        "no box given",
    ),
    "box outside the image": (
        medsam_pb2.SegmentRequest(
            items=[medsam_pb2.SegmentItem(image=types_pb2.Image(encoded=png(sample())), boxes=[box(10, 10, 81, 50)])]
        ),
        "lies outside the 80x96 image",
    ),
    "x2 <= x1": (
        medsam_pb2.SegmentRequest(
            items=[medsam_pb2.SegmentItem(image=types_pb2.Image(encoded=png(sample())), boxes=[box(30, 10, 30, 50)])]
        ),
        "needs x2 > x1",
    ),
    "NaN box": (
        medsam_pb2.SegmentRequest(
            items=[
                medsam_pb2.SegmentItem(
                    image=types_pb2.Image(encoded=png(sample())), boxes=[box(float("nan"), 10, 30, 50)]
                )
            ]
        ),
        "must be finite",
    ),
    "inf pixels": (
        medsam_pb2.SegmentRequest(
            items=[
                medsam_pb2.SegmentItem(
                    image=types_pb2.Image(array=numpy_to_tensor(np.full((8, 8), np.inf, np.float32))),
                    boxes=[box(0, 0, 5, 5)],
                )
            ]
        ),
        "NaN or infinite",
    ),
    "too many pixels": (
        medsam_pb2.SegmentRequest(
            items=[
                medsam_pb2.SegmentItem(
                    image=types_pb2.Image(array=numpy_to_tensor(np.zeros((300, 300), np.uint8))),
                    boxes=[box(0, 0, 5, 5)],
                )
            ]
        ),
        "over this service's limit of 50000",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_invalid_argument_with_what_to_fix_and_the_service_stays_up(
    stub, medsam_service: LocalService, case: str
) -> None:
    request, message = BAD_INPUTS[case]
    with pytest.raises(grpc.RpcError) as err:
        stub.Segment(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert serving(medsam_service) == health_pb2.HealthCheckResponse.SERVING


def test_info_names_the_model_checkpoint_and_device(stub, tiny_checkpoint: Path) -> None:
    info = stub.Info(types_pb2.InfoRequest(), timeout=10)
    assert info.service == "medsam" and info.device == "cpu" and info.backend == "segment-anything"
    assert info.checkpoint == str(tiny_checkpoint)
    assert info.checkpoint_sha256 == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert info.checkpoint_format == "flat SAM state dict"
    assert json.loads(info.architecture)["image_size"] == 128
    assert info.rss_bytes > 0 and info.max_batch_size == 4


def test_reflection_lists_the_service(medsam_service: LocalService) -> None:
    with grpc.insecure_channel(medsam_service.address) as chan:
        stub = reflection_pb2_grpc.ServerReflectionStub(chan)
        (answer,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for s in answer.list_services_response.service}
    assert {"modelyard.v1.MedSAM", "grpc.health.v1.Health"} <= names


def test_the_python_client_and_the_cli_write_a_mask(medsam_service: LocalService, tmp_path: Path) -> None:
    client = MedSAMClient(medsam_service.address)
    masks, _scores = client.segment(png(sample()), [(10, 15, 60, 65)])
    client.close()
    image_path, mask_path, overlay = tmp_path / "in.png", tmp_path / "mask.png", tmp_path / "overlay.png"
    image_path.write_bytes(png(sample()))
    run = subprocess.run(
        [sys.executable, "-m", "modelyard.runtime.cli", "medsam", "segment", "--address", medsam_service.address,
         "--image", str(image_path), "--box", "10,15,60,65", "--out", str(mask_path), "--overlay", str(overlay)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert np.array_equal(np.asarray(Image.open(mask_path)) > 0, masks[0] > 0)
    assert Image.open(overlay).size == (80, 96) and "mask:" in run.stdout


def test_a_missing_checkpoint_stops_the_service_with_the_path_in_its_log(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"checkpoint": "models/medsam_vit_b.pth"}, name="medsam.yaml")
    service = LocalService("medsam", config, log_path=tmp_path / "log")
    service.start()
    assert service.process is not None
    assert service.process.wait(120) == 2
    log = (tmp_path / "log").read_text()
    assert str(tmp_path / "models" / "medsam_vit_b.pth") in log and "resolved against the config file's folder" in log


# -- no escape through shared memory; a request costs what it weighs ---------------------------------------
def test_an_output_region_that_is_a_symlink_is_refused_and_its_target_left_untouched(stub, shm_symlink) -> None:
    name, target = shm_symlink
    before = target.read_bytes()
    request = medsam_pb2.SegmentRequest(
        items=[medsam_pb2.SegmentItem(image=types_pb2.Image(encoded=png(sample(0))), boxes=[box(10, 15, 60, 65)])],
        output_region=types_pb2.OutputRegion(region=name),
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.Segment(request, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is a symbolic link" in err.value.details()
    assert target.read_bytes() == before


def test_an_input_region_that_is_a_symlink_is_not_read(stub, shm_symlink) -> None:
    name, _ = shm_symlink
    array = types_pb2.Tensor(shared=types_pb2.SharedArray(region=name, dtype="uint8", shape=[32, 32]))
    request = medsam_pb2.SegmentRequest(
        items=[medsam_pb2.SegmentItem(image=types_pb2.Image(array=array), boxes=[box(1, 1, 20, 20)])]
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.Segment(request, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is a symbolic link" in err.value.details()


def test_the_info_probe_cannot_tell_whether_a_linked_file_starts_with_a_guess(stub, shm_symlink) -> None:
    name, target = shm_symlink
    probe = types_pb2.InfoRequest(shared_memory_probe=name, shared_memory_token=target.read_bytes()[:16])
    assert stub.Info(probe, timeout=30).shared_memory_ok is False


def test_4000_small_images_in_one_request_are_refused_at_once_naming_the_limit(stub) -> None:
    # 3.5 MB on the wire, but 4000 prepared items at image_size² each: refused before any is decoded
    item = medsam_pb2.SegmentItem(
        image=types_pb2.Image(encoded=png(np.full((16, 16), 100, np.uint8))), boxes=[box(1, 1, 10, 10)]
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.Segment(medsam_pb2.SegmentRequest(items=[item] * 4000), timeout=15)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "4000 items in one request, over the limit of 32" in err.value.details()
    assert "model.max_items_per_request" in err.value.details()


def test_images_adding_up_past_the_request_pixel_budget_are_refused(tmp_path: Path, tiny_model_section) -> None:
    model = {**tiny_model_section, "max_pixels": 10_000, "max_request_pixels": 20_000}
    config = write_config(tmp_path, model, {"warmup": False}, "medsam.yaml")
    item = medsam_pb2.SegmentItem(image=types_pb2.Image(encoded=png(sample(0))), boxes=[box(10, 15, 60, 65)])
    with LocalService("medsam", config, log_path=tmp_path / "medsam.log") as service:
        small = medsam_pb2_grpc.MedSAMStub(grpc.insecure_channel(service.address))
        assert len(small.Segment(medsam_pb2.SegmentRequest(items=[item] * 2), timeout=60).results) == 2
        with pytest.raises(grpc.RpcError) as err:
            small.Segment(medsam_pb2.SegmentRequest(items=[item] * 3), timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "item 2: the request's items add up to over 20000 pixels" in err.value.details()
    assert "model.max_request_pixels" in err.value.details()
