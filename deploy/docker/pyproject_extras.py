"""Print the requirements of pyproject.toml's extras, one per line, so images install exactly what the
extras say (pyproject.toml stays the one place where ranges are pinned).

    python deploy/docker/pyproject_extras.py medsam biomedclip   # base dependencies + both extras
    python deploy/docker/pyproject_extras.py --only torch        # one extra, without the base dependencies
    python deploy/docker/pyproject_extras.py --write deploy/docker/requirements   # `make requirements`

`--write` makes the requirement file of each image layer (LAYERS), which deploy/Dockerfile installs and
deploy/docker/wheelhouse.sh downloads; tests/compose fails when they no longer match pyproject.toml.

`modelyard[torch]`-style references to the project's own extras are expanded; each line is printed once.
Standard library (and pip) only: it runs on the host, where the wheelhouse is made.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
SELF = re.compile(r"^modelyard\[(?P<extras>[^\]]+)\]$")

# Each image layer's requirements: (extras, with the base dependencies). `core` is the base dependencies alone;
# wilor's venv is its own (base + wilor); the others stack on core (deploy/Dockerfile).
LAYERS: dict[str, tuple[list[str], bool]] = {
    "core": ([], True),
    "torch": (["torch"], False),
    "gateway": (["gateway"], False),
# >>> generated from services/*/manifest.yaml by `make generate`: service layers (edits here are replaced)
    "biomedclip": (["biomedclip"], False),
    "medsam": (["medsam"], False),
    "tapip3d": (["tapip3d"], False),
    "wilor": (["wilor"], True),
    "tapip3d-upstream": (["tapip3d-upstream"], False),
    "wilor-upstream": (["wilor-upstream"], False),
# <<< generated: service layers
}
HEADER = "# Generated from pyproject.toml by `make requirements` (deploy/docker/pyproject_extras.py): do not edit.\n"


def requirements(extras: list[str], pyproject: Path = PYPROJECT, base: bool = True) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    out: list[str] = list(project.get("dependencies", [])) if base else []
    seen: set[str] = set()

    def add(extra: str) -> None:
        if extra in seen:
            return
        if extra not in optional:
            raise SystemExit(f"no extra '{extra}' in {pyproject} (known: {', '.join(sorted(optional))})")
        seen.add(extra)
        for req in optional[extra]:
            own = SELF.match(req.replace(" ", ""))
            if own:
                for name in own["extras"].split(","):
                    add(name)
            elif req not in out:
                out.append(req)

    for extra in extras:
        add(extra)
    return out


def layer_files(pyproject: Path = PYPROJECT) -> dict[str, str]:
    """The text of each layer's requirement file, by file name."""
    return {
        f"{layer}.txt": HEADER + "".join(f"{req}\n" for req in requirements(extras, pyproject, base))
        for layer, (extras, base) in LAYERS.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("extras", nargs="*", help="extras of pyproject.toml (none: the base dependencies)")
    parser.add_argument("--only", action="store_true", help="leave the base dependencies out")
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT)
    parser.add_argument("--write", type=Path, metavar="DIR", help="write every layer's requirement file into DIR")
    args = parser.parse_args(argv)
    if args.write:
        args.write.mkdir(parents=True, exist_ok=True)
        for name, text in layer_files(args.pyproject).items():
            (args.write / name).write_text(text)
        return 0
    print("\n".join(requirements(args.extras, args.pyproject, base=not args.only)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
