"""`wsss`: run the pipeline, make synthetic data, evaluate masks, show configs, list methods."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console as _Console
from rich.table import Table

from wsss.errors import ConfigError, WsssError, user_message


def Console(stderr: bool = False) -> _Console:
    """rich's console, wide enough for our tables when writing to a file or a pipe."""
    console = _Console(stderr=stderr)
    return console if console.is_terminal else _Console(stderr=stderr, width=200)


log = logging.getLogger("wsss")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config file or preset name (default: built-in defaults)")
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config values by dotted key, e.g. --set seed.train.lr=0.05 refine.beta=10",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsss", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="synthetic data and caches (default: ~/.cache/wsss)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run seed -> refine -> segment -> evaluate, reusing stored stages")
    _add_config_args(run)
    run.add_argument(
        "--data", type=Path, help="VOC-layout dataset folder (default: the embedded synthetic benchmark)"
    )
    run.add_argument(
        "--workdir", type=Path, default=Path("wsss-work"), help="working folder (default: ./wsss-work)"
    )
    run.add_argument(
        "--store",
        help="stage store: a folder or a pyarrow.fs URI such as s3://bucket/prefix (default: WORKDIR/store)",
    )
    run.add_argument(
        "--json", action="store_true", help="print one JSON object with the metrics as the last line"
    )
    run.add_argument(
        "--allow-other-data",
        action="store_true",
        help="run an exported config on data other than the trial's (its fingerprint differs)",
    )

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="write the synthetic benchmark in VOC layout")
    synth.add_argument("out_dir", type=Path)
    synth.add_argument("--train", type=int, default=400, help="train images (default 400)")
    synth.add_argument("--val", type=int, default=100, help="val images (default 100)")
    synth.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    synth.add_argument("--classes", type=int, default=6, help="object classes (default 6)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--size-jitter", type=float, default=0.0, help="vary each side by up to this fraction (non-square)"
    )
    synth.add_argument(
        "--variants",
        type=int,
        default=1,
        help="coats per class, hidden sub-categories recorded in variants.json (default 1: none; at most 4)",
    )
    synth.add_argument(
        "--one-class",
        action="store_true",
        help="one class and one coat per image (all objects share the first one's): coats separate a class",
    )

    ev = sub.add_parser("eval", help="mIoU of a folder of <id>.png masks against the ground truth")
    ev.add_argument("pred_dir", type=Path)
    ev.add_argument("--data", type=Path, help="VOC-layout dataset folder (default: the synthetic benchmark)")
    ev.add_argument("--split", default="val", help="split to score (default val)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    _add_config_args(ev)

    config = sub.add_parser("config", help="configs").add_subparsers(dest="config_command", required=True)
    show = config.add_parser("show", help="print the resolved config as YAML")
    _add_config_args(show)

    sub.add_parser("methods", help="list the seed (CAM) methods")

    store = sub.add_parser("store", help="the stage store").add_subparsers(
        dest="store_command", required=True
    )
    clean = store.add_parser(
        "clean", help="remove what builds that did not finish left behind (never a published artifact)"
    )
    clean.add_argument(
        "--workdir", type=Path, default=Path("wsss-work"), help="working folder (default: ./wsss-work)"
    )
    clean.add_argument("--store", help="stage store folder or URI (default: WORKDIR/store)")
    clean.add_argument(
        "--older-than-hours",
        type=float,
        default=48.0,
        help="on object stores, also remove unpublished attempts started this long ago (default 48)",
    )
    clean.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    gc = store.add_parser(
        "gc",
        help="remove published stages that exported configs do not need, or old ones (lists only, "
        "unless --apply); `wsss-tune gc` also keeps what the best trials of experiments need",
    )
    gc.add_argument(
        "--workdir", type=Path, default=Path("wsss-work"), help="working folder (default ./wsss-work)"
    )
    gc.add_argument("--store", help="stage store folder or URI (default: WORKDIR/store)")
    gc.add_argument(
        "--keep-config", type=Path, nargs="+", default=[], help="exported configs whose stages stay"
    )
    gc.add_argument("--older-than-days", type=float, help="only remove artifacts created this long ago")
    gc.add_argument("--apply", action="store_true", help="remove them (default: only list them)")
    return parser


def _stage_table(summary: dict[str, Any], metrics: dict[str, float]) -> Table:
    table = Table(title="wsss run")
    for column in ("stage", "metric", "value", "seconds", "cached", "key"):
        table.add_column(column, justify="right" if column in ("value", "seconds") else "left")
    headline = {"seed": ("cam_miou_best", "cam_miou"), "refine": ("pseudo_miou",), "segment": ("val_miou",)}
    for stage, info in summary["stages"].items():
        for i, metric in enumerate(headline[stage]):
            first = i == 0
            table.add_row(
                stage if first else "",
                metric,
                f"{metrics.get(metric, float('nan')):.4f}",
                f"{info['seconds']:.1f}" if first else "",
                ("yes" if info["cached"] else "no") if first else "",
                info["key"] if first else "",
            )
    return table


def _cmd_run(args: argparse.Namespace, cache_dir: Path) -> int:
    from wsss.config_load import load_config

    overrides = [*args.overrides, "runtime.progress=false"] if args.quiet else args.overrides
    cfg = load_config(args.config, overrides)  # config mistakes are reported before torch is imported

    from wsss import StageStore, prepare_dataset, run_pipeline
    from wsss.provenance import check_same_data, data_location, recorded_data

    recorded = recorded_data(args.config) if args.config is not None else None
    data = prepare_dataset(cfg, data_location(recorded, args.data), cache_dir)
    check_same_data(recorded, data, args.allow_other_data)
    store = StageStore(args.store or args.workdir / "store", cache_dir=args.workdir / "cache")
    log.info(
        "data %s (%d train, %d val, %d classes); store %s",
        data.root,
        len(data.train_ids),
        len(data.val_ids),
        data.num_classes,
        store.location,
    )
    result = run_pipeline(cfg, data, store)
    summary = result.summary()
    console = Console(stderr=args.json)
    console.print(_stage_table(summary, result.metrics()))
    if args.json:
        from wsss.metrics import strict_json

        print(strict_json(summary), flush=True)
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from wsss.data.synth import SynthSpec, generate

    spec = SynthSpec(
        args.train,
        args.val,
        args.size,
        args.classes,
        args.seed,
        args.size_jitter,
        args.variants,
        args.one_class,
    )
    out = generate(spec, args.out_dir)
    print(f"wrote {spec.train} train and {spec.val} val images ({spec.classes} classes) to {out}")
    return 0


def _cmd_eval(args: argparse.Namespace, cache_dir: Path) -> int:
    from wsss import evaluate_masks, load_config
    from wsss.data.synth import ensure_cached
    from wsss.data.voc import open_dataset

    cfg = load_config(args.config, args.overrides)
    root = args.data if args.data is not None else ensure_cached(cfg.data.synthetic, cache_dir / "data")
    data = open_dataset(root, cfg.data, cache_dir, extra_splits=(args.split,))
    scores = evaluate_masks(args.pred_dir, data, args.split)
    names = ("background", *data.class_names)
    if args.json:
        from wsss.metrics import strict_json

        print(
            strict_json(
                {"miou": scores.miou, "iou": dict(zip(names, scores.iou, strict=True)), "split": args.split}
            )
        )
        return 0
    table = Table(title=f"{args.pred_dir} vs {data.root} ({args.split})")
    table.add_column("class")
    table.add_column("IoU", justify="right")
    for name, iou in zip(names, scores.iou, strict=True):
        table.add_row(name, "-" if iou is None else f"{iou:.4f}")
    table.add_row("mIoU", f"{scores.miou:.4f}", style="bold")
    Console().print(table)
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    from wsss.config_load import dump_config, load_config

    print(dump_config(load_config(args.config, args.overrides)), end="")
    return 0


def _cmd_store_clean(args: argparse.Namespace) -> int:
    from wsss.store import StageStore

    if not args.older_than_hours >= 0:  # also refuses nan
        raise ConfigError(f"--older-than-hours: must be >= 0, got {args.older_than_hours}")
    store = StageStore(args.store or args.workdir / "store", cache_dir=args.workdir / "cache")
    removed = store.clean(args.older_than_hours * 3600, dry_run=args.dry_run)
    for path in removed:
        print(("would remove " if args.dry_run else "removed ") + path)
    print(f"{len(removed)} leftover(s) of unfinished builds in {store.location}")
    return 0


def _cmd_store_gc(args: argparse.Namespace) -> int:
    from wsss.retention import collect_garbage, config_keys, describe, require_rule
    from wsss.store import StageStore

    require_rule(bool(args.keep_config), args.older_than_days)
    keep = config_keys(args.keep_config) if args.keep_config else None
    store = StageStore(args.store or args.workdir / "store", cache_dir=args.workdir / "cache")
    removed = collect_garbage(store, keep, args.older_than_days, apply=args.apply)
    print("\n".join(describe(removed, store.location, args.apply)))
    return 0


def _cmd_methods() -> int:
    from wsss.methods import get, list_methods

    for name in list_methods():
        print(f"{name:16s} {get(name).description}")
    return 0


def _dispatch(args: argparse.Namespace, cache_dir: Path) -> int:
    if args.command == "run":
        return _cmd_run(args, cache_dir)
    if args.command == "data":
        return _cmd_synth(args)
    if args.command == "eval":
        return _cmd_eval(args, cache_dir)
    if args.command == "config":
        return _cmd_config_show(args)
    if args.command == "store":
        return _cmd_store_gc(args) if args.store_command == "gc" else _cmd_store_clean(args)
    return _cmd_methods()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("PIL").setLevel(logging.WARNING)
    from wsss.pipeline import default_cache_dir

    cache_dir = args.cache_dir or default_cache_dir()
    try:
        code = _dispatch(args, cache_dir)
        sys.stdout.flush()  # a closed pipe fails here, inside the handlers below
        return code
    except WsssError as exc:
        print(f"wsss: error: {user_message(exc)}", file=sys.stderr)
        return getattr(exc, "exit_status", 2)
    except BrokenPipeError:  # `wsss methods | head -1`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except OSError as exc:  # the machine's fault (a full or read-only disk): say where, exit 1
        print(f"wsss: error: {user_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("wsss: interrupted; stages that did not finish were not published", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
