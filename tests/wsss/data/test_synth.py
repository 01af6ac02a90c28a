from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss.data.classes import IGNORE_INDEX
from wsss.data.synth import SPEC_FILE, SynthSpec, class_signatures, ensure_cached, generate, render
from wsss.errors import ConfigError, DataError


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def test_writes_the_voc_layout(tiny_data_dir: Path) -> None:
    root = tiny_data_dir
    train = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    val = (root / "ImageSets/Segmentation/val.txt").read_text().split()
    assert len(train) == 12 and len(val) == 6 and not set(train) & set(val)
    assert (root / "class_names.txt").read_text().split() == ["ant", "bee", "cat"]
    for image_id in train + val:
        image = Image.open(root / "JPEGImages" / f"{image_id}.jpg")
        mask = Image.open(root / "SegmentationClass" / f"{image_id}.png")
        assert image.mode == "RGB" and mask.mode == "P" and image.size == mask.size == (64, 64)
        values = set(np.unique(np.asarray(mask)).tolist())
        assert values <= {0, 1, 2, 3, IGNORE_INDEX} and values - {0, IGNORE_INDEX}
    labels = np.load(root / "cls_labels.npy", allow_pickle=True).item()
    assert set(labels) == set(train + val)
    first = np.asarray(Image.open(root / "SegmentationClass" / f"{train[0]}.png"))
    present = sorted(set(np.unique(first).tolist()) - {0, IGNORE_INDEX})
    assert np.flatnonzero(labels[train[0]]).tolist() == [c - 1 for c in present]


def test_deterministic_per_seed(tmp_path: Path) -> None:
    spec = SynthSpec(train=4, val=2, size=48, classes=2, seed=5)
    a, b = generate(spec, tmp_path / "a"), generate(spec, tmp_path / "b")
    c = generate(SynthSpec(train=4, val=2, size=48, classes=2, seed=6), tmp_path / "c")
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_each_image_is_independent_of_generation_order() -> None:
    spec = SynthSpec(seed=3, size=64)
    signatures = class_signatures(spec.classes)
    img_a, mask_a = render(spec, "train", 9, signatures)
    render(spec, "train", 2, signatures)
    img_b, mask_b = render(spec, "train", 9, signatures)
    assert np.array_equal(img_a, img_b) and np.array_equal(mask_a, mask_b)


def test_objects_are_partly_revealed_by_their_bullseye() -> None:
    """The class-specific ring colour covers only a small part of each object."""
    spec = SynthSpec(seed=0, size=128, classes=4)
    signatures = class_signatures(spec.classes)
    fractions = []
    for i in range(30):
        img, mask = render(spec, "train", i, signatures)
        for k in range(spec.classes):
            obj = mask == k + 1
            if obj.sum() > 200:
                ring = np.all(np.abs(img.astype(int) - signatures[k, 0].astype(int)) < 30, axis=-1) & obj
                fractions.append(ring.sum() / obj.sum())
    assert 0.0 < np.median(fractions) < 0.15


def test_non_square_sizes_vary(varied_data_dir: Path) -> None:
    sizes = {Image.open(p).size for p in (varied_data_dir / "JPEGImages").iterdir()}
    assert len(sizes) > 3 and any(w != h for w, h in sizes)


def test_refuses_to_overwrite_and_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="not an empty directory"):
        generate(SynthSpec(train=2, val=1, size=48), out)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (out / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [("size", 20, "--size"), ("classes", 99, "--classes"), ("train", 0, "--train")],
)
def test_bad_spec_names_the_flag(tmp_path: Path, field: str, value: int, flag: str) -> None:
    spec = SynthSpec(**{field: value})
    with pytest.raises(ConfigError, match=f"^{flag}: must be"):
        generate(spec, tmp_path / "x")
    assert not list(tmp_path.iterdir())


def test_ensure_cached_generates_once(tmp_path: Path) -> None:
    spec = SynthSpec(train=2, val=1, size=48, classes=2)
    first = ensure_cached(spec, tmp_path)
    stamp = (first / SPEC_FILE).stat().st_mtime_ns
    assert ensure_cached(spec, tmp_path) == first
    assert (first / SPEC_FILE).stat().st_mtime_ns == stamp
