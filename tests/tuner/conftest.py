"""Fixtures of real components for tuner tests: an `mlflow server` process on loopback, shared or
restartable (the server class and the tiny method space are in tests/tuner/helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.tuner.helpers import MlflowServer


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with a sqlite backend and proxied artifacts; yields its URL."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def restartable_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A tracking server of its own for one test, which the test may stop and start again."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-restartable"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
