"""Users' type checkers read modelyard's annotations: every package ships py.typed (PEP 561)."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (the development environment's)
ROOT = Path(__file__).resolve().parents[2]


def test_every_package_has_py_typed_and_ships_it() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = setuptools["package-dir"]
    for package in setuptools["packages"]:
        parent = next(p for p in sorted(dirs, key=len, reverse=True) if package == p or package.startswith(p + "."))
        folder = ROOT / dirs[parent] / package.removeprefix(parent).lstrip(".").replace(".", "/")
        assert (folder / "py.typed").is_file(), f"{package}: no py.typed in {folder}"
    shipped = setuptools["package-data"]
    assert "py.typed" in shipped.get("*", []), "package-data must ship py.typed for every package"
