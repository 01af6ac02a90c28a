"""Every kind of bad input a careful new user can give `wsss`, each answered the same way: exit status 2,
one `wsss: error:` line naming the file, key or value, no traceback, nothing published in the store,
and no code from the data run. docs/security.md's list of loaders is this catalogue's (plus the search
system's in tests/tuner/cli/test_bad_inputs.py).

Each case is (id, what the user gave, the words the error must contain). Data cases run on a fresh
copy of the tiny synthetic dataset, changed in one way.
"""

from __future__ import annotations

import os
import pickle
import resource
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.helpers import TINY
from wsss.cli import main
from wsss.config import DataConfig
from wsss.data.classes import write_mask
from wsss.data.voc import open_dataset
from wsss.store import MANIFEST

Setup = Callable[[Path, Path], list[str]]  # (dataset copy, scratch folder) -> wsss arguments


@dataclass(frozen=True)
class Case:
    id: str
    setup: Setup
    expect: str


class _RunsAShellCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def run_with(*overrides: str) -> Setup:
    return lambda d, t: ["run", "--data", str(d), "--set", *TINY, *overrides]


def config_file(text: str) -> Setup:
    def setup(d: Path, t: Path) -> list[str]:
        (t / "c.yaml").write_text(text)
        return ["run", str(t / "c.yaml"), "--data", str(d), "--set", *TINY]

    return setup


def data_change(change: Callable[[Path, Path], object], *overrides: str) -> Setup:
    def setup(d: Path, t: Path) -> list[str]:
        change(d, t)
        return ["run", "--data", str(d), "--set", *TINY, *overrides]

    return setup


def _ids(d: Path, split: str = "train") -> list[str]:
    return (d / f"ImageSets/Segmentation/{split}.txt").read_text().split()


def _image(d: Path, split: str = "train", i: int = 0) -> Path:
    return d / "JPEGImages" / f"{_ids(d, split)[i]}.jpg"


def _mask(d: Path, split: str = "train", i: int = 0) -> Path:
    return d / "SegmentationClass" / f"{_ids(d, split)[i]}.png"


def _values(value: int, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[:4, :4] = value
    return mask


def _labels(d: Path) -> dict[str, np.ndarray]:
    return {i: np.array([1, 0, 0], np.float32) for i in _ids(d)}


def _save_labels(d: Path, table: object) -> None:
    np.save(d / "cls_labels.npy", np.array(table, dtype=object), allow_pickle=True)


def _weights(make: Callable[[Path], object]) -> Setup:
    def setup(d: Path, t: Path) -> list[str]:
        make(t / "w.pth")
        w = f"seed.backbone.weights={t / 'w.pth'}"
        return ["run", "--data", str(d), "--set", *TINY, "seed.backbone.pretrained=true", w]

    return setup


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])


def _labels_cached_then_classes_shrunk(d: Path, t: Path) -> None:
    (d / "cls_labels.npy").unlink()  # labels from the masks, which hold class ids 1..3
    open_dataset(d, DataConfig(), t / "cache")  # caches them, as a first run does
    (d / "class_names.txt").write_text("ant\nbee\n")


def _npz_as_label_file(d: Path, t: Path) -> None:
    np.savez(t / "labels.npz", a=np.ones(3))
    shutil.copy(t / "labels.npz", d / "cls_labels.npy")


def _empty_folder(t: Path) -> Path:
    (t / "p").mkdir()
    return t / "p"


def _binary_config(t: Path) -> list[str]:
    (t / "c.yaml").write_bytes(b"\x80\x04\x95seed: 1")
    return ["run", str(t / "c.yaml")]


def _exported(data: dict[str, object]) -> Setup:
    def setup(d: Path, t: Path) -> list[str]:
        text = yaml.safe_dump({"provenance": {"experiment": "e", "data": data}})
        (t / "best.yaml").write_text(text)
        given = [] if data.get("location", "synthetic") != "synthetic" else ["--data", str(d)]
        return ["run", str(t / "best.yaml"), "--set", *TINY, *given]

    return setup


def _alias_bomb(depth: int = 7) -> str:
    """A few hundred bytes of YAML whose aliases stand for 9**depth values ("billion laughs")."""
    parts = ['&x0 ["x","x","x","x","x","x","x","x","x"]']
    parts += [f"&x{i} [" + ",".join([f"*x{i - 1}"] * 9) + "]" for i in range(1, depth)]
    return "refine:\n  beta: [" + ", ".join(parts) + "]\n"


def _huge_png_header(path: Path, width: int = 20_000, height: int = 10_000) -> None:
    """A valid PNG signature and header declaring 200 megapixels, and no pixels: 57 bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)  # 8-bit palette
    chunk = b"IHDR" + header
    end = b"IEND"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(header))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", 0)
        + end
        + struct.pack(">I", zlib.crc32(end))
    )


def _negative_tiff_mask(path: Path) -> None:
    """A 32-bit TIFF of labels -255 and -1 under the mask's .png name."""
    mask = np.zeros((64, 64), np.int32)
    mask[:4, :4], mask[4:8, :4] = -255, -1
    Image.fromarray(mask, mode="I").save(path, format="TIFF")


def _symlink_loop(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.symlink(path.name, path)  # the link points at itself: ELOOP on every look


def _amplifying_labels(d: Path, t: Path) -> None:
    """A label file of a few hundred bytes whose pickle asks numpy for a 400 MB array."""

    class Huge:
        def __reduce__(self) -> tuple[object, tuple[tuple[int]]]:
            return np.ndarray, ((50_000_000,),)

    _save_labels(d, {**_labels(d), _ids(d)[0]: Huge()})


class _StateWithoutData:
    """Pickles as numpy's own array reconstruction, with a state of 50 million floats and no data."""

    def __reduce__(self) -> tuple[object, ...]:
        reconstruct = np.zeros(1).__reduce__()[0]
        return reconstruct, (np.ndarray, (0,), b"b"), (1, (50_000_000,), np.dtype("float64"), False, b"")


def _file_section_then_set(d: Path, t: Path) -> list[str]:
    (t / "c.yaml").write_text("seed:\n  train: fast\n")
    return ["run", str(t / "c.yaml"), "--data", str(d), "--set", *TINY]


CONFIG = [
    Case(
        "unknown key",
        run_with("seed.train.lrr=1"),
        "seed.train.lrr: unknown key; did you mean 'seed.train.lr'?",
    ),
    Case("unknown section", run_with("sede.train.lr=1"), "sede: unknown key; did you mean 'seed'?"),
    Case("wrong type", run_with("refine.beta=high"), "refine.beta: expected a number, got 'high' (str)"),
    Case(
        "key below a value",
        run_with("seed.train.lr.x=3"),
        "seed.train.lr.x: unknown key; seed.train.lr is a single",
    ),
    Case("--set without =", run_with("seed.train.lr"), "--set 'seed.train.lr': expected KEY=VALUE"),
    Case("unparsable value", run_with("seed.scales=[1,"), "--set seed.scales: cannot parse value"),
    Case(
        "bool as number",
        run_with("seed.train.epochs=true"),
        "seed.train.epochs: expected an integer, got True",
    ),
    Case("list for a number", run_with("refine.beta=[1,2]"), "refine.beta: expected a number, got [1, 2]"),
    Case(
        "missing config file",
        lambda d, t: ["run", str(t / "none.yaml")],
        "none.yaml: no such config file or preset",
    ),
    Case("config invalid YAML", config_file("seed: [1\n"), "c.yaml: line 2 invalid YAML"),
    Case("config not a mapping", config_file("- 1\n- 2\n"), "c.yaml: the top level must be a mapping"),
    Case("provenance not a mapping", config_file("provenance: 3\n"), "c.yaml: provenance must be a mapping"),
    Case("config unknown key", config_file("segment:\n  aspp: [1]\n"), "c.yaml: segment.aspp: unknown key"),
    Case("config not text", lambda d, t: _binary_config(t), "c.yaml: not a UTF-8 text file"),
    Case("unknown method", run_with("seed.method=gradcam"), "seed.method"),
    Case("param of no method", run_with("seed.params.alpha=1"), "seed.params.alpha: unknown key"),
    Case(
        "mixup alpha 0",
        run_with("seed.method=mixup", "seed.params.alpha=0"),
        "seed.params.alpha: must be > 0",
    ),
    Case(
        "mixing layer past the backbone",
        run_with("seed.method=manifold_mixup", "seed.params.layers=[0,9]"),
        "seed.params.layers: [0, 9] reaches past this backbone's stages",
    ),
    Case("epochs 0", run_with("seed.train.epochs=0"), "seed.train.epochs: must be >= 1, got 0"),
    Case("batch size 0", run_with("refine.train.batch_size=0"), "refine.train.batch_size: must be >= 1"),
    Case("negative lr", run_with("segment.train.lr=-1"), "segment.train.lr: must be > 0, got -1.0"),
    Case("momentum 1", run_with("seed.train.momentum=1"), "seed.train.momentum: must be within [0, 1)"),
    Case("tiny crop", run_with("seed.train.crop_size=8"), "seed.train.crop_size: must be >= 16, got 8"),
    Case(
        "resize range reversed", run_with("seed.train.resize_long=[64,48]"), "seed.train.resize_long: must be"
    ),
    Case("hue jitter", run_with("seed.train.color_jitter=[0,0,0,0.9]"), "hue jitter must be <= 0.5"),
    Case("negative grad clip", run_with("seed.train.grad_clip=-1"), "seed.train.grad_clip: must be >= 0"),
    Case(
        "output stride 12",
        run_with("seed.backbone.output_stride=12"),
        "output_stride: must be 8 or 16, got 12",
    ),
    Case("unknown backbone", run_with("seed.backbone.name=resnet_nope"), "backbone.name: unknown timm model"),
    Case(
        "weights without pretrained",
        run_with("seed.backbone.weights=w.pth"),
        "weights: only used with pretrained",
    ),
    Case("weights file missing", _weights(lambda p: None), "w.pth: no such checkpoint file"),
    Case(
        "weights file garbage", _weights(lambda p: p.write_bytes(b"PK\x03\x04junk")), "w.pth: not a loadable"
    ),
    Case(
        "weights file runs code",
        _weights(lambda p: torch.save({"w": _RunsAShellCommand(p.parent / "pwned")}, p)),
        "w.pth: not a loadable weights-only checkpoint",
    ),
    Case(
        "weights without tensors", _weights(lambda p: torch.save({"epoch": 1}, p)), "w.pth: not a state dict"
    ),
    Case(
        "alpha_high below alpha_low",
        run_with("refine.alpha_high=2"),
        "refine.alpha_high: must be > alpha_low",
    ),
    Case("refine stride 5", run_with("refine.stride=5"), "refine.stride: must be 4 or 8, got 5"),
    Case("radius 1", run_with("refine.radius=1"), "refine.radius: must be within 2..12, got 1"),
    Case("logt 13", run_with("refine.logt=13"), "refine.logt: must be within 0..12, got 13"),
    Case("no scales", run_with("seed.scales=[]"), "seed.scales: need 1+ scales in (0, 4], got []"),
    Case("scale 5", run_with("segment.scales=[5]"), "segment.scales: need 1+ scales in (0, 4], got [5.0]"),
    Case(
        "bg threshold 2", run_with("seed.bg_threshold=2"), "seed.bg_threshold: must be within [0, 1], got 2.0"
    ),
    Case("sweep step 0", run_with("seed.sweep_step=0"), "seed.sweep_step: must be within (0, 0.5], got 0.0"),
    Case(
        "no ASPP rates", run_with("segment.aspp_rates=[]"), "segment.aspp_rates: need 1+ rates >= 1, got []"
    ),
    Case(
        "device tpu", run_with("runtime.device=tpu"), "runtime.device: must be auto, cpu, cuda, cuda:N or mps"
    ),
    Case(
        "device cuda without GPU",
        run_with("runtime.device=cuda"),
        "runtime.device: 'cuda' requested but no CUDA",
    ),
    Case("negative threads", run_with("runtime.threads=-1"), "runtime.threads: must be >= 0, got -1"),
    Case("infer batch 0", run_with("runtime.infer_batch=0"), "runtime.infer_batch: must be within 1..1024"),
    Case("unknown mask dir", run_with("data.mask_dir=Masks"), "data.mask_dir: 'Masks' is not one of"),
    Case("unknown label source", run_with("data.labels=guess"), "data.labels: 'guess' is not one of"),
    Case("empty train split", run_with("data.train_split="), "data.train_split: must not be empty"),
    Case("rng seed not int", run_with("rng_seed=x"), "rng_seed: expected an integer, got 'x' (str)"),
    Case(
        "synthetic size 10",
        lambda d, t: ["run", "--set", *TINY, "data.synthetic.size=10"],
        "data.synthetic.size: must be within 48..2048 pixels, got 10",
    ),
    Case(
        "infinite colour jitter",
        run_with("seed.train.color_jitter=[.inf,0,0,0]"),
        "seed.train.color_jitter[0]: must be a finite number, got inf",
    ),
    Case("huge crop", run_with("seed.train.crop_size=100000000"), "seed.train.crop_size: must be <= 4096"),
    Case(
        "huge resize", run_with("refine.train.resize_long=[64,9999999]"), "refine.train.resize_long: must be"
    ),
    Case("huge rng seed", run_with("rng_seed=10000000000000000000000000000000"), "rng_seed: 1000"),
    Case("negative rng seed", run_with("rng_seed=-1"), "rng_seed: must be within 0..2147483647, got -1"),
    Case("infinite beta", run_with("refine.beta=.inf"), "refine.beta: must be a finite number, got inf"),
    Case(
        "nan rw_alpha", run_with("refine.rw_alpha=.nan"), "refine.rw_alpha: must be a finite number, got nan"
    ),
    Case("infinite alpha_high", run_with("refine.alpha_high=.inf"), "refine.alpha_high: must be a finite"),
    Case(
        "infinite poly power",
        run_with("segment.train.poly_power=.inf"),
        "segment.train.poly_power: must be a finite number",
    ),
    Case("huge epochs", run_with("seed.train.epochs=100000000"), "seed.train.epochs: must be <= 10000"),
    Case("thousands of scales", run_with(f"seed.scales=[{','.join(['1.0'] * 20)}]"), "at most 16 scales"),
    Case(
        "bad file section beneath a --set",
        _file_section_then_set,
        "c.yaml: seed.train: expected a mapping of settings, got 'fast' (str)",
    ),
    Case("config duplicate key", config_file("refine:\n  beta: 4\n  beta: 8\n"), "duplicate key 'beta'"),
    Case("config alias bomb", config_file(_alias_bomb()), "c.yaml: line 2 invalid YAML (holds over 100000"),
    Case(
        "config a recursive alias",
        config_file("refine:\n  beta: &a [*a]\n"),
        "c.yaml: line 2 invalid YAML (an alias refers to itself)",
    ),
    Case(
        "config of 20 MB on one line",
        lambda d, t: (
            (t / "c.yaml").write_text("seed: {scales: [" + "1.0," * 5_000_000 + "1.0]}\n")
            and ["run", str(t / "c.yaml"), "--data", str(d)]
        ),
        "c.yaml: over 4 MiB; not a text file of settings",
    ),
    Case("sweep step 1e-300", run_with("seed.sweep_step=1e-300"), "seed.sweep_step: must be >= 0.001"),
    Case("a billion CRF iterations", run_with("refine.crf.iterations=1000000000"), "must be <= 1000"),
    Case(
        "k-means restarts a million",
        run_with("seed.method=sc_cam", "seed.params.kmeans_init=1000000"),
        "seed.params.kmeans_init: must be within 1..100",
    ),
    Case(
        "a billion synthetic images",
        lambda d, t: ["run", "--set", *TINY, "data.synthetic.train=1000000000"],
        "data.synthetic.train: must be <= 100000",
    ),
    Case(
        "val split is the train split",
        run_with("data.val_split=train"),
        "data.val_split: must be held out, not the train split 'train'",
    ),
]

DATA = [
    Case(
        "data folder missing",
        lambda d, t: ["run", "--data", str(t / "nowhere")],
        "nowhere: data folder not found",
    ),
    Case(
        "no JPEGImages",
        data_change(lambda d, t: shutil.rmtree(d / "JPEGImages")),
        "JPEGImages: missing folder",
    ),
    Case(
        "no mask folder",
        data_change(lambda d, t: shutil.rmtree(d / "SegmentationClass")),
        "SegmentationClass: miss",
    ),
    Case(
        "no SBD folder",
        run_with("data.mask_dir=SegmentationClassAug"),
        "SegmentationClassAug: missing folder",
    ),
    Case(
        "split file missing",
        run_with("data.val_split=test"),
        "test.txt: split file not found (data.val_split",
    ),
    Case(
        "empty split",
        data_change(lambda d, t: (d / "ImageSets/Segmentation/val.txt").write_text("\n")),
        "val.txt: empty split",
    ),
    Case(
        "duplicate ids",
        data_change(lambda d, t: (d / "ImageSets/Segmentation/val.txt").write_text("a\nb\na\n")),
        "val.txt: ids listed more than once: ['a']",
    ),
    Case(
        "image missing",
        data_change(lambda d, t: _image(d, "val", 2).unlink()),
        ".jpg: missing image for id listed",
    ),
    Case(
        "mask missing",
        data_change(lambda d, t: _mask(d, "train", 3).unlink()),
        ".png: missing mask for id listed",
    ),
    Case(
        "image is a folder",
        data_change(lambda d, t: (_image(d).unlink(), _image(d).mkdir())),
        ".jpg: missing image for id listed",
    ),
    Case(
        "truncated train image",
        data_change(lambda d, t: _truncate(_image(d))),
        ".jpg: unreadable or corrupt image",
    ),
    Case(
        "truncated val image",
        data_change(lambda d, t: _truncate(_image(d, "val"))),
        "unreadable or corrupt image",
    ),
    Case(
        "text as image",
        data_change(lambda d, t: _image(d).write_text("hello")),
        ".jpg: unreadable or corrupt",
    ),
    Case(
        "empty image file",
        data_change(lambda d, t: _image(d, "val", 1).write_bytes(b"")),
        "unreadable or corrupt",
    ),
    Case("truncated mask", data_change(lambda d, t: _truncate(_mask(d, "val"))), ".png: unreadable mask"),
    Case(
        "train mask value out of range",
        data_change(lambda d, t: write_mask(_mask(d), _values(9))),
        ".png: mask values [9] outside the classes 0..3 and 255",
    ),
    Case(
        "val mask value out of range",
        data_change(lambda d, t: write_mask(_mask(d, "val"), _values(4))),
        ".png: mask values [4] outside the classes 0..3 and 255",
    ),
    Case(
        "val mask size",
        data_change(lambda d, t: write_mask(_mask(d, "val"), _values(1, (32, 64)))),
        ".png: mask is 64x32 but its image is 64x64",
    ),
    Case(
        "train mask size",
        data_change(lambda d, t: write_mask(_mask(d), _values(1, (64, 65)))),
        ".png: mask is 65x64 but its image is 64x64",
    ),
    Case(
        "RGB mask",
        data_change(lambda d, t: Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(_mask(d, "val"))),
        "mask must be a palette or greyscale PNG, got mode RGB",
    ),
    Case(
        "JPEG saved as mask",
        data_change(lambda d, t: shutil.copy(_image(d), _mask(d))),
        "mask must be a palette or greyscale PNG",
    ),
    Case(
        "16-bit mask",
        data_change(lambda d, t: Image.fromarray(np.full((64, 64), 1000, np.uint16)).save(_mask(d))),
        "mask value 1000 outside 0..3 and 255",
    ),
    Case(
        "label file garbage",
        data_change(lambda d, t: (d / "cls_labels.npy").write_text("x")),
        "not a .npy file",
    ),
    Case(
        "label file a raw pickle",
        data_change(lambda d, t: (d / "cls_labels.npy").write_bytes(pickle.dumps(_labels(d)))),
        "cls_labels.npy: unreadable label file (a raw pickle, not a .npy file",
    ),
    Case(
        "label file an npz",
        data_change(_npz_as_label_file),
        "an .npz archive",
    ),
    Case(
        "label file object array runs code",
        data_change(lambda d, t: _save_labels(d, [_RunsAShellCommand(t / "pwned")])),
        "cls_labels.npy: unreadable label file (refused to load posix.system",
    ),
    Case(
        "label dict value runs code",
        data_change(
            lambda d, t: _save_labels(d, {**_labels(d), _ids(d)[0]: _RunsAShellCommand(t / "pwned")})
        ),
        "refused to load posix.system",
    ),
    Case("labels not a dict", data_change(lambda d, t: _save_labels(d, [1, 2])), "expected a dict {image id"),
    Case(
        "labels miss an id",
        data_change(lambda d, t: _save_labels(d, dict(list(_labels(d).items())[1:]))),
        "cls_labels.npy: no labels for image id",
    ),
    Case(
        "labels of the wrong length",
        data_change(lambda d, t: _save_labels(d, {i: np.ones(20) for i in _ids(d)})),
        "have 20 entries, expected 3 classes",
    ),
    Case(
        "labels are words",
        data_change(lambda d, t: _save_labels(d, {i: "cat" for i in _ids(d)})),
        "are not a vector of numbers (str)",
    ),
    Case(
        "labels keyed by floats",
        data_change(lambda d, t: _save_labels(d, {1.5: np.ones(3)})),
        "keys must be image ids (str or int), found float",
    ),
    Case(
        "label file asked for but absent",
        data_change(lambda d, t: (d / "cls_labels.npy").unlink(), "data.labels=file"),
        "cls_labels.npy: label file not found (data.labels = 'file')",
    ),
    Case(
        "training image without labels",
        data_change(lambda d, t: _save_labels(d, {**_labels(d), _ids(d)[0]: np.zeros(3)})),
        "has no class labels; every training image needs one",
    ),
    Case(
        "no class names", data_change(lambda d, t: (d / "class_names.txt").write_text("\n")), "no class names"
    ),
    Case(
        "class names not text",
        data_change(lambda d, t: (d / "class_names.txt").write_bytes(b"\xff\xfe\x00a")),
        "class_names.txt: not a UTF-8 text file",
    ),
    Case(
        "split file not text",
        data_change(lambda d, t: (d / "ImageSets/Segmentation/train.txt").write_bytes(b"\x89PNG\xff")),
        "train.txt: not a UTF-8 text file",
    ),
    Case(
        "background listed as a class",
        data_change(lambda d, t: (d / "class_names.txt").write_text("background\nant\n")),
        "class_names.txt: list object classes only",
    ),
    Case(
        "class list shrunk after a run",
        data_change(_labels_cached_then_classes_shrunk),
        "outside the classes 0..2 and 255",
    ),
    Case(
        "labels hold nan",
        data_change(lambda d, t: _save_labels(d, {**_labels(d), _ids(d)[1]: np.array([1, np.nan, 0])})),
        "labels of 'train_00001' must be 0 or 1 per class, found nan",
    ),
    Case(
        "labels hold a 2",
        data_change(lambda d, t: _save_labels(d, {**_labels(d), _ids(d)[1]: np.array([2, 0, 0])})),
        "must be 0 or 1 per class, found 2.0",
    ),
    Case(
        "label file declares a huge array",
        data_change(_amplifying_labels),
        "cls_labels.npy: unreadable label file (refused to call numpy.ndarray",
    ),
    Case(
        "label file array state without its data",
        data_change(lambda d, t: _save_labels(d, {**_labels(d), _ids(d)[0]: _StateWithoutData()})),
        "does not hold its data",
    ),
    Case(
        "200-megapixel train mask",
        data_change(lambda d, t: _huge_png_header(_mask(d))),
        "megapixels; images and masks over 64 megapixels are refused",
    ),
    Case(
        "200-megapixel val mask",
        data_change(lambda d, t: _huge_png_header(_mask(d, "val", 1))),
        "images and masks over 64 megapixels are refused",
    ),
    Case(
        "200-megapixel image",
        data_change(lambda d, t: _huge_png_header(_image(d))),
        ".jpg: over 170 megapixels",
    ),
    Case(
        "200-megapixel mask, labels from the masks",
        data_change(lambda d, t: (_huge_png_header(_mask(d)), (d / "cls_labels.npy").unlink())),
        "images and masks over 64 megapixels are refused",
    ),
    Case(
        "negative labels in a TIFF named .png",
        data_change(lambda d, t: _negative_tiff_mask(_mask(d))),
        ".png: mask must be a palette or greyscale PNG; this file is no PNG",
    ),
    Case(
        "listed image is a symlink loop",
        data_change(lambda d, t: _symlink_loop(_image(d, "val"))),
        ".jpg: cannot read it (Too many levels of symbolic links)",
    ),
    Case(
        "two images for one id",
        data_change(lambda d, t: shutil.copy(_image(d), _image(d).with_suffix(".png"))),
        ".jpg: several files for one id (",
    ),
    Case(
        "duplicate class names",
        data_change(lambda d, t: (d / "class_names.txt").write_text("ant\nbee\nant\n")),
        "class_names.txt: class names listed more than once: ['ant']",
    ),
    Case(
        "val ids also in train",
        data_change(lambda d, t: (d / "ImageSets/Segmentation/val.txt").write_text("\n".join(_ids(d)))),
        "val id(s) are also in",
    ),
    Case(
        "class names a FIFO",
        data_change(lambda d, t: ((d / "class_names.txt").unlink(), os.mkfifo(d / "class_names.txt"))),
        "class_names.txt: cannot read it (not a regular file)",
    ),
    Case(
        "split of 5 MB",
        data_change(lambda d, t: (d / "ImageSets/Segmentation/val.txt").write_text("x" * (5 << 20))),
        "val.txt: over 4 MiB",
    ),
]

OTHER = [
    Case(
        "eval: no prediction folder",
        lambda d, t: ["eval", str(t / "p"), "--data", str(d)],
        "p: prediction folder",
    ),
    Case(
        "eval: a prediction missing",
        lambda d, t: ["eval", str(_empty_folder(t)), "--data", str(d)],
        "no prediction for",
    ),
    Case(
        "eval: prediction of the wrong size",
        lambda d, t: [
            "eval",
            str(_predictions(d, t, lambda m: m[:32])),
            "--data",
            str(d),
        ],
        "prediction is 64x32, ground truth 64x64",
    ),
    Case(
        "eval: prediction values out of range",
        lambda d, t: ["eval", str(_predictions(d, t, lambda m: m + 7)), "--data", str(d)],
        "outside the classes 0..3 and 255",
    ),
    Case(
        "eval: a split outside the dataset",
        lambda d, t: ["eval", str(t), "--data", str(d), "--split", "../../../../etc/os-release"],
        "--split = '../../../../etc/os-release': a split is a file name in",
    ),
    Case(
        "eval: unknown split",
        lambda d, t: ["eval", str(t), "--data", str(d), "--split", "tst"],
        "tst.txt: split",
    ),
    Case(
        "synth: size 10",
        lambda d, t: ["data", "synth", str(t / "s"), "--size", "10"],
        "--size: must be within",
    ),
    Case(
        "synth: no images",
        lambda d, t: ["data", "synth", str(t / "s"), "--train", "0"],
        "--train: must be >= 1",
    ),
    Case(
        "synth: 99 classes",
        lambda d, t: ["data", "synth", str(t / "s"), "--classes", "99"],
        "--classes: must be",
    ),
    Case(
        "synth: into a full folder",
        lambda d, t: ["data", "synth", str(d)],
        "exists and is not an empty directory; choose a new output directory",
    ),
    Case(
        "store: unknown scheme",
        lambda d, t: ["run", "--data", str(d), "--store", "nosuch://bucket/x", "--set", *TINY],
        "nosuch://bucket/x: cannot open the stage store",
    ),
    Case(
        "store: a file",
        lambda d, t: ["run", "--data", str(d), "--store", str(d / "class_names.txt"), "--set", *TINY],
        "cannot open the stage store",
    ),
    Case(
        "store clean: negative age",
        lambda d, t: ["store", "clean", "--older-than-hours", "-1"],
        "must be >= 0",
    ),
    Case(
        "store clean: nan age",
        lambda d, t: ["store", "clean", "--older-than-hours", "nan"],
        "--older-than-hours: must be >= 0, got nan",
    ),
    Case(
        "store gc: nan age",
        lambda d, t: ["store", "gc", "--older-than-days", "nan"],
        "--older-than-days: must be >= 0, got nan",
    ),
    Case(
        "store clean: a dataset",
        lambda d, t: ["store", "clean", "--store", str(d)],
        "data: not a stage store",
    ),
    Case(
        "store gc: a dataset",
        lambda d, t: ["store", "gc", "--store", str(d), "--older-than-days", "0", "--apply"],
        "data: not a stage store",
    ),
    Case(
        "run: store in a dataset",
        lambda d, t: ["run", "--data", str(d), "--store", str(d), "--set", *TINY],
        "data: not a stage store",
    ),
    Case(
        "synth: under a file",
        lambda d, t: ["data", "synth", str(d / "class_names.txt" / "out")],
        "class_names.txt: not a folder, so",
    ),
    Case(
        "export: other data",
        _exported({"fingerprint": "0123456789abcdef", "location": "synthetic"}),
        "is not the data the trial ran on (the synthetic benchmark, fingerprint 0123456789abcdef)",
    ),
    Case(
        "export: data not on this machine",
        _exported({"fingerprint": "0123456789abcdef", "location": "/nowhere/VOC2012"}),
        "the trial ran on /nowhere/VOC2012, which is not on this machine",
    ),
    Case(
        "export: bad record",
        _exported({"fingerprint": 7}),
        "provenance.data.fingerprint: expected the dataset",
    ),
]


def _predictions(d: Path, t: Path, change: Callable[[np.ndarray], np.ndarray]) -> Path:
    out = t / "pred"
    out.mkdir()
    for image_id in _ids(d, "val"):
        mask = np.array(Image.open(d / "SegmentationClass" / f"{image_id}.png"))
        write_mask(out / f"{image_id}.png", change(mask))
    return out


CASES = CONFIG + DATA + OTHER


@pytest.mark.timeout(120)  # some of these inputs made earlier versions hang
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_clean_line(
    case: Case, bad_input_workspace: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, scratch = bad_input_workspace
    args = case.setup(data, scratch)
    capsys.readouterr()
    code = main(["-q", "--cache-dir", str(scratch / "cache"), *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("wsss: error: ")]
    assert len(errors) == 1 and case.expect in errors[0], err
    assert not list(tmp_path.rglob(MANIFEST))  # nothing was published
    assert not (scratch / "pwned").exists()  # nothing from the data ran


def test_the_catalogue_is_long_enough() -> None:
    assert len(CASES) >= 140 and len({c.id for c in CASES}) == len(CASES)


# Faults of the machine rather than of the input: the same one clean line naming the path, exit 1.
ReadOnly = Callable[[Path], Path]
EnvironmentSetup = Callable[[Path, Path, ReadOnly], list[str]]


@dataclass(frozen=True)
class EnvironmentCase:
    id: str
    setup: EnvironmentSetup
    expect: str


def _folder(t: Path, name: str) -> Path:
    (t / name).mkdir()
    return t / name


ENVIRONMENT = [
    EnvironmentCase(
        "read-only store",
        lambda d, t, ro: ["run", "--data", str(d), "--store", str(ro(_folder(t, "ro"))), "--set", *TINY],
        "ro/seed: Read-only file system",
    ),
    EnvironmentCase(
        "read-only cache folder",
        lambda d, t, ro: ["--cache-dir", str(ro(_folder(t, "ro"))), "run", "--data", str(d), "--set", *TINY],
        "Read-only file system",
    ),
    EnvironmentCase(
        "read-only synth target",
        lambda d, t, ro: ["data", "synth", str(ro(_folder(t, "ro")) / "new")],
        "ro/new: cannot write the benchmark there (Read-only file system)",
    ),
]


@pytest.mark.parametrize("case", ENVIRONMENT, ids=[c.id for c in ENVIRONMENT])
def test_a_fault_of_the_machine_gets_one_clean_line(
    case: EnvironmentCase,
    bad_input_workspace: tuple[Path, Path],
    read_only: ReadOnly,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, scratch = bad_input_workspace
    args = case.setup(data, scratch, read_only)
    capsys.readouterr()
    code = main(
        ["-q", "--cache-dir", str(scratch / "cache"), *args] if args[0] != "--cache-dir" else ["-q", *args]
    )
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("wsss: error: ")]
    assert len(errors) == 1 and case.expect in errors[0], err
    assert not list(tmp_path.rglob(MANIFEST))


def test_a_full_disk_is_one_line_naming_the_file(tiny_data_dir: Path, tmp_path: Path) -> None:
    """Writes past 64 KB fail (RLIMIT_FSIZE, as a full disk does): torch's own writer would report
    "unexpected pos" with no file; the run says which stage and file, exits 1, publishes nothing."""

    def limit_writes() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write (EFBIG) instead of the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    args = [sys.executable, "-m", "wsss.cli", "-q", "run", "--data", str(tiny_data_dir), "--set", *TINY]
    args += ["seed.backbone.name=resnet18"]  # weights of 45 MB: past the limit
    env = {**os.environ, "WSSS_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, preexec_fn=limit_writes
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("wsss: error: ")]
    # The classifier is a cached step of the seed stage (seed_round): the line names both.
    assert "the seed stage (its cached seed_round step) hit a file-system error (" in line, line
    assert "model.pt: File too large" in line, line
    assert not list(tmp_path.rglob(MANIFEST))
