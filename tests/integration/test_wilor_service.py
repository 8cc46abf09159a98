"""The WiLoR service on loopback, running in wilor's own environment (mediapipe backend), called from here.

Photograph: ultralytics==8.1.34 from PyPI, file ultralytics/assets/zidane.jpg (tests/assets.py).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from modelyard.runtime.arrays import numpy_to_tensor
from modelyard.runtime.launch import LocalService, free_port
from modelyard.v1 import types_pb2, wilor_pb2
from modelyard.wilor.client import WiLoRClient, hand_from_message, hand_to_json, options_message
from modelyard.wilor.hands import JOINT_NAMES
from tests.assets import HAND_PHOTO, fetch
from tests.conftest import write_config
from tests.wilor_env import run_backend, wilor_python

pytestmark = pytest.mark.integration
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """640x480 frames: the hand, its mirror image, no hand."""
    photo = np.asarray(Image.open(fetch(HAND_PHOTO)).convert("RGB"))
    crop = np.ascontiguousarray(photo[120:600, 640:1280])
    return [crop, np.ascontiguousarray(crop[:, ::-1]), np.full_like(crop, 128)]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory, frames: list[np.ndarray]) -> Path:
    root = tmp_path_factory.mktemp("data")
    clip = root / "clip"
    clip.mkdir()
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(clip / f"frame_{index + 1}.png")  # frame_1 .. frame_3, natural order
    np.save(root / "clip.npy", np.stack(frames))
    return root


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[LocalService]:
    folder = tmp_path_factory.mktemp("wilor")
    runtime = {"max_batch_size": 4, "queue_size": 8, "data_root": str(data_root)}
    config = write_config(folder, {"backend": "mediapipe", "max_frames": 6}, runtime, "wilor.yaml")
    with LocalService(
        "wilor", config, metrics_port=free_port(), log_path=folder / "wilor.log", python=wilor_python()
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(service: LocalService) -> Iterator[WiLoRClient]:
    wilor = WiLoRClient(service.address, timeout=60)
    yield wilor
    wilor.close()


def _json(hands: list[Any]) -> list[dict[str, Any]]:
    return [hand_to_json(h) for h in hands]


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Equal hands: the same fields, the same float32 values (the wire carries float32)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if set(x) != set(y):
            return False
        for key in x:
            if isinstance(x[key], str) or x[key] is None:
                if x[key] != y[key]:
                    return False
            elif not np.array_equal(np.asarray(x[key], np.float32), np.asarray(y[key], np.float32)):
                return False
    return True


def _metric(service: LocalService, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_the_service_equals_the_backend_in_process(
    client: WiLoRClient, frames: list[np.ndarray], tmp_path: Path
) -> None:
    box = (340.0, 280.0, 530.0, 380.0)  # around the hand in the 640x480 crop
    given = [[list(box), False]]
    served = client.detect(list(frames), focal_length=800.0)
    served_given = client.detect([frames[0]], given=[[(box, False)]])
    for i, frame in enumerate(frames):
        np.save(tmp_path / f"{i}.npy", frame)
    queries: list[dict[str, Any]] = [
        {"image": str(tmp_path / f"{i}.npy"), "options": {"focal_length": 800.0}} for i in range(len(frames))
    ]
    queries.append({"image": str(tmp_path / "0.npy"), "given": given})
    local = run_backend({"model": {"backend": "mediapipe", "max_frames": 6}, "queries": queries}, tmp_path)
    assert [len(h) for h in served] == [1, 1, 0]
    for mine, theirs in zip([*served, *served_given], local["results"], strict=True):
        assert _same(_json(mine), theirs)
    assert served_given[0][0].given_index == 0


def test_a_sequence_is_batched_across_its_frames_and_equals_the_images(
    client: WiLoRClient, service: LocalService, frames: list[np.ndarray]
) -> None:
    batches, items = _metric(service, "modelyard_batch_size_count"), _metric(service, "modelyard_batch_size_sum")
    response = client.detect_sequence("clip")
    assert _metric(service, "modelyard_batch_size_count") == batches + 1  # one model call ...
    assert _metric(service, "modelyard_batch_size_sum") == items + 3  # ... for the three frames
    assert [r.frame_index for r in response.results] == [0, 1, 2]
    assert response.sequence_frames == 3
    assert [(r.width, r.height) for r in response.results] == [(640, 480)] * 3
    assert set(response.filled_fields) >= {"box", "side", "keypoints_2d", "keypoints_3d"}
    by_images = client.detect(list(frames))  # PNG frames are lossless: the same pixels
    for result, hands in zip(response.results, by_images, strict=True):
        assert _same(_json([hand_from_message(h) for h in result.hands]), _json(hands))
    sides = [[h.side for h in r.hands] for r in response.results]
    assert sides == [[wilor_pb2.HAND_SIDE_LEFT], [wilor_pb2.HAND_SIDE_RIGHT], []]


def test_a_window_of_an_array_sequence(client: WiLoRClient) -> None:
    response = client.detect_sequence("clip.npy", start=1, count=2, step=1)
    assert [r.frame_index for r in response.results] == [1, 2]
    assert [len(r.hands) for r in response.results] == [1, 0]
    assert [r.frame_index for r in client.detect_sequence("clip.npy", step=2).results] == [0, 2]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _item(image: types_pb2.Image, hands: list[wilor_pb2.GivenHand] | None = None) -> wilor_pb2.DetectItem:
    return wilor_pb2.DetectItem(image=image, hands=hands or [])


def _box(x1: float, y1: float, x2: float, y2: float, side: int = wilor_pb2.HAND_SIDE_LEFT) -> wilor_pb2.GivenHand:
    return wilor_pb2.GivenHand(box=types_pb2.BoxXYXY(x1=x1, y1=y1, x2=x2, y2=y2), side=side)


GOOD = types_pb2.Image(encoded=_png(np.zeros((40, 60, 3), np.uint8)))
BAD_REQUESTS = [
    ("undecodable", wilor_pb2.DetectRequest(images=[_item(types_pb2.Image(encoded=b"not an image"))]), "decodable"),
    (
        "wrong shape",
        wilor_pb2.DetectRequest(images=[_item(types_pb2.Image(array=numpy_to_tensor(np.zeros((8, 8, 5), np.uint8))))]),
        "(H,W,3)",
    ),
    (
        "float image",
        wilor_pb2.DetectRequest(
            images=[_item(types_pb2.Image(array=numpy_to_tensor(np.zeros((8, 8, 3), np.float32))))]
        ),
        "8-bit",
    ),
    ("box outside", wilor_pb2.DetectRequest(images=[_item(GOOD, [_box(10, 10, 70, 30)])]), "outside the 60x40"),
    ("box inverted", wilor_pb2.DetectRequest(images=[_item(GOOD, [_box(30, 10, 20, 30)])]), "x2 > x1"),
    (
        "side missing",
        wilor_pb2.DetectRequest(images=[_item(GOOD, [_box(1, 1, 20, 20, wilor_pb2.HAND_SIDE_UNSPECIFIED)])]),
        "side is unspecified",
    ),
    (
        "confidence",
        wilor_pb2.DetectRequest(images=[_item(GOOD)], options=options_message(detection_confidence=1.5)),
        "detection_confidence",
    ),
    ("max hands", wilor_pb2.DetectRequest(images=[_item(GOOD)], options=options_message(max_hands=0)), "max_hands"),
    (
        "rescale",
        wilor_pb2.DetectRequest(images=[_item(GOOD)], options=options_message(rescale_factor=float("nan"))),
        "rescale_factor",
    ),
    ("nothing", wilor_pb2.DetectRequest(), "no images"),
    (
        "both",
        wilor_pb2.DetectRequest(
            images=[_item(GOOD)], sequence=wilor_pb2.FrameSequence(ref=types_pb2.DataRef(path="clip"))
        ),
        "not both",
    ),
    (
        "escape",
        wilor_pb2.DetectRequest(sequence=wilor_pb2.FrameSequence(ref=types_pb2.DataRef(path="../outside"))),
        "escapes the data volume",
    ),
    (
        "past the end",
        wilor_pb2.DetectRequest(sequence=wilor_pb2.FrameSequence(ref=types_pb2.DataRef(path="clip"), start=7)),
        "past the last frame",
    ),
    ("too many", wilor_pb2.DetectRequest(images=[_item(GOOD)] * 7), "over the limit of 6"),
]


@pytest.mark.parametrize(("case", "request_msg", "hint"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_are_invalid_argument_with_what_to_fix(
    client: WiLoRClient, case: str, request_msg: wilor_pb2.DetectRequest, hint: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.send(request_msg)
    assert err.value.code() == INVALID, err.value.details()
    assert hint in err.value.details()


def test_after_bad_requests_the_service_is_still_serving(client: WiLoRClient, service: LocalService) -> None:
    for _, request_msg, _ in BAD_REQUESTS[:3]:
        with pytest.raises(grpc.RpcError):
            client.send(request_msg)
    with grpc.insecure_channel(service.address) as chan:
        request = health_pb2.HealthCheckRequest(service="modelyard.v1.WiLoR")
        assert (
            health_pb2_grpc.HealthStub(chan).Check(request, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        )
    assert client.detect([np.zeros((40, 60, 3), np.uint8)]) == [[]]


def test_info_names_the_backend_its_fields_and_the_joint_order(client: WiLoRClient) -> None:
    info = client.info()
    assert info.service == "wilor" and info.device == "cpu"
    assert info.backend.startswith("mediapipe 0.10.")
    assert info.details["joint_order"].split(",") == list(JOINT_NAMES)
    filled = set(info.details["filled_fields"].split(","))
    assert "keypoints_3d" in filled and not {"hand_pose", "vertices"} & filled
    assert info.details["state"] == "ready"
    assert info.checkpoint.endswith("hand_landmark_full.tflite") and len(info.checkpoint_sha256) == 64
    assert info.details["palm_detector"].endswith("palm_detection_full.tflite")


def test_the_generated_stubs_load_without_warnings_in_the_wilor_environment() -> None:
    done = subprocess.run(
        [wilor_python(), "-W", "error", "-c",
         "import google.protobuf as p; from modelyard.v1 import wilor_pb2, wilor_pb2_grpc, types_pb2; "
         "assert p.__version__.startswith('4.25'), p.__version__"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_the_command_writes_the_hands_as_json_and_draws_them(service: LocalService, tmp_path: Path) -> None:
    photo = fetch(HAND_PHOTO)
    out, overlays = tmp_path / "hands.json", tmp_path / "overlays"
    done = subprocess.run(
        [sys.executable, "-m", "modelyard.runtime.cli", "wilor", "detect", "--address", service.address,
         "--image", str(photo), "--out", str(out), "--overlay", str(overlays)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert document["joint_order"] == list(JOINT_NAMES)
    (image,) = document["images"]
    (hand,) = image["hands"]
    assert hand["side"] == "left" and len(hand["keypoints_2d"]) == 21 and "vertices" not in hand
    drawn = np.asarray(Image.open(overlays / f"{photo.stem}.png"))
    original = np.asarray(Image.open(photo).convert("RGB"))
    changed = np.argwhere((drawn != original).any(axis=2))
    x1, y1, x2, y2 = hand["box"]
    assert len(changed) > 0 and (changed[:, 1] >= x1 - 5).all() and (changed[:, 1] <= x2 + 5).all()
    assert (changed[:, 0] >= y1 - 5).all() and (changed[:, 0] <= y2 + 5).all()  # drawn where the hand is
    sequence = subprocess.run(
        [sys.executable, "-m", "modelyard.runtime.cli", "wilor", "detect", "--address", service.address,
         "--sequence", "clip", "--count", "2", "--out", str(tmp_path / "clip.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert sequence.returncode == 0, sequence.stderr
    clip = json.loads((tmp_path / "clip.json").read_text())
    assert [len(i["hands"]) for i in clip["images"]] == [1, 1] and "keypoints_3d" in clip["filled_fields"]


# -- no escape through shared memory or data references ----------------------------------------------------
def test_an_image_region_that_is_a_symlink_is_not_read(client: WiLoRClient, shm_symlink) -> None:
    name, _ = shm_symlink
    linked = types_pb2.Image(
        array=types_pb2.Tensor(shared=types_pb2.SharedArray(region=name, dtype="uint8", shape=[32, 32, 3]))
    )
    with pytest.raises(grpc.RpcError) as err:
        client.send(wilor_pb2.DetectRequest(images=[_item(linked)]))
    assert err.value.code() == INVALID
    assert "is a symbolic link" in err.value.details()


def test_a_folder_frame_that_links_out_of_the_data_volume_is_not_read(
    client: WiLoRClient, data_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(outside)
    folder = data_root / "leaky"
    folder.mkdir()
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(folder / "frame_1.png")
    (folder / "frame_2.png").symlink_to(outside)
    sequence = wilor_pb2.FrameSequence(ref=types_pb2.DataRef(path="leaky"))
    with pytest.raises(grpc.RpcError) as err:
        client.send(wilor_pb2.DetectRequest(sequence=sequence))
    assert err.value.code() == INVALID
    assert "'leaky/frame_2.png' escapes the data volume" in err.value.details()


def test_an_npz_bomb_sequence_is_refused_from_its_header(client: WiLoRClient, data_root: Path) -> None:
    # 1.1 MB compressed, a 1.2 GB video declared: refused before it is inflated
    np.savez_compressed(data_root / "bomb.npz", video=np.zeros((1, 20000, 20000, 3), np.uint8))
    sequence = wilor_pb2.FrameSequence(ref=types_pb2.DataRef(path="bomb.npz"))
    with pytest.raises(grpc.RpcError) as err:
        client.send(wilor_pb2.DetectRequest(sequence=sequence))
    assert err.value.code() == INVALID
    assert "20000x20000 frames are over the limit of 50000000 pixels" in err.value.details()
