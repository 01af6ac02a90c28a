"""Hidden sub-categories of the synthetic benchmark (coat variants) and how found clusters are scored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wsss.data.synth import SynthSpec, class_signatures, generate, render, render_objects
from wsss.data.synth_variants import (
    VARIANT_NAMES,
    SynthObject,
    image_variant,
    read_variants,
    subcategory_scores,
)
from wsss.errors import ConfigError, DataError

# The first six 64 px train renders (seed 0, 4 classes) as they were before variants existed, on this
# project's x86_64 CI host: pixels per mask label and the mean RGB. Not a byte hash: numpy picks float
# kernels by CPU (AVX2 against AVX-512 FFTs), which moves a few 8-bit pixels by one and any hash with them.
BEFORE_VARIANTS = [
    ({0: 2647, 1: 332, 3: 315, 4: 355, 255: 447}, (119.9, 113.0, 128.1)),
    ({0: 2349, 2: 368, 3: 416, 4: 529, 255: 434}, (157.5, 142.9, 164.8)),
    ({0: 2919, 2: 364, 3: 500, 255: 313}, (116.8, 118.3, 129.1)),
    ({0: 2547, 1: 354, 2: 767, 255: 428}, (151.7, 162.2, 128.5)),
    ({0: 2754, 1: 581, 2: 357, 255: 404}, (101.3, 102.8, 81.4)),
    ({0: 2591, 2: 436, 3: 684, 255: 385}, (111.9, 139.1, 138.5)),
]


def test_one_variant_is_the_benchmark_as_it_was() -> None:
    spec = SynthSpec(seed=0, size=64, classes=4)
    signatures = class_signatures(4)
    for i, (areas, mean_rgb) in enumerate(BEFORE_VARIANTS):
        img, mask = render(spec, "train", i, signatures)
        labels, counts = np.unique(mask, return_counts=True)
        found = dict(zip(labels.tolist(), counts.tolist(), strict=True))
        assert found.keys() == areas.keys(), f"image {i}: labels {sorted(found)} != {sorted(areas)}"
        for label, area in areas.items():  # a pixel or two at a boundary may round the other way
            assert abs(found[label] - area) <= 4, f"image {i} label {label}: {found[label]} px != {area}"
        np.testing.assert_allclose(img.reshape(-1, 3).mean(axis=0), mean_rgb, atol=0.2)


def test_coats_change_bodies_only_and_every_variant_appears() -> None:
    signatures = class_signatures(4)
    plain, coated = SynthSpec(seed=1, size=96, classes=4), SynthSpec(seed=1, size=96, classes=4, variants=4)
    seen = set()
    for i in range(30):
        img_a, mask_a, objects_a = render_objects(plain, "train", i, signatures)
        img_b, mask_b, objects_b = render_objects(coated, "train", i, signatures)
        assert np.array_equal(mask_a, mask_b)  # same objects in the same places
        assert [(o.cls, o.pixels) for o in objects_a] == [(o.cls, o.pixels) for o in objects_b]
        assert all(o.variant == 0 for o in objects_a)
        changed = np.abs(img_a.astype(int) - img_b.astype(int)).max(-1) > 0
        assert not changed[mask_a == 0].any()  # backgrounds untouched
        seen |= {o.variant for o in objects_b}
        for o in objects_b:  # a coated body differs from the plain one, a plain body does not
            body_changed = changed[mask_a == o.cls + 1].mean()
            if len({p.cls for p in objects_b}) == len(objects_b):  # one object per class: unambiguous
                assert (body_changed > 0.05) == (o.variant != 0)
    assert seen == set(range(len(VARIANT_NAMES)))


def test_variants_file_is_written_and_read_back(tmp_path: Path) -> None:
    root = generate(SynthSpec(train=6, val=3, size=48, classes=3, variants=3), tmp_path / "d")
    variants = read_variants(root)
    assert variants is not None and len(variants) == 9
    assert all(
        0 <= o.cls < 3 and 0 <= o.variant < 3 and o.pixels > 0 for objs in variants.values() for o in objs
    )
    mask_ids = {p.stem for p in (root / "SegmentationClass").iterdir()}
    assert set(variants) == mask_ids


@pytest.mark.parametrize(
    "content",
    ["not json", '{"objects": [1, 2]}', '{"objects": {"a": [[0, 1]]}}', '{"objects": {"a": [[0, "x", 3]]}}'],
)
def test_a_malformed_variants_file_is_a_data_error_naming_it(tmp_path: Path, content: str) -> None:
    (tmp_path / "variants.json").write_text(content)
    with pytest.raises(DataError, match=r"variants\.json"):
        read_variants(tmp_path)


def test_no_variants_file_means_no_truth(tmp_path: Path) -> None:
    assert read_variants(tmp_path) is None


def test_variants_count_is_checked() -> None:
    with pytest.raises(ConfigError, match="--variants"):
        SynthSpec(variants=len(VARIANT_NAMES) + 1).validate()


def test_image_variant_is_its_largest_objects() -> None:
    objects = [SynthObject(0, 1, 50), SynthObject(0, 2, 80), SynthObject(1, 0, 10)]
    assert (
        image_variant(objects, 0) == 2
        and image_variant(objects, 1) == 0
        and image_variant(objects, 2) is None
    )


def test_scores_of_perfect_relabelled_and_uninformative_clusterings() -> None:
    rng = np.random.default_rng(0)
    objects = {f"i{n}": [SynthObject(n % 2, int(rng.integers(3)), 100)] for n in range(120)}
    truth = {c: {i: objs[0].variant for i, objs in objects.items() if objs[0].cls == c} for c in (0, 1)}
    relabelled = {c: {i: (v + 1) % 3 for i, v in found.items()} for c, found in truth.items()}
    one_cluster = {c: dict.fromkeys(found, 0) for c, found in truth.items()}
    perfect = subcategory_scores(relabelled, objects)
    assert perfect["subcat_purity"] == 1.0 and perfect["subcat_nmi"] == pytest.approx(1.0)
    assert perfect["subcat_clusters"] == 6 and perfect["subcat_variants"] == 6
    lumped = subcategory_scores(one_cluster, objects)
    assert lumped["subcat_nmi"] == pytest.approx(0.0) and 0.3 < lumped["subcat_purity"] < 0.5
    # Pooling classes must not reward the class part of the labels: a per-class shuffle scores low.
    shuffled = {
        c: dict(zip(found, rng.permutation(list(found.values())), strict=True)) for c, found in truth.items()
    }
    assert subcategory_scores(shuffled, objects)["subcat_nmi"] < 0.1


def test_variants_json_holds_only_integers(tmp_path: Path) -> None:
    root = generate(SynthSpec(train=3, val=2, size=48, classes=2, variants=2), tmp_path / "d")
    payload = json.loads((root / "variants.json").read_text())
    assert payload["names"] == list(VARIANT_NAMES)
    assert all(type(v) is int for rows in payload["objects"].values() for row in rows for v in row)


def test_one_class_images_share_the_first_objects_class_and_coat() -> None:
    """The single-class variant (issue 21, item 5): a class's images then differ by coat, not by what
    else they hold; the first object, and every other draw, is the mixed benchmark's."""
    signatures = class_signatures(4)
    mixed = SynthSpec(seed=2, size=96, classes=4, variants=3)
    single = SynthSpec(seed=2, size=96, classes=4, variants=3, one_class=True)
    several = 0
    for i in range(30):
        *_, objects = render_objects(single, "train", i, signatures)
        *_, reference = render_objects(mixed, "train", i, signatures)
        assert {(o.cls, o.variant) for o in objects} == {(reference[0].cls, reference[0].variant)}
        assert [o.pixels for o in objects] == [o.pixels for o in reference]  # same shapes
        several += len(objects) > 1
    assert several >= 5


def test_cooccurrence_nmi_reads_clusters_that_follow_the_other_classes() -> None:
    """On the mixed benchmark a classifier's clusters follow the co-occurring classes (methods-review
    section 9): a clustering by co-occurrence scores NMI 1 against it and about 0 against the coats."""
    rng = np.random.default_rng(1)
    objects = {
        f"i{n}": [SynthObject(0, int(rng.integers(3)), 100), SynthObject(1 + n % 2, 0, 50)] for n in range(90)
    }
    by_cooccurrence = {0: {i: int(objs[1].cls) for i, objs in objects.items()}}
    scores = subcategory_scores(by_cooccurrence, objects)
    assert scores["subcat_cooc_nmi"] == pytest.approx(1.0) and scores["subcat_nmi"] < 0.1
    by_coat = {0: {i: objs[0].variant for i, objs in objects.items()}}
    scores = subcategory_scores(by_coat, objects)
    assert scores["subcat_nmi"] == pytest.approx(1.0) and scores["subcat_cooc_nmi"] < 0.1


def test_cooccurrence_is_not_scored_where_nothing_co_occurs() -> None:
    objects = {f"i{n}": [SynthObject(0, n % 3, 100)] for n in range(30)}
    scores = subcategory_scores({0: {i: 0 for i in objects}}, objects)
    assert "subcat_cooc_nmi" not in scores and scores["subcat_purity"] == pytest.approx(1 / 3)
