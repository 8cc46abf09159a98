"""Per-container overrides of the runtime section from the environment (compose's GPU overlay uses them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.medsam.config import MedSAMConfig
from modelyard.runtime.config import load_config
from modelyard.runtime.errors import ConfigError
from tests.conftest import write_config


@pytest.fixture
def config(tmp_path: Path) -> Path:
    checkpoint = tmp_path / "medsam.pth"
    checkpoint.write_bytes(b"x")
    return write_config(tmp_path, {"checkpoint": str(checkpoint)}, {"memory_fraction": 0.9, "device": "cpu"})


def test_the_environment_overrides_the_files_memory_fraction_and_device(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELYARD_MEMORY_FRACTION", " 0.35 ")
    monkeypatch.setenv("MODELYARD_DEVICE", "cuda:0")
    runtime = load_config(config, MedSAMConfig).runtime
    assert runtime.memory_fraction == 0.35 and runtime.device == "cuda:0"
    assert runtime.max_batch_size == 8  # the rest of the section is the file's (and the defaults)


@pytest.mark.parametrize("value", [None, "", "  "])
def test_an_unset_or_empty_variable_changes_nothing(
    config: Path, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    # compose passes "${MEDSAM_MEMORY_FRACTION:-}": empty when the planner left it out
    if value is None:
        monkeypatch.delenv("MODELYARD_MEMORY_FRACTION", raising=False)
    else:
        monkeypatch.setenv("MODELYARD_MEMORY_FRACTION", value)
    monkeypatch.delenv("MODELYARD_DEVICE", raising=False)
    assert load_config(config, MedSAMConfig).runtime.memory_fraction == 0.9


def test_a_bad_value_is_reported_with_the_variable_that_set_it(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELYARD_MEMORY_FRACTION", "1.5")
    monkeypatch.delenv("MODELYARD_DEVICE", raising=False)
    with pytest.raises(ConfigError) as err:
        load_config(config, MedSAMConfig)
    assert "runtime.memory_fraction" in err.value.message and "MODELYARD_MEMORY_FRACTION=1.5" in err.value.message


def test_a_config_without_a_runtime_section_gets_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = tmp_path / "medsam.pth"
    checkpoint.write_bytes(b"x")
    path = tmp_path / "medsam.yaml"
    path.write_text(f"model:\n  checkpoint: {checkpoint}\n")
    monkeypatch.setenv("MODELYARD_MEMORY_FRACTION", "0.5")
    monkeypatch.delenv("MODELYARD_DEVICE", raising=False)
    assert load_config(path, MedSAMConfig).runtime.memory_fraction == 0.5


def test_the_environment_names_the_token_file_and_a_missing_one_is_named(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "service.token").write_text("s3cret\n")
    monkeypatch.setenv("MODELYARD_TOKEN_FILE", str(tmp_path / "service.token"))
    assert load_config(config, MedSAMConfig).runtime.token_file == tmp_path / "service.token"
    monkeypatch.setenv("MODELYARD_TOKEN_FILE", "/run/secrets/no-such-token")
    with pytest.raises(ConfigError, match="no-such-token"):
        load_config(config, MedSAMConfig)
