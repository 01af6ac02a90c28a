from __future__ import annotations

import numpy as np
import torch

from wsss.config import TrainConfig
from wsss.data.classes import IGNORE_INDEX
from wsss.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TrainTransform,
    denormalize,
    resize_image,
    scaled_size,
    to_tensor,
)


def test_image_and_mask_stay_aligned_and_labels_are_never_interpolated() -> None:
    """A mask that encodes each pixel's column must still match the image column after augmentation."""
    h, w = 40, 60
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = np.arange(w)[None, :] * 4  # red grows with the column
    mask = np.tile((np.arange(w) // 10).astype(np.uint8), (h, 1))  # 6 vertical bands: labels 0..5
    transform = TrainTransform(TrainConfig(crop_size=48, resize_long=(40, 90), hflip=True))
    torch.manual_seed(0)
    for _ in range(20):
        img, m = transform(image, mask)
        assert img.shape == (3, 48, 48) and m is not None and m.shape == (48, 48)
        assert set(m.unique().tolist()) <= set(range(6)) | {IGNORE_INDEX}
        red = torch.from_numpy(denormalize(img)[..., 0].astype(np.int64))
        valid = m != IGNORE_INDEX
        # Each band's pixels keep their band's red range (up to resampling blur at band edges).
        for band in m[valid].unique().tolist():
            values = red[(m == band) & valid].float()
            assert values.median() >= band * 40 - 8 and values.median() <= (band + 1) * 40 + 8


def test_padding_uses_mean_colour_and_ignore_label() -> None:
    image = np.full((10, 10, 3), 200, np.uint8)
    img, m = TrainTransform(TrainConfig(crop_size=32, resize_long=(10, 10), hflip=False))(
        image, np.ones((10, 10), np.uint8)
    )
    assert m is not None
    assert (m == IGNORE_INDEX).sum() == 32 * 32 - 100 and (m == 1).sum() == 100
    assert (img == 0).all(dim=0).sum() == 32 * 32 - 100  # zero after normalisation = the ImageNet mean


def test_normalisation_round_trips() -> None:
    image = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    assert np.abs(denormalize(to_tensor(image)).astype(int) - image).max() <= 1


def test_without_random_rescale_crops_keep_the_image_scale() -> None:
    """psa/SEAM train AffinityNet on crops and flips of the image as it is: every crop is an exact
    window of the original pixels (or its mirror), never a resampled one."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)
    mask = rng.integers(0, 4, (40, 70), dtype=np.uint8)
    transform = TrainTransform(TrainConfig(crop_size=32, resize_long=(80, 140), random_rescale=False))
    torch.manual_seed(0)
    for _ in range(10):
        img, m = transform(image, mask)
        assert m is not None
        crop = torch.from_numpy(denormalize(img).astype(np.int64))
        windows = [
            (source[y : y + 32, x : x + 32], labels[y : y + 32, x : x + 32])
            for source, labels in ((image, mask), (image[:, ::-1], mask[:, ::-1]))
            for y in range(40 - 32 + 1)
            for x in range(70 - 32 + 1)
        ]
        assert any(
            torch.equal(m, torch.from_numpy(lab.astype(np.int64)))
            and (crop - torch.from_numpy(win.astype(np.int64))).abs().max() <= 1
            for win, lab in windows
        )


def test_uint8_augmentation_matches_the_float_computation_to_a_grey_level() -> None:
    """Resize and flip run on uint8 and only the crop is normalised: the result is the float
    pipeline's (float resize of the whole image, then normalise, then crop) up to uint8 rounding."""
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, (8, 12, 3)).astype(np.float32)
    image = np.asarray(
        resize_image(torch.from_numpy(smooth).permute(2, 0, 1), (60, 90)).round().clamp(0, 255)
    )
    image = image.transpose(1, 2, 0).astype(np.uint8)
    for long_side in (45, 90, 150):  # shrink (antialiased), keep, enlarge
        cfg = TrainConfig(crop_size=200, resize_long=(long_side, long_side), hflip=False)
        torch.manual_seed(0)
        img, _ = TrainTransform(cfg)(image)
        size = scaled_size(60, 90, long_side / 90)
        reference = to_tensor(image)
        reference = resize_image(reference * IMAGENET_STD + IMAGENET_MEAN, size)
        reference = (reference - IMAGENET_MEAN) / IMAGENET_STD
        placed = img[:, (img != 0).any(dim=(0, 2)), :][:, :, (img != 0).any(dim=(0, 1))]
        assert placed.shape[-2:] == size
        # torchvision's uint8 kernel weighs in fixed point: within one grey level, not half
        assert (placed - reference).abs().max() <= 1.01 / 255 / IMAGENET_STD.min()
