"""A trial's MLflow run, written from the worker through a WriteQueue: opened (or continued, for a
retried or resumed trial), tagged, logged, ended FAILED with the worker's message on an error."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.tracking import MlflowClient

import wsss
from tuner.tracking.runs import (
    ATTEMPT,
    ATTEMPT_UID,
    PARENT_TAG,
    ROLE,
    STATUS,
    SUPERSEDED,
    TRIAL_ID,
    attempts,
    log_files,
    log_metrics,
    log_params,
    set_tags,
)
from tuner.tracking.write_queue import WriteQueue
from tuner.trial.settings import TrialSettings


class TrialRun:
    """The trial's one MLflow child run, written through a WriteQueue (best-effort, in order).

    A trial that runs again (Tune retried it after its node was lost, or a resumed search reran it)
    continues the run of its earlier attempt, so MLflow holds one run per trial; `wsss.attempt`
    counts the attempts.
    """

    def __init__(
        self,
        writes: WriteQueue,
        settings: TrialSettings,
        trial_id: str,
        trial_name: str,
        counter: str = ATTEMPT,
    ) -> None:
        # `counter` counts the runs' openings: attempts of a trial, or a staged configuration's jobs.
        self.writes, self.settings, self.counter = writes, settings, counter
        self.trial_id, self.trial_name = trial_id, trial_name
        self.uid = uuid.uuid4().hex  # this attempt, so that a retried write never opens a second run
        self.run_id: str | None = None
        self.spool = Path(tempfile.mkdtemp(prefix="wsss-trial-"))
        writes.submit("open the trial's run", self._open)

    def _open(self, client: MlflowClient) -> None:
        runs = attempts(client, self.settings.experiment_id, self.settings.parent_run_id, self.trial_id)
        mine = [r for r in runs if r.data.tags.get(ATTEMPT_UID) == self.uid]
        current = mine or [r for r in runs if r.data.tags.get(SUPERSEDED) != "true"]
        if not current:
            tags = {PARENT_TAG: self.settings.parent_run_id, ROLE: "trial", TRIAL_ID: self.trial_id}
            tags |= {self.counter: "1", ATTEMPT_UID: self.uid, STATUS: "running"}
            self.run_id = client.create_run(
                self.settings.experiment_id, run_name=self.trial_name, tags=tags
            ).info.run_id
            return
        run = max(current, key=lambda r: r.info.start_time)
        self.run_id = run.info.run_id
        if not mine:
            count = run.data.tags.get(self.counter, "1")
            attempt = int(count) + 1 if count.isdigit() else 2
            if "wsss.error" in run.data.tags:  # the earlier attempt's error is history now
                client.set_tag(self.run_id, "wsss.previous_error", run.data.tags["wsss.error"][:5000])
                client.delete_tag(self.run_id, "wsss.error")
            set_tags(
                client, self.run_id, {self.counter: str(attempt), ATTEMPT_UID: self.uid, STATUS: "running"}
            )
        if run.info.status != "RUNNING":
            client.update_run(self.run_id, status="RUNNING")

    def tags(self, tags: dict[str, str]) -> None:
        self.writes.submit("set tags", lambda c: set_tags(c, self._id(), tags))

    def params(self, params: dict[str, Any]) -> None:
        self.writes.submit("log params", lambda c: log_params(c, self._id(), params))

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        stamp = int(time.time() * 1000)
        self.writes.submit("log metrics", lambda c: log_metrics(c, self._id(), metrics, step, stamp))

    def files(self, paths: list[Path], artifact_path: str | None) -> None:
        """Log copies of `paths` (they may be temporary; the writes may send them much later)."""
        folder = Path(tempfile.mkdtemp(dir=self.spool))
        copies = [Path(shutil.copy(p, folder / p.name)) for p in paths]
        self.writes.submit(
            f"log {artifact_path or 'files'}", lambda c: log_files(c, self._id(), copies, artifact_path)
        )

    def dataset(self, data: Any, location: str) -> None:
        """The trial's data as an MLflow dataset input (the run page's Datasets): its name, its
        fingerprint as digest (MLflow keeps 36 characters), where it lives, its split sizes."""
        entity = Dataset(
            name=Path(location.rstrip("/")).name or location,
            digest=data.fingerprint[:32],
            source_type="s3" if location.startswith("s3://") else "local",
            source=json.dumps({"uri": location}),
            profile=json.dumps({"train": len(data.train_ids), "val": len(data.val_ids)}),
        )
        inputs = [DatasetInput(entity, [InputTag("mlflow.data.context", "training")])]
        self.writes.submit("log the dataset", lambda c: c.log_inputs(self._id(), datasets=inputs))

    def end(self, status: str, label: str, error: str | None = None) -> None:
        tags = {STATUS: label} | ({"wsss.error": error[:5000]} if error else {})

        def write(client: MlflowClient) -> None:
            set_tags(client, self._id(), tags)
            client.set_terminated(self._id(), status)

        self.writes.submit(f"end the run {status}", write)

    def flush(self) -> bool:
        drained = self.writes.flush(self.settings.tracking_wait)
        if drained:
            shutil.rmtree(self.spool, ignore_errors=True)
            self.spool.mkdir(exist_ok=True)
        return drained

    def _id(self) -> str:
        assert self.run_id is not None  # the open write goes first
        return self.run_id


@contextlib.contextmanager
def trial_run(
    settings: TrialSettings, trial_id: str, run_name: str, writer: str, counter: str = ATTEMPT
) -> Iterator[TrialRun]:
    """The trial's MLflow run for the body of a trainable: on an error it ends FAILED with the
    worker's message (flushed before the error reaches Tune); its write queue closes either way."""
    writes = WriteQueue(None, writer)  # MLFLOW_TRACKING_URI comes from the runtime env
    run = TrialRun(writes, settings, trial_id, run_name, counter)
    try:
        yield run
    except Exception as exc:
        run.end("FAILED", "failed", wsss.user_message(exc))
        run.flush()
        raise
    finally:
        writes.close(0)


def flush_and_trim(run: TrialRun, settings: TrialSettings, store: Any) -> None:
    """Before a report (after which Ray may stop the trial): the run's writes, then this node's
    copies of remote artifacts trimmed to the cap."""
    run.flush()
    if settings.node_cache_bytes is not None and not store.is_local:
        store.trim_cache(settings.node_cache_bytes)
