"""The pipeline: seed -> refine -> segment, each stage looked up in or published to the stage store.

A stage's key hashes its own config, the RNG seed, the upstream stage's key, the dataset fingerprint
and the stage's format version, so an identical config reuses every stage and a change to a refine
knob recomputes refine and segment only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from wsss.config import PipelineConfig
from wsss.configio import to_mapping
from wsss.data.synth import ensure_cached
from wsss.data.voc import VocDataset, open_dataset
from wsss.errors import DamagedArtifact, LeaseLost, StoreError
from wsss.models.pretrained import resolve_weights
from wsss.ops.crf import require_crf
from wsss.runtime import Runtime, torch_threads
from wsss.stages import refine, seed, segment
from wsss.stages.rounds import ROUND_VERSION, RoundCache, payload_key
from wsss.store import Artifact, StageStore, stage_key

log = logging.getLogger(__name__)

STAGES = ("seed", "refine", "segment")
ROUND_STAGE = "seed_round"  # store entries of seed training rounds (wsss.stages.rounds)
REFINE_STEP = "refine_step"  # store entries of refine's labels and AffinityNet (wsss.stages.refine)
_VERSIONS = {"seed": seed.FORMAT_VERSION, "refine": refine.FORMAT_VERSION, "segment": segment.FORMAT_VERSION}
# The stage that produces each headline quality metric: a search on it needs the stages up to there.
METRIC_STAGE = {"cam_miou": "seed", "cam_miou_best": "seed", "pseudo_miou": "refine", "val_miou": "segment"}
# The headline numbers, in the order `wsss run --json` prints them.
HEADLINE = (
    "cam_miou",
    "cam_best_threshold",
    "cam_miou_best",
    "cam_fg_precision",
    "cam_fg_recall",
    "pseudo_miou",
    "val_miou",
)


@dataclass(frozen=True)
class StageOutcome:
    stage: str
    key: str
    path: Path  # local directory of the stage's artifact
    cached: bool
    seconds: float  # wall time in this run (the lookup, when cached)
    compute_seconds: float  # what computing the artifact cost, whenever it was computed
    metrics: dict[str, Any]
    built_by: str = ""  # the store's builder that computed it (StageStore(builder=...)), "" if unnamed

    def summary(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "cached": self.cached,
            "key": self.key,
            "path": str(self.path),
            "compute_seconds": round(self.compute_seconds, 3),
        }


@dataclass(frozen=True)
class PipelineResult:
    stages: dict[str, StageOutcome]

    def metrics(self) -> dict[str, float]:
        """Every scalar metric of every stage, flat (lists such as per-class IoU left out)."""
        out: dict[str, float] = {}
        for outcome in self.stages.values():
            out |= {
                k: v
                for k, v in outcome.metrics.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
        return out

    def summary(self) -> dict[str, Any]:
        metrics = self.metrics()
        return {
            **{k: metrics.get(k) for k in HEADLINE},
            "stages": {n: o.summary() for n, o in self.stages.items()},
        }


def default_cache_dir() -> Path:
    """$WSSS_CACHE_DIR, else $XDG_CACHE_HOME/wsss, else ~/.cache/wsss (synthetic data, label caches)."""
    if os.environ.get("WSSS_CACHE_DIR"):
        return Path(os.environ["WSSS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wsss"


def prepare_dataset(
    cfg: PipelineConfig, data_dir: str | os.PathLike[str] | None, cache_dir: Path
) -> VocDataset:
    """The dataset at `data_dir`, or the embedded synthetic benchmark (generated once into `cache_dir`),
    checked before any stage spends compute on it (see wsss.data.validate)."""
    root = Path(data_dir) if data_dir is not None else ensure_cached(cfg.data.synthetic, cache_dir / "data")
    return open_dataset(root, cfg.data, cache_dir, workers=cfg.runtime.threads or os.cpu_count() or 1)


class Lease(Protocol):
    """What a lock may yield: whether it is still held (a lease can lapse while its holder builds)."""

    def held(self) -> bool: ...


Lock = Callable[[str, str], AbstractContextManager[Lease | None]]
_BUILD_TRIES = 3


class _Used:
    """The artifacts a run has used, by local folder: when a file inside one turns out damaged
    (DamagedArtifact), the artifact it belongs to is withdrawn and built again."""

    def __init__(self) -> None:
        self.by_path: dict[Path, tuple[str, str, str]] = {}  # folder -> (stage, key, attempt)

    def add(self, artifact: Artifact) -> Artifact:
        self.by_path[artifact.path.absolute()] = (artifact.stage, artifact.key, artifact.manifest["attempt"])
        return artifact

    def owner(self, path: Path) -> tuple[str, str, str] | None:
        path = path.absolute()
        return next((o for folder, o in self.by_path.items() if path.is_relative_to(folder)), None)


def _stage(
    store: StageStore,
    lock: Lock,
    exclusive: bool,
    name: str,
    key: str,
    meta: dict[str, Any],
    compute: Callable[[Path], dict[str, Any]],
    used: _Used | None = None,
) -> StageOutcome:
    """Reuse the stage's artifact or build it. Only building holds the lock: an artifact published
    meanwhile is fetched after the lock is released, so downloads never queue behind a lock. A build
    whose lease lapsed (its holder was presumed dead) is thrown away, and the stage is looked up again."""
    start = time.perf_counter()
    used = used or _Used()
    for _ in range(_BUILD_TRIES):
        artifact = store.lookup(name, key)
        if artifact is not None:
            log.info("%s: reusing %s", name, artifact.path)
            return _outcome(name, key, used.add(artifact), cached=True, start=start)
        with lock(name, key) as lease:  # single flight: one builder per key, the others wait and reuse
            if not store.available(name, key):
                try:
                    artifact = _build(store, exclusive, lease, name, key, meta, compute)
                except LeaseLost as exc:
                    log.warning("%s", exc)
                    continue
                return _outcome(name, key, used.add(artifact), cached=False, start=start)
    raise StoreError(f"{store.key_dir(name, key)}: the stage could not be built or fetched")


def _build(
    store: StageStore,
    exclusive: bool,
    lease: Lease | None,
    name: str,
    key: str,
    meta: dict[str, Any],
    compute: Callable[[Path], dict[str, Any]],
) -> Artifact:
    log.info("%s: computing (key %s)", name, key)
    began = time.perf_counter()
    with store.build(name, key, exclusive=exclusive) as build:
        metrics = compute(build.path)
        build.meta |= {**meta, "metrics": metrics, "compute_seconds": time.perf_counter() - began}
        if lease is not None and not lease.held():  # another builder may own the key now
            raise LeaseLost(f"{name}: lost the build lease of key {key}; abandoning this build")
    assert build.artifact is not None
    return build.artifact


def _outcome(name: str, key: str, artifact: Artifact, cached: bool, start: float) -> StageOutcome:
    return StageOutcome(
        stage=name,
        key=key,
        path=artifact.path,
        cached=cached,
        seconds=time.perf_counter() - start,
        compute_seconds=float(artifact.manifest.get("compute_seconds", 0.0)),
        metrics=artifact.metrics,
        built_by=str(artifact.manifest.get("built_by", "")),
    )


def stage_keys(cfg: PipelineConfig, fingerprint: str) -> dict[str, str]:
    """The store key of every stage of `cfg` on the dataset with `fingerprint`, without running them."""
    keys: dict[str, str] = {}
    upstream: str | None = None
    for name in STAGES:
        upstream = keys[name] = stage_key(
            name, getattr(cfg, name), upstream, fingerprint, _VERSIONS[name], cfg.rng_seed
        )
    return keys


def run_pipeline(
    cfg: PipelineConfig,
    data: VocDataset,
    store: StageStore,
    on_stage: Callable[[StageOutcome], None] | None = None,
    lock: Lock | None = None,
    until: str = STAGES[-1],
) -> PipelineResult:
    """Run (or reuse) every stage in order, up to and including `until`; `on_stage` is called as each
    one finishes.

    `lock(stage, key)` guards each build so that concurrent runs compute a shared stage once; a lock
    given here must be exclusive across every process that builds into the store (the tuner's lease
    actor). The default is the store's own lock: a file lock on local stores, none on object stores.
    """
    if until not in STAGES:
        raise ValueError(f"until: {until!r} is not one of {STAGES}")
    stages = STAGES[: STAGES.index(until) + 1]
    for stage in ("refine", "segment"):  # a missing extra must not surface after hours of seed training
        if stage in stages and getattr(cfg, stage).crf.enabled:
            require_crf(f"{stage}.crf.enabled")
    exclusive = lock is not None or store.is_local
    lock = lock or store.lock
    runtime = Runtime.from_config(cfg.runtime)
    with torch_threads(cfg.runtime.threads), contextlib.ExitStack() as scratch:
        # Pretrained weights made local before anything trains (a hub out of reach stops the run here).
        weights_dir = data.cache_dir or Path(scratch.enter_context(tempfile.TemporaryDirectory()))
        local = resolve_weights(cfg, weights_dir)
        for attempt in range(_REPAIRS + 1):
            used = _Used()
            try:
                return _run_stages(cfg, local, data, store, lock, exclusive, stages, runtime, used, on_stage)
            except DamagedArtifact as exc:
                owner = used.owner(exc.path)
                if owner is None or attempt == _REPAIRS:
                    raise
                log.warning("%s; withdrawing %s/%s and running again", exc, *owner[:2])
                store.unpublish(*owner)
    raise AssertionError("unreachable")


# Damaged artifacts repaired in one run before giving up (each repair withdraws one and reruns).
_REPAIRS = 3


def _run_stages(
    cfg: PipelineConfig,
    local: PipelineConfig,
    data: VocDataset,
    store: StageStore,
    lock: Lock,
    exclusive: bool,
    stages: tuple[str, ...],
    runtime: Runtime,
    used: _Used,
    on_stage: Callable[[StageOutcome], None] | None,
) -> PipelineResult:
    outcomes: dict[str, StageOutcome] = {}
    upstream: StageOutcome | None = None
    keys = stage_keys(cfg, data.fingerprint)
    for name in stages:
        meta = {
            "config": to_mapping(getattr(cfg, name)),
            "rng_seed": cfg.rng_seed,
            "upstream": upstream.key if upstream else None,
            "dataset": data.fingerprint,
            "format_version": _VERSIONS[name],
        }
        rounds = _round_cache(store, lock, exclusive, used, ROUND_STAGE if name == "seed" else REFINE_STEP)
        compute = _computation(name, local, data, upstream, runtime, rounds)  # keys and meta from cfg
        outcome = _stage(store, lock, exclusive, name, keys[name], meta, compute, used)
        outcomes[name] = upstream = outcome
        if on_stage is not None:
            on_stage(outcome)
    return PipelineResult(outcomes)


def _round_cache(store: StageStore, lock: Lock, exclusive: bool, used: _Used, stage: str) -> RoundCache:
    """A stage's cached steps (seed rounds, wsss.stages.rounds; refine's labels and AffinityNet) as
    store entries of `stage`, built under the same single-flight lock as stages."""

    def cache(kind: str, payload: Mapping[str, Any], compute: Callable[[Path], None]) -> Path:
        key = payload_key({"kind": kind, **payload})

        def build(folder: Path) -> dict[str, Any]:
            compute(folder)
            return {}

        meta = {"config": dict(payload), "kind": kind, "format_version": ROUND_VERSION}
        return _stage(store, lock, exclusive, stage, key, meta, build, used).path

    return cache


def _computation(
    name: str,
    cfg: PipelineConfig,
    data: VocDataset,
    upstream: StageOutcome | None,
    runtime: Runtime,
    rounds: RoundCache,
) -> Callable[[Path], dict[str, Any]]:
    if name == "seed":
        return lambda out: seed.run(
            cfg.seed, data, out, rng_seed=cfg.rng_seed, runtime=runtime, rounds=rounds
        )
    assert upstream is not None
    if name == "refine":
        steps = refine.RefineSteps(rounds, upstream.key)
        return lambda out: refine.run(
            cfg.refine, data, upstream.path, out, rng_seed=cfg.rng_seed, runtime=runtime, steps=steps
        )
    return lambda out: segment.run(
        cfg.segment, data, upstream.path, out, rng_seed=cfg.rng_seed, runtime=runtime
    )
