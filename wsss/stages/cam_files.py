"""The seed artifact's CAM files, `cams/<id>.npz`: one image's CAMs, compact and lossless.

A file holds `keys` (int16, the image's class indices) and `planes` (uint8 (2, P, H, W)): the float16
CAMs' bit patterns, differenced along each row, split into low and high bytes, deflated (level 1).
CAMs are smooth (upsampled from the network's stride-16 grid), and a non-negative float16's bit
pattern grows with its value, so neighbouring differences are small and the high bytes nearly
constant: deflate sees long runs once the bytes are split into planes (the shuffle filter of Blosc
and HDF5). On the 298 real MSRC train CAMs of a trained seed stage: 2.56x smaller than raw float16
(2.79x at deflate level 6, 3x the encoding time), and the values read back are exactly the float16
ones, so every score made from them is unchanged (docs/benchmarks.md, "CAM files").

Files written before (`cams`, float16 (P, H, W), stored uncompressed) stay readable. Files may come
from a shared store, so a reader trusts nothing in them: members are read with zipfile, each
bounded by the size the image's CAMs can have before anything is inflated or allocated (a deflated
member can expand a small file into any size), arrays parsed from their .npy header without
pickles, and any damage is a DamagedArtifact naming the file (the pipeline rebuilds the stage).
"""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from wsss.errors import DamagedArtifact

CAM_DIR = "cams"
_LEVEL = 1  # deflate level: 2.56x at 1.4 ms per MSRC image; level 6 gives 2.79x at 4.3 ms
_MAX_KEYS = 256
_HEADER_BYTES = 4096  # an .npy header is at most a few hundred bytes; numpy refuses over 10,000


def cam_path(seed_dir: Path, image_id: str) -> Path:
    return seed_dir / CAM_DIR / f"{image_id}.npz"


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _encode(cams: np.ndarray) -> np.ndarray:
    bits = cams.astype("<f2").view("<u2")
    deltas = np.diff(bits, axis=-1, prepend=np.zeros_like(bits[..., :1]))  # wraps modulo 2**16
    return np.stack([(deltas & 0xFF).astype(np.uint8), (deltas >> 8).astype(np.uint8)])


def _decode(planes: np.ndarray) -> np.ndarray:
    deltas = planes[0].astype("<u2") | (planes[1].astype("<u2") << 8)
    bits = np.cumsum(deltas, axis=-1, dtype="<u2")  # undoes the differences, modulo 2**16
    return bits.view("<f2").astype(np.float32)


def save_cams(path: Path, keys: np.ndarray, cams: np.ndarray) -> None:
    """Write one image's CAMs (P, H, W) in [0, 1] for its P class indices `keys`."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=_LEVEL) as archive:
        archive.writestr("keys.npy", _npy_bytes(keys.astype(np.int16)))
        archive.writestr("planes.npy", _npy_bytes(_encode(cams)))


def _parse_npy(data: bytes, name: str) -> np.ndarray:
    """An array from .npy bytes, its header checked against the bytes before anything is allocated."""
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise ValueError(f"{name}: .npy version {version}")
    if dtype.hasobject:
        raise ValueError(f"{name}: object array")
    count = math.prod(shape)
    if count * dtype.itemsize != len(data) - stream.tell():
        raise ValueError(f"{name}: header says {shape} {dtype}, the member holds other bytes")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=stream.tell())
    return array.reshape(shape, order="F" if fortran else "C")


def _read_member(archive: zipfile.ZipFile, name: str, limit: int) -> np.ndarray:
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise ValueError(f"{name} unpacks to {info.file_size} bytes, more than this image's CAMs take")
    with archive.open(info) as member:  # zipfile yields at most file_size bytes and checks the CRC
        return _parse_npy(member.read(), name)


def _read(path: Path, image_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    pixels = image_shape[0] * image_shape[1]
    with zipfile.ZipFile(path) as archive:
        keys = _read_member(archive, "keys.npy", _HEADER_BYTES + 2 * _MAX_KEYS)
        names = set(archive.namelist())
        if "planes.npy" in names:
            limit = _HEADER_BYTES + 2 * keys.size * pixels
            planes = _read_member(archive, "planes.npy", limit)
            if planes.ndim != 4 or planes.shape[0] != 2 or planes.dtype != np.uint8:
                raise ValueError(f"planes {planes.shape} {planes.dtype}")
            cams = _decode(planes)
        else:  # written before the compact format: float16, stored
            cams = _read_member(archive, "cams.npy", _HEADER_BYTES + 2 * keys.size * pixels)
            if cams.dtype != np.float16:
                raise ValueError(f"cams {cams.dtype}")
            cams = cams.astype(np.float32)
    if keys.ndim != 1 or not np.issubdtype(keys.dtype, np.integer):
        raise ValueError(f"keys {keys.shape} {keys.dtype}")
    if cams.shape != (keys.size, *image_shape):
        raise ValueError(f"CAMs {cams.shape} for {keys.size} classes of a {image_shape} image")
    return keys.astype(np.int64), cams


def load_cams(seed_dir: Path, image_id: str, image_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(keys, (P, H, W) float32 CAMs) of one image, (H, W) = `image_shape`, from a seed artifact."""
    path = cam_path(seed_dir, image_id)
    try:
        return _read(path, image_shape)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DamagedArtifact(path, f"damaged CAM file in the seed artifact ({exc})") from None
