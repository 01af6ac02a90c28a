"""CPN (Zhang et al., ICCV 2021): complementary patch network. Each image goes through the shared
network (SEAM's, plus the PRCM of wsss.models.cpn) three times: whole (I), with a random set of
patches hidden (I1 = I*M) and with the complement hidden (I2 = I*(1 - M)); hidden pixels are 0 in the
normalised image, the ImageNet mean colour. Losses as in CPN's `train_cpn.py`:

    L = mean of the 3 classification losses + w_minpool mean of the 3 min-pool losses
        + w_tcp TCP + w_cpcr CPCR
    TCP  = mean|(c1 + c2).detach() - c| + mean|r - r1 - r2|   (c: CAMs, r: refined CAMs, after
           max_norm x labels; c1, r1 weighted by the kept fraction of I1, c2, r2 by the rest)
    CPCR = OHEM|max_onehot(c - c1) - r2| + OHEM|max_onehot(c - c2) - r1|   (backgrounds set to
           1 - max foreground first; targets detached)

Masks M, two strategies:
- superpixel (CPN's default, `hide_patch_ss`): SLIC superpixels, S_N per 448 px crop at stride 8 and
  as many feature cells per superpixel on other crops and strides (image_maps), about half of them
  hidden (floor((S+1)/2) drawn with replacement); the kept fraction counts pixels. SLIC runs once per
  image and setting (wsss.data.image_maps, cached with the dataset) instead of on every crop, and on
  the RGB image rather than CPN's normalised tensor; the maps are cropped and flipped with the image
  and the masks drawn from them on the batch's device.
- grid (`hide_patch`): one cell count per crop side drawn per image from the patch set, each cell
  hidden with probability p_h; the kept fraction counts cells. Cell counts rather than CPN's pixel
  sizes ({224, 448} on 448 crops = 2 or 1 cells per side) keep one search space valid for any crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from wsss.config import BackboneConfig, TrainConfig
from wsss.data.image_maps import ImageMaps, slic_labels
from wsss.errors import ConfigError
from wsss.methods._equivariance import classification, min_max, min_pool_loss, ohem, views
from wsss.methods.base import Batch, SeedMethod
from wsss.models.cpn import CpnNet
from wsss.models.seam import max_norm, with_background

_PARTS = ("cls", "minpool", "tcp", "cpcr")
# CPN's crop side and network stride (train_cpn.py crop 448; ResNet-38 at output stride 8), where S_N counts.
REFERENCE_CROP, REFERENCE_STRIDE = 448, 8


@dataclass(frozen=True)
class CpnConfig:
    # How M is drawn: superpixels (CPN's default, `hide_patch_ss`) or grid cells (`hide_patch`).
    strategy: Literal["superpixel", "grid"] = "superpixel"
    # S_N: SLIC segments per 448 px crop at stride 8 (CPN 300; brief {100, 200, 300, 500}), scaled to
    # this network's grid (image_maps): 300 is about 19 superpixels on a 112 px crop at stride 8.
    superpixels: int = 300
    compactness: float = 10.0  # SLIC compactness (CPN 10)
    grid_cells: tuple[int, ...] = (1, 2)  # the grid patch set: cells per crop side, one drawn per image
    hide: float = 0.5  # grid: p_h, each cell's probability of being hidden in I1 (CPN 0.5)
    ohem: float = 0.2  # CPCR keeps this top fraction of entries per image (CPN 0.2)
    weight_minpool: float = 1.0  # CPN: 1 (the classification loss is the reference scale)
    weight_tcp: float = 1.0  # CPN: 1
    weight_cpcr: float = 1.0  # CPN: 1
    halve_cams: bool = True  # CPN's infer_cam.py divides the min-max normalised CAMs by 2
    reference_reshape: bool = False  # CPN's PRCM key reshape without transpose (wsss.models.cpn)

    def validate(self, path: str) -> None:
        if not self.grid_cells or any(c < 1 for c in self.grid_cells):
            raise ConfigError(
                f"{path}.grid_cells: need 1+ cell counts per crop side, each >= 1 (a count below 1 is a "
                f"cell larger than the crop), got {list(self.grid_cells)}"
            )
        if any(c > 64 for c in self.grid_cells):
            raise ConfigError(f"{path}.grid_cells: at most 64 cells per side, got {list(self.grid_cells)}")
        if not 2 <= self.superpixels <= 5000:
            raise ConfigError(f"{path}.superpixels: S_N must be within 2..5000, got {self.superpixels}")
        if self.compactness <= 0:
            raise ConfigError(f"{path}.compactness: must be > 0, got {self.compactness}")
        if not 0 < self.hide < 1:
            raise ConfigError(f"{path}.hide: p_h must be within (0, 1), got {self.hide}")
        if not 0 < self.ohem <= 1:
            raise ConfigError(f"{path}.ohem: must be within (0, 1], got {self.ohem}")
        for name in ("weight_minpool", "weight_tcp", "weight_cpcr"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{path}.{name}: must be >= 0, got {getattr(self, name)}")


def grid_masks(
    batch: int, size: tuple[int, int], cells_set: tuple[int, ...], hide: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, H, W) keep-masks M and the kept fraction of cells (B,), on `device` in one pass.

    Each image draws a cell count g from `cells_set`; cell (i, j) covers rows [i H/g, (i+1) H/g) and
    columns alike, and is hidden with probability `hide`.
    """
    height, width = size
    cells = torch.tensor(cells_set, device=device)[torch.randint(len(cells_set), (batch,), device=device)]
    most = max(cells_set)
    hidden = torch.rand(batch, most, most, device=device) < hide
    rows = torch.arange(height, device=device)[None] * cells[:, None] // height  # (B, H) cell row
    cols = torch.arange(width, device=device)[None] * cells[:, None] // width  # (B, W) cell column
    index = torch.arange(batch, device=device)[:, None, None]
    keep = ~hidden[index, rows[:, :, None], cols[:, None, :]]
    used = torch.arange(most, device=device)[None] < cells[:, None]  # (B, most)
    in_grid = used[:, :, None] & used[:, None, :]
    kept = ((~hidden) & in_grid).sum(dim=(1, 2)) / (cells * cells)
    return keep[:, None].float(), kept.float()


def superpixel_masks(superpixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, H, W) keep-masks M and kept pixel fractions (B,) from (B, H, W) superpixel ids of the
    crops (-1 outside the image, which stays kept), on their device in one pass.

    As CPN's `hide_patch_ss`: each crop's S superpixels, floor((S + 1) / 2) of them drawn uniformly
    with replacement and hidden, so about 1 - e^(-1/2) = 39% of them are hidden, never more than half.
    """
    batch, device = superpixels.shape[0], superpixels.device
    # Slot 0 of each crop holds its pixels outside the image (always kept), slot k + 1 superpixel k:
    # one scatter counts the pixels per slot and one gather paints the masks, the two passes over
    # the pixels; everything else works on (B, slots) tables.
    ids = (superpixels.long() + 1).flatten(1)
    slots = int(ids.max()) + 1
    ones = torch.ones(1, 1, device=device).expand_as(ids)
    counts = torch.zeros(batch, slots, device=device).scatter_add_(1, ids, ones)
    present = counts[:, 1:] > 0
    count = present.sum(1)  # S per crop
    rank = present.long().cumsum(1) - 1  # each present id's index among the crop's ids
    draws = (count + 1) // 2
    most = slots - 1
    picked = (torch.rand(batch, most, device=device) * count[:, None]).long()  # ranks, with replacement
    real = torch.arange(most, device=device)[None] < draws[:, None]  # the first `draws` draws count
    hidden_rank = torch.zeros(batch, most, device=device).scatter_add_(1, picked, real.float()) > 0
    hidden_id = hidden_rank.gather(1, rank.clamp(min=0)) & present
    keep_slot = torch.cat([torch.ones_like(counts[:, :1]), (~hidden_id).float()], 1)
    keep = keep_slot.gather(1, ids).view(batch, 1, *superpixels.shape[1:])
    return keep, (counts * keep_slot).sum(1) / ids.shape[1]


def max_onehot_all(maps: torch.Tensor) -> torch.Tensor:
    """CPN's `max_onehot`: every channel but the per-pixel maximum over all channels (background
    included) set to 0."""
    return torch.where(maps == maps.amax(1, keepdim=True), maps, torch.zeros_like(maps))


def superpixel_count(s_n: int, train: TrainConfig, stride: int, shape: tuple[int, ...]) -> int:
    """SLIC segments for a whole image of `shape` (H, W): S_N x its area at the mean random rescale,
    over the area of the reference crop seen at this network's stride, (448 * stride / 8)^2."""
    height, width = shape[:2]
    scale = (sum(train.resize_long) / 2) / max(height, width) if train.random_rescale else 1.0
    side = REFERENCE_CROP * stride / REFERENCE_STRIDE
    return max(2, round(s_n * height * width * scale**2 / side**2))


class Cpn(SeedMethod):
    name = "cpn"
    description = "CPN: complementary patch pairs through SEAM's network with PRCM (Zhang et al. 2021)"
    Config = CpnConfig

    def build(self, backbone: BackboneConfig, num_classes: int, params: CpnConfig) -> CpnNet:
        return CpnNet(backbone, num_classes, params.reference_reshape)

    def image_maps(self, params: CpnConfig, train: TrainConfig, stride: int) -> ImageMaps | None:
        if params.strategy != "superpixel":
            return None

        # S_N is CPN's count on its 448 px crops at stride 8 (train_cpn.py, ResNet-38), where one
        # superpixel covers (448 / 8)^2 / S_N feature cells (10.5 at 300). A superpixel here covers
        # as many cells of this network's grid, so S_N keeps its meaning on small crops and at
        # stride 16: per crop S_N x (crop / stride)^2 / 56^2, per image that times its area over the
        # area one crop covers at the mean random rescale.
        def compute(image: np.ndarray) -> np.ndarray:
            count = superpixel_count(params.superpixels, train, stride, image.shape[:2])
            return slic_labels(image, count, params.compactness)

        rescale = f"{train.resize_long[0]}-{train.resize_long[1]}" if train.random_rescale else "none"
        return ImageMaps(
            f"slic-{params.superpixels}-{params.compactness:g}-stride{stride}-{rescale}", compute
        )

    def loss(self, model: CpnNet, batch: Batch, params: CpnConfig) -> tuple[torch.Tensor, dict[str, float]]:
        images, labels = batch.images, batch.labels
        if params.strategy == "superpixel":
            if batch.maps is None:
                raise ValueError("cpn with strategy superpixel needs the batch's superpixel maps")
            keep, kept = superpixel_masks(batch.maps)
        else:
            size = (images.shape[-2], images.shape[-1])
            keep, kept = grid_masks(images.shape[0], size, params.grid_cells, params.hide, images.device)
        return self.pair_loss(model, images, labels, keep, kept, params)

    def pair_loss(
        self,
        model: CpnNet,
        images: torch.Tensor,
        labels: torch.Tensor,
        keep: torch.Tensor,
        kept: torch.Tensor,
        params: CpnConfig,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss for given complementary masks `keep` (B, 1, H, W) with kept fractions (B,)."""
        present = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1)[..., None, None]
        outputs = [views(model, x) for x in (images, images * keep, images * (1 - keep))]
        cls = sum(classification(cam, labels) for cam, _ in outputs) / 3
        minpool = sum(min_pool_loss((refined * present)[:, 1:]) for _, refined in outputs) / 3
        weights = (torch.ones_like(kept), kept, 1 - kept)
        cams, refined = zip(
            *[
                (
                    w[:, None, None, None] * max_norm(c) * present,
                    w[:, None, None, None] * max_norm(r) * present,
                )
                for w, (c, r) in zip(weights, outputs, strict=True)
            ],
            strict=True,
        )
        tcp = ((cams[1] + cams[2]).detach() - cams[0])[:, 1:].abs().mean() + (
            refined[0] - refined[1] - refined[2]
        )[:, 1:].abs().mean()
        cams, refined = tuple(with_background(c) for c in cams), tuple(with_background(r) for r in refined)
        whole = cams[0].detach()
        cpcr = ohem((max_onehot_all(whole - cams[1].detach()) - refined[2]).abs(), params.ohem) + ohem(
            (max_onehot_all(whole - cams[2].detach()) - refined[1]).abs(), params.ohem
        )
        total = cls + params.weight_minpool * minpool + params.weight_tcp * tcp + params.weight_cpcr * cpcr
        parts = {name: float(v.detach()) for name, v in zip(_PARTS, (cls, minpool, tcp, cpcr), strict=True)}
        return total, parts

    def normalise(self, total: torch.Tensor, params: CpnConfig) -> torch.Tensor:
        """SEAM's min-max normalisation, then CPN's halving (`infer_cam.py`)."""
        out = min_max(total)
        return out / 2 if params.halve_cams else out


METHOD = Cpn()
