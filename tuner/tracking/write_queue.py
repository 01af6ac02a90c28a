"""Best-effort MLflow writes: tracking must never fail a trial or a search.

A `WriteQueue` takes writes (closures over an MlflowClient) in order and performs them from a background
thread, retrying each with exponential backoff until it succeeds: while the tracking server is down
(restarted, overloaded, its database locked) the trial computes on and its writes wait in memory,
then go through in order when the server is back. `flush(timeout)` waits for the queue to drain
before moments that matter (a report to Tune, after which Ray may stop the trial's process).

Writes are made idempotent where a retry could repeat them: a run is created under a unique tag and
looked up by it before being created again, metrics and tags are overwritten by equal values.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

Write = Callable[[MlflowClient], Any]

# MLflow errors that another try cannot fix (the request itself is wrong): dropped, not retried.
_PERMANENT = {
    "BAD_REQUEST",
    "MALFORMED_REQUEST",
    "INVALID_PARAMETER_VALUE",
    "INVALID_STATE",
    "INVALID_STATE_TRANSITION",
    "RESOURCE_DOES_NOT_EXIST",
    "RESOURCE_ALREADY_EXISTS",
    "NOT_FOUND",
    "ENDPOINT_NOT_FOUND",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "FEATURE_DISABLED",
    "NOT_IMPLEMENTED",
}


def transient(exc: BaseException) -> bool:
    """Whether trying again later may succeed: the server or its database unreachable, overloaded,
    locked or timing out; not a request MLflow rejected, nor a bug in the write itself."""
    if isinstance(exc, MlflowException):
        return exc.error_code not in _PERMANENT
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, OSError) or bool(names & {"OperationalError", "TimeoutError"})


class WriteQueue:
    """An ordered queue of MLflow writes, performed and retried by one daemon thread."""

    def __init__(
        self, tracking_uri: str | None, name: str, backoff: tuple[float, float] = (0.5, 30.0)
    ) -> None:
        self.tracking_uri, self.name = tracking_uri, name
        self.first_delay, self.max_delay = backoff
        self._queue: queue.Queue[tuple[str, Write] | None] = queue.Queue()
        self._idle = threading.Condition()
        self._pending = 0
        self.failures = 0  # failed tries so far (an outage shows here)
        self._thread = threading.Thread(target=self._work, daemon=True, name=f"mlflow-writes-{name}")
        self._thread.start()

    def submit(self, what: str, write: Write) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put((what, write))

    def pending(self) -> int:
        with self._idle:
            return self._pending

    def flush(self, timeout: float) -> bool:
        """Wait until every write so far went through; False if `timeout` seconds were not enough."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("MLflow (%s): %d write(s) still waiting", self.name, self._pending)
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float) -> bool:
        drained = self.flush(timeout)
        self._queue.put(None)
        return drained

    def _work(self) -> None:
        client = MlflowClient(self.tracking_uri)
        while (item := self._queue.get()) is not None:
            what, write = item
            delay = self.first_delay
            while True:
                try:
                    write(client)
                    break
                except Exception as exc:  # never raise from here: retry, or drop what cannot succeed
                    self.failures += 1
                    if not transient(exc):
                        log.error("MLflow (%s): %s failed and is dropped (%s)", self.name, what, _short(exc))
                        break
                    log.warning(
                        "MLflow (%s): %s failed (%s); retrying in %.0f s", self.name, what, _short(exc), delay
                    )
                    time.sleep(delay)
                    delay = min(delay * 2, self.max_delay)
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def retry(write: Write, client: MlflowClient, what: str, timeout: float, delay: float = 0.5) -> Any:
    """Run one write now, retrying until `timeout`; re-raises the last error after it (for the driver's
    own bookkeeping at the start and end of a search, which must know whether it went through)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return write(client)
        except Exception as exc:
            if not transient(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("MLflow: %s failed (%s); retrying in %.0f s", what, _short(exc), delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
