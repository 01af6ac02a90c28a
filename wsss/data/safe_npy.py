"""Read a `.npy` file that may hold a pickled object array without running code from it.

psa, irn, SEAM and CPN ship `cls_labels.npy` as `np.save(path, {id: vector})`: a 0-d object array
whose payload is a pickle. `np.load(..., allow_pickle=True)` would unpickle it with the full
unpickler, so a crafted file (or a raw pickle renamed `.npy`, which np.load also accepts) runs
arbitrary code. Here the header is parsed with numpy's own reader, numeric arrays are loaded with
`allow_pickle=False`, and an object payload goes through an unpickler that can construct nothing but
numpy arrays, dtypes and numpy scalars (plus the plain containers pickle builds natively: dict,
list, tuple, str, int, float, bool, None). Nothing in the file can make the reader allocate more
than the file holds: every declared shape must match the data that follows it.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.lib.format as npy_format

from wsss.errors import open_regular


class UnsafeFileError(ValueError):
    """The file is not a plain `.npy` array or asks to construct something outside the whitelist."""


# The callables numpy's pickles of arrays and scalars name, looked up from live objects so that
# files written by numpy 1.x (`numpy.core.multiarray`) and 2.x (`numpy._core.multiarray`) both load.
_RECONSTRUCT: Any = np.zeros(1).__reduce__()[0]
_SCALAR = np.float32(0).__reduce__()[0]


class _ArrayClass:
    """Stands for numpy.ndarray inside a pickle. numpy's pickles only hand the class to
    `_reconstruct`; calling it (`ndarray((10**9,))`) would allocate any shape the file declares."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafeFileError("refused to call numpy.ndarray: a pickle of an array never does")


_NDARRAY = _ArrayClass()


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's `_reconstruct(ndarray, (0,), b'b')`: an empty array that BUILD then fills."""
    if subtype is not _NDARRAY or not isinstance(shape, tuple) or shape != (0,):
        raise UnsafeFileError("refused an array reconstruction numpy does not write")
    return _RECONSTRUCT(np.ndarray, (0,), dtype)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
}
_PICKLE_PROTO = b"\x80"  # protocol 2+ pickles start with PROTO
_ZIP_MAGIC = b"PK\x03\x04"
MAX_LABEL_FILE = 64 << 20  # VOC train_aug's label file is 1.7 MB


def _check_array_state(state: Any) -> None:
    """An array's pickled state, (version, shape, dtype, fortran, data), must carry all of its data:
    a shape may not promise more elements than the file holds (memory would follow the shape)."""
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        raise UnsafeFileError("array state of an unknown form")
    shape, dtype, data = state[-4], state[-3], state[-1]
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise UnsafeFileError("array shape is not a tuple of sizes")
    if not isinstance(dtype, np.dtype):
        raise UnsafeFileError("array state without a dtype")
    count = math.prod(shape)
    if dtype.hasobject:
        if dtype != np.dtype(object) or not isinstance(data, list) or len(data) != count:
            raise UnsafeFileError(f"object array of {count} elements does not hold them")
    elif not isinstance(data, bytes | bytearray) or len(data) != count * dtype.itemsize:
        raise UnsafeFileError(f"array of {count} x {dtype} does not hold its data")


class _NumpyOnlyUnpickler(pickle._Unpickler):  # type: ignore[name-defined, misc]
    """Python's own unpickler (its opcode table can be extended, the C one's cannot), constructing
    nothing outside the whitelist and filling an array only with the data the file holds."""

    dispatch: ClassVar[dict[int, Any]] = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeFileError(
                f"refused to load {module}.{name}: only numpy arrays, dtypes and scalars are allowed"
            ) from None

    def _load_build(self) -> None:
        # pickle.Unpickler's own stack (CPython's C and pure-Python unpicklers both keep it here)
        target, state = self.stack[-2], self.stack[-1]  # type: ignore[attr-defined]
        if isinstance(target, np.ndarray):
            _check_array_state(state)
        elif not isinstance(target, np.dtype):
            raise UnsafeFileError(f"refused to set the state of a {type(target).__name__}")
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]

    dispatch[pickle.BUILD[0]] = _load_build


def _check_object_dtypes(dtype: np.dtype) -> None:
    if dtype.hasobject and dtype != np.dtype(object):
        raise UnsafeFileError(f"structured array with object fields ({dtype}) is not supported")


def load_npy(path: Path, max_bytes: int = MAX_LABEL_FILE) -> Any:
    """The array stored in `path` (a 0-d object array's item is returned as is, e.g. a dict).

    Raises UnsafeFileError (or OSError/ValueError for damaged files); never runs code from the file.
    """
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise UnsafeFileError(f"{size} bytes; refusing label files over {max_bytes} bytes")
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
            if math.prod(shape) * dtype.itemsize != size - f.tell():
                raise UnsafeFileError(
                    f"the header's shape {tuple(shape)} does not match the data in the file"
                )
            f.seek(0)
            return np.load(f, allow_pickle=False)
        payload = f.read()
    array = _NumpyOnlyUnpickler(io.BytesIO(payload)).load()
    if not isinstance(array, np.ndarray) or array.dtype != object:
        raise UnsafeFileError("object payload is not a NumPy object array")
    if array.shape != tuple(shape):
        raise UnsafeFileError(f"payload shape {array.shape} differs from the header's {tuple(shape)}")
    return array.item() if array.shape == () else array
