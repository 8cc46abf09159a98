"""Print the requirements of pyproject.toml's extras, one per line, so images install exactly what the
extras say (pyproject.toml stays the one place where ranges are pinned).

    python deploy/docker/pyproject_extras.py medsam biomedclip   # base dependencies + both extras
    python deploy/docker/pyproject_extras.py --only torch        # one extra, without the base dependencies

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("extras", nargs="*", help="extras of pyproject.toml (none: the base dependencies)")
    parser.add_argument("--only", action="store_true", help="leave the base dependencies out")
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT)
    args = parser.parse_args(argv)
    print("\n".join(requirements(args.extras, args.pyproject, base=not args.only)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
