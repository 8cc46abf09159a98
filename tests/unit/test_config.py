"""Config files: validated once, unknown keys named, paths resolved against the config's folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelyard.medsam.config import MedSAMConfig
from modelyard.runtime.config import load_config
from modelyard.runtime.errors import ConfigError
from tests.conftest import write_config


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "cfg" / "weights" / "medsam.pth"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    return path


def test_relative_paths_resolve_against_the_config_folder_not_the_working_directory(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path / "cfg", {"checkpoint": "weights/medsam.pth"})
    monkeypatch.chdir(tmp_path)  # a cwd where "weights/medsam.pth" does not exist
    loaded = load_config(config, MedSAMConfig)
    assert loaded.model.checkpoint == checkpoint
    assert loaded.source == config


def test_unknown_keys_are_rejected_by_name_with_a_suggestion(checkpoint: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path / "cfg", {"checkpoint": str(checkpoint), "mask_treshold": 0.4}, {"max_batch": 2})
    with pytest.raises(ConfigError) as err:
        load_config(config, MedSAMConfig)
    message = err.value.message
    assert "unknown key 'model.mask_treshold'" in message and "did you mean 'mask_threshold'" in message
    assert "unknown key 'runtime.max_batch'" in message and "max_batch_size" in message


def test_a_missing_checkpoint_names_the_path_it_looked_for_and_how_it_was_resolved(tmp_path: Path) -> None:
    config = write_config(tmp_path / "cfg", {"checkpoint": "weights/absent.pth"})
    with pytest.raises(ConfigError) as err:
        load_config(config, MedSAMConfig)
    assert str(tmp_path / "cfg" / "weights" / "absent.pth") in err.value.message
    assert "resolved against the config file's folder" in err.value.message


def test_a_host_path_inside_a_container_is_called_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_IN_CONTAINER", "1")
    config = write_config(tmp_path / "cfg", {"checkpoint": "/home/rbalzani/medical-vqa/medsam_vit_b.pth"})
    with pytest.raises(ConfigError) as err:
        load_config(config, MedSAMConfig)
    assert "path on the host that was never mounted into this container" in err.value.message
    assert "/home/rbalzani/medical-vqa/medsam_vit_b.pth" in err.value.message


def test_a_missing_config_file_names_the_path_and_a_host_path_is_called_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_IN_CONTAINER", "1")
    seed_path = "/workspace/configs//home/rbalzani/Thesis/experiments/test/output_T3_seg_manifest/step1.conf"
    with pytest.raises(ConfigError) as err:
        load_config(seed_path, MedSAMConfig)
    assert "config file not found" in err.value.message and seed_path.replace("//", "/") in err.value.message


def test_the_config_path_can_come_from_the_environment(checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    config = write_config(tmp_path / "cfg", {"checkpoint": str(checkpoint)})
    monkeypatch.setenv("MODELYARD_CONFIG", str(config))
    assert load_config(None, MedSAMConfig).model.checkpoint == checkpoint
    monkeypatch.delenv("MODELYARD_CONFIG")
    with pytest.raises(ConfigError, match="MODELYARD_CONFIG"):
        load_config(None, MedSAMConfig)


@pytest.mark.parametrize(
    ("runtime", "expected"),
    [
        ({"device": "gpu"}, "device 'gpu' is not one of auto, cpu, cuda, cuda:N"),
        ({"memory_fraction": 1.5}, "'runtime.memory_fraction'"),
        ({"queue_size": 0}, "'runtime.queue_size'"),
    ],
)
def test_bad_runtime_values_say_which_key_is_wrong(checkpoint: Path, tmp_path: Path, runtime, expected) -> None:
    config = write_config(tmp_path / "cfg", {"checkpoint": str(checkpoint)}, runtime)
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_config(config, MedSAMConfig)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    config = write_config(tmp_path / "cfg", {"checkpoint": "absent.pth", "colour": "red"}, {"device": "tpu"})
    with pytest.raises(ConfigError) as err:
        load_config(config, MedSAMConfig)
    assert err.value.message.count("\n  - ") == 3


def test_a_config_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(path, MedSAMConfig)
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path, MedSAMConfig)


def test_home_relative_paths_expand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m.pth").write_bytes(b"x")
    config = write_config(tmp_path / "cfg", {"checkpoint": "~/m.pth"})
    assert load_config(config, MedSAMConfig).model.checkpoint == Path(os.environ["HOME"]) / "m.pth"


def test_cpu_threads_cap_torch_when_set() -> None:
    import torch

    from modelyard.runtime.host import limit_cpu_threads

    before = torch.get_num_threads()
    try:
        limit_cpu_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
