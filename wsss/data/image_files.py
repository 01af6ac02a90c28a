"""The one way images and label masks are read: from a dataset, a prediction folder or the stage store.

Every file is untrusted. Each reader opens it through `open_picture`, which bounds its pixel count
before anything is decoded (PIL reads the size from the header; a 24 KB PNG can declare 200
megapixels), insists on PNG for masks (a mask's values are its meaning: a 32-bit TIFF named `.png`
may hold negative labels), and turns every way a file can fail into a DataError naming it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.errors import DataError, open_regular

IGNORE_INDEX = 255
# 64 megapixels: 8 times a 4K frame and 300 times a VOC image. PIL's own bomb check warns at 89 and
# refuses at 179 megapixels; this bound refuses first and names the file.
MAX_PIXELS = 1 << 26
_MASK_MODES = ("P", "L", "I", "I;16")  # palette, 8-bit and 16-bit greyscale
# What PIL may raise on a hostile or damaged file, beyond OSError (UnidentifiedImageError is one).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _starts_like_png(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(_PNG_SIGNATURE)) == _PNG_SIGNATURE
    except OSError:
        return False


@contextlib.contextmanager
def open_picture(path: str | os.PathLike[str], kind: str = "image") -> Iterator[Image.Image]:
    """The opened (not yet decoded) file: `kind` "mask" must be a PNG. Errors while the block decodes
    the file are DataErrors naming it too."""
    what = "mask" if kind == "mask" else "or corrupt image"
    too_large = f"images and masks over {MAX_PIXELS >> 20} megapixels are refused"
    try:
        handle = open_regular(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        with handle, Image.open(handle, formats=["PNG"] if kind == "mask" else None) as picture:
            width, height = picture.size
            if width * height > MAX_PIXELS:
                raise DataError(f"{path}: {width}x{height} pixels; {too_large}")
            yield picture
    except DataError:
        raise
    except Image.DecompressionBombError:  # PIL's own limit (twice its MAX_IMAGE_PIXELS), checked as it opens
        raise DataError(
            f"{path}: over {2 * (Image.MAX_IMAGE_PIXELS or 0) >> 20} megapixels; {too_large}"
        ) from None
    except Image.UnidentifiedImageError:
        if kind == "mask" and not _starts_like_png(path):
            raise DataError(f"{path}: mask must be a palette or greyscale PNG; this file is no PNG") from None
        raise DataError(f"{path}: unreadable {what} (damaged, or not a format PIL reads)") from None
    except _DECODE_ERRORS as exc:
        raise DataError(f"{path}: unreadable {what} ({exc})") from None


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; a DataError naming the file if it is unreadable, corrupt or too large."""
    with open_picture(path) as image:
        return np.array(image.convert("RGB"))  # a writable copy, as torch.from_numpy expects


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image header, without decoding."""
    with open_picture(path) as image:
        width, height = image.size
    return height, width


_DRAFT_SCALE = 8


def decoded_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image after decoding all of it; DataError if it does not decode.

    JPEGs are decoded at 1/8 scale: libjpeg still reads every entropy-coded byte, so truncation and
    corruption are found, and the size comes from the header."""
    with open_picture(path) as image:
        width, height = image.size
        if image.format == "JPEG":
            image.draft("RGB", (max(1, width // _DRAFT_SCALE), max(1, height // _DRAFT_SCALE)))
        image.load()
    return height, width


def read_mask(path: str | os.PathLike[str], num_classes: int) -> np.ndarray:
    """Read a label PNG as uint8 indices, checking every value is a class id or 255.

    `num_classes` counts the background, so valid ids are 0..num_classes-1 plus 255.
    """
    with open_picture(path, "mask") as image:
        if image.mode not in _MASK_MODES:
            raise DataError(f"{path}: mask must be a palette or greyscale PNG, got mode {image.mode}")
        mask = np.array(image)  # writable, for torch.from_numpy
    if mask.dtype != np.uint8:
        low, high = int(mask.min(initial=0)), int(mask.max(initial=0))
        if low < 0 or high > IGNORE_INDEX:
            value = low if low < 0 else high
            raise DataError(f"{path}: mask value {value} outside 0..{num_classes - 1} and {IGNORE_INDEX}")
        mask = mask.astype(np.uint8)
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))  # np.unique without the sort
    bad = present[(present >= num_classes) & (present != IGNORE_INDEX)]
    if bad.size:
        raise DataError(
            f"{path}: mask values {bad.tolist()} outside the classes 0..{num_classes - 1} and {IGNORE_INDEX}"
        )
    return mask
