"""SC-CAM: k-means sub-categories per parent class, rounds cached per round, reproducible runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import tiny_config
from wsss.data.synth import SynthSpec, generate
from wsss.errors import ConfigError
from wsss.methods._subcat import SubCategoryNet, targets_from_assignments
from wsss.methods.sc_cam import kmeans_per_class
from wsss.pipeline import prepare_dataset, run_pipeline
from wsss.report import write_stage_report
from wsss.runtime import Runtime
from wsss.stages.rounds import local_rounds, train_rounds
from wsss.store import StageStore

CPU = Runtime(torch.device("cpu"), progress=False)
FAST = ["seed.method=sc_cam", "seed.params.rounds=2", "seed.params.clusters=3", "seed.params.kmeans_init=2"]


@pytest.fixture(scope="module")
def coated_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(
        SynthSpec(train=16, val=4, size=64, classes=3, seed=7, variants=3), tmp_path_factory.mktemp("v") / "d"
    )


def test_kmeans_groups_each_class_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 10
    features = np.concatenate([centres[i % 3] + rng.normal(size=8) for i in range(30)])[:, None].reshape(
        30, 8
    )
    ids = tuple(f"i{n}" for n in range(30))
    labels = np.zeros((30, 2), np.float32)
    labels[:, 0] = 1
    labels[::2, 1] = 1  # multi-label images appear under both parents
    found = kmeans_per_class(features, ids, labels, 3, seed=0, restarts=2)
    assert set(found) == {0, 1} and len(found[0]) == 30 and len(found[1]) == 15
    assert all(found[0][f"i{n}"] == found[0][f"i{n % 3}"] for n in range(30))  # the planted groups
    assert found == kmeans_per_class(features, ids, labels, 3, seed=0, restarts=2)
    few = kmeans_per_class(features[:2], ids[:2], labels[:2], 10, seed=0, restarts=1)
    assert set(few[0].values()) == {0, 1}  # K is capped by the class's image count


def test_targets_put_one_sub_category_per_present_parent() -> None:
    ids = ("a", "b", "c")
    labels = np.array([[1, 0], [1, 1], [0, 1]], np.float32)
    assignments = {0: {"a": 0, "b": 1}, 1: {"b": 2, "c": 0}}
    targets = targets_from_assignments(ids, labels, assignments, {})
    # class 0 owns columns 0-1, class 1 columns 2-4
    assert targets.outputs == 5 and targets.record["clusters_per_class"] == {"0": 2, "1": 3}
    assert targets.targets.tolist() == [[1, 0, 0, 0, 0], [0, 1, 0, 0, 1], [0, 0, 1, 0, 0]]


def test_rounds_are_cached_and_a_later_knob_reuses_earlier_rounds(coated_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(*FAST)
    data = prepare_dataset(cfg, coated_dir, tmp_path)
    computed: list[tuple[str, int]] = []
    cache = local_rounds(tmp_path / "rounds")

    def counting(kind, payload, compute):  # type: ignore[no-untyped-def]
        def wrapped(folder: Path) -> None:
            computed.append((kind, payload["round"]))
            compute(folder)

        return cache(kind, payload, wrapped)

    result = train_rounds(cfg.seed, data, 0, CPU, counting)
    assert isinstance(result.model, SubCategoryNet) and len(result.records) == 3
    assert computed == [
        ("targets", 0),
        ("model", 0),
        ("targets", 1),
        ("model", 1),
        ("targets", 2),
        ("model", 2),
    ]
    assert result.records[0] == {"round": 0} and result.records[1]["clusters"] == 9
    assert 0 < result.records[2]["subcat_purity"] <= 1 and 0 <= result.records[2]["subcat_nmi"] <= 1
    computed.clear()
    train_rounds(tiny_config(*FAST, "seed.params.rounds=3").seed, data, 0, CPU, counting)
    assert computed == [("targets", 3), ("model", 3)]  # rounds 0-2 reused
    computed.clear()
    train_rounds(tiny_config(*FAST, "seed.params.lambda_sub=1.0").seed, data, 0, CPU, counting)
    assert computed == [("model", 1), ("targets", 2), ("model", 2)]  # round 0 and round 1's clusters reused


def test_a_seeded_run_is_reproducible_from_scratch(coated_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(*FAST)
    runs = []
    for name in ("a", "b"):
        data = prepare_dataset(cfg, coated_dir, tmp_path / name)
        result = run_pipeline(cfg, data, StageStore(tmp_path / name / "s", tmp_path / name / "c"))
        seed_dir = result.stages["seed"].path
        records = [json.loads((seed_dir / "rounds" / r / "record.json").read_text()) for r in ("1", "2")]
        runs.append(
            (records, result.summary()["cam_miou_best"], result.stages["seed"].metrics["seed_subcat_nmi"])
        )
    assert runs[0] == runs[1]


def test_the_seed_report_shows_the_sub_categories(coated_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(*FAST)
    data = prepare_dataset(cfg, coated_dir, tmp_path)
    result = run_pipeline(cfg, data, StageStore(tmp_path / "s", tmp_path / "c"))
    seed = result.stages["seed"]
    assert {p.name for p in (seed.path / "rounds" / "1").iterdir()} == {
        "features.npy",
        "record.json",
        "targets.npy",
    }
    assert seed.metrics["seed_rounds"] == 3 and seed.metrics["seed_clusters"] == 9
    written = write_stage_report(seed, result.stages, data, tmp_path / "report")
    assert {p.name for p in written} >= {"seed_subcategories_round1.png", "seed_subcategories_round2.png"}


def test_a_warm_started_round_keeps_the_backbone_not_the_old_sub_head() -> None:
    """restart: false starts a round from the previous one's network; the sub-category head belongs
    to the previous partition (its columns are other clusters), so it starts afresh (methods-review §8.4)."""
    cfg = tiny_config().seed.backbone
    previous, current = SubCategoryNet(cfg, 3, 6), SubCategoryNet(cfg, 3, 6)
    fresh_head = current.sub_classifier.weight.detach().clone()  # type: ignore[union-attr]
    current.warm_from(previous)
    assert torch.equal(current.classifier.weight, previous.classifier.weight)
    first = next(iter(previous.backbone.state_dict()))
    assert torch.equal(current.backbone.state_dict()[first], previous.backbone.state_dict()[first])
    assert torch.equal(current.sub_classifier.weight, fresh_head)  # type: ignore[union-attr]
    assert not torch.equal(current.sub_classifier.weight, previous.sub_classifier.weight)  # type: ignore[union-attr]


def test_a_zero_sub_head_leaves_the_backbone_alone_at_the_first_step() -> None:
    """sub_init "zero": every sub-category logit starts at 0 (BCE ln 2) and the sub-category loss sends
    no gradient into the backbone until the head has learned; "xavier" (the references') does both."""
    cfg = tiny_config().seed.backbone
    images = torch.rand(4, 3, 32, 32)
    sub = torch.zeros(4, 6)
    sub[[0, 1, 2, 3, 3], [0, 2, 4, 1, 3]] = 1.0
    for init, moves_backbone in (("zero", False), ("xavier", True)):
        torch.manual_seed(0)
        model = SubCategoryNet(cfg, 3, 6, init)
        _, sub_logits = model.both_logits(images)
        assert sub_logits is not None
        if init == "zero":
            assert torch.count_nonzero(sub_logits) == 0
        loss = F.multilabel_soft_margin_loss(sub_logits, sub)
        loss.backward()
        grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
        moved = any(bool(torch.count_nonzero(g)) for g in grads)
        assert moved == moves_backbone, init
        if init == "zero":
            assert float(loss.detach()) == pytest.approx(float(np.log(2.0)), abs=1e-6)
            assert torch.count_nonzero(model.sub_classifier.weight.grad) > 0  # type: ignore[union-attr]


def test_the_oracle_control_trains_on_the_true_coats(coated_dir: Path, tmp_path: Path) -> None:
    """`sub_labels: oracle` (issue 21, item 5): the hidden coats as sub-categories, so its clusters
    score purity and NMI 1 against them, and its round 0 is k-means SC-CAM's (cached, shared)."""
    cfg = tiny_config("seed.method=sc_cam", "seed.params.rounds=1", "seed.params.sub_labels=oracle")
    data = prepare_dataset(cfg, coated_dir, tmp_path)
    rounds = local_rounds(tmp_path / "r")
    record = train_rounds(cfg.seed, data, 0, CPU, rounds).records[1]
    assert record["subcat_purity"] == 1.0 and record["subcat_nmi"] == pytest.approx(1.0)
    assert record["clusters"] == record["subcat_variants"]
    kmeans = tiny_config("seed.method=sc_cam", "seed.params.rounds=1", "seed.params.clusters=3")
    train_rounds(kmeans.seed, data, 0, CPU, rounds)
    models = [p for p in (tmp_path / "r").iterdir() if p.name.startswith("model-")]
    assert len(models) == 3  # round 0 once, round 1 for each


def test_the_oracle_on_data_without_coats_stops_before_training(tiny_data_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config("seed.method=sc_cam", "seed.params.sub_labels=oracle")
    data = prepare_dataset(cfg, tiny_data_dir, tmp_path)
    with pytest.raises(ConfigError, match=r"seed\.params\.sub_labels: 'oracle' takes the hidden coats"):
        train_rounds(cfg.seed, data, 0, CPU, local_rounds(tmp_path / "r"))
    assert not list((tmp_path / "r").rglob("*.pt"))
