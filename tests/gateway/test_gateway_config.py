"""gateway.yaml: validated at start-up, every problem named by the key path the file uses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modelyard.gateway.config import load_gateway_config
from modelyard.runtime.errors import ConfigError


def refusal(tmp_path: Path, document: dict) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"data_root": str(tmp_path), **document}))
    with pytest.raises(ConfigError) as err:
        load_gateway_config(str(path))
    return err.value.message


def test_a_typo_in_a_top_level_key_names_that_key_and_the_one_meant(tmp_path: Path) -> None:
    message = refusal(tmp_path, {"workerz": 4})
    assert str(tmp_path / "gateway.yaml") in message
    assert "unknown key 'workerz' — did you mean 'workers'?" in message
    assert "model." not in message  # gateway.yaml has no model: section


def test_a_typo_inside_a_service_names_the_service_and_its_known_keys(tmp_path: Path) -> None:
    message = refusal(tmp_path, {"services": {"medsam": {"addresses": ["127.0.0.1:1"], "max_atempts": 3}}})
    assert "unknown key 'services.medsam.max_atempts' — did you mean 'max_attempts'?" in message
    assert "known here: " in message and "attempt_timeout_s" in message


def test_a_typo_in_the_optional_tls_section_is_named_with_its_keys(tmp_path: Path) -> None:
    (tmp_path / "tls.pem").write_text("x")
    message = refusal(tmp_path, {"tls": {"cert": "tls.pem", "kee": "tls.pem"}})
    assert "unknown key 'tls.kee' — did you mean 'key'?" in message


def test_every_problem_is_listed_at_once_with_the_value_given(tmp_path: Path) -> None:
    message = refusal(tmp_path, {"workers": 0, "drain_secs": 5})
    assert "'workers': Input should be greater than or equal to 1 (got 0)" in message
    assert "unknown key 'drain_secs' — did you mean 'drain_seconds'?" in message


def test_the_gateway_knows_every_installed_model_service_by_its_manifest() -> None:
    from modelyard.gateway.pipelines import STUBS
    from modelyard.runtime.manifest import installed_manifests
    from modelyard.v1 import medsam_pb2_grpc

    manifests = installed_manifests()
    assert sorted(STUBS) == [m.name for m in manifests]
    for manifest in manifests:
        assert STUBS[manifest.name].__name__ == manifest.proto_service.rsplit(".", 1)[1] + "Stub"
    assert STUBS["medsam"] is medsam_pb2_grpc.MedSAMStub
