"""`wsss-tune gc` and `wsss-tune db`: keeping a long-lived search installation tidy and durable."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import wsss

log = logging.getLogger(__name__)

# Set on a cluster's head (cluster.yaml): the tracking server's database and where it is backed up.
DB_ENV, BACKUP_ENV = "WSSS_MLFLOW_DB", "WSSS_MLFLOW_BACKUP"


def add_maintenance_parsers(sub: argparse._SubParsersAction, default_storage: str) -> None:
    gc = sub.add_parser(
        "gc",
        help="remove stored stages that neither the best trials of the given experiments nor exported "
        "configs need (lists only, unless --apply)",
    )
    gc.add_argument(
        "--experiment", nargs="+", default=[], help="experiments whose best trials keep their stages"
    )
    gc.add_argument("--top", type=int, default=10, help="trials kept per experiment (default 10)")
    gc.add_argument(
        "--keep-config", type=Path, nargs="+", default=[], help="exported configs whose stages stay"
    )
    gc.add_argument("--older-than-days", type=float, help="only remove artifacts created this long ago")
    gc.add_argument(
        "--storage", default=default_storage, help=f"the searches' storage (default {default_storage})"
    )
    gc.add_argument("--store", help="stage store location (default STORAGE/store)")
    gc.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else STORAGE/mlflow.db)"
    )
    gc.add_argument("--apply", action="store_true", help="remove them (default: only list them)")

    db = sub.add_parser(
        "db",
        help="back up or restore the tracking server's sqlite database (it lives on the head's disk), or "
        "wait for the server",
    ).add_subparsers(dest="db_command", required=True)
    for name, helptext in (("backup", "copy the database to the bucket"), ("restore", "bring it back")):
        p = db.add_parser(name, help=helptext)
        p.add_argument(
            "--db",
            type=Path,
            default=os.environ.get(DB_ENV),
            required=not os.environ.get(DB_ENV),
            help=f"the server's sqlite file (default ${DB_ENV})",
        )
        p.add_argument(
            "--remote",
            default=os.environ.get(BACKUP_ENV),
            required=not os.environ.get(BACKUP_ENV),
            help=f"backup location, e.g. s3://bucket/wsss/mlflow.db (default ${BACKUP_ENV})",
        )
        if name == "restore":
            p.add_argument("--force", action="store_true", help="replace an existing database")
            p.add_argument("--missing-ok", action="store_true", help="no backup yet is not an error")
    wait = db.add_parser(
        "wait", help="wait for a tracking server to answer; fail with its log if it does not"
    )
    wait.add_argument(
        "--uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        required=not os.environ.get("MLFLOW_TRACKING_URI"),
        help="the server (default $MLFLOW_TRACKING_URI)",
    )
    wait.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (default 120)")
    wait.add_argument("--log", type=Path, help="the server's log, shown when it does not answer")


def cmd_gc(args: argparse.Namespace) -> int:
    from tuner.search.driver import local_workdir
    from tuner.tracking.results import kept_stage_keys

    if args.top < 1:
        raise wsss.ConfigError(f"--top: must be >= 1, got {args.top}")
    wsss.require_gc_rule(bool(args.experiment or args.keep_config), args.older_than_days)
    keep: set[tuple[str, str]] | None = None
    if args.experiment or args.keep_config:
        keep = wsss.config_keys(args.keep_config)
        if args.experiment:
            from mlflow.tracking import MlflowClient

            from tuner.tracking.runs import existing_tracking_uri

            client = MlflowClient(existing_tracking_uri(args.tracking_uri, local_workdir(args.storage)))
        for experiment in args.experiment:
            keep |= kept_stage_keys(client, experiment, args.top)
    location = args.store or f"{args.storage.rstrip('/')}/store"
    store = wsss.StageStore(location, cache_dir=local_workdir(args.storage) / "cache")
    removed = wsss.collect_garbage(store, keep, args.older_than_days, apply=args.apply)
    print("\n".join(wsss.describe_collected(removed, store.location, args.apply)))
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from tuner.tracking.backup import backup, restore

    if args.db_command == "wait":
        from tuner.tracking.server import wait_for_server

        seconds = wait_for_server(args.uri, args.timeout, args.log)
        print(f"the MLflow server at {args.uri} answered after {seconds:.1f} s")
        return 0
    if args.db_command == "backup":
        size = backup(args.db, args.remote)
        print(f"backed up {args.db} to {args.remote} ({size / 1e6:.1f} MB)")
    else:
        size = restore(args.remote, args.db, force=args.force, missing_ok=args.missing_ok)
        print(
            f"restored {args.db} from {args.remote} ({size / 1e6:.1f} MB)"
            if size
            else f"no backup at {args.remote}"
        )
    return 0


def backup_after_search() -> None:
    """On a cluster's head (where $WSSS_MLFLOW_DB and $WSSS_MLFLOW_BACKUP are set), back the tracking
    database up after every search, whatever its outcome; a failed backup is a warning."""
    db, remote = os.environ.get(DB_ENV), os.environ.get(BACKUP_ENV)
    if not db or not remote:
        return
    from tuner.tracking.backup import backup

    try:
        backup(Path(db), remote)
    except wsss.WsssError as exc:
        log.warning("could not back up the MLflow database: %s", wsss.user_message(exc))
