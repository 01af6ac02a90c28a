"""MLflow's UI as a user reads it: a small search, rendered in a headless Chromium, checked on screen.

    pip install playwright
    python tests/benchmarks/check_mlflow_ui.py [--chromium PATH] [--workdir /tmp/mlflow-ui-check]

It starts an MLflow server (sqlite, proxied artifacts) on a free port, runs `wsss-tune demo` (two
trials on a tiny synthetic set, about a minute) against it, then opens in the browser:

1. the experiment as MLflow opens it (recorded, not required: 3.17 opens every experiment in its GenAI
   workflow, whatever the experiment's tags say);
2. the leaderboard link the search prints and writes into its parent run's description: the trials
   must be rows, best first by the search metric, with that metric's column;
3. a trial's run page: its Datasets entry (the data folder's name), Source (`wsss-tune search` and
   the commit) and description (what was sampled);
4. the parent run's page: the search's description.

Screenshots of each go to --workdir; the checks print as JSON and any failure exits 1. A Chromium:
`playwright install chromium` where its download site is reachable; with only package registries,
`npm install @sparticuz/chromium` and `node -e "require('@sparticuz/chromium').default
.executablePath().then(console.log)"` unpacks one (to /tmp/chromium), passed as --chromium. Not a CI
test: CI has no browser. docs/benchmarks.md, "MLflow's UI in a browser".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

BROWSER_ARGS = ["--no-sandbox", "--no-zygote", "--single-process", "--disable-gpu", "--lang=en-US"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    log = (workdir / "server.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{(workdir / 'mlflow.db').absolute()}",
            "--artifacts-destination", str((workdir / "artifacts").absolute()),
            "--host", "127.0.0.1", "--port", str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            time.sleep(1)
    server.terminate()
    raise SystemExit(f"the MLflow server did not start; see {workdir / 'server.log'}")


def _run_demo(workdir: Path, uri: str) -> None:
    demo = [sys.executable, "-m", "tuner.cli.main", "demo", "--workdir", str(workdir / "demo")]
    demo += ["--samples", "2", "--concurrency", "1", "--train", "24", "--val", "8", "--size", "64"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    done = subprocess.run(demo, env=env, capture_output=True, text=True)
    (workdir / "demo.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"the demo search failed; see {workdir / 'demo.log'}")


def _page_text(page: Any, url: str, shot: Path, wait_for: str | None = None) -> str:
    page.goto(url)
    if wait_for:
        page.get_by_text(wait_for).first.wait_for(timeout=60_000)
    page.wait_for_timeout(3000)  # the tables fill in after their first paint
    page.screenshot(path=str(shot), full_page=True)
    return str(page.inner_text("body"))


def _checks(page: Any, uri: str, client: MlflowClient, workdir: Path) -> list[dict[str, Any]]:
    experiment = client.get_experiment_by_name("wsss-demo")
    assert experiment is not None
    eid = experiment.experiment_id
    runs = client.search_runs([eid])
    parent = next(r for r in runs if r.data.tags.get("wsss.role") == "search")
    trials = sorted(
        (r for r in runs if r.data.tags.get("wsss.role") == "trial"),
        key=lambda r: -r.data.metrics.get("val_miou", float("-inf")),
    )
    checks: list[dict[str, Any]] = []

    def check(name: str, passed: bool, seen: str) -> None:
        checks.append({"check": name, "passed": passed, "seen": seen})

    _page_text(page, f"{uri}/#/experiments/{eid}", workdir / "1-experiment-default.png")
    check("experiment default view (recorded only)", True, page.url)

    note = parent.data.tags.get("mlflow.note.content", "")
    link_match = re.search(r"http://\S+viewStateShareKey=[\w.-]+", note)
    check("parent description names the leaderboard link", link_match is not None, note[:300])
    if link_match:
        text = _page_text(page, link_match.group(0), workdir / "2-leaderboard.png", trials[0].info.run_name)
        shown = [r.info.run_name for r in trials if r.info.run_name in text]
        order = sorted(shown, key=text.index)
        check(
            "leaderboard: every trial a row, best val_miou first, the metric a column",
            shown == [r.info.run_name for r in trials] and order == shown and "val_miou" in text,
            f"rows in order {order}; 'val_miou' shown: {'val_miou' in text}; 'Sort: val_miou': "
            f"{'Sort: val_miou' in text}",
        )
    trial = trials[0]
    text = _page_text(
        page,
        f"{uri}/#/experiments/{eid}/runs/{trial.info.run_id}?workflowType=machine_learning",
        workdir / "3-trial-run.png",
        "Datasets",
    )
    inputs = trial.inputs.dataset_inputs if trial.inputs else []
    dataset = inputs[0].dataset.name if inputs else "(none logged)"
    after = text[text.find("Datasets") :]
    check("trial page: Datasets lists the data", dataset in after[:200], after[:200].replace("\n", " | "))
    source = text[text.find("Source") :][:80]
    check("trial page: Source is wsss-tune search", "wsss-tune search" in source, source.replace("\n", " | "))
    described = text[text.find("Description") :][:200]
    check("trial page: a description", "sampled:" in described, described.replace("\n", " | "))
    text = _page_text(
        page,
        f"{uri}/#/experiments/{eid}/runs/{parent.info.run_id}?workflowType=machine_learning",
        workdir / "4-parent-run.png",
        "Description",
    )
    described = text[text.find("Description") :][:300]
    check(
        "parent page: the search's description",
        "wsss-tune search over demo" in described,
        described.replace("\n", " | "),
    )
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chromium", help="a Chromium executable (default: playwright's own)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mlflow-ui-check"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright  # tooling for this check only, not a dependency

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(args.workdir, port)
    try:
        _run_demo(args.workdir, uri)
        with sync_playwright() as playwright:
            # The UI formats dates with the browser's locale: C.UTF-8 gives "en-US@posix", which its
            # date code rejects ("Something went wrong").
            browser = playwright.chromium.launch(
                executable_path=args.chromium, args=BROWSER_ARGS, env={**os.environ, "LANG": "en_US.UTF-8"}
            )
            page = browser.new_page(viewport={"width": 1600, "height": 1000}, locale="en-US")
            checks = _checks(page, uri, MlflowClient(uri), args.workdir)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps(checks, indent=1))
    failed = [c["check"] for c in checks if not c["passed"]]
    print(f"{len(checks) - len(failed)} of {len(checks)} checks passed; screenshots in {args.workdir}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
