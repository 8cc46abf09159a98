"""The BiomedCLIP service on a loopback port, with a tiny model in BiomedCLIP's own file layout."""

from __future__ import annotations

import argparse
import io
import json
import threading
from pathlib import Path

import grpc
import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from grpc_health.v1 import health_pb2, health_pb2_grpc
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from modelyard.biomedclip.boxes import localize, to_grey
from modelyard.biomedclip.client import BiomedCLIPClient, add_commands
from modelyard.biomedclip.config import LocalizeSettings
from modelyard.biomedclip.model import BiomedCLIPAdapter, Heatmap, HeatmapItem
from modelyard.biomedclip.preprocess import to_frame
from modelyard.runtime.arrays import SHM_DIR, SharedRegion, numpy_to_tensor, tensor_to_numpy
from modelyard.runtime.launch import LocalService
from modelyard.v1 import biomedclip_pb2, biomedclip_pb2_grpc, types_pb2
from tests.biomedclip_support import load_adapter, one_torch_thread, section, tiny_model  # noqa: F401
from tests.conftest import write_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOP_K = 16


def sample(seed: int = 0, shape: tuple[int, int] = (120, 170)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = (rng.random(shape) * 70).astype(np.uint8)
    img[30:80, 40:110] += 140
    return img


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def image(array: np.ndarray) -> types_pb2.Image:
    return types_pb2.Image(encoded=png(array))


def prompted(array: np.ndarray, prompt: str) -> biomedclip_pb2.PromptedImage:
    return biomedclip_pb2.PromptedImage(image=image(array), prompt=prompt)


@pytest.fixture(scope="module")
def model_section(tiny_model: dict[str, Path]) -> dict:  # noqa: F811
    return section(tiny_model, cam={"default_top_k": TOP_K, "chunk_size": 16}, max_pixels=200_000)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, model_section: dict):
    folder = tmp_path_factory.mktemp("biomedclip")
    config = write_config(folder, model_section, {"max_batch_size": 4, "queue_size": 16}, "biomedclip.yaml")
    # One intra-op thread: the test process computes the in-process references on the same two cores.
    env = {"OMP_NUM_THREADS": "1"}
    with LocalService("biomedclip", config, log_path=folder / "biomedclip.log", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def stub(service: LocalService) -> biomedclip_pb2_grpc.BiomedCLIPStub:
    return biomedclip_pb2_grpc.BiomedCLIPStub(grpc.insecure_channel(service.address))


@pytest.fixture(scope="module")
def in_process(model_section: dict) -> BiomedCLIPAdapter:
    return load_adapter(model_section)


def serving(service: LocalService) -> int:
    with grpc.insecure_channel(service.address) as chan:
        request = health_pb2.HealthCheckRequest(service="modelyard.v1.BiomedCLIP")
        return health_pb2_grpc.HealthStub(chan).Check(request).status


def expected_heatmap(adapter: BiomedCLIPAdapter, array: np.ndarray, prompt: str, method: str, k: int) -> Heatmap:
    rgb = np.repeat(array[:, :, None], 3, axis=-1) if array.ndim == 2 else array
    pixels, frame = to_frame(rgb, adapter.image_settings, adapter.config.cam.geometry)
    with torch.inference_mode():
        (result,) = adapter.infer([HeatmapItem(pixels, frame, prompt, method, k)])
    assert isinstance(result, Heatmap)
    return result


def test_embeddings_and_labels_equal_open_clip_in_process(stub, tiny_model) -> None:  # noqa: F811
    cfg = json.loads((tiny_model["model_dir"] / "open_clip_config.json").read_text())["model_cfg"]
    text_cfg = dict(cfg["text_cfg"], hf_model_name=str(tiny_model["text_dir"]), hf_model_pretrained=False)
    model = open_clip.create_model(f"local-dir:{tiny_model['model_dir']}", text_cfg=text_cfg).eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_model['model_dir']}")
    transform = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    images = [sample(0), sample(1, (90, 200)), np.dstack([sample(2)] * 3)]
    labels = ["pleural effusion", "pneumothorax", "normal chest x ray"]
    with torch.no_grad():
        ref_img = F.normalize(
            model.encode_image(torch.stack([transform(Image.fromarray(i).convert("RGB")) for i in images])), dim=-1
        ).numpy()
        ref_txt = F.normalize(model.encode_text(tokenizer(labels)), dim=-1).numpy()
    got_img = tensor_to_numpy(
        stub.EmbedImages(biomedclip_pb2.EmbedImagesRequest(images=[image(i) for i in images]), timeout=60).embeddings,
        SHM_DIR,
    )
    got_txt = tensor_to_numpy(
        stub.EmbedTexts(biomedclip_pb2.EmbedTextsRequest(texts=labels), timeout=60).embeddings, SHM_DIR
    )
    assert got_img.shape == (3, cfg["embed_dim"]) and got_img.dtype == np.float32
    assert (np.sum(got_img * ref_img, axis=1) >= 0.9999).all()
    assert (np.sum(got_txt * ref_txt, axis=1) >= 0.9999).all()
    response = stub.Classify(
        biomedclip_pb2.ClassifyRequest(images=[image(i) for i in images], labels=labels), timeout=60
    )
    want = torch.softmax(model.logit_scale.exp().detach() * torch.from_numpy(ref_img @ ref_txt.T), dim=-1).numpy()
    np.testing.assert_allclose([r.probabilities for r in response.results], want, atol=1e-4)
    assert list(response.prompts) == labels


def test_a_template_turns_labels_into_prompts(stub) -> None:
    request = biomedclip_pb2.ClassifyRequest(images=[image(sample())], labels=["lung", "brain"], template="a {} scan")
    assert list(stub.Classify(request, timeout=60).prompts) == ["a lung scan", "a brain scan"]


@pytest.mark.parametrize(("method", "k"), [("gscorecam", TOP_K), ("scorecam", 0), ("gradcam", 0), ("similarity", 0)])
def test_heatmaps_equal_the_in_process_model_at_the_images_own_size(
    stub, in_process: BiomedCLIPAdapter, method: str, k: int
) -> None:
    arrays = [sample(3), sample(4, (80, 150))]
    cam = biomedclip_pb2.CamOptions(method=getattr(biomedclip_pb2, f"CAM_METHOD_{method.upper()}"), top_k=k)
    request = biomedclip_pb2.HeatmapRequest(items=[prompted(a, "left lung nodule") for a in arrays], cam=cam)
    response = stub.Heatmap(request, timeout=120)
    for result, array in zip(response.results, arrays, strict=True):
        heat = tensor_to_numpy(result.heatmap, SHM_DIR)
        want = expected_heatmap(in_process, array, "left lung nodule", method, k)
        assert heat.shape == array.shape and heat.dtype == np.float32
        np.testing.assert_allclose(heat, want.heatmap, atol=1e-4)
        assert (result.method, result.top_k) == (method, want.top_k)
        assert result.similarity == pytest.approx(want.similarity, abs=1e-5)


def test_the_default_method_is_the_configured_gscorecam(stub) -> None:
    request = biomedclip_pb2.HeatmapRequest(items=[prompted(sample(), "mass")])
    (result,) = stub.Heatmap(request, timeout=60).results
    assert (result.method, result.top_k) == ("gscorecam", TOP_K)


def test_composites_are_pngs_of_the_image_in_the_chosen_colours(stub) -> None:
    def composite(**render: object) -> np.ndarray:
        request = biomedclip_pb2.HeatmapRequest(
            items=[prompted(sample(5), "effusion")], render=biomedclip_pb2.RenderOptions(composite=True, **render)
        )
        return np.asarray(Image.open(io.BytesIO(stub.Heatmap(request, timeout=60).results[0].composite_png)))

    jet = composite()
    assert jet.shape == (120, 170, 3)
    assert not np.array_equal(jet, composite(colormap=biomedclip_pb2.COLORMAP_INFERNO))
    assert not np.array_equal(jet, composite(alpha=0.9))
    labelled = composite(label="left lung effusion")
    assert not np.array_equal(labelled[:20, :80], jet[:20, :80]) and np.array_equal(labelled[60:], jet[60:])
    bare = biomedclip_pb2.HeatmapRequest(items=[prompted(sample(5), "effusion")])
    assert stub.Heatmap(bare, timeout=60).results[0].composite_png == b""


def test_localize_equals_the_in_process_map_and_box_rules(stub, in_process: BiomedCLIPAdapter) -> None:
    array = sample(6)
    options = biomedclip_pb2.LocalizeOptions(multi_box=True, threshold=0.6, body_mask=False)
    request = biomedclip_pb2.LocalizeRequest(
        items=[prompted(array, "mass")], options=options, include_heatmap=True, render_boxes=True
    )
    (result,) = stub.Localize(request, timeout=60).results
    want_heat = expected_heatmap(in_process, array, "mass", "gscorecam", TOP_K).heatmap
    np.testing.assert_allclose(tensor_to_numpy(result.heatmap, SHM_DIR), want_heat, atol=1e-4)
    opts = LocalizeSettings(multi_box=True, threshold=0.6, body_mask=False)
    want = localize(want_heat, to_grey(np.repeat(array[:, :, None], 3, axis=-1)), opts)
    got = [(b.box.x1, b.box.y1, b.box.x2, b.box.y2) for b in result.boxes]
    assert len(got) == len(want.boxes) > 0
    np.testing.assert_allclose(got, [(b.x1, b.y1, b.x2, b.y2) for b in want.boxes], atol=1e-3)
    assert result.reason == want.reason and list(result.notes) == want.notes
    drawn = np.asarray(Image.open(io.BytesIO(result.boxes_png)))
    assert drawn.shape == (120, 170, 3)
    if result.boxes:
        b = result.boxes[0].box
        assert tuple(drawn[int(b.y1), int((b.x1 + b.x2) / 2)]) == (255, 0, 0)


def test_nothing_found_is_an_empty_list_with_the_reason(stub) -> None:
    dark = np.zeros((100, 100), np.uint8)
    options = biomedclip_pb2.LocalizeOptions(multi_box=True, body_mask=False)
    request = biomedclip_pb2.LocalizeRequest(items=[prompted(dark, "nodule")], options=options)
    (result,) = stub.Localize(request, timeout=60).results
    assert list(result.boxes) == [] and "failed the anatomical check" in result.reason


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(stub) -> None:
    arrays = [sample(10 + i, (70 + 10 * i, 90)) for i in range(6)]
    sequential = [
        tensor_to_numpy(
            stub.Heatmap(biomedclip_pb2.HeatmapRequest(items=[prompted(a, "nodule")]), timeout=60).results[0].heatmap,
            SHM_DIR,
        )
        for a in arrays
    ]
    out: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        result = stub.Heatmap(biomedclip_pb2.HeatmapRequest(items=[prompted(arrays[i], "nodule")]), timeout=60)
        out[i] = tensor_to_numpy(result.results[0].heatmap, SHM_DIR)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(arrays))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, want in enumerate(sequential):
        np.testing.assert_allclose(out[i], want, atol=1e-4)


def test_heatmaps_can_come_back_through_shared_memory(stub) -> None:
    with SharedRegion.create(1 << 20, SHM_DIR) as region:
        request = biomedclip_pb2.HeatmapRequest(
            items=[prompted(sample(7), "mass")],
            output_region=types_pb2.OutputRegion(region=region.name, capacity=region.size),
        )
        (result,) = stub.Heatmap(request, timeout=60).results
        assert result.heatmap.WhichOneof("payload") == "shared"
        heat = region.view(result.heatmap.shared.offset, np.dtype("float32"), (120, 170)).copy()
    assert heat.max() == 1.0


def test_the_python_client_and_cli(service: LocalService, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    client = BiomedCLIPClient(service.address)
    try:
        client.wait_until_serving(10)
        assert client.embed_texts(["lung", "heart"]).shape[0] == 2
        probs = client.classify([png(sample())], ["lung", "heart", "brain"])
        assert probs.shape == (1, 3) and probs.sum() == pytest.approx(1, abs=1e-5)
        answer = client.localize(png(sample()), "mass", threshold=0.3, include_heatmap=True)
        assert answer.heatmap is not None and answer.heatmap.shape == (120, 170)
    finally:
        client.close()
    path = tmp_path / "xray.png"
    path.write_bytes(png(sample()))
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["biomedclip", "localize", "--address", service.address, "--image", str(path), "--prompt", "mass",
         "--render", str(tmp_path / "boxes.png")]
    )  # fmt: skip
    assert args.func(args) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["prompt_used"] == "mass" and isinstance(record["predicted_boxes"], list)
    assert (tmp_path / "boxes.png").is_file()
    args = parser.parse_args(
        ["biomedclip", "heatmap", "--address", service.address, "--image", str(path), "--prompt", "mass",
         "--out", str(tmp_path / "map.png"), "--composite", str(tmp_path / "comp.png"), "--label"]
    )  # fmt: skip
    assert args.func(args) == 0
    assert Image.open(tmp_path / "map.png").size == (170, 120)


def test_info_names_the_model_its_checkpoint_and_the_cam_layer(stub, tiny_model) -> None:  # noqa: F811
    info = stub.Info(types_pb2.InfoRequest(), timeout=30)
    assert info.service == "biomedclip" and info.device == "cpu"
    assert "test_vit" in info.model and info.backend.startswith("open_clip")
    assert info.checkpoint == str(tiny_model["checkpoint"]) and len(info.checkpoint_sha256) == 64
    arch = json.loads(info.architecture)
    assert arch["cam_channels"] == 64 and arch["cam_grid"] == [10, 10]
    assert info.details["cam_default_top_k"] == str(TOP_K)


def test_missing_model_files_stop_the_service_at_start_naming_each_one(tmp_path: Path) -> None:
    empty = tmp_path / "models" / "biomedclip"
    empty.mkdir(parents=True)
    config = write_config(tmp_path, {"model_dir": "models/biomedclip"}, name="biomedclip.yaml")
    with (
        pytest.raises(RuntimeError, match="exited with code 2"),
        LocalService("biomedclip", config, log_path=tmp_path / "log.txt"),
    ):
        pass
    log = (tmp_path / "log.txt").read_text()
    assert "open_clip_config.json not found in model_dir" in log and "no weights in model_dir" in log


def cam(method: int = 0, top_k: int = 0) -> biomedclip_pb2.CamOptions:
    return biomedclip_pb2.CamOptions(method=method, top_k=top_k)  # type: ignore[arg-type]


BAD_INPUTS = {
    "undecodable image": (
        "Heatmap",
        biomedclip_pb2.HeatmapRequest(
            items=[biomedclip_pb2.PromptedImage(image=types_pb2.Image(encoded=b"\x89PNG garbage"), prompt="x")]
        ),
        "not a decodable image",
    ),
    "no texts": ("EmbedTexts", biomedclip_pb2.EmbedTextsRequest(), "holds no texts"),
    "empty text": ("EmbedTexts", biomedclip_pb2.EmbedTextsRequest(texts=["lung", "  "]), "text 1 is empty"),
    "no images": ("EmbedImages", biomedclip_pb2.EmbedImagesRequest(), "holds no images"),
    "no labels": (
        "Classify",
        biomedclip_pb2.ClassifyRequest(images=[image(sample())]),
        "0 label(s) given: give at least two",
    ),
    "template without a slot": (
        "Classify",
        biomedclip_pb2.ClassifyRequest(images=[image(sample())], labels=["a", "b"], template="an x-ray"),
        "has no {} where the label goes",
    ),
    "empty prompt": (
        "Localize",
        biomedclip_pb2.LocalizeRequest(items=[prompted(sample(), "")]),
        "item 0: the prompt is empty",
    ),
    "no items": ("Heatmap", biomedclip_pb2.HeatmapRequest(), "holds no items"),
    "unknown method": (
        "Heatmap",
        biomedclip_pb2.HeatmapRequest(items=[prompted(sample(), "mass")], cam=cam(method=9)),
        "unknown method 9; use one of gscorecam, scorecam, gradcam, similarity",
    ),
    "top-k beyond the layer": (
        "Heatmap",
        biomedclip_pb2.HeatmapRequest(items=[prompted(sample(), "mass")], cam=cam(1, 300)),
        "top_k 300 is out of range: the target layer has 64 channels, so use 1..64",
    ),
    "top-k for another method": (
        "Localize",
        biomedclip_pb2.LocalizeRequest(items=[prompted(sample(), "mass")], cam=cam(2, 5)),
        "scorecam does not use it",
    ),
    "over-size image": (
        "Heatmap",
        biomedclip_pb2.HeatmapRequest(
            items=[
                biomedclip_pb2.PromptedImage(
                    image=types_pb2.Image(array=numpy_to_tensor(np.zeros((500, 500), np.uint8))), prompt="x"
                )
            ]
        ),
        "over this service's limit of 200000",
    ),
    "wrong image dtype": (
        "EmbedImages",
        biomedclip_pb2.EmbedImagesRequest(images=[types_pb2.Image(array=numpy_to_tensor(np.zeros((8, 8), bool)))]),
        "dtype bool is not accepted",
    ),
    "threshold out of range": (
        "Localize",
        biomedclip_pb2.LocalizeRequest(
            items=[prompted(sample(), "mass")], options=biomedclip_pb2.LocalizeOptions(threshold=1.5)
        ),
        "threshold: Input should be less than or equal to 1",
    ),
    "unknown colormap": (
        "Heatmap",
        biomedclip_pb2.HeatmapRequest(
            items=[prompted(sample(), "mass")],
            render=biomedclip_pb2.RenderOptions(composite=True, colormap=12),  # type: ignore[arg-type]
        ),
        "unknown colormap 12",
    ),
    "alpha out of range": (
        "Heatmap",
        biomedclip_pb2.HeatmapRequest(
            items=[prompted(sample(), "mass")], render=biomedclip_pb2.RenderOptions(composite=True, alpha=2)
        ),
        "render.alpha 2.0 must be within [0, 1]",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_invalid_argument_with_what_to_fix_and_the_service_stays_up(
    stub, service: LocalService, case: str
) -> None:
    method, request, message = BAD_INPUTS[case]
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub, method)(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert serving(service) == health_pb2.HealthCheckResponse.SERVING


# -- no escape through shared memory ------------------------------------------------------------------------
def test_a_heatmap_output_region_that_is_a_symlink_is_refused_and_its_target_left_untouched(stub, shm_symlink) -> None:
    name, target = shm_symlink
    before = target.read_bytes()
    request = biomedclip_pb2.HeatmapRequest(
        items=[prompted(sample(0), "a bright square")], output_region=types_pb2.OutputRegion(region=name)
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.Heatmap(request, timeout=120)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is a symbolic link" in err.value.details()
    assert target.read_bytes() == before


@pytest.mark.parametrize("rpc", ["EmbedImages", "Classify", "Heatmap", "Localize"])
def test_an_input_region_that_is_a_symlink_is_not_read_by_any_rpc(stub, shm_symlink, rpc: str) -> None:
    name, _ = shm_symlink
    linked = types_pb2.Image(
        array=types_pb2.Tensor(shared=types_pb2.SharedArray(region=name, dtype="uint8", shape=[32, 32]))
    )
    requests = {
        "EmbedImages": biomedclip_pb2.EmbedImagesRequest(images=[linked]),
        "Classify": biomedclip_pb2.ClassifyRequest(images=[linked], labels=["a", "b"]),
        "Heatmap": biomedclip_pb2.HeatmapRequest(items=[biomedclip_pb2.PromptedImage(image=linked, prompt="x")]),
        "Localize": biomedclip_pb2.LocalizeRequest(items=[biomedclip_pb2.PromptedImage(image=linked, prompt="x")]),
    }
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub, rpc)(requests[rpc], timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is a symbolic link" in err.value.details()
