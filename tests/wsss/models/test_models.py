from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from torch import nn

from wsss.config import BackboneConfig
from wsss.errors import ConfigError, WsssError
from wsss.models.affinity import EMBED_DIM, AffinityNet
from wsss.models.backbone import create_backbone
from wsss.models.cam import CamNet
from wsss.models.deeplab import DeepLabV2

TINY = BackboneConfig(name="test_resnet")


@pytest.mark.parametrize("stride", [8, 16])
def test_cam_net_shapes_and_logits_are_pooled_maps(stride: int) -> None:
    model = CamNet(BackboneConfig(name="test_resnet", output_stride=stride), num_classes=5).eval()
    x = torch.randn(2, 3, 64, 96)
    logits, maps = model.logits_and_cams(x)
    assert logits.shape == (2, 5) and maps.shape == (2, 5, 64 // stride, 96 // stride)
    assert torch.allclose(model(x), logits, atol=1e-5)  # GAP and the bias-free 1x1 classifier commute
    assert torch.equal(model.cams(x), torch.relu(maps))
    assert model.classifier.bias is None


@pytest.mark.parametrize("backbone", [TINY, BackboneConfig(name="tf_efficientnet_lite0", output_stride=16)])
def test_manifold_hook_mixes_once_at_the_chosen_stage_and_finishes_the_pass(backbone: BackboneConfig) -> None:
    """On a ResNet and on EfficientNet-Lite (the msrc preset's backbone, whose timm feature extractor
    has no sequential stage list)."""
    model = CamNet(backbone, num_classes=3).eval()
    x = torch.randn(2, 3, 64, 64)
    logits, maps = model.logits_and_cams(x)
    stages = model.stage_names
    assert stages is not None and len(stages) == 5
    seen: list[tuple[int, ...]] = []

    def record(h: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(h.shape))
        return h

    with torch.no_grad():
        for stage in range(len(stages) + 1):
            mixed_logits, mixed_maps = model.logits_and_cams_mixed(x, stage, record)
            assert torch.allclose(mixed_logits, logits, atol=1e-5)  # identity mix = plain pass
            assert torch.allclose(mixed_maps, maps, atol=1e-5)
        assert len(seen) == len(stages) + 1 and seen[0] == (2, 3, 64, 64)
        assert len({shape[1] for shape in seen[1:]}) > 1  # hidden states, not the input again

        # Stage 0 mixes the images; a deeper stage mixes features, which a nonlinear net tells apart.
        def half(h: torch.Tensor) -> torch.Tensor:
            return 0.5 * h + 0.5 * h.flip(0)

        at_input = model.logits_and_cams_mixed(x, 0, half)[0]
        assert torch.allclose(at_input, model.logits_and_cams(half(x))[0], atol=1e-5)
        assert not torch.allclose(model.logits_and_cams_mixed(x, 3, half)[0], at_input, atol=1e-4)
    with pytest.raises(ValueError, match="stage 6 is not a stage"):
        model.logits_and_cams_mixed(x, 6, record)


def test_frozen_bn_has_no_trainable_norms_and_eval_reaches_every_module() -> None:
    model = CamNet(BackboneConfig(name="test_resnet", frozen_bn=True), num_classes=3)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "bn" in k}
    model.train()
    model(torch.randn(2, 3, 32, 32))
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    model.eval()
    assert not any(m.training for m in model.modules())


def test_param_split_covers_every_parameter_once() -> None:
    model = DeepLabV2(TINY, num_classes=4, rates=(2, 4))
    backbone, new = model.backbone_parameters(), model.new_parameters()
    assert len(backbone) + len(new) == len(list(model.parameters()))
    assert {id(p) for p in new} == {id(p) for p in model.aspp.parameters()}


@pytest.mark.parametrize("stride", [4, 8])
def test_affinity_net_embedding_stride(stride: int) -> None:
    model = AffinityNet(TINY, stride=stride).eval()
    out = model(torch.randn(1, 3, 64, 48))
    assert out.shape == (1, EMBED_DIM, 64 // stride, 48 // stride)
    with pytest.raises(ConfigError, match=r"refine\.stride: test_resnet has no feature level at stride 16"):
        AffinityNet(TINY, stride=16)


def test_deeplab_logits_at_input_size() -> None:
    model = DeepLabV2(TINY, num_classes=4, rates=(6, 12, 18, 24)).eval()
    assert len(model.aspp) == 4 and model.aspp[3].dilation == (24, 24)
    assert model(torch.randn(1, 3, 50, 70)).shape == (1, 4, 50, 70)


def test_unknown_backbone_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"backbone\.name: unknown timm model 'resnet_nope'"):
        create_backbone(BackboneConfig(name="resnet_nope"))


def test_pretrained_weights_from_a_local_file(tmp_path: Path) -> None:
    """timm's own pretrained-loading path fed a local checkpoint, as offline clusters use it."""
    source = timm.create_model("test_resnet", pretrained=False)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    backbone = create_backbone(
        BackboneConfig(name="test_resnet", pretrained=True, weights=str(tmp_path / "weights.pth"))
    )
    loaded = backbone.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in source.state_dict().items() if k in loaded)
    with pytest.raises(ConfigError, match=r"backbone\.weights: .*no such checkpoint file"):
        create_backbone(
            BackboneConfig(name="test_resnet", pretrained=True, weights=str(tmp_path / "missing.pth"))
        )


class _RunsAShellCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _local_weights(path: Path) -> BackboneConfig:
    return BackboneConfig(name="test_resnet", pretrained=True, weights=str(path))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch on the garbage file
def test_weights_files_that_are_not_checkpoints(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"conv1.weight": _RunsAShellCommand(marker)}, tmp_path / "evil.pth")
    (tmp_path / "garbage.pth").write_bytes(b"\x80\x04 not really a checkpoint")
    (tmp_path / "text.pth").write_text("weights")
    torch.save({"epoch": 3}, tmp_path / "no_tensors.pth")
    other = timm.create_model("resnet18", pretrained=False)
    torch.save(other.state_dict(), tmp_path / "resnet18.pth")
    cases = {
        "evil.pth": "not a loadable weights-only checkpoint",
        "garbage.pth": "not a loadable weights-only checkpoint",
        "text.pth": "not a loadable weights-only checkpoint",
        "no_tensors.pth": "not a state dict",
        "resnet18.pth": "its tensors do not fit 'test_resnet'",
    }
    for name, message in cases.items():
        with pytest.raises(ConfigError, match=rf"backbone\.weights: .*{name}: {message}"):
            create_backbone(_local_weights(tmp_path / name))
    assert not marker.exists()


def test_wrapped_and_safetensors_checkpoints_load(tmp_path: Path) -> None:
    source = timm.create_model("test_resnet", pretrained=False)
    torch.save({"epoch": 3, "state_dict": source.state_dict()}, tmp_path / "train.pth")
    safetensors.torch.save_file(source.state_dict(), str(tmp_path / "weights.safetensors"))
    for name in ("train.pth", "weights.safetensors"):
        loaded = create_backbone(_local_weights(tmp_path / name)).state_dict()
        assert all(torch.equal(v, loaded[k]) for k, v in source.state_dict().items() if k in loaded)


def test_pretrained_without_hub_access_says_what_to_do(tmp_path: Path) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE at import, so the check runs in a fresh interpreter.
    code = (
        "from wsss.config import BackboneConfig\n"
        "from wsss.models.backbone import create_backbone\n"
        "create_backbone(BackboneConfig(name='test_resnet', pretrained=True))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf-home")}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{WsssError.__module__}.WsssError: backbone.pretrained: could not")
    assert "set backbone.pretrained=false" in last


def test_dropout_before_global_pooling_drops_whole_channels_in_training_only() -> None:
    """psa's dropout7: Dropout2d(0.5) on the last feature map before pooling; CAMs (eval) unaffected."""
    from wsss.config_load import load_config

    model = CamNet(BackboneConfig(name="test_resnet", dropout=0.5), num_classes=3)
    x = torch.randn(2, 3, 64, 64)
    model.train()
    torch.manual_seed(0)
    features = model.features(x)
    zeroed = (features.abs().sum(dim=(2, 3)) == 0).float().mean()
    assert 0.3 < zeroed < 0.7  # about half the channels of each image are dropped, whole
    plain = CamNet(BackboneConfig(name="test_resnet"), num_classes=3)
    plain.load_state_dict(model.state_dict())  # the same weights and BatchNorm statistics
    model.eval(), plain.eval()
    assert torch.equal(model.cams(x), plain.cams(x))
    assert load_config(None, ["seed.backbone.dropout=0.5"]).seed.backbone.dropout == 0.5
    with pytest.raises(ConfigError, match=r"segment\.backbone\.dropout: only the CAM network pools globally"):
        load_config(None, ["segment.backbone.dropout=0.5"])
    with pytest.raises(ConfigError, match=r"seed\.backbone\.dropout: must be within \[0, 1\)"):
        load_config(None, ["seed.backbone.dropout=1.0"])


def test_frozen_stages_train_only_the_later_stages_as_irn_does() -> None:
    """irn's ResNet-50 CAM net: conv1..layer2 get no gradient and keep their BN statistics."""
    model = CamNet(BackboneConfig(name="test_resnet", frozen_stages=3), num_classes=3).train()
    frozen = ("backbone.conv1.", "backbone.bn1.", "backbone.layer1.", "backbone.layer2.")
    before = {n: b.clone() for n, b in model.named_buffers()}
    loss = model(torch.randn(2, 3, 48, 48)).sum()
    loss.backward()
    for name, param in model.named_parameters():
        assert param.requires_grad == (not name.startswith(frozen)), name
        assert (param.grad is not None) == param.requires_grad, name
    moved = {n for n, b in model.named_buffers() if n in before and not torch.equal(b, before[n])}
    assert moved and not any(n.startswith(frozen) for n in moved)  # layer3's BN still learns its stats
    assert all(p.requires_grad for p in model.backbone_parameters())  # the optimiser sees trainable ones
    resnet50 = create_backbone(BackboneConfig(name="resnet50", frozen_stages=3))
    first = next(n for n, p in resnet50.named_parameters() if p.requires_grad)
    assert first.startswith("layer3.")
    with pytest.raises(ConfigError, match=r"backbone\.frozen_stages: 6 exceeds the 5 feature stages"):
        create_backbone(BackboneConfig(name="test_resnet", frozen_stages=6))
