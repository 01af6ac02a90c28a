"""The best-effort MLflow writes: writes in order, transient failures retried, hopeless ones dropped,
flushes bounded in time. (Its behaviour against a real server restart: test_outage.py.)"""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE
from mlflow.tracking import MlflowClient

from tuner.tracking.write_queue import WriteQueue, retry, transient


def _writes() -> WriteQueue:
    return WriteQueue("sqlite:////nonexistent/never-opened.db", "test", backoff=(0.01, 0.05))


def test_writes_go_in_order_and_transient_failures_are_retried() -> None:
    writes, done, failures = _writes(), [], {"n": 0}

    def flaky(client: MlflowClient) -> None:
        if failures["n"] < 3:
            failures["n"] += 1
            raise MlflowException("API request to http://head:5000 failed with exception ConnectionRefused")
        done.append("flaky")

    writes.submit("first", lambda c: done.append("first"))
    writes.submit("flaky", flaky)
    writes.submit("last", lambda c: done.append("last"))
    assert writes.flush(10)
    assert done == ["first", "flaky", "last"] and writes.failures == 3 and writes.pending() == 0


@pytest.mark.parametrize(
    "error",
    [
        MlflowException("Changing param values is not allowed", error_code=INVALID_PARAMETER_VALUE),
        TypeError("a bug"),
    ],
)
def test_writes_that_cannot_succeed_are_dropped_and_the_rest_go_on(error: Exception) -> None:
    writes, done = _writes(), []

    def hopeless(client: MlflowClient) -> None:
        raise error

    writes.submit("hopeless", hopeless)
    writes.submit("next", lambda c: done.append("next"))
    assert writes.flush(10) and done == ["next"] and writes.failures == 1


def test_a_flush_during_an_outage_returns_after_its_timeout() -> None:
    writes, server = _writes(), {"up": False}

    def down(client: MlflowClient) -> None:
        if not server["up"]:
            raise ConnectionRefusedError("the tracking server is down")

    writes.submit("down", down)
    assert not writes.flush(0.3) and writes.pending() == 1
    server["up"] = True  # back: the write goes through and the writes drains
    assert writes.close(10) and writes.pending() == 0


def test_transient_and_retry() -> None:
    assert transient(MlflowException("timed out", error_code=TEMPORARILY_UNAVAILABLE))
    assert transient(ConnectionResetError()) and not transient(KeyError("x"))
    calls = []

    def once_down(client: MlflowClient) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionRefusedError()
        return "ok"

    assert (
        retry(once_down, MlflowClient("sqlite:////nonexistent/x.db"), "test", timeout=5, delay=0.01) == "ok"
    )
    with pytest.raises(ConnectionRefusedError):
        retry(
            lambda c: (_ for _ in ()).throw(ConnectionRefusedError()),
            MlflowClient("sqlite:////nonexistent/x.db"),
            "down",
            timeout=0.05,
            delay=0.01,
        )
