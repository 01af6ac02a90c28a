"""The embedded synthetic benchmark, written in the PASCAL VOC layout.

Each image shows 1-3 "animals" on textured clutter. An animal is a torso ellipse with a head disc
(and sometimes a tail) attached at its ends. The decisive class evidence is a small bullseye on the
torso, towards the head: an outer ring and a core whose two colours are specific to the class. The
bullseye is hidden on a fifth of the animals (a face turned away) and the body's hue is weak evidence
(near a class hue more often than not), so the classifier also learns some body evidence, as on real
objects. Clutter contains single-colour dots of the bullseye hues, so colour alone does not give the
class away. CAMs therefore peak on the bullseye and fade over the body: the partial-activation
problem of WSSS (Ahn & Kwak 2018, section 1). The whole body shares one colour that stands out from
the low-saturation background, so low-level affinities can carry the bullseye's activation across
the body, which is exactly what AffinityNet's random walk is for.

With `variants` > 1 every class comes in that many coats (wsss.data.synth_variants: plain,
striped, spotted, two-tone), hidden sub-categories recorded per object in `variants.json`.

Everything is drawn with vectorised numpy from a per-image generator seeded by (seed, split, index),
so the output is deterministic per seed and independent of generation order.
"""

from __future__ import annotations

import colorsys
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.data.classes import IGNORE_INDEX, mask_labels, write_mask
from wsss.data.synth_variants import VARIANT_NAMES, SynthObject, paint_coat, variant_stream, write_variants
from wsss.errors import ConfigError, DataError, EnvironmentFault

log = logging.getLogger(__name__)

SPEC_FILE = "synth.json"
_NAMES = (
    "ant",
    "bee",
    "cat",
    "dog",
    "eel",
    "fox",
    "gnu",
    "hen",
    "jay",
    "koi",
    "owl",
    "pig",
    "ram",
    "yak",
    "boa",
    "cod",
    "elk",
    "emu",
    "gar",
    "hog",
)
MAX_CLASSES = len(_NAMES)
MAX_IMAGES = 100_000  # per split: 10 times VOC train_aug, and minutes of generating per 1,000
BODY_HUE_RELIABILITY = 0.75
SPOT_VISIBILITY = 0.8


@dataclass(frozen=True)
class SynthSpec:
    """What to generate. `size_jitter` > 0 draws each side from size*[1-j, 1+j] (non-square images)."""

    train: int = 400
    val: int = 100
    size: int = 128
    classes: int = 6
    seed: int = 0
    size_jitter: float = 0.0
    variants: int = 1  # coats per class: hidden sub-categories (1 = none, the original benchmark)
    # Every image's objects share its first object's class and coat, so a class's images differ by
    # coat, not by what else they hold (methods-review section 9: sub-categories whose premise holds).
    one_class: bool = False

    def validate(self, path: str = "") -> None:
        """Raise ConfigError naming `path.field` (config) or `--field` (command line, path empty)."""
        problems = {
            "train": _count(self.train),
            "val": _count(self.val),
            "size": (48 <= self.size <= 2048, f"must be within 48..2048 pixels, got {self.size}"),
            "classes": (
                1 <= self.classes <= MAX_CLASSES,
                f"must be within 1..{MAX_CLASSES}, got {self.classes}",
            ),
            "seed": (self.seed >= 0, f"must be >= 0, got {self.seed}"),
            "size_jitter": (
                0.0 <= self.size_jitter < 0.6,
                f"must be within [0, 0.6), got {self.size_jitter}",
            ),
            "variants": (
                1 <= self.variants <= len(VARIANT_NAMES),
                f"must be within 1..{len(VARIANT_NAMES)}, got {self.variants}",
            ),
        }
        for name, (ok, message) in problems.items():
            if not ok:
                where = f"{path}.{name}" if path else "--" + name.replace("_", "-")
                raise ConfigError(f"{where}: {message}")


def _count(images: int) -> tuple[bool, str]:
    if images < 1:
        return False, f"must be >= 1, got {images}"
    return images <= MAX_IMAGES, f"must be <= {MAX_IMAGES}, got {images}"


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def class_signatures(num_classes: int) -> np.ndarray:
    """(K, 2, 3) ring and core colours per class; fixed per K so every seed shares the classes."""
    sig = np.empty((num_classes, 2, 3), dtype=np.float32)
    for k in range(num_classes):
        hue = k / num_classes
        sig[k, 0] = _hsv(hue, 1.0, 1.0)
        sig[k, 1] = _hsv(hue + 0.37, 0.9, 0.45 + 0.5 * (k % 2))
    return sig


def _lowfreq_noise(rng: np.random.Generator, h: int, w: int, powers: tuple[float, ...]) -> np.ndarray:
    """(H, W, len(powers)) noise, channel i with a 1/f^powers[i] spectrum, zero mean and unit std.

    One inverse FFT for all channels: this is the generator's most expensive step.
    """
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    freq = np.maximum(np.sqrt(fx * fx + fy * fy), 1.0 / max(h, w))
    scale = np.stack([freq**-p for p in powers])
    coeffs = rng.standard_normal((len(powers), h, w // 2 + 1, 2), dtype=np.float32)
    noise = np.fft.irfft2((coeffs[..., 0] + 1j * coeffs[..., 1]) * scale, s=(h, w))
    noise -= noise.mean(axis=(1, 2), keepdims=True)
    noise /= noise.std(axis=(1, 2), keepdims=True) + 1e-6
    return np.moveaxis(noise, 0, -1).astype(np.float32)


class _Canvas:
    """Draws boolean shape masks, evaluating each shape only inside its bounding box."""

    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h, w

    def _window(self, cy: float, cx: float, r: float) -> tuple[slice, slice, np.ndarray, np.ndarray]:
        y0 = min(max(int(cy - r) - 1, 0), self.h)
        x0 = min(max(int(cx - r) - 1, 0), self.w)
        y1 = max(min(int(cy + r) + 2, self.h), y0)  # empty, not negative, when the shape is off-canvas
        x1 = max(min(int(cx + r) + 2, self.w), x0)
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
        return slice(y0, y1), slice(x0, x1), dy, dx

    def ellipse(self, cy: float, cx: float, ry: float, rx: float, angle: float) -> np.ndarray:
        out = np.zeros((self.h, self.w), dtype=bool)
        ys, xs, dy, dx = self._window(cy, cx, max(ry, rx))
        c, s = np.cos(angle), np.sin(angle)
        u, v = (dx * c + dy * s) / rx, (-dx * s + dy * c) / ry
        out[ys, xs] = u * u + v * v <= 1.0
        return out

    def disc(self, cy: float, cx: float, r: float) -> np.ndarray:
        out = np.zeros((self.h, self.w), dtype=bool)
        ys, xs, dy, dx = self._window(cy, cx, r)
        out[ys, xs] = dy * dy + dx * dx <= r * r
        return out


def _background(
    rng: np.random.Generator, canvas: _Canvas, signatures: np.ndarray, noise: np.ndarray
) -> np.ndarray:
    """Desaturated low-frequency texture plus clutter: bars, blobs and single-colour dots.

    `noise` holds a luminance channel and three tint channels.
    """
    h, w = canvas.h, canvas.w
    base = _hsv(rng.random(), rng.uniform(0.05, 0.25), rng.uniform(0.35, 0.75))
    img = base + noise[..., :1] * rng.uniform(18, 35) + noise[..., 1:4] * 10.0
    side = min(h, w)
    for _ in range(rng.integers(6, 14)):
        kind = rng.integers(3)
        colour = _hsv(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.2, 0.9))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if kind == 0:  # a bar
            shape = canvas.ellipse(
                cy, cx, rng.uniform(1, 3), rng.uniform(0.08, 0.3) * side, rng.uniform(0, np.pi)
            )
        elif kind == 1:  # a blob in a muted colour
            r = rng.uniform(0.03, 0.09) * side
            shape = canvas.ellipse(cy, cx, r, r * rng.uniform(0.5, 1.5), rng.uniform(0, np.pi))
        else:  # a dot in one of the class colours, without the bullseye structure
            colour = signatures[rng.integers(len(signatures)), rng.integers(2)]
            shape = canvas.disc(cy, cx, rng.uniform(0.02, 0.05) * side)
        img[shape] = colour + rng.normal(0, 4, 3)
    return img


def _animal(rng: np.random.Generator, canvas: _Canvas) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Body mask (torso + head [+ tail]) and the centre and radius of the bullseye's spot on the torso.

    The spot lies inside the torso, towards the head, so the CAM it causes stays mostly on the object
    (as a face does on a person) and covers only part of it.
    """
    side = min(canvas.h, canvas.w)
    ry, rx = rng.uniform(0.13, 0.19) * side, rng.uniform(0.18, 0.27) * side
    angle = rng.uniform(0, np.pi)
    cy = rng.uniform(0.2, 0.8) * canvas.h
    cx = rng.uniform(0.2, 0.8) * canvas.w
    body = canvas.ellipse(cy, cx, ry, rx, angle)
    end = 1.0 if rng.random() < 0.5 else -1.0
    along, across = np.cos(angle), np.sin(angle)
    head_r = rng.uniform(0.45, 0.6) * ry
    body |= canvas.disc(
        cy + end * across * (rx + 0.3 * head_r), cx + end * along * (rx + 0.3 * head_r), head_r
    )
    if rng.random() < 0.5:  # a tail at the other end keeps the torso's extent ambiguous
        ty, tx = cy - end * across * rx, cx - end * along * rx
        body |= canvas.ellipse(ty, tx, 0.12 * ry, 0.5 * rx, angle + rng.uniform(-0.6, 0.6))
    spot_r = rng.uniform(0.28, 0.36) * ry
    shift = end * rng.uniform(0.05, 0.3) * rx
    return body, (cy + across * shift, cx + along * shift, spot_r)


def _body_hue(rng: np.random.Generator, k: int, num_classes: int) -> float:
    """Weak, unreliable class evidence on the body, like fur on a cat: usually near the class's hue
    (offset from its bullseye hue), sometimes anything. Far body parts then get moderate CAM values
    rather than none, as on real objects, while the bullseye stays the decisive cue."""
    if rng.random() < BODY_HUE_RELIABILITY:
        return k / num_classes + 0.5 / num_classes + rng.normal(0.0, 0.35 / num_classes)
    return float(rng.random())


def _void_band(mask: np.ndarray) -> np.ndarray:
    """Pixels next to a label change, marked 255 like VOC's object boundary band."""
    edge = np.zeros(mask.shape, dtype=bool)
    vertical = mask[1:, :] != mask[:-1, :]
    horizontal = mask[:, 1:] != mask[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge


def render(spec: SynthSpec, split: str, index: int, signatures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One (H, W, 3) uint8 image and its (H, W) uint8 mask; deterministic in (seed, split, index)."""
    img, mask, _ = render_objects(spec, split, index, signatures)
    return img, mask


def render_objects(
    spec: SynthSpec, split: str, index: int, signatures: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[SynthObject]]:
    """`render` plus the objects drawn (class, coat variant, area)."""
    rng = np.random.default_rng([spec.seed, 0 if split == "train" else 1, index])
    coats = variant_stream(spec.seed, split, index)
    objects: list[SynthObject] = []
    h = w = spec.size
    if spec.size_jitter > 0:
        h, w = (round(spec.size * rng.uniform(1 - spec.size_jitter, 1 + spec.size_jitter)) for _ in "hw")
    canvas = _Canvas(h, w)
    # Low-frequency fields need no full resolution: draw them at half size and repeat pixels.
    noise = _lowfreq_noise(rng, (h + 1) // 2, (w + 1) // 2, (2.0, 1.5, 1.5, 1.5, 2.5))
    noise = noise.repeat(2, axis=0).repeat(2, axis=1)[:h, :w]
    img = _background(rng, canvas, signatures, noise)
    shading = noise[..., 4:5] * 8.0
    mask = np.zeros((h, w), dtype=np.uint8)
    spots = np.zeros((h, w), dtype=bool)  # no object may cover another's bullseye
    for _ in range(rng.integers(1, 4)):
        for _attempt in range(12):
            body, (sy, sx, spot_r) = _animal(rng, canvas)
            inside = sy - spot_r >= 0 and sy + spot_r < h and sx - spot_r >= 0 and sx + spot_r < w
            overlap = (body & (mask > 0)).sum() / max(body.sum(), 1)
            if inside and not (body & spots).any() and overlap < 0.25:
                break
        else:
            continue
        k = int(rng.integers(spec.classes))  # drawn in every case, so the other draws stay the same
        if spec.one_class and objects:
            k = objects[0].cls
        colour = _hsv(_body_hue(rng, k, spec.classes), rng.uniform(0.35, 0.75), rng.uniform(0.35, 0.95))
        img[body] = colour + shading[body]
        variant = int(coats.integers(spec.variants)) if spec.variants > 1 else 0
        if spec.one_class and objects:
            variant = objects[0].variant
        paint_coat(coats, img, body, colour, variant)
        objects.append(SynthObject(k, variant, int(body.sum())))
        if rng.random() < SPOT_VISIBILITY:  # hidden sometimes, as a face turned away: forces body evidence
            img[canvas.disc(sy, sx, spot_r)] = signatures[k, 0]
            img[canvas.disc(sy, sx, 0.5 * spot_r)] = signatures[k, 1]
        mask[body] = k + 1
        spots |= canvas.disc(sy, sx, 1.5 * spot_r)
    if not mask.any():  # every placement failed: fall back to one object in the middle, drawn plainly
        return render_objects(spec, split, index + 1_000_000, signatures)
    img += rng.standard_normal(img.shape, dtype=np.float32) * 3.0
    mask[_void_band(mask)] = IGNORE_INDEX
    return np.clip(img, 0, 255).astype(np.uint8), mask, objects


def _write_split(
    spec: SynthSpec, root: Path, split: str, count: int, signatures: np.ndarray, objects: dict
) -> dict[str, np.ndarray]:
    ids = [f"{split}_{i:05d}" for i in range(count)]
    labels: dict[str, np.ndarray] = {}
    for i, image_id in enumerate(ids):
        img, mask, objects[image_id] = render_objects(spec, split, i, signatures)
        Image.fromarray(img).save(root / "JPEGImages" / f"{image_id}.jpg", quality=92)
        write_mask(root / "SegmentationClass" / f"{image_id}.png", mask)
        labels[image_id] = mask_labels(mask, spec.classes)
    (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return labels


def generate(spec: SynthSpec, out_dir: str | os.PathLike[str]) -> Path:
    """Write the benchmark to `out_dir` atomically: built in a sibling temp dir, then renamed.

    `out_dir` must not exist or be empty, so nothing of the user's is overwritten.
    """
    spec.validate()
    out = Path(out_dir).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: exists and is not an empty directory; choose a new output directory")
    above = next(p for p in out.parents if p.exists())
    if not above.is_dir():
        raise DataError(f"{above}: not a folder, so {out} cannot be made inside it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise EnvironmentFault(f"{out}: cannot write the benchmark there ({exc.strerror or exc})") from None
    try:
        for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
            (tmp / sub).mkdir(parents=True)
        signatures = class_signatures(spec.classes)
        objects: dict[str, list[SynthObject]] = {}
        labels = _write_split(spec, tmp, "train", spec.train, signatures, objects)
        labels |= _write_split(spec, tmp, "val", spec.val, signatures, objects)
        write_variants(tmp, objects)
        np.save(tmp / "cls_labels.npy", labels, allow_pickle=True)  # type: ignore[arg-type]  # irn's format
        (tmp / "class_names.txt").write_text("\n".join(_NAMES[: spec.classes]) + "\n")
        (tmp / SPEC_FILE).write_text(json.dumps(asdict(spec), indent=1) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):  # a disk that filled up half way
            raise EnvironmentFault(
                f"{out}: cannot write the benchmark there ({exc.strerror or exc})"
            ) from None
        raise
    log.info("wrote synthetic benchmark (%d train, %d val) to %s", spec.train, spec.val, out)
    return out


def ensure_cached(spec: SynthSpec, cache_dir: str | os.PathLike[str]) -> Path:
    """The benchmark for `spec` under `cache_dir`, generated the first time it is asked for."""
    spec.validate()
    name = "synth-" + "-".join(f"{k}{v}" for k, v in asdict(spec).items())
    path = Path(cache_dir) / name
    if (path / SPEC_FILE).exists():
        return path
    try:
        return generate(spec, path)
    except DataError:
        if (path / SPEC_FILE).exists():  # another process won the race and published first
            return path
        raise
