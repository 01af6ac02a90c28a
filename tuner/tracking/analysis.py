"""After a search: Optuna's analysis of the experiment's study (`wsss-tune report`), the proxies'
fidelity, and how many trials reused stages."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from tuner.search.fidelity import proxy_fidelity
from tuner.search.resume import latest_search
from tuner.search.study import load, write_report
from tuner.tracking.runs import log_files, log_metrics
from tuner.tracking.staged_report import staged_report
from tuner.trial.trainable import final_iteration

log = logging.getLogger(__name__)


def report(
    client: MlflowClient, experiment: str, storage: str, out: Path | None
) -> tuple[list[Path], dict[str, float]]:
    """Plots of the experiment's study into `out`, logged with the proxy fidelity to its latest
    search's parent run (artifacts under `analysis/`); for a staged search, plots of its two studies
    and its rungs' fidelity (tuner.tracking.staged_report)."""
    parent = latest_search(client, experiment)
    out = out or Path(f"wsss-report-{re.sub(r'[^A-Za-z0-9._-]', '_', experiment)}")
    if parent.data.params.get("searcher") == "staged":  # its studies live in its Tune state
        written, fidelity = staged_report(parent, experiment, storage, out)
    else:
        study = load(storage, experiment)
        written = write_report(study, out)
        fidelity = proxy_fidelity(study, final_iteration(parent.data.tags.get("wsss.metric", "val_miou")))
    run_id = parent.info.run_id
    for path in written:  # a staged search's two studies in analysis/upstream and analysis/deeplab
        log_files(client, run_id, [path], "/".join(("analysis", *path.parent.relative_to(out).parts)))
    log_metrics(client, run_id, fidelity, 0, int(parent.info.start_time))
    return written, fidelity


def reuse_counts(rows: list[dict[str, Any]]) -> tuple[int, int]:
    """(trials that reused at least one finished stage, trials) of leaderboard rows."""
    reused = sum(1 for r in rows if r.get("stages_reused", "-") not in ("-", "", None))
    return reused, len(rows)
