"""Label files are untrusted: loading one never runs code, whatever it holds."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.lib.format as npy_format
import pytest

from wsss.config import DataConfig
from wsss.data.safe_npy import UnsafeFileError, load_npy
from wsss.data.voc import open_dataset
from wsss.errors import DataError


class _RunsAShellCommand:
    """Unpickling an instance runs `touch <marker>`: what a crafted cls_labels.npy could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _evil_object_array(path: Path, marker: Path) -> None:
    np.save(path, np.array([_RunsAShellCommand(marker)], dtype=object), allow_pickle=True)


def _evil_dict_value(path: Path, marker: Path, ids: list[str]) -> None:
    table: dict[str, object] = {i: np.array([1, 0, 0], np.float32) for i in ids}
    table[ids[0]] = _RunsAShellCommand(marker)
    np.save(path, table, allow_pickle=True)  # a 0-d object array holding the dict, as psa writes it


def _train_ids(root: Path) -> list[str]:
    return (root / "ImageSets/Segmentation/train.txt").read_text().split()


@pytest.fixture
def data_copy(tiny_data_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_data_dir, tmp_path / "data"))


@pytest.mark.parametrize("craft", ["object array", "dict with a malicious value"])
def test_malicious_label_file_runs_nothing(data_copy: Path, tmp_path: Path, craft: str) -> None:
    marker = tmp_path / "pwned"
    label_file = data_copy / "cls_labels.npy"
    if craft == "object array":
        _evil_object_array(label_file, marker)
    else:
        _evil_dict_value(label_file, marker, _train_ids(data_copy))
    with pytest.raises(DataError, match=r"cls_labels\.npy: unreadable label file \(refused to load .*system"):
        open_dataset(data_copy, DataConfig(), tmp_path / "cache")
    assert not marker.exists()
    # The file really is malicious: numpy's own pickle loading runs the command.
    np.load(label_file, allow_pickle=True)
    assert marker.exists()


def test_raw_pickle_and_other_formats_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    raw = tmp_path / "raw.npy"
    raw.write_bytes(pickle.dumps({"a": _RunsAShellCommand(marker)}))
    with pytest.raises(UnsafeFileError, match=r"a raw pickle, not a \.npy file"):
        load_npy(raw)
    assert not marker.exists()
    np.savez(tmp_path / "labels.npz", a=np.ones(3))
    with pytest.raises(UnsafeFileError, match=r"an \.npz archive"):
        load_npy(tmp_path / "labels.npz")
    (tmp_path / "text.npy").write_text("2007_000032 1 0 0\n")
    with pytest.raises(UnsafeFileError, match="no NumPy magic header"):
        load_npy(tmp_path / "text.npy")


def test_psa_and_irn_label_files_load(tmp_path: Path) -> None:
    psa = {"2007_000032": np.array([1, 0, 1], np.float32)}
    irn = {np.int64(2007000032): np.array([0, 1, 0], np.float32), 2007000039: [1.0, 0.0, 0.0]}
    np.save(tmp_path / "psa.npy", psa, allow_pickle=True)
    np.save(tmp_path / "irn.npy", irn, allow_pickle=True)
    assert load_npy(tmp_path / "psa.npy")["2007_000032"].tolist() == [1, 0, 1]
    loaded = load_npy(tmp_path / "irn.npy")
    assert loaded[2007000032].tolist() == [0, 1, 0] and loaded[2007000039] == [1.0, 0.0, 0.0]
    np.save(tmp_path / "plain.npy", np.eye(3, dtype=np.float32))  # no pickle at all
    assert load_npy(tmp_path / "plain.npy").shape == (3, 3)


def test_files_written_by_numpy_1_load(tmp_path: Path) -> None:
    """numpy 1.x pickles name `numpy.core.multiarray`; numpy 2 writes `numpy._core.multiarray`."""
    table = np.array({"a": np.array([1.0, 0.0])}, dtype=object)
    payload = pickle.dumps(table, protocol=3)  # np.save's protocol; module names as plain text lines
    old_payload = payload.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy._core" not in old_payload and b"numpy.core.multiarray\n" in old_payload
    with (tmp_path / "old.npy").open("wb") as f:
        npy_format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        f.write(old_payload)
    assert load_npy(tmp_path / "old.npy")["a"].tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("not a dict", "expected a dict"),
        ({1.5: [1, 0, 0]}, "keys must be image ids"),
        ({"ID": "abc"}, "are not a vector of numbers"),
        ({"ID": np.array(["a", "b", "c"])}, "are not a vector of numbers"),
        ({"ID": [1, 0]}, "have 2 entries, expected 3 classes"),
    ],
)
def test_label_tables_of_the_wrong_shape(
    data_copy: Path, tmp_path: Path, table: object, message: str
) -> None:
    image_id = _train_ids(data_copy)[0]
    if isinstance(table, dict):
        table = {(image_id if k == "ID" else k): v for k, v in table.items()}
    np.save(data_copy / "cls_labels.npy", np.array(table, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=message):
        open_dataset(data_copy, DataConfig(), tmp_path / "cache")


class _DeclaresAHugeArray:
    """Pickles as a direct call of numpy.ndarray with 200 million elements: 1.6 GB from 300 bytes."""

    def __reduce__(self) -> tuple[object, tuple[tuple[int]]]:
        return np.ndarray, ((200_000_000,),)


class _StateLargerThanItsData:
    """numpy's own reconstruction, then a state that declares 200 million floats and holds none."""

    def __reduce__(self) -> tuple[object, ...]:
        reconstruct = np.zeros(1).__reduce__()[0]
        return reconstruct, (np.ndarray, (0,), b"b"), (1, (200_000_000,), np.dtype("float64"), False, b"")


# Peak memory of a fresh interpreter that opens the dataset: VmHWM, the high-water mark of this
# process image (ru_maxrss would also count the pytest process it was forked from).
_PEAK_MEMORY = """
import re, sys
from pathlib import Path
from wsss.config import DataConfig
from wsss.data.voc import open_dataset
from wsss.errors import DataError
try:
    open_dataset(Path(sys.argv[1]), DataConfig(), Path(sys.argv[2]))
except DataError as exc:
    peak_kb = int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
    print(peak_kb // 1024, exc)
"""


@pytest.mark.parametrize("crafted", [_DeclaresAHugeArray, _StateLargerThanItsData], ids=["call", "state"])
def test_a_small_label_file_cannot_make_the_reader_allocate(
    tiny_data_dir: Path, tmp_path: Path, crafted: type
) -> None:
    root = Path(shutil.copytree(tiny_data_dir, tmp_path / "data"))
    ids = _train_ids(root)
    table: dict[str, object] = {i: np.array([1, 0, 0], np.float32) for i in ids}
    table[ids[0]] = crafted()
    np.save(root / "cls_labels.npy", table, allow_pickle=True)
    assert (root / "cls_labels.npy").stat().st_size < 2000
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_MEMORY, str(root), str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    peak_mb, _, message = done.stdout.strip().partition(" ")
    assert done.returncode == 0 and "unreadable label file" in message, done.stderr[-2000:]
    assert int(peak_mb) < 400, f"{peak_mb} MB at the peak reading a {crafted.__name__} label file"


def test_numpy_written_label_files_still_load_through_the_checked_unpickler(tmp_path: Path) -> None:
    table = {
        "2007_000032": np.array([1, 0, 1], np.float32),
        "2007_000033": np.zeros((1, 3), np.float64),
        "2007_000034": [1, 0, 0],
        "2007_000035": np.float32(1.0),
    }
    np.save(tmp_path / "labels.npy", table, allow_pickle=True)
    loaded = load_npy(tmp_path / "labels.npy")
    assert set(loaded) == set(table)
    assert np.array_equal(loaded["2007_000033"], np.zeros((1, 3))) and loaded["2007_000034"] == [1, 0, 0]
    objects = np.empty(2, dtype=object)
    objects[:] = [np.ones(2), "x"]
    np.save(tmp_path / "objects.npy", objects, allow_pickle=True)
    assert load_npy(tmp_path / "objects.npy")[1] == "x"
    with pytest.raises(UnsafeFileError, match="does not match the data"):
        (tmp_path / "short.npy").write_bytes(_numeric_npy_bytes()[:-8])
        load_npy(tmp_path / "short.npy")


def _numeric_npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((4, 4)))
    return buffer.getvalue()
