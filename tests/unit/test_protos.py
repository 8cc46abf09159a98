"""Generated stubs are never edited by hand: they must equal a fresh generation from the .proto files."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOC_PYTHON = ROOT / ".venv-protoc" / "bin" / "python"


def test_committed_stubs_match_the_protos() -> None:
    assert PROTOC_PYTHON.exists(), "the stub generator's environment is missing: run `make setup`"
    result = subprocess.run(
        [str(PROTOC_PYTHON), str(ROOT / "protos" / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_service_proto_lives_in_the_modelyard_v1_package() -> None:
    for proto in (ROOT / "protos" / "modelyard" / "v1").glob("*.proto"):
        assert "package modelyard.v1;" in proto.read_text(), proto.name
