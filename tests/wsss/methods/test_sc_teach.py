"""Sub-category teaching: FINCH partitions of a ViT teacher's embeddings as the student's extra labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from tests.helpers import tiny_config
from wsss.data.synth import SynthSpec, generate
from wsss.errors import ConfigError
from wsss.methods.sc_teach import ScTeachConfig, finch_per_class, pick_partition
from wsss.models.pretrained import convert, installed_source, package_file
from wsss.models.teacher import Teacher
from wsss.pipeline import prepare_dataset
from wsss.runtime import Runtime
from wsss.stages.rounds import local_rounds, train_rounds

CPU = Runtime(torch.device("cpu"), progress=False)
FAST = [
    "seed.method=sc_teach",
    "seed.params.teacher_size=32",
    "seed.params.teacher_epochs=1",
    "seed.params.teacher_depth=1",
]


def _blobs(groups: int, per_group: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, 16))
    return np.concatenate([centres[g] + 0.05 * rng.normal(size=(per_group, 16)) for g in range(groups)])


def test_finch_recovers_planted_groups_per_class() -> None:
    features = _blobs(4, 20)  # FINCH's levels on these: 14, 4 and 2 clusters
    ids = [f"i{n}" for n in range(80)]
    labels = np.ones((80, 1), np.float32)
    found, levels = finch_per_class(features, ids, labels, ScTeachConfig(partition="nearest", clusters=5), 0)
    groups = [found[0][f"i{n}"] for n in range(80)]
    assert len(set(groups)) == 4 and all(len(set(groups[g * 20 : (g + 1) * 20])) == 1 for g in range(4))
    assert levels["0"][0] > 4 and 4 in levels["0"]  # the level nearest the requested count


def test_partition_choice() -> None:
    levels = np.array([[0, 0, 0], [1, 0, 0], [2, 1, 0], [3, 1, 1]])
    counts = [4, 2, 2]
    assert pick_partition(levels, counts, "first", 0).tolist() == [0, 1, 2, 3]
    assert pick_partition(levels, counts, "last", 0).tolist() == [0, 0, 0, 1]
    assert pick_partition(levels, counts, "middle", 0).tolist() == [0, 0, 1, 1]
    assert pick_partition(levels, counts, "nearest", 4).tolist() == [0, 1, 2, 3]


def test_tiny_classes_do_not_break_finch() -> None:
    found, levels = finch_per_class(_blobs(1, 2), ["a", "b"], np.ones((2, 1), np.float32), ScTeachConfig(), 0)
    assert found == {0: {"a": 0, "b": 0}} and levels == {"0": [1]}


@pytest.fixture(scope="module")
def coated_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(
        SynthSpec(train=12, val=4, size=48, classes=3, seed=3, variants=3), tmp_path_factory.mktemp("v") / "d"
    )


def test_clusters_come_from_the_teacher_and_val_stays_out_by_default(
    coated_dir: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(*FAST)
    data = prepare_dataset(cfg, coated_dir, tmp_path)
    result = train_rounds(cfg.seed, data, 0, CPU, local_rounds(tmp_path / "r"))
    record = result.records[0]
    assigned = {i for found in record["assignments"].values() for i in found}
    assert assigned <= set(data.train_ids)
    assert result.model.sub_classifier is not None
    assert (
        result.model.sub_classifier.out_channels
        == record["clusters"]
        == sum(record["clusters_per_class"].values())
    )
    assert {"teacher.pt", "features.npy", "targets.npy", "record.json"} <= {
        p.name for p in result.folders[0].iterdir()
    }
    leaky = tiny_config(*FAST, "seed.params.cluster_val=true")
    leaked = train_rounds(leaky.seed, data, 0, CPU, local_rounds(tmp_path / "r")).records[0]
    assigned = {i for found in leaked["assignments"].values() for i in found}
    assert set(data.val_ids) <= assigned  # the reference's pooling of train and val images


def test_a_teacher_that_is_not_a_vit_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"seed\.params\.teacher"):
        Teacher("resnet18", 3, 32, 1, False)


def test_a_lite_teacher_has_a_fixed_depth_and_other_models_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"seed\.params\.teacher_depth: 'tf_efficientnet_lite0'"):
        ScTeachConfig(teacher="tf_efficientnet_lite0", teacher_depth=4).validate("seed.params")
    with pytest.raises(ConfigError, match=r"seed\.params\.teacher: 'resnet18' is neither"):
        ScTeachConfig(teacher="resnet18").validate("seed.params")
    ScTeachConfig(teacher="tf_efficientnet_lite0", teacher_depth=0, teacher_size=64).validate("seed.params")


@pytest.mark.skipif(package_file("tf_efficientnet_lite0") is None, reason="the `pretrained` extra is missing")
def test_a_pretrained_lite_teacher_embeds_with_the_imagenet_network_and_frozen_statistics() -> None:
    """The offline ImageNet teacher (the msrc preset's): its embeddings are the converted ImageNet
    network's pooled pre-logits features, in training mode too (BatchNorm frozen)."""
    state = convert("tf_efficientnet_lite0", installed_source("tf_efficientnet_lite0"))
    teacher = Teacher("tf_efficientnet_lite0", 5, 64, 0, True, state)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    reference.load_state_dict(state, strict=True)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference.eval().forward_head(reference.forward_features(x), pre_logits=True)
        assert torch.allclose(teacher.train().embed(x), expected, atol=1e-5)
    assert teacher(x).shape == (2, 5)
