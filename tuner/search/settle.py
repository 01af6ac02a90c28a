"""How a search ends in MLflow: every trial run settled, the parent run FINISHED, FAILED or KILLED,
also when MLflow was down for a while (its writes are retried; see tuner.tracking.write_queue)."""

from __future__ import annotations

import json
import logging
from collections import Counter

from mlflow.tracking import MlflowClient

import wsss
from tuner.tracking.runs import STATUS, SUPERSEDED, RunStatusCallback, child_runs, close_dangling, set_tags
from tuner.tracking.write_queue import retry

log = logging.getLogger(__name__)


class SearchInterrupted(KeyboardInterrupt):
    """Tune stopped on Ctrl-C (it returns normally then); the search can be resumed."""


class SearchFailed(wsss.WsssError):
    """The search ran to its end, but no trial finished (exit status 1: not a usage error)."""

    exit_status = 1


def failure_summary(client: MlflowClient, experiment_id: str, parent_run_id: str) -> str | None:
    """None if a trial finished; else one line with the counts and the most common trial error,
    also recorded on the parent run (tags wsss.error and wsss.trial_errors)."""
    runs = [
        r for r in child_runs(client, experiment_id, parent_run_id) if r.data.tags.get(SUPERSEDED) != "true"
    ]
    if any(r.info.status == "FINISHED" for r in runs):
        return None
    errors = Counter(
        r.data.tags.get("wsss.error", "unknown error (see the trial's error.txt in the Tune folder)")
        for r in runs
        if r.info.status != "KILLED"
    )
    failed = sum(errors.values())
    if any(r.data.tags.get("wsss.searcher") == "staged" for r in runs):  # one run per configuration
        summary = (
            f"no configuration reached the full DeepLab schedule ({failed} failed, {len(runs) - failed} "
            f"stopped on a lower rung, of {len(runs)}): give the search more --samples or --budget"
        )
    else:
        summary = f"no trial finished ({failed} failed, {len(runs) - failed} pruned, of {len(runs)})"
    if errors:
        cause, count = errors.most_common(1)[0]
        summary += f"; most common cause ({count} of {failed} failed): {cause}"
    counts = json.dumps([{"error": e, "trials": n} for e, n in errors.most_common()])
    set_tags(client, parent_run_id, {"wsss.error": summary[:5000], "wsss.trial_errors": counts[:5000]})
    return summary


def mark_interrupted(client: MlflowClient, experiment_id: str, parent_run_id: str) -> None:
    """Trials cut off by an interruption end KILLED (interrupted); on resume they run again and
    continue these runs, reusing the stages they finished."""
    for run in child_runs(client, experiment_id, parent_run_id):
        if run.info.status == "RUNNING":
            set_tags(client, run.info.run_id, {STATUS: "interrupted"})
            client.set_terminated(run.info.run_id, "KILLED")


class TrackingUnavailable(wsss.WsssError):
    """MLflow stayed unreachable at the end of a search (exit status 1): results are in Tune's state."""

    exit_status = 1


# How long the driver waits for MLflow at the end of a search (trials already finished by then).
FINISH_WAIT = 600.0


def finish(client: MlflowClient, ids: tuple[str, str], status: str, callback: RunStatusCallback) -> None:
    """Settle every run of the search; waits out an MLflow outage for up to FINISH_WAIT seconds."""
    experiment_id, parent_run_id = ids

    def write(client: MlflowClient) -> None:
        if status == "KILLED":
            mark_interrupted(client, experiment_id, parent_run_id)
        closed = close_dangling(client, experiment_id, parent_run_id)
        if closed:
            log.warning("%d trial run(s) never reported back and were marked FAILED", closed)
        client.set_terminated(parent_run_id, status)

    try:
        callback.close(FINISH_WAIT)
        retry(write, client, "close the search's runs", FINISH_WAIT)
    except Exception as exc:
        raise TrackingUnavailable(
            f"{client.tracking_uri}: MLflow unreachable for {FINISH_WAIT:.0f} s at the end of the search "
            f"({type(exc).__name__}); its runs are left as they were. The trials' results are in Tune's "
            "state under the search's STORAGE/tune folder."
        ) from None
