"""`wsss-tune`: hyperparameter searches over the whole WSSS pipeline (Ray Tune + Optuna + MLflow)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console as _Console
from rich.table import Table

import wsss
from tuner.cli.maintenance import add_maintenance_parsers, backup_after_search, cmd_db, cmd_gc
from tuner.cli.node import add_node_parsers, cmd_spot_watch
from tuner.options import add_options, from_namespace
from tuner.search.options import DEFAULT_STORAGE, SEARCHERS, SearchOptions


def Console(stderr: bool = False) -> _Console:
    """rich's console, wide enough for our tables when writing to a file or a pipe."""
    console = _Console(stderr=stderr)
    return console if console.is_terminal else _Console(stderr=stderr, width=200)


log = logging.getLogger("tuner")
_MAX_PROBLEMS = 50  # error lines printed at most (a space file can hold thousands of mistakes)


def _tracking_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True, help="MLflow experiment name")
    p.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help=f"where the search kept its files (default {DEFAULT_STORAGE})",
    )
    p.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else STORAGE/mlflow.db)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsss-tune", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "search", help="run a search; every trial is a full seed -> refine -> segment pipeline"
    )
    add_options(s, SearchOptions)

    report = sub.add_parser("report", help="Optuna analysis of an experiment's study (PNG and HTML)")
    _tracking_args(report)
    report.add_argument("--out", type=Path, help="folder for the plots (default wsss-report-EXPERIMENT)")

    board = sub.add_parser("leaderboard", help="rank an experiment's trials (from MLflow)")
    _tracking_args(board)
    board.add_argument("--top", type=int, help="rows to show (per method with --by method)")
    board.add_argument("--by", choices=["method"], help="rank within each seed method")
    board.add_argument(
        "--all-attempts",
        action="store_true",
        help="also list earlier attempts of resumed or retried trials (default: one row per trial)",
    )
    board.add_argument("--format", default="table", choices=["table", "csv", "parquet", "json"])
    board.add_argument("--out", type=Path, help="write to this file instead of the terminal")

    export = sub.add_parser("export", help="write a trial's config as YAML for `wsss run`")
    _tracking_args(export)
    export.add_argument(
        "--rank", type=int, default=1, help="leaderboard rank among finished trials (default 1)"
    )
    export.add_argument("--run-id", help="export this trial run instead (any row of the leaderboard)")
    export.add_argument("--out", type=Path, required=True)

    resume = sub.add_parser("resume", help="continue an interrupted search (searcher state included)")
    _tracking_args(resume)

    add_maintenance_parsers(sub, DEFAULT_STORAGE)
    add_node_parsers(sub)

    demo = sub.add_parser("demo", help="a small local search on synthetic data, start to finish")
    demo.add_argument(
        "--workdir", type=Path, default=Path("wsss-demo"), help="where it all goes (default ./wsss-demo)"
    )
    demo.add_argument("--samples", type=int, default=6, help="trials (default 6)")
    demo.add_argument("--concurrency", type=int, default=2, help="trials at once (default 2)")
    demo.add_argument("--train", type=int, default=200, help="synthetic train images (default 200)")
    demo.add_argument("--val", type=int, default=50, help="synthetic val images (default 50)")
    demo.add_argument("--size", type=int, default=128, help="synthetic image size (default 128)")
    demo.add_argument(
        "--searcher", choices=SEARCHERS, default="asha", help="asha (default) or staged (docs/search.md)"
    )
    demo.add_argument("--budget", help="staged searcher: the stage compute to spend (4h, 30m, 12x)")

    spaces = sub.add_parser("spaces", help="search-space files").add_subparsers(
        dest="spaces_command", required=True
    )
    check = spaces.add_parser("check", help="validate space files, naming file and key of every problem")
    check.add_argument("files", nargs="*", type=Path, help="default: search_spaces/*.yaml")
    check.add_argument(
        "--config", help="base config the spaces will override (preset or YAML file; default: the defaults)"
    )
    check.add_argument(
        "--strict", action="store_true", help="fail on ranges that cannot give the base config's value"
    )
    check.add_argument("--quiet", action="store_true", help="only problems and warnings, not the ranges")
    return parser


def _cell(column: str, value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and column != "compute_seconds":
        return f"{value:.4f}"
    return str(value)


def _print_leaderboard(rows: list[dict[str, object]], title: str) -> None:
    from tuner.tracking.results import TABLE_COLUMNS

    table = Table(title=title)
    for column in TABLE_COLUMNS:
        left = column in ("trial", "method", "status", "stages_reused")
        table.add_column(column, justify="left" if left else "right")
    for row in rows:
        table.add_row(*(_cell(c, row[c]) for c in TABLE_COLUMNS))
    Console().print(table)


def _summary(uri: str, experiment: str) -> None:
    from mlflow.tracking import MlflowClient

    from tuner.tracking.analysis import reuse_counts
    from tuner.tracking.results import leaderboard
    from tuner.tracking.ui import experiment_links

    client = MlflowClient(uri)
    rows = leaderboard(client, experiment)
    spent = sum(r["compute_seconds"] for r in rows)
    full = sum(r["compute_seconds_without_reuse"] for r in rows)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("finished", "pruned", "failed")}
    _print_leaderboard(
        rows[:10],
        f"{experiment}: {counts['finished']} finished, {counts['pruned']} pruned, {counts['failed']} failed",
    )
    if full > 0:
        saved = f"{full:.0f} s without reuse ({100 * (1 - spent / full):.0f}% saved by reusing stages)"
        print(f"stage compute: {spent:.0f} s spent; {saved}")
    else:  # a staged search's jobs compute only what their rung lacks: there is no "without reuse"
        print(f"stage compute: {spent:.0f} s spent")
    reused, total = reuse_counts(rows)
    print(f"{reused} of {total} trials reused at least one finished stage")
    for link in experiment_links(client, experiment):
        print(f"in MLflow's UI: {link}")


def _cmd_search(args: argparse.Namespace) -> int:
    from tuner.search.driver import local_workdir, run_search
    from tuner.tracking.runs import resolve_tracking_uri

    options = from_namespace(SearchOptions, args)
    run_search(options)
    uri = resolve_tracking_uri(args.tracking_uri, local_workdir(args.storage))
    _summary(uri, args.experiment)
    return 0


def _client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    from tuner.search.driver import local_workdir
    from tuner.tracking.runs import existing_tracking_uri

    return MlflowClient(existing_tracking_uri(args.tracking_uri, local_workdir(args.storage)))


def _output_file(out: Path | None, option: str = "--out") -> None:
    """A file the command will write: its folder must exist (checked before MLflow is read)."""
    if out is None:
        return
    if out.is_dir():
        raise wsss.ConfigError(f"{option} {out}: is a folder; give a file name")
    if not out.absolute().parent.is_dir():
        raise wsss.ConfigError(f"{option} {out}: the folder {out.absolute().parent} does not exist")


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from tuner.tracking.results import leaderboard, write_leaderboard

    if args.top is not None and args.top < 1:
        raise wsss.ConfigError(f"--top: must be >= 1, got {args.top}")
    _output_file(args.out)
    rows = leaderboard(
        _client(args), args.experiment, top=args.top, by=args.by, all_attempts=args.all_attempts
    )
    if args.format == "table":
        _print_leaderboard(rows, f"{args.experiment}" + (" by method" if args.by else ""))
        if args.out:
            write_leaderboard(rows, "csv", args.out)
        return 0
    text = write_leaderboard(rows, args.format, args.out)
    if text is not None:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from tuner.tracking.analysis import report

    written, fidelity = report(_client(args), args.experiment, args.storage, args.out)
    for path in written:
        print(path)
    staged = any(k.startswith("rung_fidelity_") for k in fidelity)
    heading = (
        "rung fidelity (Spearman with the next rung)"
        if staged
        else "proxy fidelity (Spearman with the final metric)"
    )
    print(f"{heading}: " + ", ".join(f"{k} {v:.2f}" for k, v in fidelity.items()))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from tuner.tracking.results import export_config

    _output_file(args.out)
    provenance = export_config(_client(args), args.experiment, args.rank, args.out, run_id=args.run_id)
    value = provenance["value"]
    score = f"{provenance['metric']} {value:.4f}" if value is not None else provenance["status"]
    print(f"wrote {args.out}: trial {provenance['trial']} ({score}); run it with: wsss run {args.out}")
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    from tuner.search.driver import local_workdir
    from tuner.search.resume import resume_search
    from tuner.tracking.runs import resolve_tracking_uri

    resume_search(args.experiment, args.tracking_uri, args.storage)
    _summary(resolve_tracking_uri(args.tracking_uri, local_workdir(args.storage)), args.experiment)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from tuner.cli.demo import demo_options
    from tuner.search.driver import local_workdir, run_search
    from tuner.tracking.results import export_config
    from tuner.tracking.runs import resolve_tracking_uri

    spec = wsss.SynthSpec(train=args.train, val=args.val, size=args.size, classes=6, seed=0)
    options = demo_options(
        args.workdir, args.samples, args.concurrency, spec, searcher=args.searcher, budget=args.budget
    )
    run_search(options)
    uri = resolve_tracking_uri(None, local_workdir(options.storage))
    _summary(uri, options.experiment)
    from mlflow.tracking import MlflowClient

    best = args.workdir / "best.yaml"
    provenance = export_config(MlflowClient(uri), options.experiment, 1, best)
    print(f"\nbest trial {provenance['trial']}: val mIoU {provenance['value']:.4f}, exported to {best}")
    print(f"reproduce it:   wsss run {best} --data {options.data} --workdir {options.storage}")
    print(
        f"leaderboard:    wsss-tune leaderboard --experiment {options.experiment} --storage {options.storage}"
    )
    return 0


def _cmd_spaces_check(args: argparse.Namespace) -> int:
    from tuner.search.driver import base_settings
    from tuner.spaces.check import check, render
    from tuner.spaces.ranges import Base

    files = args.files or sorted(Path("search_spaces").glob("*.yaml"))
    if not files:
        print("wsss-tune: error: no space files given and none in ./search_spaces", file=sys.stderr)
        return 2
    report = check(files, Base(base_settings(args.config)))
    if not args.quiet:
        for line in render(report, args.config or "the defaults"):
            print(line)
    sys.stdout.flush()
    for line in report.problems + report.warnings:
        print(line, file=sys.stderr)
    sys.stderr.flush()
    problems, warnings = len(report.problems), len(report.warnings)
    print(
        f"{len(files)} file(s) checked, {problems} problem(s), {warnings} range(s) excluding the base value"
    )
    return 1 if problems or (args.strict and warnings) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("PIL", "urllib3", "alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    commands = {
        "search": _cmd_search,
        "leaderboard": _cmd_leaderboard,
        "export": _cmd_export,
        "report": _cmd_report,
        "resume": _cmd_resume,
        "demo": _cmd_demo,
        "gc": cmd_gc,
        "db": cmd_db,
        "spaces": _cmd_spaces_check,
        "spot-watch": cmd_spot_watch,
    }
    try:
        if args.command in ("search", "resume"):
            try:
                code = commands[args.command](args)
            finally:
                backup_after_search()
        else:
            code = commands[args.command](args)
        sys.stdout.flush()  # a closed pipe fails here, inside the handlers below
        return code
    except wsss.WsssError as exc:
        lines = getattr(exc, "problems", None) or [wsss.user_message(exc)]
        for line in lines[:_MAX_PROBLEMS]:
            print(f"wsss-tune: error: {wsss.bounded(str(line))}", file=sys.stderr)
        if len(lines) > _MAX_PROBLEMS:
            print(f"wsss-tune: error: ... and {len(lines) - _MAX_PROBLEMS} more problem(s)", file=sys.stderr)
        return getattr(exc, "exit_status", 2)
    except BrokenPipeError:  # `wsss-tune leaderboard ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except OSError as exc:  # the machine's fault (a full or read-only disk): say where, exit 1
        print(f"wsss-tune: error: {wsss.user_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("wsss-tune: interrupted; continue with `wsss-tune resume --experiment NAME`", file=sys.stderr)
        return 130
    except Exception as exc:
        tracking = sys.modules.get("mlflow.exceptions")  # loaded only by commands that use MLflow
        if tracking is None or not isinstance(exc, tracking.MlflowException):
            raise
        # The tracking server or database failed (unreachable, refused the request): not the input.
        print(f"wsss-tune: error: MLflow: {wsss.user_message(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
