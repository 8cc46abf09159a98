"""wilor's own environment (.venv-wilor: mediapipe 0.10, numpy<2, protobuf<5) as seen from the test process.

The test process runs in the main environment, which cannot import mediapipe; so the service runs there as a
child process, and the backend runs there in-process through tests/integration/wilor_inprocess.py.
`make test` sets MODELYARD_WILOR_PYTHON, which makes a missing environment a failure instead of a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV_VAR = "MODELYARD_WILOR_PYTHON"
DEFAULT = ROOT / ".venv-wilor" / "bin" / "python"
INPROCESS = Path(__file__).resolve().parent / "integration" / "wilor_inprocess.py"


def wilor_python() -> str:
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        if not os.access(explicit, os.X_OK):
            pytest.fail(f"{ENV_VAR}={explicit} is not an executable Python: run `make setup-wilor`")
        return explicit
    if DEFAULT.is_file():
        return str(DEFAULT)
    pytest.skip("wilor's environment .venv-wilor is missing: `make setup-wilor` builds it (`make test` does)")


def run_backend(job: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Run the wilor backend in-process in the wilor environment on `job` (see wilor_inprocess.py)."""
    job_file, out_file = folder / "job.json", folder / "result.json"
    job_file.write_text(json.dumps(job))
    done = subprocess.run(
        [wilor_python(), str(INPROCESS), str(job_file), str(out_file)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    if done.returncode != 0:
        raise AssertionError(f"wilor_inprocess.py failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out_file.read_text())
    return result
