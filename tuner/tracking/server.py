"""Waiting for a tracking server to answer (`wsss-tune db wait`): a cluster's head starts `mlflow
server` in the background, so a server that dies at start (an out-of-date database schema, a port in
use, a bad backend URI) would otherwise go unnoticed until trials drop their writes.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import wsss

LOG_TAIL = 20  # lines of the server's log shown when it does not answer


class ServerDown(wsss.EnvironmentFault):
    """The tracking server did not answer its health check in time."""

    problems: list[str]


def _log_tail(log: Path | None) -> list[str]:
    if log is None:
        return []
    try:
        lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL:]
    except OSError as exc:
        return [f"its log {log} cannot be read ({exc.strerror or exc})"]
    return [f"the last lines of {log}:", *lines] if lines else [f"its log {log} is empty"]


def wait_for_server(url: str, timeout: float, log: Path | None = None, poll: float = 1.0) -> float:
    """Seconds until `url`/health answered 200; ServerDown with the log's last lines after `timeout`."""
    health = url.rstrip("/") + "/health"
    start = time.monotonic()
    problem = "no answer"
    while True:
        try:
            with urllib.request.urlopen(health, timeout=max(poll, 1.0)) as response:
                if response.status == 200:
                    return time.monotonic() - start
                problem = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            problem = str(getattr(exc, "reason", exc))
        if time.monotonic() - start >= timeout:
            down = ServerDown(
                f"the MLflow server at {url} did not answer {health} in {timeout:g} s ({problem})"
            )
            down.problems = [str(down), *_log_tail(log)]  # one error line each (tuner.cli.main)
            raise down
        time.sleep(poll)
