"""What a few hundred hostile bytes cost: seconds, peak memory and error-line length of `wsss` and
`wsss-tune` on the inputs of the held-out drill that used to amplify (issue 20).

    python tests/benchmarks/bench_hostile_inputs.py [--root OTHER_CHECKOUT]

Each case runs in a fresh interpreter (peak memory is its own, from wait4); `--root` runs another
checkout's code (e.g. a worktree of an earlier commit) on the same inputs, for before/after tables.
The CLI's own start (torch is imported) is measured too, as the baseline the cases add to.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from wsss.data.synth import SynthSpec, generate


class _DeclaresAHugeArray:
    def __reduce__(self) -> tuple[object, tuple[tuple[int]]]:
        return np.ndarray, ((200_000_000,),)  # 1.6 GB of float64 from a 956-byte file


def _label_file(work: Path) -> list[str]:
    data = generate(SynthSpec(train=12, val=6, size=64, classes=3, seed=7), work / "labels")
    ids = (data / "ImageSets/Segmentation/train.txt").read_text().split()
    table: dict[str, object] = {i: np.array([1, 0, 0], np.float32) for i in ids}
    table[ids[0]] = _DeclaresAHugeArray()
    np.save(data / "cls_labels.npy", table, allow_pickle=True)
    return ["wsss", "-q", "eval", str(work), "--data", str(data)]


def _alias_bomb(work: Path) -> list[str]:
    parts = ['&x0 ["x","x","x","x","x","x","x","x","x"]']
    parts += [f"&x{i} [" + ",".join([f"*x{i - 1}"] * 9) + "]" for i in range(1, 7)]
    (work / "bomb.yaml").write_text("refine:\n  beta: [" + ", ".join(parts) + "]\n")  # 318 bytes
    return ["wsss", "-q", "config", "show", str(work / "bomb.yaml")]


def _long_line(work: Path) -> list[str]:
    (work / "long.yaml").write_text("seed: {scales: [" + "1.0," * 2_000_000 + "1.0]}\n")  # 8 MB
    return ["wsss", "-q", "config", "show", str(work / "long.yaml")]


def _choices(count: int) -> Callable[[Path], list[str]]:
    def setup(work: Path) -> list[str]:
        space = {
            "method": "cam",
            "params": {"refine.beta": {"categorical": [float(i + 1) for i in range(count)]}},
        }
        (work / f"choices{count}.yaml").write_text(yaml.safe_dump(space))
        return ["wsss-tune", "spaces", "check", "--quiet", str(work / f"choices{count}.yaml")]

    return setup


CASES: dict[str, Callable[[Path], list[str]]] = {
    "CLI start (wsss methods)": lambda work: ["wsss", "methods"],
    "956-byte cls_labels.npy declaring 1.6 GB": _label_file,
    "318-byte YAML of nested aliases": _alias_bomb,
    "8 MB config on one line": _long_line,
    "spaces check, 1000 categorical choices": _choices(1000),
    "spaces check, 5000 categorical choices": _choices(5000),
}
_MODULES = {"wsss": "wsss.cli", "wsss-tune": "tuner.cli.main"}


def _measure(argv: list[str], root: Path, timeout: float) -> tuple[int, float, float, int]:
    """(exit status, seconds, peak MB, characters on stderr) of one run in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", _MODULES[argv[0]], *argv[1:]],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            cwd=root,
        )
        deadline = time.monotonic() + timeout
        while (status := os.wait4(process.pid, os.WNOHANG))[0] == 0:
            if time.monotonic() > deadline:
                process.kill()
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status[1])
        err.seek(0)
        return (
            process.returncode,
            seconds,
            status[2].ru_maxrss / 1024,
            len(err.read().decode(errors="replace")),
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", type=Path, default=Path(__file__).resolve().parents[2], help="checkout to run"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per case before it is killed")
    args = parser.parse_args()
    print(f"code: {args.root}")
    print("| case | exit | seconds | peak MB | stderr characters |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, setup in CASES.items():
            work = Path(tmp) / name.replace(" ", "_").replace(",", "")
            work.mkdir()
            code, seconds, peak, err = _measure(setup(work), args.root.resolve(), args.timeout)
            print(f"| {name} | {code} | {seconds:.1f} | {peak:.0f} | {err} |", flush=True)


if __name__ == "__main__":
    main()
