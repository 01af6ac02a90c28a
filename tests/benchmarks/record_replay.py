"""Record the replay benchmark's table: every pipeline of a factorial design run for real, once.

python tests/benchmarks/record_replay.py [--out tests/benchmarks/replay/synthetic] [--workdir DIR]
    [--max-pipelines N] [--threads 2] [--data DIR] [design options on the first call]

On a real dataset (`--data DIR --preset NAME` on the first call; later calls need --data again), the
base config is the preset's and the design names the folder; e.g. the msrc table:
    python tests/benchmarks/record_replay.py --out tests/benchmarks/replay/msrc --data ../shared/msrc \
        --preset msrc --methods cam seam --per-method 2 --refines 2 --segments 2 --repeats 1 \
        --short-epochs 1 4 --workdir /tmp/record-msrc

The first call writes OUT/design.json (tuner.replay.design: seed configs stratified over the methods,
defaults first, x refine configs x segment configs, plus repeats at other rng_seeds). Every call then
runs the design's pipelines that OUT/rows.jsonl does not hold yet, in design order (a seed config's
pipelines together, so the stage store computes each seed and refine stage once), appending one line
per pipeline as it finishes: stop it at any point and run it again to go on. Each row holds CAM,
pseudo-mask and DeepLab mIoU, DeepLab's val mIoU on the two halves of val (`search`: what a trial
reports; `report`: what no search sees), the same for DeepLab at the design's short schedules, and
every stage's compute seconds. Run it alone on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import wsss
from tuner.replay.design import Design, make_design, val_halves
from tuner.spaces.ranges import Base
from tuner.spaces.space import SpaceError, load_search

ROOT = Path(__file__).resolve().parents[2]
SPACES = ROOT / "search_spaces"
METHODS = ("cam", "mixup", "fmix", "manifold_mixup", "seam", "cpn")
# Short schedules on small images, so that a pipeline costs tens of CPU seconds; DeepLab's full
# schedule is 9 epochs so that 1/9 and 1/3 of it are whole epochs.
BASE: dict[str, Any] = {
    "seed": {"train": {"epochs": 6, "batch_size": 8, "crop_size": 96, "resize_long": [80, 112]}},
    "refine": {"train": {"epochs": 2, "batch_size": 8, "crop_size": 96, "resize_long": [80, 112]}},
    "segment": {"train": {"epochs": 9, "batch_size": 8, "crop_size": 96, "resize_long": [80, 112]}},
}

log = logging.getLogger("record_replay")


def views(data_dir: Path, work: Path) -> dict[str, Path]:
    """Two dataset folders sharing `data_dir`'s files whose val split is one half of its val images
    (tuner.replay.design.val_halves): the pipeline predicts all of val once, each half is scored on its
    own view."""
    ids = (data_dir / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    out = {}
    for half, half_ids in val_halves(ids).items():
        root = work / "views" / half
        if not root.exists():
            (root / "ImageSets" / "Segmentation").mkdir(parents=True)
            for entry in data_dir.iterdir():
                if entry.name != "ImageSets":
                    (root / entry.name).symlink_to(entry.absolute())
            shutil.copy(
                data_dir / "ImageSets" / "Segmentation" / "train.txt", root / "ImageSets" / "Segmentation"
            )
            (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(half_ids) + "\n")
        out[half] = root
    return out


class Recorder:
    def __init__(self, design: Design, work: Path, threads: int, data_dir: Path | None) -> None:
        self.design, self.work, self.threads = design, work, threads
        meta = design.meta
        self.base = meta["base"]
        self.search = load_search([SPACES / f for f in meta["space_files"]], Base(self.base))
        if "folder" in meta["data"]:  # a real dataset, named by its folder: --data gives where it is
            if data_dir is None or data_dir.name != meta["data"]["folder"]:
                raise SystemExit(
                    f"record_replay.py: this table is of {meta['data']['folder']!r}: give its --data"
                )
            self.data_dir = data_dir
        else:
            self.data_dir = work / "data"
            if not self.data_dir.exists():
                wsss.generate_synthetic(wsss.SynthSpec(**meta["data"]), self.data_dir)
        self.cache = work / "cache"
        self.store = wsss.StageStore(str(work / "store"), cache_dir=self.cache)
        first = self.config(design.pipelines[0], 0)
        self.data = wsss.prepare_dataset(first, self.data_dir, self.cache)
        self.halves = {
            h: wsss.open_dataset(root, first.data, self.cache)
            for h, root in views(self.data_dir, work).items()
        }

    def config(self, pipeline: tuple[str, str, str], rng_seed: int, epochs: int | None = None) -> Any:
        overrides = self.search.overrides(self.design.params(*pipeline))
        overrides |= {"rng_seed": rng_seed, "runtime.threads": self.threads, "runtime.progress": False}
        if epochs is not None:
            overrides["segment.train.epochs"] = epochs
        return wsss.load_config(self.base, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])

    def scored(self, outcome: Any) -> dict[str, float]:
        return {h: wsss.evaluate_masks(outcome.path, data, "val").miou for h, data in self.halves.items()}

    def row(self, pipeline: tuple[str, str, str], rng_seed: int) -> dict[str, Any]:
        result = wsss.run_pipeline(self.config(pipeline, rng_seed), self.data, self.store)
        metrics = result.metrics()
        row: dict[str, Any] = {
            "pipeline": list(pipeline),
            "rng_seed": rng_seed,
            "metrics": {k: metrics.get(k) for k in ("cam_miou", "cam_miou_best", "pseudo_miou", "val_miou")},
            "val": self.scored(result.stages["segment"]),
            "compute": {name: o.compute_seconds for name, o in result.stages.items()},
            "short": {},
        }
        for epochs in self.design.short_epochs:
            short = wsss.run_pipeline(self.config(pipeline, rng_seed, epochs), self.data, self.store)
            segment = short.stages["segment"]
            row["short"][str(epochs)] = {"val": self.scored(segment), "compute": segment.compute_seconds}
        return row


def extended(design: Design, seeds: int) -> Design:
    """`design` with every pipeline repeated at rng_seeds 1..`seeds` (the repeats it has stay first), so
    that every pipeline's true quality is a mean over the same number of training draws."""
    repeats = list(design.repeats)
    for rng_seed in range(1, seeds + 1):
        repeats += [(*p, rng_seed) for p in design.pipelines if (*p, rng_seed) not in repeats]
    return Design(**{**design.__dict__, "repeats": repeats})


def done_keys(rows: Path) -> set[tuple[str, str, str, int]]:
    if not rows.exists():
        return set()
    keys = set()
    for line in rows.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            keys.add((*row["pipeline"], row["rng_seed"]))
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "benchmarks" / "replay" / "synthetic")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/record-replay"))
    parser.add_argument("--max-pipelines", type=int, default=None, help="stop after this many new rows")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--per-method", type=int, default=3)
    parser.add_argument("--refines", type=int, default=3)
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument(
        "--repeat-all",
        type=int,
        default=0,
        metavar="K",
        help="extend the design: every pipeline also at rng_seeds 1..K (the rows recorded stay)",
    )
    parser.add_argument("--data", type=Path, default=None, help="a real dataset (default: synthetic)")
    parser.add_argument("--preset", default=None, help="base config preset for --data, e.g. msrc")
    parser.add_argument("--short-epochs", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--train", type=int, default=80)
    parser.add_argument("--val", type=int, default=60)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    design_file, rows_file = args.out / "design.json", args.out / "rows.jsonl"
    if design_file.exists():
        design = Design.load(design_file)
    else:
        files = [f"{m}.yaml" for m in args.methods]
        try:  # a bad preset or space is answered before anything is written
            base = wsss.config_source(args.preset) if args.preset else BASE
            search = load_search([SPACES / f for f in files], Base(base))
        except (wsss.ConfigError, SpaceError) as exc:
            raise SystemExit(f"record_replay.py: {exc}") from None
        design = make_design(
            search,
            Base(base),
            per_method=args.per_method,
            refines=args.refines,
            segments=args.segments,
            repeats=args.repeats,
            short_epochs=args.short_epochs,
        )
        data: dict[str, Any] = (
            {"folder": args.data.name}
            if args.data
            else {"train": args.train, "val": args.val, "size": args.size, "seed": 0}
        )
        design = Design(**{**design.__dict__, "meta": {"space_files": files, "base": base, "data": data}})
        args.out.mkdir(parents=True, exist_ok=True)
        design.save(design_file)
    if args.repeat_all:
        design = extended(design, args.repeat_all)
        design.save(design_file)
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    recorder = Recorder(design, args.workdir, args.threads, args.data)
    todo = [(*p, 0) for p in design.pipelines] + list(design.repeats)
    done = done_keys(rows_file)
    made = 0
    for s, r, g, rng_seed in todo:
        if (s, r, g, rng_seed) in done or (args.max_pipelines is not None and made >= args.max_pipelines):
            continue
        start = time.time()
        row = recorder.row((s, r, g), rng_seed)
        with rows_file.open("a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        made += 1
        log.info(
            "%s/%s/%s rng %d: val %.3f (%.0f s)",
            s,
            r,
            g,
            rng_seed,
            row["metrics"]["val_miou"],
            time.time() - start,
        )
    log.info("%d new rows; %d of %d recorded", made, len(done) + made, len(todo))


if __name__ == "__main__":
    main()
