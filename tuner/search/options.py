"""The settings of a search (`wsss-tune search`'s options): one frozen dataclass whose fields are also
the command-line options (tuner.options), in a module light enough for the CLI to build its parser
without importing Ray."""

from __future__ import annotations

import re
from dataclasses import dataclass

import wsss
from tuner.options import option

DEFAULT_STORAGE = "wsss-work"
SEARCHERS = ("asha", "staged")
_BUDGET = re.compile(r"(\d+(?:\.\d+)?)([hmx])")
BUDGET_UNITS = {"h": "hours", "m": "minutes", "x": "pipelines"}
# The experiment's name becomes part of paths under --storage (Tune's folder, the search record):
# no separators, no `..`, nothing a shell or a bucket would mangle.
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=@,-]{0,99}")


@dataclass(frozen=True)
class SearchOptions:
    """What `wsss-tune search` is given: each field is also its command-line option (tuner.options)."""

    space_files: tuple[str, ...] = option(
        "method space files, e.g. search_spaces/cam.yaml", positional="spaces"
    )
    samples: int = option("number of trials")
    experiment: str = option("MLflow experiment name")
    data: str | None = option(
        "VOC-layout dataset folder, the same path on every node (default: synthetic)", None
    )
    concurrency: int = option("trials at once", 1)
    cpus_per_trial: float = option("CPUs per trial; torch threads follow it", 1.0)
    gpus_per_trial: float = option("GPUs per trial; fractions share a GPU", 0.0)
    address: str | None = option("Ray cluster address (default: start Ray on this machine)", None)
    storage: str = option(
        "folder or URI for Tune state and the stage store "
        f"(default {DEFAULT_STORAGE}; s3://bucket/prefix or an NFS path on a cluster)",
        DEFAULT_STORAGE,
    )
    store: str | None = option("stage store location (default STORAGE/store)", None)
    tracking_uri: str | None = option(
        "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else STORAGE/mlflow.db)", None
    )
    seed: int = option("sampler seed", 0)
    reduction_factor: int | None = option(
        "ASHA's reduction factor (default 2); staged searcher: the eta of each rung above CAM (default 3)",
        None,
        metavar="ETA",
    )
    rung_records: int | None = option(
        "records a rung holds before it stops any trial (default: the larger of the reduction factor and 4)",
        None,
        metavar="N",
    )
    config: str | None = option("base config the spaces override: a YAML file or a preset (e.g. voc12)", None)
    cache_dir: str | None = None  # node-local cache for trials (None: ~/.cache/wsss on each node)
    max_failures: int = option(
        "run a failed trial, or one lost with its node (spot preemption), again up to this many "
        "times; its finished stages are reused",
        3,
    )
    tracking_wait: float = option(
        "seconds a trial waits for MLflow at each stage during an outage before going on", 120.0
    )
    node_cache_gb: float | None = option(
        "keep each node's copies of remote stage artifacts under this size (default: no cap)", None
    )
    warm_start: str | None = option(
        "seed the sampler with this experiment's trials", None, metavar="EXPERIMENT"
    )
    reuse_fraction: float = option(
        "share of trials that reuse a finished seed (or seed + refine) stage of a promising trial and "
        "search only the knobs downstream of it (default 0.75; 0: every trial samples every knob)",
        0.75,
    )
    reuse_warmup: int = option("finished seed stages before the first reuse", 3)
    searcher: str = option(
        "asha: each trial a full pipeline, TPE proposes, ASHA stops at stage boundaries; staged: each "
        "trial one rung job (CAM, pseudo masks, short DeepLab, full DeepLab, a repeat at the next "
        "rng_seed), promoted by successive halving over the stage tree (docs/search.md)",
        "asha",
    )
    budget: str | None = option(
        "staged searcher: stop starting jobs once this much stage compute is spent: hours (4h), minutes "
        "(90m) or full-pipeline equivalents (12x, at the search's own mean stage costs); --samples "
        "stays a cap on its jobs",
        None,
    )
    short_fraction: float = option(
        "staged searcher: the short DeepLab rung's share of segment.train.epochs (rounded, at least 1)",
        1 / 3,
    )
    refine_branch: str = option(
        "staged searcher: refine configurations per seed promoted out of the CAM rung (the others share "
        "its seed stage): auto (2 while the search's seed stages cost at least its refine stages, else "
        "1) or a number",
        "auto",
        metavar="auto|N",
    )

    @property
    def asha_reduction_factor(self) -> int:
        return 2 if self.reduction_factor is None else self.reduction_factor

    def validate(self) -> None:
        for name, ok in (
            ("--samples", self.samples >= 1),
            ("--concurrency", self.concurrency >= 1),
            ("--cpus-per-trial", self.cpus_per_trial > 0),
            ("--gpus-per-trial", self.gpus_per_trial >= 0),
            ("--reduction-factor", self.reduction_factor is None or self.reduction_factor >= 2),
            ("--rung-records", self.rung_records is None or self.rung_records >= 1),
            ("--max-failures", self.max_failures >= 0),
            ("--tracking-wait", self.tracking_wait >= 0),
            ("--node-cache-gb", self.node_cache_gb is None or self.node_cache_gb > 0),
            ("--reuse-fraction", 0 <= self.reuse_fraction <= 1),
            ("--reuse-warmup", self.reuse_warmup >= 1),
            ("--short-fraction", 0 < self.short_fraction < 1),
        ):
            if not ok:
                raise wsss.ConfigError(f"{name}: {getattr(self, name[2:].replace('-', '_'))} is out of range")
        if self.searcher not in SEARCHERS:
            raise wsss.ConfigError(
                f"--searcher {wsss.short_repr(self.searcher)}: one of {', '.join(SEARCHERS)}"
            )
        if self.refine_branch != "auto" and not (
            self.refine_branch.isdigit() and int(self.refine_branch) >= 1
        ):
            raise wsss.ConfigError(
                f"--refine-branch {wsss.short_repr(self.refine_branch)}: auto or a whole number >= 1"
            )
        if self.budget is not None:
            if self.searcher != "staged":
                raise wsss.ConfigError(
                    "--budget: only the staged searcher (--searcher staged) spends a budget"
                )
            parse_budget(self.budget)
        if not self.experiment:
            raise wsss.ConfigError("--experiment: give the search a name")
        if not EXPERIMENT_NAME.fullmatch(self.experiment):
            raise wsss.ConfigError(
                f"--experiment {wsss.short_repr(self.experiment)}: names folders of the search's storage, so "
                "use up to 100 letters, digits and . _ - + = @ , (not starting with . or -)"
            )


def parse_budget(text: str) -> tuple[float, str]:
    """`--budget`'s (amount, unit): unit "hours", "minutes" or "pipelines" (full-pipeline equivalents)."""
    found = _BUDGET.fullmatch(text.strip())
    if found is None or float(found[1]) <= 0:
        raise wsss.ConfigError(
            f"--budget {wsss.short_repr(text)}: give a positive amount of stage compute in hours (4h), "
            "minutes (90m) or full-pipeline equivalents (12x)"
        )
    return float(found[1]), BUDGET_UNITS[found[2]]
