"""Hidden sub-categories of the synthetic benchmark: every class comes in `variants` visually distinct
kinds of coat (plain, striped, spotted, two-tone), and the variant of every object is written to
`variants.json` beside the masks. Sub-category methods (SC-CAM, sub-category teaching) are meant to
discover such variants from image labels alone; `subcategory_scores` measures how well a clustering
found them (purity and NMI against the hidden variants).

The coat does not change the class evidence (the bullseye is drawn over it) nor the masks, and it is
drawn from its own random stream, so with one variant the benchmark is the one it always was.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import normalized_mutual_info_score

from wsss.errors import DataError, read_text

VARIANTS_FILE = "variants.json"
VARIANT_NAMES = ("plain", "striped", "spotted", "two-tone")


@dataclass(frozen=True)
class SynthObject:
    """One drawn object: its class index (0-based, no background), coat variant and body area."""

    cls: int
    variant: int
    pixels: int


def variant_stream(seed: int, split: str, index: int) -> np.random.Generator:
    """The image's own generator for coats, apart from the one that draws everything else."""
    return np.random.default_rng([seed, 0 if split == "train" else 1, index, 99])


def paint_coat(
    rng: np.random.Generator, img: np.ndarray, body: np.ndarray, colour: np.ndarray, variant: int
) -> None:
    """Paint variant `variant`'s markings over `body` (in place). Markings cover the whole body, so a
    network that tells the variants apart has to look beyond the bullseye."""
    if variant == 0:
        return
    ys, xs = np.nonzero(body)
    if ys.size == 0:
        return
    side = float(np.sqrt(ys.size))
    if variant == 1:  # dark stripes across the body, at a random angle
        angle, period = rng.uniform(0, np.pi), rng.uniform(0.22, 0.3) * side
        phase = (xs * np.cos(angle) + ys * np.sin(angle)) / period + rng.random()
        marked = (phase % 1.0) < 0.4
        img[ys[marked], xs[marked]] = colour * 0.25
    elif variant == 2:  # pale spots
        centres = rng.integers(0, ys.size, rng.integers(5, 9))
        radius = rng.uniform(0.1, 0.14) * side
        for c in centres:
            marked = (ys - ys[c]) ** 2 + (xs - xs[c]) ** 2 <= radius * radius
            img[ys[marked], xs[marked]] = colour * 0.3 + 170.0
    else:  # two-tone: one side of a line through the body's centre much lighter
        angle = rng.uniform(0, 2 * np.pi)
        marked = (xs - xs.mean()) * np.cos(angle) + (ys - ys.mean()) * np.sin(angle) > 0
        img[ys[marked], xs[marked]] = colour * 0.4 + 150.0


def write_variants(root: Path, objects: Mapping[str, Sequence[SynthObject]]) -> None:
    payload = {
        image_id: [[o.cls, o.variant, o.pixels] for o in found] for image_id, found in sorted(objects.items())
    }
    (root / VARIANTS_FILE).write_text(json.dumps({"names": list(VARIANT_NAMES), "objects": payload}) + "\n")


def read_variants(root: Path) -> dict[str, list[SynthObject]] | None:
    """Every image's objects from `root/variants.json`, or None where the dataset has none (real
    data). Only lists of integers are accepted; anything else is a DataError naming the file."""
    path = root / VARIANTS_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(read_text(path, DataError))
        objects = payload["objects"]
        if not isinstance(objects, dict):
            raise TypeError("objects is not a mapping")
        out: dict[str, list[SynthObject]] = {}
        for image_id, found in objects.items():
            rows = [tuple(row) for row in found]
            if not all(len(r) == 3 and all(type(v) is int and v >= 0 for v in r) for r in rows):
                raise ValueError(f"{image_id}: objects must be [class, variant, pixels] non-negative ints")
            out[str(image_id)] = [SynthObject(*r) for r in rows]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise DataError(f"{path}: not a variants file ({exc})") from None
    return out


def image_variant(objects: Sequence[SynthObject], cls: int) -> int | None:
    """The variant an image shows for class `cls`: that of its largest object of the class."""
    found = [o for o in objects if o.cls == cls]
    return max(found, key=lambda o: o.pixels).variant if found else None


def subcategory_scores(
    assignments: Mapping[int, Mapping[str, int]], objects: Mapping[str, Sequence[SynthObject]]
) -> dict[str, float]:
    """Purity and NMI of found sub-categories against the hidden variants, and NMI against the
    co-occurring classes. Each class's images are scored on their own (its clusters are its own) and
    the scores averaged, weighted by the class's image count; purity is the share of images whose
    cluster's majority variant is their own."""
    total, pure, nmi, cooc_nmi, cooc_total, clusters, variants = 0, 0, 0.0, 0.0, 0, 0, 0
    for cls, per_image in assignments.items():
        shown = [(c, i, image_variant(objects.get(i, ()), cls)) for i, c in per_image.items()]
        rows = [(c, i, v) for c, i, v in shown if v is not None]
        found = np.array([c for c, _, _ in rows])
        truth = np.array([v for _, _, v in rows])
        if found.size == 0:
            continue
        for label in np.unique(found):
            pure += int(np.bincount(truth[found == label]).max())
        nmi += found.size * float(normalized_mutual_info_score(truth, found))
        others = [str(sorted({o.cls for o in objects[i]} - {cls})) for _, i, _ in rows]
        if len(set(others)) > 1:  # one-class images have nothing to co-occur with (and sklearn scores
            cooc_nmi += found.size * float(normalized_mutual_info_score(others, found))  # 1 then)
            cooc_total += found.size
        total += found.size
        clusters += len(np.unique(found))
        variants += len(np.unique(truth))
    if total == 0:
        return {}
    scores = {
        "subcat_purity": pure / total,
        "subcat_nmi": nmi / total,
        "subcat_clusters": float(clusters),
        "subcat_variants": float(variants),
    }
    if cooc_total:  # NMI against the other classes an image holds: what a multi-label classifier's
        # pooled features cluster by on the mixed benchmark (methods-review 9: 0.47 against coat's 0.05)
        scores["subcat_cooc_nmi"] = cooc_nmi / cooc_total
    return scores
