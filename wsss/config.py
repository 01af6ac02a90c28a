"""Typed, frozen configs for the pipeline and each stage (loading them: wsss.config_load).

Defaults are sized for the embedded synthetic benchmark on a 2-core CPU (tiny backbone, small crops,
few epochs). `wsss/presets/voc12.yaml` holds the reference settings for PASCAL VOC on a GPU.
Reference values and their sources are in the field comments (psa = Ahn & Kwak 2018, irn = Ahn et
al. 2019, kazuto = kazuto1011/deeplab-pytorch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from wsss.configio import (
    NOT_A_SETTING,
    RESOLVE_TYPE,
)
from wsss.data.synth import SynthSpec
from wsss.errors import ConfigError, short_repr

# Bounds on sizes and counts that no real run comes near (VOC trains 512 px crops, batch 16, a few
# dozen epochs), so that a typo such as an extra zero is a config error and not an out-of-memory
# kill or an overflow inside torch.
MAX_SIDE = 4096  # crop and resize sides, pixels
MAX_EPOCHS = 10_000
MAX_BATCH = 4096
MAX_SCALES = 16  # inference scales
MAX_RNG_SEED = 2**31 - 1  # fits every seed torch and numpy take


def _check(ok: bool, path: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{path}: {message}")


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "test_resnet"  # any timm model that supports features_only (resnet50 for VOC)
    output_stride: int = 8  # 8 (psa) or 16 (irn); dilates the last stages
    pretrained: bool = False  # ImageNet weights from the timm hub; off for synthetic data and tests
    weights: str = ""  # with pretrained: load this local checkpoint instead of the hub (offline clusters)
    frozen_bn: bool = False  # BatchNorm as fixed affine layers (psa, irn, kazuto all freeze BN)
    # The first N of timm's feature stages (and everything before them) get no gradient and keep their
    # BatchNorm statistics. irn's ResNet-50 CAM net trains from layer3 on (conv1..layer2 detached): 3.
    frozen_stages: int = 0
    # Dropout2d on the last feature map before global pooling, in training (psa and mva: 0.5). Only
    # the CAM network pools globally, so only seed.backbone may set it.
    dropout: float = 0.0
    # Where the pipeline made `pretrained` weights local (wsss.models.pretrained); not a setting, so
    # no part of a stage key: a converted file's location differs from node to node.
    local_weights: str = field(default="", compare=False, metadata={NOT_A_SETTING: True})

    def validate(self, path: str) -> None:
        _check(0 <= self.dropout < 1, f"{path}.dropout", f"must be within [0, 1), got {self.dropout}")
        _check(self.frozen_stages >= 0, f"{path}.frozen_stages", f"must be >= 0, got {self.frozen_stages}")
        _check(
            self.output_stride in (8, 16),
            f"{path}.output_stride",
            f"must be 8 or 16, got {self.output_stride}",
        )
        _check(bool(self.name), f"{path}.name", "must name a timm model")
        _check(not self.weights or self.pretrained, f"{path}.weights", "only used with pretrained: true")


@dataclass(frozen=True)
class TrainConfig:
    """One shared schedule shape: SGD + momentum, per-iteration poly LR, psa's four LR groups."""

    epochs: int = 10
    batch_size: int = 16
    lr: float = 0.1
    weight_decay: float = 5e-4
    momentum: float = 0.9
    # psa's PolyOptimizer passes weight_decay into SGD's momentum slot (psa#28, SEAM#21); true reproduces it.
    reference_momentum_bug: bool = False
    poly_power: float = 0.9
    # LR multipliers for backbone weights, backbone biases, new weights, new biases (psa).
    lr_mults: tuple[float, float, float, float] = (1.0, 2.0, 10.0, 20.0)
    crop_size: int = 112
    resize_long: tuple[int, int] = (96, 160)  # random long-side resize before the crop (psa: 256-512)
    random_rescale: bool = True  # false: no resize, crops of the image as it is (psa/SEAM AffinityNet)
    hflip: bool = True
    color_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # brightness, contrast, sat, hue
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    amp: bool = True  # mixed precision on CUDA; ignored on CPU

    def validate(self, path: str) -> None:
        _check(self.epochs >= 1, f"{path}.epochs", f"must be >= 1, got {self.epochs}")
        _check(self.epochs <= MAX_EPOCHS, f"{path}.epochs", f"must be <= {MAX_EPOCHS}")
        _check(self.batch_size >= 1, f"{path}.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.batch_size <= MAX_BATCH, f"{path}.batch_size", f"must be <= {MAX_BATCH}")
        _check(self.lr > 0, f"{path}.lr", f"must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"{path}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(0 <= self.momentum < 1, f"{path}.momentum", f"must be within [0, 1), got {self.momentum}")
        _check(self.poly_power >= 0, f"{path}.poly_power", f"must be >= 0, got {self.poly_power}")
        _check(all(m > 0 for m in self.lr_mults), f"{path}.lr_mults", "multipliers must be > 0")
        _check(self.crop_size >= 16, f"{path}.crop_size", f"must be >= 16, got {self.crop_size}")
        _check(self.crop_size <= MAX_SIDE, f"{path}.crop_size", f"must be <= {MAX_SIDE} pixels")
        lo, hi = self.resize_long
        _check(
            16 <= lo <= hi <= MAX_SIDE,
            f"{path}.resize_long",
            f"must be [low, high] with 16 <= low <= high <= {MAX_SIDE}, got {[lo, hi]}",
        )
        _check(all(j >= 0 for j in self.color_jitter), f"{path}.color_jitter", "values must be >= 0")
        _check(self.color_jitter[3] <= 0.5, f"{path}.color_jitter", "hue jitter must be <= 0.5")
        _check(self.grad_clip >= 0, f"{path}.grad_clip", f"must be >= 0, got {self.grad_clip}")


@dataclass(frozen=True)
class CrfConfig:
    """Dense CRF (Krähenbühl & Koltun 2011) via pydensecrf2, the `crf` extra. Defaults: psa's."""

    enabled: bool = False
    iterations: int = 10
    gauss_sxy: float = 3.0
    gauss_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0

    def validate(self, path: str) -> None:
        _check(self.iterations >= 1, f"{path}.iterations", f"must be >= 1, got {self.iterations}")
        _check(
            self.iterations <= 1000, f"{path}.iterations", f"must be <= 1000 (psa: 10), got {self.iterations}"
        )
        for name in ("gauss_sxy", "bilateral_sxy", "bilateral_srgb"):
            _check(getattr(self, name) > 0, f"{path}.{name}", "must be > 0")


def _no_global_pool_dropout(backbone: BackboneConfig, path: str) -> None:
    _check(
        backbone.dropout == 0,
        f"{path}.backbone.dropout",
        "only the CAM network pools globally; set seed.backbone.dropout instead",
    )


def _scales_ok(scales: tuple[float, ...], path: str) -> None:
    _check(len(scales) <= MAX_SCALES, path, f"at most {MAX_SCALES} scales, got {len(scales)}")
    _check(
        len(scales) > 0 and all(0 < s <= 4 for s in scales),
        path,
        f"need 1+ scales in (0, 4], got {list(scales)}",
    )


@dataclass(frozen=True)
class SeedConfig:
    method: str = "cam"  # a module of wsss.methods; `wsss methods` lists them
    # The method's own knobs, typed by its `Config` class (e.g. seed.params.alpha for mixup).
    # Loaded configs always hold an instance (wsss.config_load resolves the type by method); a
    # config built in code without one means the method's defaults.
    params: Any = field(default=None, metadata={RESOLVE_TYPE: True})
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=16, lr=0.05))
    scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)  # multi-scale CAM inference (psa, irn)
    flip: bool = True
    bg_threshold: float = 0.15  # constant background score for CAM mIoU (irn/SC-CAM 0.15, psa 0.2)
    sweep_step: float = 0.01  # threshold sweep step for the best-threshold CAM mIoU (SEAM/CPN)

    def validate(self, path: str) -> None:
        _scales_ok(self.scales, f"{path}.scales")
        _check(
            0 <= self.bg_threshold <= 1,
            f"{path}.bg_threshold",
            f"must be within [0, 1], got {self.bg_threshold}",
        )
        _check(
            0 < self.sweep_step <= 0.5,
            f"{path}.sweep_step",
            f"must be within (0, 0.5], got {self.sweep_step}",
        )
        _check(  # 1/step thresholds are scored per image
            self.sweep_step >= 0.001, f"{path}.sweep_step", f"must be >= 0.001, got {self.sweep_step}"
        )


@dataclass(frozen=True)
class RefineConfig:
    """AffinityNet (psa): confident labels -> affinity net -> random walk over the CAMs."""

    # Background powers for confident labels: fg iff max CAM > (1 - max CAM)^alpha_low, bg iff below
    # (1 - max CAM)^alpha_high; i.e. thresholds m*(alpha), 0.276 for 4, 0.077 for 32, 0.028 for 128.
    # psa uses 4 / 32 and rw_alpha 16 for ResNet-38 CAMs (presets/voc12.yaml); the synthetic benchmark's
    # CAMs are sharper (best threshold ~0.1), so confident background must start lower.
    alpha_low: float = 4.0
    alpha_high: float = 128.0
    crf: CrfConfig = field(default_factory=CrfConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=12, lr=0.2))
    stride: int = 8  # embedding grid of the walk: psa walks at 8, irn at 4 (finer, costlier)
    radius: int = 5  # pixel pairs within this radius on the feature grid (psa: 5 -> 34 offsets)
    # Which pairs: every pair within the radius, or psa's (no origin within radius - 1 cells of the
    # bottom, left or right border, for training and for the walk alike).
    pair_origins: Literal["all", "psa"] = "all"
    # Labels of the grid cells the affinity loss pairs: each cell's majority label of the combined
    # confident map (ignore counting as a label), only cells whose pixels all agree ("pure"), or psa's
    # rule: the low- and high-alpha maps pooled to the grid apart, each cell's argmax, then combined
    # (train_aff.py AvgPool2d(8), voc12/data.py).
    grid_labels: Literal["majority", "pure", "psa"] = "majority"
    beta: float = 16.0  # affinity power before the walk (psa 8, irn 10)
    # 2^logt walk steps. psa/irn use 8 on ~60x60 grids; a 128 px image is a 16x16 grid, where objects are
    # a few cells wide and more steps only leak across boundaries.
    logt: int = 5
    rw_alpha: float = 64.0  # background power of the walk's input (psa 16, SEAM 6)

    def validate(self, path: str) -> None:
        _check(self.alpha_low > 0, f"{path}.alpha_low", f"must be > 0, got {self.alpha_low}")
        _check(
            self.alpha_high > self.alpha_low,
            f"{path}.alpha_high",
            f"must be > alpha_low ({self.alpha_low}), got {self.alpha_high}",
        )
        _check(self.stride in (4, 8), f"{path}.stride", f"must be 4 or 8, got {self.stride}")
        _check(2 <= self.radius <= 12, f"{path}.radius", f"must be within 2..12, got {self.radius}")
        _check(self.beta > 0, f"{path}.beta", f"must be > 0, got {self.beta}")
        _check(0 <= self.logt <= 12, f"{path}.logt", f"must be within 0..12, got {self.logt}")
        _check(self.rw_alpha > 0, f"{path}.rw_alpha", f"must be > 0, got {self.rw_alpha}")
        _no_global_pool_dropout(self.backbone, path)


@dataclass(frozen=True)
class SegmentConfig:
    """DeepLab-v2 (ASPP with summed branches) trained on the pseudo masks, predicting val."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=16, lr=0.02))
    aspp_rates: tuple[int, ...] = (6, 12, 18, 24)
    # Background-vs-foreground balanced CE (AdvCAM/AMN/DSRG): the mean loss over background pixels
    # and the mean over foreground pixels, averaged; keeps ImageNet-initialised DeepLab from diverging.
    balanced_ce: bool = False
    # With balanced_ce: every class present in the batch weighs the same instead (not a reference loss).
    balance_per_class: bool = False
    # kazuto1011's multi-scale training (libs/models/msc.py:26-47, main.py:232-236): the loss summed
    # over the logits of the crop at these scales (1.0 first) and their pixel-wise max; [] = one scale.
    msc_scales: tuple[float, ...] = ()
    scales: tuple[float, ...] = (1.0,)
    flip: bool = True
    # kazuto1011's post-processing CRF values.
    crf: CrfConfig = field(
        default_factory=lambda: CrfConfig(
            gauss_sxy=1.0, gauss_compat=3.0, bilateral_sxy=67.0, bilateral_srgb=3.0, bilateral_compat=4.0
        )
    )

    def validate(self, path: str) -> None:
        _check(
            0 < len(self.aspp_rates) <= 8 and all(1 <= r <= 256 for r in self.aspp_rates),
            f"{path}.aspp_rates",
            f"need 1+ rates >= 1, got {short_repr(list(self.aspp_rates))} (at most 8 rates, each <= 256)",
        )
        _scales_ok(self.scales, f"{path}.scales")
        if self.msc_scales:
            _scales_ok(self.msc_scales, f"{path}.msc_scales")
            _check(
                self.msc_scales[0] == 1.0 and len(self.msc_scales) >= 2,
                f"{path}.msc_scales",
                f"must be 1.0 then other scales (kazuto1011: [1.0, 0.5, 0.75]), got {list(self.msc_scales)}",
            )
        _no_global_pool_dropout(self.backbone, path)
        _check(
            self.balanced_ce or not self.balance_per_class,
            f"{path}.balance_per_class",
            "only applies with balanced_ce: true",
        )


@dataclass(frozen=True)
class DataConfig:
    mask_dir: Literal["SegmentationClass", "SegmentationClassAug"] = "SegmentationClass"
    train_split: str = "train"  # seed, refine and segment train on it
    val_split: str = "val"
    # CAM and pseudo-mask mIoU are measured on this subset of the train split; "" = the whole train
    # split. The papers train on VOC train_aug (10,582) and score on VOC train (1,464).
    eval_split: str = ""
    # Ground truth that the eval split and val are scored against; "" = mask_dir. The papers score
    # against the original VOC masks (SegmentationClass): SBD's masks are coarser (SEAM#6).
    eval_mask_dir: Literal["", "SegmentationClass", "SegmentationClassAug"] = ""
    # Held-out val images: the segment stage predicts them too and scores them apart as holdout_miou,
    # never inside val_miou. A search selects on val_miou and reads holdout_miou as the score of images
    # no trial was chosen on (search-review.md W5: one split that selects and reports flatters the
    # winner). "" = none.
    holdout_split: str = ""
    labels: Literal["auto", "file", "masks"] = "auto"  # auto: cls_labels file if present, else from masks
    cls_labels: str = "cls_labels.npy"  # relative to the data root
    synthetic: SynthSpec = field(default_factory=SynthSpec)  # the dataset used when no --data is given

    def validate(self, path: str) -> None:
        _check(bool(self.train_split), f"{path}.train_split", "must not be empty")
        _check(bool(self.val_split), f"{path}.val_split", "must not be empty")
        _check(
            self.val_split != self.train_split,
            f"{path}.val_split",
            f"must be held out, not the train split {self.train_split!r}",
        )
        _check(
            not self.holdout_split
            or self.holdout_split not in (self.train_split, self.val_split, self.eval_split),
            f"{path}.holdout_split",
            f"{self.holdout_split!r} must be a split of its own, held out from train, val and eval",
        )
        _check(
            self.eval_split != self.val_split,
            f"{path}.eval_split",
            f"must be a subset of the train split, not the val split {self.val_split!r}",
        )

    @property
    def score_split(self) -> str:
        """The split CAM and pseudo-mask mIoU are measured on."""
        return self.eval_split or self.train_split

    @property
    def score_mask_dir(self) -> str:
        """The masks that CAMs, pseudo masks and val predictions are scored against."""
        return self.eval_mask_dir or self.mask_dir


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how to compute. Not part of any stage key: it does not change what is computed."""

    device: str = "auto"  # auto = cuda if available, else cpu
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    workers: int = 0  # DataLoader worker processes
    # Images per inference forward (CAMs, the walk's embeddings, val predictions): images of one size
    # go together, each with its flip. 1: one image at a time. In eval mode batching changes nothing
    # but float rounding; a GPU needs it to be busy (docs/benchmarks.md, "The GPU check").
    infer_batch: int = 1
    progress: bool = True
    # Channels-last (NHWC) tensors for convolutions: "auto" on CUDA only; "always" on CPU too, where it
    # makes EfficientNet-Lite0 steps 1.3-1.6x faster on 2 cores (docs/benchmarks.md, "What a step
    # costs"); "never" keeps NCHW everywhere.
    channels_last: Literal["auto", "always", "never"] = "auto"

    def validate(self, path: str) -> None:
        _check(
            self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"),
            f"{path}.device",
            f"must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}",
        )
        for name in ("threads", "workers"):
            value = getattr(self, name)
            _check(value >= 0, f"{path}.{name}", f"must be >= 0, got {value}")
            _check(value <= 1024, f"{path}.{name}", f"must be <= 1024, got {value}")
        batch = self.infer_batch
        _check(1 <= batch <= 1024, f"{path}.infer_batch", f"must be within 1..1024, got {batch}")


@dataclass(frozen=True)
class PipelineConfig:
    data: DataConfig = field(default_factory=DataConfig)
    seed: SeedConfig = field(default_factory=SeedConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    rng_seed: int = 0  # seeds every stage; part of every stage key

    def validate(self, path: str) -> None:
        _check(
            0 <= self.rng_seed <= MAX_RNG_SEED,
            f"{path}.rng_seed" if path else "rng_seed",
            f"must be within 0..{MAX_RNG_SEED}, got {self.rng_seed}",
        )
