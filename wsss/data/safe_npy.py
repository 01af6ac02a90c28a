"""Read a `.npy` file that may hold a pickled object array without running code from it.

psa, irn, SEAM and CPN ship `cls_labels.npy` as `np.save(path, {id: vector})`: a 0-d object array
whose payload is a pickle. `np.load(..., allow_pickle=True)` would unpickle it with the full
unpickler, so a crafted file (or a raw pickle renamed `.npy`, which np.load also accepts) runs
arbitrary code. Here the header is parsed with numpy's own reader, numeric arrays are loaded with
`allow_pickle=False`, and an object payload goes through an unpickler that can construct nothing but
numpy arrays, dtypes and numpy scalars (plus the plain containers pickle builds natively: dict,
list, tuple, str, int, float, bool, None).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import numpy.lib.format as npy_format

# The callables numpy's pickles of arrays and scalars name, looked up from live objects so that
# files written by numpy 1.x (`numpy.core.multiarray`) and 2.x (`numpy._core.multiarray`) both load.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_SCALAR = np.float32(0).__reduce__()[0]
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
}
_PICKLE_PROTO = b"\x80"  # protocol 2+ pickles start with PROTO
_ZIP_MAGIC = b"PK\x03\x04"


class UnsafeFileError(ValueError):
    """The file is not a plain `.npy` array or asks to construct something outside the whitelist."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeFileError(
                f"refused to load {module}.{name}: only numpy arrays, dtypes and scalars are allowed"
            ) from None


def _check_object_dtypes(dtype: np.dtype) -> None:
    if dtype.hasobject and dtype != np.dtype(object):
        raise UnsafeFileError(f"structured array with object fields ({dtype}) is not supported")


def load_npy(path: Path, max_bytes: int = 1 << 30) -> Any:
    """The array stored in `path` (a 0-d object array's item is returned as is, e.g. a dict).

    Raises UnsafeFileError (or OSError/ValueError for damaged files); never runs code from the file.
    """
    size = path.stat().st_size
    if size > max_bytes:
        raise UnsafeFileError(f"{size} bytes; refusing label files over {max_bytes} bytes")
    with path.open("rb") as f:
        head = f.read(len(npy_format.MAGIC_PREFIX))
        if head != npy_format.MAGIC_PREFIX:
            if head.startswith(_PICKLE_PROTO):
                raise UnsafeFileError(
                    "a raw pickle, not a .npy file; pickles can run code and are never loaded, "
                    "re-save the dict with np.save(path, labels) on a machine you trust"
                )
            if head.startswith(_ZIP_MAGIC):
                raise UnsafeFileError("an .npz archive, not a .npy file written by np.save")
            raise UnsafeFileError("not a .npy file, no NumPy magic header")
        f.seek(0)
        version = npy_format.read_magic(f)
        if version == (1, 0):
            shape, _fortran, dtype = npy_format.read_array_header_1_0(f)
        else:
            shape, _fortran, dtype = npy_format.read_array_header_2_0(f)
        _check_object_dtypes(dtype)
        if not dtype.hasobject:
            f.seek(0)
            return np.load(f, allow_pickle=False)
        payload = f.read()
    array = _NumpyOnlyUnpickler(io.BytesIO(payload)).load()
    if not isinstance(array, np.ndarray) or array.dtype != object:
        raise UnsafeFileError("object payload is not a NumPy object array")
    if array.shape != tuple(shape):
        raise UnsafeFileError(f"payload shape {array.shape} differs from the header's {tuple(shape)}")
    return array.item() if array.shape == () else array
