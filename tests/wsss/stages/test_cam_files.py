from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from skimage.transform import resize

from wsss.errors import StoreError
from wsss.stages.cam_files import CAM_DIR, cam_path, load_cams, save_cams


def _smooth_cams(rng: np.random.Generator, count: int, shape: tuple[int, int]) -> np.ndarray:
    """CAM-like maps: a coarse grid upsampled bilinearly, max-normalised into [0, 1]."""
    coarse = rng.random((count, shape[0] // 16 + 2, shape[1] // 16 + 2))
    maps = resize(coarse, (count, *shape), order=1)
    return (maps / maps.max(axis=(1, 2), keepdims=True)).astype(np.float32)


@pytest.fixture
def seed_dir(tmp_path: Path) -> Path:
    (tmp_path / CAM_DIR).mkdir()
    return tmp_path


def test_cams_read_back_exactly_as_float16(seed_dir: Path) -> None:
    cams = _smooth_cams(np.random.default_rng(0), 2, (75, 100))
    cams[0, 0, :4] = [0.0, 1.0, 6e-8, 1e-5]  # the ends and float16's subnormals
    save_cams(cam_path(seed_dir, "x"), np.array([4, 9]), cams)
    keys, loaded = load_cams(seed_dir, "x", (75, 100))
    assert keys.tolist() == [4, 9] and loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, cams.astype(np.float16).astype(np.float32))


def test_smooth_cams_take_well_under_their_float16_size(seed_dir: Path) -> None:
    cams = _smooth_cams(np.random.default_rng(1), 2, (375, 500))
    save_cams(cam_path(seed_dir, "x"), np.array([0, 1]), cams)
    assert cam_path(seed_dir, "x").stat().st_size < 0.5 * cams.astype(np.float16).nbytes


def test_files_written_before_the_compact_format_are_read(seed_dir: Path) -> None:
    cams = _smooth_cams(np.random.default_rng(2), 1, (30, 40))
    np.savez(cam_path(seed_dir, "old"), keys=np.array([3], np.int16), cams=cams.astype(np.float16))
    keys, loaded = load_cams(seed_dir, "old", (30, 40))
    assert keys.tolist() == [3]
    np.testing.assert_array_equal(loaded, cams.astype(np.float16).astype(np.float32))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array)
    return buffer.getvalue()


def _bomb(path: Path) -> None:
    """A few kilobytes that inflate to the planes of a 1000 x 1000 image."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("keys.npy", _npy(np.array([0], np.int16)))
        archive.writestr("planes.npy", _npy(np.zeros((2, 1, 1000, 1000), np.uint8)))


def _lying_header(path: Path) -> None:
    """A header that claims a huge array over a few bytes of data."""
    header = _npy(np.zeros((2, 1, 4, 4), np.uint8)).replace(b"(2, 1, 4, 4)", b"(2, 1, 99999, 99999)")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("keys.npy", _npy(np.array([0], np.int16)))
        archive.writestr("planes.npy", header)


def _flipped_bytes(path: Path) -> None:
    save_cams(path, np.array([0]), _smooth_cams(np.random.default_rng(3), 1, (4, 6)))
    with zipfile.ZipFile(path) as archive:
        member = archive.getinfo("planes.npy")
    start = member.header_offset + 30 + len(member.filename) + 8  # into the deflated bytes
    data = bytearray(path.read_bytes())
    data[start : start + 4] = bytes(b ^ 0xFF for b in data[start : start + 4])
    path.write_bytes(bytes(data))


# name: (how the file is made, what the error says it found)
CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "garbage": (lambda p: p.write_bytes(b"not a zip"), "not a zip file"),
    "objects": (
        lambda p: np.savez(p, keys=np.array([object()], dtype=object), cams=np.zeros((1, 4, 6))),
        "object array",
    ),
    "no cams": (lambda p: np.savez(p, keys=np.zeros(1, np.int16)), "cams.npy"),
    "shapes": (
        lambda p: np.savez(p, keys=np.zeros(2, np.int16), cams=np.zeros((1, 4, 6), np.float16)),
        "for 2 classes",
    ),
    "float64": (lambda p: np.savez(p, keys=np.zeros(1, np.int16), cams=np.zeros((1, 4, 6))), "cams float64"),
    "other image": (
        lambda p: save_cams(p, np.array([0]), np.zeros((1, 6, 4), np.float32)),
        r"\(4, 6\) image",
    ),
    "bomb": (_bomb, "unpacks to 2000128 bytes"),
    "lying header": (_lying_header, "header says"),
    "flipped bytes": (_flipped_bytes, "invalid|Bad CRC"),
}


@pytest.mark.parametrize("image_id", sorted(CASES))
def test_damaged_cam_files_are_store_errors(seed_dir: Path, image_id: str) -> None:
    """CAM files may come from a shared store: pickles, bombs and damage are refused and named,
    before anything past the image's own CAM size is inflated or allocated."""
    make, found = CASES[image_id]
    make(cam_path(seed_dir, image_id))
    with pytest.raises(StoreError, match=rf"{image_id}\.npz: damaged CAM file in the seed artifact") as error:
        load_cams(seed_dir, image_id, (4, 6))
    assert error.match(found)
