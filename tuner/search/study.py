"""The Optuna study of an experiment, kept on disk next to the search (one study per experiment), so
that `optuna-dashboard STORAGE/optuna/EXPERIMENT.journal` and `optuna.load_study` open it after the
search, `wsss-tune report` draws its analysis, and a new search can start from another's trials.

Optuna's journal file storage needs a POSIX file system: with a local or NFS `--storage` the journal
sits in it; with an object store (s3://) it sits in the driver's working folder (`./optuna/`), since
only the driver, which runs the searcher, writes it.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import check_distribution_compatibility
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


def warm_start(study: optuna.Study, source: optuna.Study) -> int:
    """Copy `source`'s finished trials (COMPLETE, and PRUNED with their stage values) into `study`, so
    its sampler starts from them; a trial whose parameters do not fit the new study's earlier ones
    is skipped, and so is one an earlier warm start already copied (each copy names its source trial),
    so warm-starting twice from the same experiment adds nothing the second time. Returns how many
    were copied."""
    known: dict[str, Any] = {}
    present: set[Any] = set()
    for trial in study.get_trials(deepcopy=False):
        known |= trial.distributions
        present.add((trial.user_attrs.get(WARM_START), trial.user_attrs.get(WARM_START_TRIAL)))
    copied = []
    for trial in source.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if (source.study_name, trial.number) in present or any(
            name in known and not _compatible(known[name], dist) for name, dist in trial.distributions.items()
        ):
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
    log.info("warm start: %d finished trials of %s", len(copied), source.study_name)
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


def proxy_fidelity(study: optuna.Study, final_step: int) -> dict[str, float]:
    """How well each stage's objective ranks trials the way the final metric does: Spearman's rank
    correlation, over the study's completed trials (warm-start copies left out), of the value each
    reported at stage s with its final value. ASHA relies on it: at 1 it stops exactly the trials that
    would end worst, near 0 it stops at random. Keys `proxy_fidelity_<stage>` and `proxy_fidelity_trials`."""
    from scipy.stats import spearmanr

    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "wsss_warm_start" not in t.user_attrs and t.value is not None
    ]
    out: dict[str, float] = {"proxy_fidelity_trials": float(len(trials))}
    for step in range(1, final_step):
        pairs = [(t.intermediate_values[step], t.value) for t in trials if step in t.intermediate_values]
        if len(pairs) >= 3 and len({p[0] for p in pairs}) > 1 and len({p[1] for p in pairs}) > 1:
            rho = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic
            out[f"proxy_fidelity_{wsss.STAGES[step - 1]}"] = float(rho)
    return out
