"""MANO model files read without chumpy: the chumpy objects of MANO_RIGHT.pkl become numpy arrays, smplx gets a
numpy-only copy, and a file that is no MANO model is refused with what to use instead, running nothing from it.

The files are built here in MANO's layout with stand-in classes under chumpy's module names, registered only
while the bytes are written (tests/wilor_upstream_assets.py); chumpy itself is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from modelyard.runtime.errors import ConfigError
from modelyard.wilor.mano_file import hands_mean, read_mano, write_numpy_mano
from tests.wilor_upstream_assets import chumpy_standins, mano_arrays, mano_pickle_bytes


def _assert_same(data: dict, expected: dict) -> None:
    assert set(data) == set(expected)
    for key, value in expected.items():
        if sparse.issparse(value):
            assert sparse.issparse(data[key]) and np.array_equal(data[key].toarray(), value.toarray()), key
        elif isinstance(value, np.ndarray):
            assert type(data[key]) is np.ndarray and data[key].dtype == value.dtype, key
            assert np.array_equal(data[key], value), key
        else:
            assert data[key] == value, key


@pytest.mark.parametrize("views", [False, True], ids=["Ch arrays", "chumpy.reordering views"])
def test_a_mano_file_holding_chumpy_objects_reads_as_numpy_without_chumpy(tmp_path: Path, views: bool) -> None:
    assert importlib.util.find_spec("chumpy") is None  # so nothing below can lean on it
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(mano_pickle_bytes(mano_arrays(), views=views))
    assert b"chumpy.ch" in path.read_bytes() and (b"chumpy.reordering" in path.read_bytes()) == views
    data = read_mano(path)
    _assert_same(data, mano_arrays())
    assert hands_mean(data).shape == (15, 3)


def test_the_numpy_copy_loads_the_way_smplx_loads_mano(tmp_path: Path) -> None:
    source = tmp_path / "MANO_RIGHT.pkl"
    source.write_bytes(mano_pickle_bytes(mano_arrays()))
    (tmp_path / "copy").mkdir()
    copy = write_numpy_mano(read_mano(source), tmp_path / "copy")
    assert copy == tmp_path / "copy" / "MANO_RIGHT.pkl"
    with copy.open("rb") as file:  # smplx's MANO: pickle.load(mano_file, encoding='latin1')
        _assert_same(pickle.load(file, encoding="latin1"), mano_arrays())


class _RunsCode:
    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))

    marker = ""


def test_a_pickle_with_anything_but_mano_content_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    _RunsCode.marker = str(marker)
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps({**mano_arrays(), "extra": _RunsCode()}, protocol=2))
    with pytest.raises(ConfigError, match=r"MANO_RIGHT\.pkl is not a MANO model file .*(posix|os)\.system object"):
        read_mano(path)
    assert not marker.exists()


def test_files_that_are_no_mano_model_say_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(b"<html>please sign in</html>")
    with pytest.raises(ConfigError, match=r"not a MANO model file .*downloaded from the MANO website"):
        read_mano(path)
    smpl_like = {k: v for k, v in mano_arrays().items() if not k.startswith("hands_")}
    path.write_bytes(pickle.dumps(smpl_like, protocol=2))
    with pytest.raises(ConfigError, match="lacks hands_components, hands_mean: not a MANO model file"):
        read_mano(path)
    path.write_bytes(pickle.dumps({**mano_arrays(), "hands_mean": np.zeros(48)}, protocol=2))
    with pytest.raises(ConfigError, match="hands_mean has 48 values, a MANO hand has 45"):
        read_mano(path)
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(ConfigError, match="holds a list, not the dict of a MANO model file"):
        read_mano(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        read_mano(tmp_path / "absent.pkl")


def test_a_chumpy_operation_that_is_no_array_is_named(tmp_path: Path) -> None:
    with chumpy_standins() as ch:
        op = ch["Ch"].__new__(ch["Ch"])
        op.__dict__.update({"a": 1, "b": 2})  # a Ch without its array, like chumpy's arithmetic results
        content = pickle.dumps({**mano_arrays(), "shapedirs": op}, protocol=2)
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"chumpy\.ch\.Ch \(with a, b\) is not read without chumpy"):
        read_mano(path)
