"""A service or its commands that cannot be imported: a missing package says what to install; an error in
modelyard's own code is shown as the error it is, not as a package to install."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from modelyard.runtime import cli, registry
from modelyard.runtime.errors import ConfigError


def import_error(source: str, tmp_path: Path, module: str = "modelyard_test_broken") -> ImportError:
    (tmp_path / f"{module}.py").write_text(source)
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return exc
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module, None)
    raise AssertionError("the module imported")


def test_a_missing_third_party_package_is_named() -> None:
    with pytest.raises(ImportError) as err:
        importlib.import_module("no_such_package_xyz.sub")
    assert registry.missing_dependency(err.value) == "no_such_package_xyz"


def test_a_name_missing_from_an_installed_package_is_a_dependency_problem(tmp_path: Path) -> None:
    exc = import_error("from numpy import no_such_function_xyz\n", tmp_path)
    assert registry.missing_dependency(exc) == "numpy"


def test_an_error_in_modelyards_own_modules_is_not_a_missing_package(tmp_path: Path) -> None:
    exc = import_error("from modelyard.runtime.errors import NoSuchError\n", tmp_path)
    assert registry.missing_dependency(exc) is None
    with pytest.raises(ImportError) as err:
        importlib.import_module("modelyard.no_such_module")
    assert registry.missing_dependency(err.value) is None


def test_the_install_hint_names_an_extra_only_where_one_exists() -> None:
    assert registry.install_hint("medsam") == "install its dependencies: pip install 'modelyard[medsam]'"
    assert "modelyard[echo]" not in registry.install_hint("echo")


@pytest.fixture
def broken_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A service and a commands module registered as entry points: one lacks a package, one has a bug."""
    (tmp_path / "modelyard_test_lacks.py").write_text("import no_such_package_xyz\n")
    (tmp_path / "modelyard_test_bug.py").write_text("from modelyard.runtime.errors import NoSuchError\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    real = registry.entry_points

    def entry_points(group: str) -> list[EntryPoint]:
        ours = [
            EntryPoint("lacks", "modelyard_test_lacks:SERVICE", group),
            EntryPoint("bug", "modelyard_test_bug:SERVICE", group),
        ]
        return [*real(group=group), *ours]

    monkeypatch.setattr(registry, "entry_points", entry_points)
    monkeypatch.setattr(cli, "entry_points", entry_points)
    yield
    for name in ("modelyard_test_lacks", "modelyard_test_bug"):
        sys.modules.pop(name, None)


def test_a_service_lacking_a_package_is_a_config_error_naming_it(broken_entry_points: None) -> None:
    with pytest.raises(ConfigError, match=r"no_such_package_xyz.*install the package named above"):
        registry.load_service("lacks")


def test_a_service_with_a_bug_raises_the_bug(broken_entry_points: None) -> None:
    with pytest.raises(ImportError, match="NoSuchError"):
        registry.load_service("bug")


def test_commands_with_a_bug_are_reported_and_the_others_still_work(
    broken_entry_points: None, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = cli.build_parser()
    err = capsys.readouterr().err
    assert "the bug commands failed to load" in err and "NoSuchError" in err
    assert "lacks" not in err  # a missing package: those commands belong to another environment
    assert parser.parse_args(["services"]).func is not None
