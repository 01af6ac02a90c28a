"""torch Datasets over a VocDataset and the seeded DataLoader every stage uses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from wsss.data.image_files import IGNORE_INDEX, read_mask
from wsss.data.transforms import TrainTransform
from wsss.data.voc import VocDataset
from wsss.errors import DamagedArtifact, DataError


class ClassificationSet(Dataset[tuple[torch.Tensor, ...]]):
    """(augmented image, multi-hot labels) for CAM training; with `maps`, also the image's map (e.g.
    superpixel ids) augmented with it, `fill` outside the image; with `targets` ((N, D), rows following
    `ids`), also the image's row (e.g. sub-category labels), last."""

    def __init__(
        self,
        data: VocDataset,
        ids: Sequence[str],
        transform: TrainTransform,
        maps: Callable[[str], np.ndarray] | None = None,
        fill: int = -1,
        targets: np.ndarray | None = None,
    ) -> None:
        self.data, self.ids, self.transform, self.maps, self.fill = data, list(ids), transform, maps, fill
        if targets is not None and len(targets) != len(self.ids):
            raise ValueError(f"{len(targets)} target rows for {len(self.ids)} images")
        self.targets = None if targets is None else torch.from_numpy(np.asarray(targets, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        image_id = self.ids[index]
        labels = torch.from_numpy(self.data.labels(image_id))
        row = () if self.targets is None else (self.targets[index],)
        if self.maps is None:
            image, _ = self.transform(self.data.read_image(image_id))
            return image, labels, *row
        image, extra = self.transform(self.data.read_image(image_id), self.maps(image_id), self.fill)
        assert extra is not None
        return image, labels, extra, *row


class SegmentationSet(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(augmented image, label map) pairs; label maps come from PNG files (pseudo or confident labels)."""

    def __init__(
        self,
        data: VocDataset,
        ids: Sequence[str],
        mask_path: Callable[[str], Path],
        transform: TrainTransform,
        stored: bool = False,
    ) -> None:
        """`stored`: the label maps are an upstream artifact's, so an unreadable one is a damaged
        artifact (rebuilt by the pipeline), not a problem of the dataset."""
        self.data, self.ids, self.mask_path, self.transform = data, list(ids), mask_path, transform
        self.stored = stored

    def __len__(self) -> int:
        return len(self.ids)

    def read_label(self, path: Path, image_id: str, shape: tuple[int, ...]) -> np.ndarray:
        try:
            mask = read_mask(path, self.data.num_classes)
            if mask.shape != shape:
                raise DataError(
                    f"{path}: label map is {mask.shape[::-1]} but image {image_id} is {shape[::-1]}"
                )
        except DataError as exc:
            if not self.stored:
                raise
            raise DamagedArtifact(path, str(exc).removeprefix(f"{path}: ")) from None
        return mask

    fill = IGNORE_INDEX  # the label map's value outside the image after cropping

    def label_map(self, image_id: str, shape: tuple[int, ...]) -> np.ndarray:
        return self.read_label(self.mask_path(image_id), image_id, shape)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_id = self.ids[index]
        image = self.data.read_image(image_id)
        img, m = self.transform(image, self.label_map(image_id, image.shape[:2]), self.fill)
        assert m is not None
        return img, m


# Two label maps travel through one augmentation as `first * PAIR_BASE + second` (labels are < 256).
PAIR_BASE = 256


class LabelPairSet(SegmentationSet):
    """(augmented image, two label maps in one) for losses that read two label maps of an image,
    cropped and flipped alike (psa's low- and high-alpha confident labels); split with `split_pair`."""

    fill = IGNORE_INDEX * PAIR_BASE + IGNORE_INDEX

    def __init__(
        self,
        data: VocDataset,
        ids: Sequence[str],
        mask_paths: Callable[[str], tuple[Path, Path]],
        transform: TrainTransform,
        stored: bool = False,
    ) -> None:
        super().__init__(data, ids, lambda i: mask_paths(i)[0], transform, stored)
        self.mask_paths = mask_paths

    def label_map(self, image_id: str, shape: tuple[int, ...]) -> np.ndarray:
        first, second = (self.read_label(p, image_id, shape) for p in self.mask_paths(image_id))
        return first.astype(np.int64) * PAIR_BASE + second


def split_pair(pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two label maps a LabelPairSet batch holds."""
    return pairs // PAIR_BASE, pairs % PAIR_BASE


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; numpy follows it (SEAM does the same).
    np.random.seed(torch.initial_seed() % 2**32)


def train_loader(dataset: Dataset, batch_size: int, seed: int, workers: int, pin_memory: bool) -> DataLoader:  # type: ignore[type-arg]
    """Shuffled, seeded, last partial batch dropped (BatchNorm dislikes a batch of one)."""
    generator = torch.Generator().manual_seed(seed)
    size = len(dataset)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=min(batch_size, size),
        shuffle=True,
        drop_last=size >= batch_size,
        num_workers=workers,
        generator=generator,
        worker_init_fn=_seed_worker,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
    )
