"""`wsss-tune report` on a staged search (`--searcher staged`): its two studies, the upstream one (method,
seed and refine knobs, told pseudo-mask mIoU) and the DeepLab one (told the short schedule's value),
rebuilt from the searcher's state that Tune saved in the search's experiment folder
(tuner.search.planner_state), with Optuna's plots of each, and each rung's rank correlation with the
next one over the configurations that hold both (an upstream against the mean of its children): the
fidelity the planner gates its promotions on.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pyarrow.fs as pafs
from scipy.stats import spearmanr

import wsss
from tuner.search.driver import absolute
from tuner.search.planner_state import rebuilt_study
from tuner.search.record import storage_fs
from tuner.search.resume import recorded_options
from tuner.search.staged import RUNGS, UPSTREAM_RUNGS
from tuner.search.study import write_report

log = logging.getLogger(__name__)

STATE_PREFIX, STATE_SUFFIX = "searcher-state-", ".pkl"  # Ray's Searcher.CKPT_FILE_TMPL; JSON inside
MAX_STATE_BYTES = 512 * 2**20  # a state is ~1 kB per configuration: anything near this is not one
# report folder -> (the state's study, what its trials were told, as the plots name it)
STUDIES = {
    "upstream": ("upstream", "pseudo-mask mIoU (rung pseudo)"),
    "deeplab": ("segment", "DeepLab's first rung (short schedule)"),
}


def staged_report(
    parent: Any, experiment: str, storage: str, out: Path
) -> tuple[list[Path], dict[str, float]]:
    """Plots of a staged search's studies into OUT/upstream and OUT/deeplab (a study with fewer than
    two told trials is left out, saying so), and `rung_fidelity_<rung>_<next>` (Spearman) with
    `..._pairs` per rung pair that has at least three configurations on both."""
    name, options = recorded_options(parent, experiment)
    state = _searcher_state(name, [storage, options.storage], experiment)
    written: list[Path] = []
    try:
        planner = state["planner"]
        studies = {folder: rebuilt_study(0, planner[key]) for folder, (key, _) in STUDIES.items()}
        fidelity = rung_fidelity(planner["records"], [c["parent"] for c in planner["configs"]])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise wsss.ConfigError(f"search {name}: not a staged searcher's state ({exc})") from None
    for folder, study in studies.items():
        told = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(told) < 2:
            log.warning("the %s study holds %d told trial(s): no plots of it", folder, len(told))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([STUDIES[folder][1]])
        written += write_report(study, out / folder)
    if not written:
        raise wsss.WsssError(f"search {name}: neither study holds two told trials yet; nothing to plot")
    return written, fidelity


def _searcher_state(name: str, storages: list[str], experiment: str) -> dict[str, Any]:
    """The latest session's searcher state under STORAGE/tune/NAME of the first storage that has one
    (Ray's Searcher.restore_from_dir takes the greatest file name: the names carry the session's
    start time)."""
    for storage in dict.fromkeys(absolute(s) for s in storages):
        fs, root = storage_fs(storage)
        folder = f"{root.rstrip('/')}/tune/{name}"
        try:
            found = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        except OSError as exc:
            raise wsss.WsssError(f"{storage}/tune/{name}: unreadable ({exc})") from None
        states = [
            f
            for f in found
            if f.type == pafs.FileType.File
            and f.base_name.startswith(STATE_PREFIX)
            and f.base_name.endswith(STATE_SUFFIX)
        ]
        if not states:
            continue
        newest = max(states, key=lambda f: f.base_name)  # the latest session's, as Tune picks it
        if (newest.size or 0) > MAX_STATE_BYTES:
            raise wsss.ConfigError(f"{storage}/{newest.path}: {newest.size} bytes is no searcher state")
        with fs.open_input_stream(newest.path) as stream:
            text = stream.read(MAX_STATE_BYTES + 1)
        try:
            state = json.loads(text)  # JSON only: the storage is read as untrusted data
        except ValueError as exc:
            raise wsss.ConfigError(
                f"{storage}/{newest.path}: not a staged searcher's state ({exc})"
            ) from None
        if not isinstance(state, dict):
            raise wsss.ConfigError(f"{storage}/{newest.path}: not a staged searcher's state")
        return state
    raise wsss.ConfigError(
        f"--experiment {experiment}: no saved state of staged search {name} under "
        + " or ".join(f"{s}/tune/{name}" for s in dict.fromkeys(storages))
        + " (give the search's --storage)"
    )


def rung_fidelity(records: list[dict[str, float]], parents: list[int | None]) -> dict[str, float]:
    """Spearman's rank correlation of each rung's values with the next rung's, over the configurations
    holding both; out of the last upstream rung, an upstream is paired with its children's mean."""
    ranked = [{int(c): float(v) for c, v in held.items()} for held in records]
    out: dict[str, float] = {}
    for rung in range(len(RUNGS) - 1):
        low, high = ranked[rung], ranked[rung + 1]
        if rung == UPSTREAM_RUNGS - 1:
            children: dict[int, list[float]] = {}
            for config, value in high.items():
                parent = parents[config]
                if parent is not None:
                    children.setdefault(parent, []).append(value)
            high = {p: float(np.mean(v)) for p, v in children.items()}
        pairs = [(low[c], high[c]) for c in low if c in high]
        xs, ys = zip(*pairs, strict=True) if pairs else ((), ())
        if len(pairs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
            continue
        key = f"rung_fidelity_{RUNGS[rung]}_{RUNGS[rung + 1]}"
        out[key] = float(spearmanr(xs, ys).statistic)
        out[f"{key}_pairs"] = float(len(pairs))
    return out
