"""MANO model files without chumpy: MANO_RIGHT.pkl as numpy arrays.

The file from the MANO website is a Python 2 pickle whose arrays are partly chumpy objects (`chumpy.ch.Ch`,
sometimes `chumpy.reordering.*` views of one). Unpickling it the usual way (smplx does `pickle.load`) needs
chumpy, which does not import on Python >= 3.11 (`inspect.getargspec`). Here the chumpy classes are read as
plain records and turned into the arrays they hold, and only the classes a MANO file is made of are accepted
(numpy, scipy.sparse, chumpy), so reading it runs no code from the file. smplx then reads the numpy-only copy
that `write_numpy_mano` writes.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.runtime.errors import ConfigError

# What smplx's MANO reads from the file (SMPL's model arrays plus the PCA hand-pose space and mean pose).
REQUIRED_KEYS = (
    "v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f",
    "hands_components", "hands_mean",
)  # fmt: skip
NUM_POSE_PARAMETERS = 45  # 15 joints x axis-angle

# Classes a MANO pickle is made of besides chumpy's (Python 2 names included: the file is a Python 2 pickle).
_ALLOWED = {
    "numpy": {"ndarray", "dtype"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "scipy.sparse.csc": {"csc_matrix"},
    "scipy.sparse._csc": {"csc_matrix"},
    "scipy.sparse.csr": {"csr_matrix"},
    "scipy.sparse._csr": {"csr_matrix"},
    "copy_reg": {"_reconstructor"},
    "copyreg": {"_reconstructor", "__newobj__"},
    "__builtin__": {"object", "set", "frozenset", "slice"},
    "builtins": {"object", "set", "frozenset", "slice"},
    "_codecs": {"encode"},
}


class ChumpyRecord:
    """A chumpy object as unpickled without chumpy: its class name and the state chumpy pickled."""

    chumpy_class = "chumpy.ch.Ch"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}

    def array(self) -> np.ndarray:
        """The value chumpy would compute (`.r`) for the classes a model file holds."""
        name = self.chumpy_class.rsplit(".", 1)[-1]
        s = self.state
        if "x" in s and name in ("Ch", "AtleastNd"):
            return np.asarray(_value(s["x"]))
        if "a" in s:
            a = _value(s["a"])
            if name == "Reshape":
                return a.reshape(s["newshape"])
            if name == "Select":
                picked = a.ravel()[np.asarray(s["idxs"])].copy()
                return picked.reshape(s["preferred_shape"]) if "preferred_shape" in s else picked
            if name == "transpose":
                return np.ascontiguousarray(np.transpose(a, axes=s.get("axes")))
            if name == "Repeat":
                return np.repeat(a, s["repeats"], s.get("axis"))
            if name == "Tile":
                return np.tile(a, s["reps"])
        raise ValueError(f"{self.chumpy_class} (with {', '.join(sorted(s)) or 'no state'}) is not read without chumpy")


def _value(obj: Any) -> Any:
    if isinstance(obj, ChumpyRecord):
        return obj.array()
    if isinstance(obj, np.ndarray):
        return obj
    if isinstance(obj, list | tuple):
        return np.asarray([_value(o) for o in obj])
    return obj


class _ChumpyFreeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            return type(name, (ChumpyRecord,), {"chumpy_class": f"{module}.{name}"})
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it holds a {module}.{name} object, which no MANO model file has")


def read_mano(path: Path) -> dict[str, Any]:
    """MANO_RIGHT.pkl (or MANO_LEFT.pkl) as a dict of numpy arrays (J_regressor stays a scipy sparse matrix),
    or ConfigError naming the file and what is wrong with it."""
    try:
        with path.open("rb") as file:
            raw = _ChumpyFreeUnpickler(file, encoding="latin1").load()
    except OSError as exc:
        raise ConfigError(f"MANO file {path} cannot be read: {exc}") from None
    except Exception as exc:
        raise ConfigError(
            f"MANO file {path} is not a MANO model file ({type(exc).__name__}: {exc}): use MANO_RIGHT.pkl as "
            "downloaded from the MANO website (mano_v1_2/models/)"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"MANO file {path} holds a {type(raw).__name__}, not the dict of a MANO model file")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise ConfigError(
            f"MANO file {path} lacks {', '.join(missing)}: not a MANO model file (SMPL, SMPL-H and MANO's "
            "hand-only files differ; WiLoR needs MANO_RIGHT.pkl from the MANO website)"
        )
    try:
        data = {key: _value(value) for key, value in raw.items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"MANO file {path}: {exc}") from None
    if np.asarray(data["hands_mean"]).size != NUM_POSE_PARAMETERS:
        raise ConfigError(
            f"MANO file {path}: hands_mean has {np.asarray(data['hands_mean']).size} values, a MANO hand has "
            f"{NUM_POSE_PARAMETERS} (15 joints x 3)"
        )
    return data


def write_numpy_mano(data: dict[str, Any], folder: Path, name: str = "MANO_RIGHT.pkl") -> Path:
    """Write `data` (from read_mano) where smplx's MANO reads it (`folder/MANO_RIGHT.pkl`): a plain pickle of
    numpy and scipy objects, which smplx's `pickle.load` reads without chumpy."""
    path = folder / name
    with path.open("wb") as file:
        pickle.dump(data, file, protocol=4)
    return path


def hands_mean(data: dict[str, Any]) -> np.ndarray:
    """MANO's mean hand pose (15, 3) axis-angle, of the right hand."""
    return np.asarray(data["hands_mean"], np.float64).reshape(15, 3)
