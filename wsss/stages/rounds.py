"""Training rounds of the seed stage: a method may train several networks one after the other (SC-CAM's
exploration rounds; a teacher, then its student), each round learning the image labels plus targets
derived from the previous round (wsss.methods.base: `rounds`, `targets`, `build_round`).

Every round is two cached steps, each keyed by what it depends on:
- targets: the previous round's model key, the method's target knobs for the round;
- model: the targets key, the method's training knobs for the round, backbone, schedule.
Keys also hold the dataset fingerprint and the RNG seed. So a search that changes a late knob (the
number of rounds, the student's loss weight) reuses every earlier step. Through the pipeline the
steps live in the stage store as `seed_round` entries (shared by nodes and trials, removed by `gc`
like any stage); without a store they are computed into a work folder.

A method with one round and no targets trains one network on the image labels: one cached model step
(`classifier`), keyed without the CAM inference knobs, so changing `seed.scales` reuses it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wsss import methods
from wsss.checkpoints import load_stored_state, save_state
from wsss.config import SeedConfig, TrainConfig
from wsss.configio import digest, to_mapping
from wsss.data.image_maps import CachedMaps
from wsss.data.synth_variants import SynthObject, read_variants, subcategory_scores
from wsss.data.torchsets import ClassificationSet
from wsss.data.transforms import TrainTransform, to_tensor
from wsss.data.voc import VocDataset
from wsss.errors import DamagedArtifact, bounded
from wsss.loop import TrainStats, train_model
from wsss.methods.base import Batch, RoundTargets, SeedMethod
from wsss.models.backbone import SplitParams
from wsss.runtime import Runtime

log = logging.getLogger(__name__)

ROUND_VERSION = 1
# (kind, key payload, compute into a folder) -> the folder holding the result
RoundCache = Callable[[str, Mapping[str, Any], Callable[[Path], None]], Path]
_DONE = ".complete"


def payload_key(payload: Mapping[str, Any]) -> str:
    return digest(payload)[:24]


def local_rounds(work: Path) -> RoundCache:
    """A round cache without a store: each step computed once into `work`."""

    def cache(kind: str, payload: Mapping[str, Any], compute: Callable[[Path], None]) -> Path:
        folder = work / f"{kind}-{payload_key(payload)}"
        if not (folder / _DONE).exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            compute(folder)
            (folder / _DONE).touch()
        return folder

    return cache


@dataclass
class RoundContext:
    """What a method's `targets` may use: the data, the shared training loop, feature extraction, and
    `folder`, where it writes files to keep (features, cluster assignments, teacher weights)."""

    cfg: SeedConfig
    data: VocDataset
    runtime: Runtime
    rng_seed: int
    folder: Path
    variants: dict[str, list[SynthObject]] | None = field(default=None)  # the synthetic benchmark's truth

    @property
    def ids(self) -> tuple[str, ...]:
        return self.data.train_ids

    def features(
        self, embed: Callable[[torch.Tensor], torch.Tensor], ids: tuple[str, ...] | None = None, size: int = 0
    ) -> np.ndarray:
        """(N, D) float32 `embed` outputs of `ids` (default the train ids), one image at a time, at
        scale 1 without flip (SC-CAM's extract_feature.py), or resized to size x size if `size`."""
        out = []
        with torch.inference_mode():
            for image_id in ids if ids is not None else self.ids:
                x = to_tensor(self.data.read_image(image_id))[None].to(self.runtime.device)
                if size:
                    x = F.interpolate(
                        x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
                    )
                out.append(embed(x).flatten(1).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def train(
        self,
        build: Callable[[], SplitParams],
        loss: Callable[[Any, tuple[torch.Tensor, ...]], tuple[torch.Tensor, dict[str, float]]],
        train: TrainConfig,
        desc: str,
    ) -> tuple[SplitParams, TrainStats]:
        """Train a network on the train images and labels through the shared loop."""
        dataset = ClassificationSet(self.data, self.ids, TrainTransform(train))
        return train_model(build, dataset, loss, train, self.runtime, self.rng_seed, desc=desc)


@dataclass(frozen=True)
class RoundResult:
    model: SplitParams
    stats: TrainStats
    records: list[dict[str, Any]]  # per round: what its targets recorded
    folders: list[Path]  # per round: the folder of its targets (files kept in the seed artifact)


def _has_rounds(method: SeedMethod, params: Any) -> bool:
    return method.rounds(params) > 1 or method.learns_targets


def as_batch(tensors: tuple[torch.Tensor, ...], has_maps: bool, has_targets: bool) -> Batch:
    """ClassificationSet's (image, labels[, maps][, targets]) as the typed batch `loss` takes."""
    return Batch(
        tensors[0],
        tensors[1],
        maps=tensors[2] if has_maps else None,
        targets=tensors[-1] if has_targets else None,
    )


def train_direct(
    method: SeedMethod, cfg: SeedConfig, data: VocDataset, rng_seed: int, runtime: Runtime,
    targets: RoundTargets | None = None, previous: SplitParams | None = None,
) -> tuple[SplitParams, TrainStats]:  # fmt: skip
    def build() -> SplitParams:
        model = method.build_round(cfg.backbone, data.num_classes - 1, cfg.params, targets, previous)
        method.check(cfg.params, model)  # e.g. a mixing layer the backbone does not have
        return model

    spec = method.image_maps(cfg.params, cfg.train, cfg.backbone.output_stride)
    maps = CachedMaps(data, spec, data.train_ids, data.cache_dir, torch.get_num_threads()) if spec else None
    dataset = ClassificationSet(
        data,
        data.train_ids,
        TrainTransform(cfg.train),
        maps,
        spec.fill if spec else -1,
        targets.targets if targets is not None else None,
    )
    return train_model(
        build,
        dataset,
        lambda m, tensors: method.loss(
            m, as_batch(tensors, maps is not None, targets is not None), cfg.params
        ),
        cfg.train,
        runtime,
        rng_seed,
        desc="seed",
    )


def scored(
    targets: RoundTargets | None, variants: Mapping[str, Sequence[SynthObject]] | None, round_index: int
) -> RoundTargets | None:
    """`targets` with its sub-category assignments scored against the synthetic benchmark's hidden
    variants (purity, NMI; the benchmark's business, not the method's), where both exist."""
    if targets is None or variants is None or "assignments" not in targets.record:
        return targets
    assignments = {int(c): found for c, found in targets.record["assignments"].items()}
    scores = subcategory_scores(assignments, variants)
    log.info("round %d sub-categories against the hidden variants: %s", round_index, scores)
    return RoundTargets(targets.targets, {**targets.record, **scores})


def _save_targets(folder: Path, targets: RoundTargets | None) -> None:
    if targets is not None:
        np.save(folder / "targets.npy", targets.targets.astype(np.float32), allow_pickle=False)
    (folder / "record.json").write_text(json.dumps(dict(targets.record) if targets else {}) + "\n")


def _load_targets(folder: Path) -> tuple[RoundTargets | None, dict[str, Any]]:
    try:
        record = json.loads((folder / "record.json").read_text())
        path = folder / "targets.npy"
        targets = np.load(path, allow_pickle=False) if path.exists() else None
    except (OSError, ValueError) as exc:
        raise DamagedArtifact(folder, f"damaged round targets ({exc})") from None
    if not isinstance(record, dict):
        raise DamagedArtifact(folder / "record.json", "damaged round record (not a JSON object)")
    if targets is None:
        return None, record
    if targets.ndim != 2 or targets.dtype != np.float32:
        raise DamagedArtifact(folder / "targets.npy", "not an (N, D) float32 array")
    return RoundTargets(targets, record), record


def train_rounds(
    cfg: SeedConfig, data: VocDataset, rng_seed: int, runtime: Runtime, cache: RoundCache
) -> RoundResult:
    """Train the method's rounds (see the module docstring); the last round's model gives the CAMs."""
    method = methods.get(cfg.method)
    base = {
        "method": cfg.method,
        "backbone": to_mapping(cfg.backbone),
        "train": to_mapping(cfg.train),
        "dataset": data.fingerprint,
        "rng_seed": rng_seed,
        "version": ROUND_VERSION,
    }
    if not _has_rounds(method, cfg.params):
        # One network on the image labels: still a cached step, keyed without the CAM inference knobs
        # (scales, flip, thresholds), so a search over those reuses the classifier (issue 24 item 1).
        payload = {**base, "step": "classifier", "knobs": method.round_knobs(cfg.params, 0)[1]}

        def make_classifier(folder: Path) -> None:
            model, stats = train_direct(method, cfg, data, rng_seed, runtime)
            save_state(model.state_dict(), folder / "model.pt")
            (folder / "stats.json").write_text(json.dumps(stats.as_dict()) + "\n")

        folder = cache("model", payload, make_classifier)
        trained = (payload_key(payload), folder, None)
        return RoundResult(_load_model(method, cfg, data, trained), load_stats(folder), [], [])
    variants = read_variants(data.root)
    if variants is not None and not any(o.variant for objects in variants.values() for o in objects):
        variants = None  # one coat per class: no sub-categories to score against
    previous: tuple[str, Path, RoundTargets | None] | None = None  # (model key, folder, its targets)
    records, folders = [], []
    for r in range(method.rounds(cfg.params)):
        target_knobs, train_knobs = method.round_knobs(cfg.params, r)
        target_payload = {**base, "step": "targets", "round": r, "knobs": target_knobs,
                          "previous": previous[0] if previous else None}  # fmt: skip

        def make_targets(folder: Path, r: int = r, previous: Any = previous) -> None:
            model = _load_model(method, cfg, data, previous) if previous else None
            context = RoundContext(cfg, data, runtime, rng_seed, folder, variants)
            _save_targets(folder, scored(method.targets(r, model, context, cfg.params), variants, r))

        target_folder = cache("targets", target_payload, make_targets)
        targets, record = _load_targets(target_folder)
        model_payload = {**base, "step": "model", "round": r, "knobs": train_knobs,
                         "targets": payload_key(target_payload)}  # fmt: skip

        def make_model(
            folder: Path, targets: RoundTargets | None = targets, previous: Any = previous
        ) -> None:
            warm = _load_model(method, cfg, data, previous) if previous else None
            model, stats = train_direct(method, cfg, data, rng_seed, runtime, targets, warm)
            save_state(model.state_dict(), folder / "model.pt")
            (folder / "stats.json").write_text(json.dumps(stats.as_dict()) + "\n")

        model_folder = cache("model", model_payload, make_model)
        previous = (payload_key(model_payload), model_folder, targets)
        records.append({"round": r, **record})
        folders.append(target_folder)
        log.info("seed round %d/%d done (%s)", r + 1, method.rounds(cfg.params), model_folder)
    assert previous is not None
    model = _load_model(method, cfg, data, previous)
    return RoundResult(model, load_stats(previous[1]), records, folders)


def _load_model(
    method: SeedMethod, cfg: SeedConfig, data: VocDataset, previous: tuple[str, Path, RoundTargets | None]
) -> SplitParams:
    _, folder, targets = previous
    model = method.build_round(cfg.backbone, data.num_classes - 1, cfg.params, targets, None)
    state = load_stored_state(folder / "model.pt")
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError) as exc:  # names or shapes of another network
        raise DamagedArtifact(
            folder / "model.pt", f"damaged round model ({bounded(str(exc), 200)})"
        ) from None
    return model.eval()


def load_stats(folder: Path) -> TrainStats:
    try:
        return TrainStats.from_dict(json.loads((folder / "stats.json").read_text()))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise DamagedArtifact(folder / "stats.json", f"damaged round statistics ({exc})") from None


def keep_round_files(result: RoundResult, out_dir: Path) -> None:
    """Copy each round's target files into the seed artifact (`rounds/<r>/`)."""
    for r, folder in enumerate(result.folders):
        dest = out_dir / "rounds" / str(r)
        dest.mkdir(parents=True, exist_ok=True)
        for path in folder.iterdir():
            if path.is_file() and not path.name.startswith("."):
                shutil.copy2(path, dest / path.name)
