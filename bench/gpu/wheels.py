"""What the GPU check needs besides the machine's own Python and torch, and how it gets there.

A GPU machine starts bare: its Python holds torch (and much else) but not the project, and it reaches no package
index. So the few pure-Python dependencies it may lack travel with the checkout as wheels, downloaded once on a
machine that reaches PyPI:

    python -m bench.gpu.wheels download            # -> build/gpu-wheels (about 17 MB), carried with the checkout

and on the GPU machine `install` puts into a private folder only what the machine's Python does not already
satisfy (by pyproject.toml's ranges), then makes the checkout importable as `modelyard` there by links, with its
entry points, so the checkout's own code runs and nothing is built. Standard library only: this runs before
anything is installed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / "build" / "gpu-wheels"
SITE = ROOT / "build" / "gpu-site"
# The target: the GPU machines' Python (3.12, x86-64, manylinux). Versions are those the project's tests pass
# with; each must lie within pyproject.toml's range (tests/bench/test_gpu_check.py checks). grpcio-health-checking
# and -reflection stay at 1.62.3: newer generated stubs refuse a grpcio older than themselves, and the machine's
# grpcio version is not ours to choose. The binary ones (grpcio, protobuf, pyyaml, pydantic-core, wcwidth) are
# used only where the machine lacks a fitting version.
PYTHON_TAG = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
PINS = {
    "grpcio": "1.85.3",
    "grpcio-health-checking": "1.62.3",
    "grpcio-reflection": "1.62.3",
    "protobuf": "7.36.2",
    "pydantic": "2.14.4",
    "pydantic-core": "2.50.5",
    "annotated-types": "0.8.0",
    "typing-inspection": "0.4.5",
    "typing-extensions": "4.16.0",
    "pyyaml": "6.0.4",
    "prometheus-client": "0.26.0",
    "nvidia-ml-py": "13.615.71",
    "tenacity": "9.2.1",
    "segment-anything": "1.0",
    "open-clip-torch": "3.3.0",
    "ftfy": "6.3.1",
    "wcwidth": "0.9.4",
    "timm": "1.0.31",
}
# What the check runs: the runtime, MedSAM and BiomedCLIP. torch and torchvision are the machine's, always.
EXTRAS = ("medsam", "biomedclip")
MACHINE_ONLY = {"torch", "torchvision"}
# Large binary packages that the GPU machines' Python holds and that are not carried (they would not fit the
# 64 MiB that travels): a machine without them is reported by `install`, by name.
NOT_CARRIED = {"numpy", "pillow", "rich", "scikit-image", "transformers", "opencv-python-headless"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements() -> list[str]:
    """pyproject.toml's requirements for the runtime and EXTRAS, without the machine's own torch."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in EXTRAS:
        wanted += project["optional-dependencies"][extra]
    kept = []
    for line in wanted:
        name = canonical(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0])
        if name != "modelyard" and name not in MACHINE_ONLY:
            kept.append(line)
    return kept


def _satisfied(requirement: str) -> tuple[bool, str]:
    """Whether this Python already has `requirement`, and which version it has."""
    from packaging.requirements import Requirement

    req = Requirement(requirement)
    if req.marker is not None and not req.marker.evaluate():
        return True, "not needed here"
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return False, "missing"
    return req.specifier.contains(version, prereleases=True), version


def _wheel_requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(name).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def _carried(wheels: Path) -> dict[str, Path]:
    return {canonical(p.name.split("-")[0]): p for p in sorted(wheels.glob("*.whl"))}


def plan(wheels: Path) -> dict[str, dict[str, str]]:
    """For each requirement (and the requirements of the wheels it pulls in): the machine's or a carried wheel."""
    from packaging.requirements import Requirement

    carried = _carried(wheels)
    decided: dict[str, dict[str, str]] = {}
    todo = requirements()
    while todo:
        line = todo.pop(0)
        req = Requirement(line)
        name = canonical(req.name)
        if name in decided or name in MACHINE_ONLY or (req.marker is not None and not req.marker.evaluate()):
            continue
        ok, have = _satisfied(line)
        if ok:
            decided[name] = {"requirement": line, "source": "machine", "version": have}
        elif name in carried:
            decided[name] = {"requirement": line, "source": "wheel", "wheel": carried[name].name, "machine": have}
            todo += [r for r in _wheel_requirements(carried[name]) if "extra ==" not in r]
        else:
            decided[name] = {"requirement": line, "source": "none", "machine": have}
    return decided


def link_checkout(site: Path) -> None:
    """`modelyard` in `site`: links to the checkout's packages (pyproject's package-dir) and a dist-info with its
    entry points, so `modelyard serve` and the registry find the services exactly as an install would."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package = site / "modelyard"
    package.mkdir(parents=True, exist_ok=True)
    for dotted, folder in config["tool"]["setuptools"]["package-dir"].items():
        link = package / dotted.split(".", 1)[1]
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(ROOT / folder, target_is_directory=True)
    project = config["project"]
    info = site / f"modelyard-{project['version']}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: modelyard\nVersion: {project['version']}\n")
    groups = [("console_scripts", project["scripts"]), *project["entry-points"].items()]
    (info / "entry_points.txt").write_text(
        "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n" for group, eps in groups)
    )


def install(wheels: Path, site: Path) -> dict[str, dict[str, str]]:
    decided = plan(wheels)
    missing = [
        f"{n} ({d['requirement']}, machine: {d['machine']})" for n, d in decided.items() if d["source"] == "none"
    ]
    if missing:
        raise SystemExit(
            f"these are neither on this machine nor among the wheels in {wheels}: {', '.join(missing)}; "
            "run `python -m bench.gpu.wheels download` on a machine that reaches PyPI and carry that folder"
        )
    site.mkdir(parents=True, exist_ok=True)
    chosen = [str(wheels / d["wheel"]) for d in decided.values() if d["source"] == "wheel"]
    if chosen:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--no-deps",
                "--no-compile",
                "--no-cache-dir",
                "--upgrade",
                "--disable-pip-version-check",
                "--target",
                str(site),
                *chosen,
            ],
            check=True,
        )
    link_checkout(site)
    return decided


def download(wheels: Path) -> None:
    wheels.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            PYTHON_TAG,
            "--implementation",
            "cp",
            *platforms,
            "-d",
            str(wheels),
            *(f"{name}=={version}" for name, version in PINS.items()),
        ],
        check=True,
    )
    size = sum(p.stat().st_size for p in wheels.glob("*.whl"))
    print(f"{len(list(wheels.glob('*.whl')))} wheels, {size / 2**20:.1f} MiB in {wheels}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["download", "plan", "install"])
    parser.add_argument("--wheels", type=Path, default=WHEELS, help=f"wheel folder (default {WHEELS})")
    parser.add_argument("--site", type=Path, default=SITE, help=f"install folder (default {SITE})")
    args = parser.parse_args()
    if args.action == "download":
        download(args.wheels)
        return 0
    decided = install(args.wheels, args.site) if args.action == "install" else plan(args.wheels)
    print(json.dumps(decided, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
