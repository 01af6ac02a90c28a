"""The seed-method contract, run over every method in wsss/methods (the optuna/timm pattern): a new
method gets these tests without writing any."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.helpers import tiny_config
from tuner.spaces.space import check_files
from wsss.config_load import load_config
from wsss.configio import to_mapping
from wsss.data.image_maps import CachedMaps
from wsss.data.torchsets import ClassificationSet, train_loader
from wsss.data.transforms import TrainTransform
from wsss.loop import fit
from wsss.methods import SeedMethod, get, list_methods
from wsss.methods.base import Batch
from wsss.ops.cam import multiscale_cams
from wsss.pipeline import prepare_dataset, run_pipeline
from wsss.runtime import Runtime, seeded
from wsss.stages.rounds import as_batch, local_rounds, train_rounds
from wsss.store import StageStore

SPACES = Path(__file__).resolve().parents[3] / "search_spaces"
CPU = Runtime(torch.device("cpu"), progress=False)
METHODS = list_methods()


def test_the_mixing_methods_are_there() -> None:
    assert {"cam", "mixup", "fmix", "manifold_mixup"} <= set(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_config_loads_from_yaml(name: str, tmp_path: Path) -> None:
    method = get(name)
    assert isinstance(method, SeedMethod) and method.name == name and method.description
    defaults = to_mapping(method.Config())
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"seed": {"method": name, "params": defaults}}))
    cfg = load_config(path)
    assert isinstance(cfg.seed.params, method.Config) and to_mapping(cfg.seed.params) == defaults


@pytest.mark.parametrize("name", METHODS)
def test_loss_is_finite_with_gradients_and_one_step_trains(
    name: str, tiny_data_dir: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(f"seed.method={name}")
    method = get(name)
    data = prepare_dataset(cfg, tiny_data_dir, tmp_path)
    spec = method.image_maps(cfg.seed.params, cfg.seed.train, cfg.seed.backbone.output_stride)
    with seeded(0, CPU.device):
        model = method.build(cfg.seed.backbone, len(data.class_names), cfg.seed.params)
        method.check(cfg.seed.params, model)
        pixels = torch.randint(0, 256, (4, 48, 48, 3), dtype=torch.uint8)
        images = (pixels.permute(0, 3, 1, 2).float() / 255 - 0.45) / 0.225
        labels = torch.tensor([[1.0, 0, 0], [0, 1, 1], [0, 0, 1], [1, 1, 0]])
        # A method's per-image maps (CPN's superpixels) come from its own spec, as in the seed stage.
        maps = (
            torch.stack([torch.from_numpy(spec.compute(p.numpy())).long() for p in pixels]) if spec else None
        )
        loss, parts = method.loss(model, Batch(images, labels, maps=maps), cfg.seed.params)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert all(isinstance(v, float) for v in parts.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0

    train = cfg.seed.train
    cached = CachedMaps(data, spec, data.train_ids, tmp_path, 1) if spec else None
    dataset = ClassificationSet(
        data, data.train_ids, TrainTransform(train), cached, spec.fill if spec else -1
    )
    loader = train_loader(dataset, 4, 0, 0, False)
    one_epoch = dataclasses.replace(train, epochs=1)
    before = [p.detach().clone() for p in model.parameters()]
    stats = fit(
        model,
        lambda m, b: method.loss(m, as_batch(b, cached is not None, False), cfg.seed.params),
        loader,
        one_epoch,
        CPU,
        "seed",
    )
    assert stats.steps == len(loader) and all(math.isfinite(v) for v in stats.epoch_losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("name", METHODS)
def test_search_space_exists_and_passes_the_check(name: str) -> None:
    path = SPACES / f"{name}.yaml"
    assert path.is_file(), f"every method needs search_spaces/{name}.yaml"
    assert yaml.safe_load(path.read_text())["method"] == name
    assert check_files([path]) == []


@pytest.mark.parametrize("name", METHODS)
def test_tiny_pipeline_run_completes(name: str, tiny_data_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(f"seed.method={name}")
    result = run_pipeline(
        cfg, prepare_dataset(cfg, tiny_data_dir, tmp_path), StageStore(tmp_path / "s", tmp_path / "c")
    )
    summary = result.summary()
    assert all(0.0 <= summary[k] <= 1.0 for k in ("cam_miou_best", "pseudo_miou", "val_miou"))
    manifest = json.loads((tmp_path / "s" / "seed" / result.stages["seed"].key / "manifest.json").read_text())
    assert manifest["config"]["method"] == name


@pytest.mark.parametrize("name", METHODS)
def test_multiscale_inference_reads_the_methods_cams(name: str) -> None:
    """Shared multi-scale + flip inference through the method's own read-out and normalisation:
    (P, H, W) maps of the present classes in [0, 1], equal for an image and its mirror image."""
    cfg = tiny_config(f"seed.method={name}")
    method = get(name)
    with seeded(0, CPU.device):
        model = method.build(cfg.seed.backbone, 3, cfg.seed.params).eval()
    image, keys = torch.randn(3, 40, 56), np.array([0, 2])

    def infer(x: torch.Tensor) -> torch.Tensor:
        return multiscale_cams(
            model,
            x,
            keys,
            (1.0, 0.5),
            True,
            CPU.device,
            read=lambda m, b: method.cams(m, b, cfg.seed.params),
            normalise=lambda t: method.normalise(t, cfg.seed.params),
        )

    cams = infer(image)
    assert cams.shape == (2, 40, 56) and float(cams.min()) >= 0 and float(cams.max()) <= 1
    assert float(cams.amax()) > 0  # something is activated
    assert torch.allclose(cams, infer(image.flip(-1)).flip(-1), atol=1e-4)


@pytest.mark.parametrize("name", METHODS)
def test_rounds_go_through_the_shared_loop_and_are_cached(
    name: str, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """A method's rounds (wsss.stages.rounds): each one's targets have a row per train image and its
    network gets a head that fits them; run again, every round comes from the cache."""
    cfg = tiny_config(f"seed.method={name}")
    method = get(name)
    data = prepare_dataset(cfg, tiny_data_dir, tmp_path)
    computed: list[str] = []
    cache = local_rounds(tmp_path / "rounds")

    def counting(kind, payload, compute):  # type: ignore[no-untyped-def]
        return cache(kind, payload, lambda folder: (computed.append(kind), compute(folder)))

    result = train_rounds(cfg.seed, data, 0, CPU, counting)
    rounds = method.rounds(cfg.seed.params)
    # A method learns targets exactly when it says so: the contract's flag, not a guess from overrides.
    assert method.learns_targets == (type(method).targets is not SeedMethod.targets)
    assert len(result.records) == (rounds if rounds > 1 or method.learns_targets else 0)
    # A one-round method without targets trains one cached classifier step (keyed without the CAM
    # inference knobs); the others two steps a round.
    assert computed == (["targets", "model"] * len(result.records) if result.records else ["model"])
    for folder in result.folders:
        if (folder / "targets.npy").exists():
            assert np.load(folder / "targets.npy").shape[0] == len(data.train_ids)
    computed.clear()
    again = train_rounds(cfg.seed, data, 0, CPU, counting)
    assert computed == []
    for a, b in zip(result.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
