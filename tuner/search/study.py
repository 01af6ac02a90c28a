"""The Optuna study of an experiment, kept on disk next to the search (one study per experiment), so
that `optuna-dashboard STORAGE/optuna/EXPERIMENT.journal` and `optuna.load_study` open it after the
search, `wsss-tune report` draws its analysis, and a new search can start from another's trials.

Optuna's journal file storage needs a POSIX file system: with a local or NFS `--storage` the journal
sits in it; with an object store (s3://) it sits in the driver's working folder (`./optuna/`), since
only the driver, which runs the searcher, writes it. Each time Tune checkpoints the searcher, a copy
of the journal goes beside the searcher's state in Tune's experiment folder (STUDY_SNAPSHOT), which
Tune keeps in the storage: a search resumed on a new head (the old one's disk gone) starts from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial

import wsss

log = logging.getLogger(__name__)


def study_path(storage: str, experiment: str) -> Path:
    """Where the experiment's study journal lives (see the module docstring)."""
    root = Path(storage) if "://" not in storage else Path.cwd()
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", experiment)
    return root.absolute() / "optuna" / f"{safe}.journal"


STUDY_SNAPSHOT = "optuna-study.journal"  # in Tune's experiment folder, beside the searcher's state


def snapshot_journal(journal: Path, folder: Path) -> None:
    """Copy the journal into `folder` as of now: whole lines only (a write in flight is left out)."""
    text = journal.read_bytes()
    tmp = folder / f".{STUDY_SNAPSHOT}.tmp"
    tmp.write_bytes(text[: text.rfind(b"\n") + 1])
    tmp.replace(folder / STUDY_SNAPSHOT)


def fetch_snapshot(experiment_dir: str, journal: Path) -> bool:
    """Put the journal snapshot saved in Tune's experiment folder (a path or URI) at `journal`, when
    there is one; whether there was."""
    import pyarrow.fs as pafs

    from tuner.search.record import storage_fs

    fs, root = storage_fs(experiment_dir)
    source = f"{root.rstrip('/')}/{STUDY_SNAPSHOT}"
    if fs.get_file_info(source).type != pafs.FileType.File:
        return False
    journal.parent.mkdir(parents=True, exist_ok=True)
    with fs.open_input_stream(source) as stream:
        journal.write_bytes(stream.read())
    log.info("the Optuna study came back from %s", source)
    return True


def study_storage(path: Path) -> JournalStorage:
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def load(storage: str, experiment: str) -> optuna.Study:
    """The experiment's study; a WsssError naming the journal if there is none."""
    path = study_path(storage, experiment)
    if not path.is_file():
        raise wsss.WsssError(
            f"{path}: no Optuna study for experiment {experiment!r} (searches keep it under STORAGE/optuna/; "
            "give the search's --storage)"
        )
    try:
        return optuna.load_study(study_name=experiment, storage=study_storage(path))
    except KeyError:
        raise wsss.WsssError(f"{path}: holds no study named {experiment!r}") from None


# User attributes of a trial copied by a warm start: the experiment and trial number it came from.
WARM_START, WARM_START_TRIAL = "wsss_warm_start", "wsss_warm_start_trial"
# The study's user attribute saying what its values are: {metric, mode, data, base} (search_identity).
IDENTITY = "wsss_identity"


def search_identity(metric: str, mode: str, data: list[str], base: dict[str, Any] | None) -> dict[str, str]:
    """What makes two studies' values comparable: the metric and its direction, the datasets'
    fingerprints and the base config (a hash of its settings; `defaults` for none)."""
    settings = "defaults"
    if base is not None:
        settings = hashlib.sha256(json.dumps(base, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"metric": metric, "mode": mode, "data": ",".join(sorted(set(data))), "base": settings}


def _differences(recorded: dict[str, str], identity: dict[str, str]) -> str:
    return "; ".join(
        f"{key} {recorded.get(key)!r} there, {identity[key]!r} here"
        for key in identity
        if recorded.get(key) != identity[key]
    )


def claim(study: optuna.Study, identity: dict[str, str]) -> None:
    """Record `identity` on the experiment's study, or refuse to continue a study whose trials mean
    something else (another metric, direction, dataset or base config). A study from before
    identities were recorded is taken as it is and gets this one."""
    recorded = study.user_attrs.get(IDENTITY)
    if recorded is None:
        study.set_user_attr(IDENTITY, identity)
    elif recorded != identity:
        raise wsss.WsssError(
            f"experiment {study.study_name!r}: its study holds trials of another search "
            f"({_differences(recorded, identity)}); use a new --experiment"
        )


def check_warm_start(source: optuna.Study, identity: dict[str, str]) -> None:
    """Refuse to warm-start from a study whose values are not this search's: a minimize pseudo_miou
    study would otherwise seed a maximize val_miou one, its values read as final ones."""
    recorded = source.user_attrs.get(IDENTITY)
    if recorded is None:
        raise wsss.WsssError(
            f"--warm-start {source.study_name}: its study does not record its metric, direction, data "
            "and base config (a search from an earlier version), so its values cannot be checked"
        )
    if recorded != identity:
        raise wsss.WsssError(
            f"--warm-start {source.study_name}: its trials are another search's "
            f"({_differences(recorded, identity)})"
        )


def within(distribution: BaseDistribution, value: Any) -> bool:
    """Whether `value` (a trial's parameter as Optuna holds it) is one this distribution can give."""
    if isinstance(distribution, CategoricalDistribution):
        return any(value == choice for choice in distribution.choices)
    assert isinstance(distribution, FloatDistribution | IntDistribution)
    return distribution.low <= value <= distribution.high


def warm_start(
    study: optuna.Study,
    source: optuna.Study,
    space: dict[str, BaseDistribution] | None = None,
    identity: dict[str, str] | None = None,
) -> int:
    """Copy `source`'s finished trials (COMPLETE, and PRUNED with their stage values) into `study`, so
    its sampler starts from them. With `identity`, a source of another metric, direction, data or
    base config is refused (check_warm_start). A trial is skipped when its parameters do not fit the
    new study's earlier ones or, given the search's `space` (name -> distribution), a parameter is
    not in it or lies outside its range (Optuna would run an enqueued out-of-range value as it is);
    and when an earlier warm start already copied it (each copy names its source trial), so
    warm-starting twice from the same experiment adds nothing the second time. Returns how many were
    copied."""
    if identity is not None:
        check_warm_start(source, identity)
    known: dict[str, Any] = {}
    present: set[Any] = set()
    for trial in study.get_trials(deepcopy=False):
        known |= trial.distributions
        present.add((trial.user_attrs.get(WARM_START), trial.user_attrs.get(WARM_START_TRIAL)))
    copied, outside = [], 0
    for trial in source.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if (source.study_name, trial.number) in present or any(
            name in known and not _compatible(known[name], dist) for name, dist in trial.distributions.items()
        ):
            continue
        if space is not None and not all(
            name in space and within(space[name], value) for name, value in trial.params.items()
        ):
            outside += 1
            continue
        copied.append(
            create_trial(
                state=trial.state,
                value=trial.value if trial.state == TrialState.COMPLETE else None,
                params=trial.params,
                distributions=trial.distributions,
                intermediate_values=trial.intermediate_values,
                user_attrs={
                    **trial.user_attrs,
                    WARM_START: source.study_name,
                    WARM_START_TRIAL: trial.number,
                },
            )
        )
    study.add_trials(copied)
    log.info(
        "warm start: %d finished trials of %s (%d outside this search's space left out)",
        len(copied),
        source.study_name,
        outside,
    )
    return len(copied)


def _compatible(a: optuna.distributions.BaseDistribution, b: optuna.distributions.BaseDistribution) -> bool:
    try:
        check_distribution_compatibility(a, b)
    except ValueError:
        return False
    return True


def write_report(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Parameter importances, optimisation history and a parallel-coordinate plot of the study's
    completed trials, each as PNG (matplotlib) and HTML (plotly)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna import visualization as interactive
    from optuna.visualization import matplotlib as static

    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(completed) < 2:
        raise wsss.WsssError(
            f"study {study.study_name!r}: {len(completed)} completed trial(s); the analysis needs at least 2"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
        "param_importances": (static.plot_param_importances, interactive.plot_param_importances),
        "optimization_history": (static.plot_optimization_history, interactive.plot_optimization_history),
        "parallel_coordinate": (static.plot_parallel_coordinate, interactive.plot_parallel_coordinate),
    }
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, (draw_png, draw_html) in plots.items():
            axes = draw_png(study)
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.set_size_inches(11, 6)
            figure.tight_layout()
            figure.savefig(out_dir / f"{name}.png", dpi=100)
            plt.close(figure)
            draw_html(study).write_html(out_dir / f"{name}.html", include_plotlyjs=True)
            written += [out_dir / f"{name}.png", out_dir / f"{name}.html"]
    return written
