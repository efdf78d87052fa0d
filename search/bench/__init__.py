"""``make bench``: does tricktune's machinery cost or save time, and do its early stops decide on evidence?

Every figure compares two things measured *side by side in the same run*, never against
a stored number, because on a shared 2-core machine the absolute speed swings
several-fold from one minute to the next (one 2,000-image ResNet-20 epoch took 5 s and,
minutes later, 72 s). One module per figure; how each stays side by side:

1. loop      fit()'s in-memory batches vs a plain DataLoader loop, images/s; goal >= 1.0x
             (loop.py). Rounds of A B C, the order reversed every other round; median of
             per-round ratios.
2. overhead  a trial-epoch inside a search (run_search: Ray Tune + Optuna + MLflow) vs fit()
             alone; goal <= 1.05x (overhead.py). The fit() twin runs *during* the trial, one
             core each, so outside load hits both; Ray's own daemons' CPU is measured and added back.
3. search    ASHA + TPE vs random search run to the end, with the default rung design
             (rungs.py); goal >= 3x fewer trial-epochs to a near-best config.
4. packing   trial-epochs per minute, 2 trials x 1 thread at once vs 1 trial x 2 threads at a
             time (and 2 x 2, oversubscribed); rounds as in 1 (packing.py).
5. gpu       with CUDA: ResNet-50 224 px bf16 images/s vs NVIDIA's A100 reference, and a
             CIFAR-10-size ResNet-18 epoch; without: "GPU: skipped (no CUDA device)" (gpu.py,
             whose own command is ``make bench-gpu``).
6. fidelity  the default space's first rung against the final ranking, Spearman over 8
             configurations x 2 seeds run to the end, with the noise floor
             (rungs.py, search/tools/fidelity.py); goal >= 0.7.
7. cache     image folders decoded once into tricktune's cache vs torchvision ImageFolder +
             DataLoader on a generated CUB-shaped folder, images/s delivered to the loop;
             goal >= 5x (cache.py). Rounds as in 1.

Usage: ``python -m search.bench [--quick] [--only NAME]`` (``make bench``); it writes the
table to ``reports/bench.md``, under one line naming the machine, date, commit and command,
and prints the load average (other jobs slow every figure). ``--quick`` runs seconds-long
versions that check the code, not the speed. No figure is a timed unit test; a figure that
misses its goal says FALL SHORT.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable

import torch

from search.bench.cache import bench_cache
from search.bench.common import CORES, Figure, load, say, stop_ray, table
from search.bench.gpu import bench_gpu
from search.bench.loop import bench_loop
from search.bench.overhead import bench_overhead
from search.bench.packing import bench_packing
from search.bench.rungs import bench_fidelity, bench_search
from spaces import PROJECT_ROOT

REPORT_PATH = str(PROJECT_ROOT / "reports" / "bench.md")

# Ray-free figures first: Ray's background processes would add noise to their timings.
BENCHES: dict[str, Callable[[bool], list[Figure]]] = {
    "loop": bench_loop, "cache": bench_cache, "packing": bench_packing, "gpu": bench_gpu, "overhead": bench_overhead,
    "search": bench_search, "fidelity": bench_fidelity}


def provenance(argv: list[str]) -> str:
    """One line: the machine, the date (UTC), the git commit and the command that measured a table."""
    from search.records import git_commit

    commit = git_commit()  # the full sha, "-dirty" when tracked files differ from it, or "unknown"
    short = commit if commit == "unknown" else commit[:7] + ("+dirty" if commit.endswith("-dirty") else "")
    gpu = f"GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "no GPU"
    command = shlex.join(["python", "-m", "search.bench", *argv])
    return (f"Measured on {platform.system()} {platform.machine()}, {CORES} CPU cores, {gpu}; "
            f"{_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M} UTC; commit {short}; `{command}`")


def write_report(path: str, figures: list[Figure], seconds: float, quick: bool, argv: list[str]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    details = [f"- {line}" for f in sorted(figures, key=lambda f: f.name) for line in f.details]
    with open(path, "w") as fh:
        fh.write(f"{provenance(argv)}\n\n"
                 f"# tricktune benchmark{' (--quick: checks the code, not the speed)' if quick else ''}\n\n"
                 f"torch {torch.__version__}; total {seconds / 60:.1f} min, load average {load()}. Each ratio "
                 "compares two things run alternately in this one run (medians), so a busy machine slows both "
                 "sides alike.\n\n"
                 f"{table(figures)}\n\n## Details\n\n" + "\n".join(details) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m search.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long versions: check the code, not the speed")
    parser.add_argument("--only", choices=list(BENCHES), action="append", help="run only this figure (repeatable)")
    parser.add_argument("--report", help=f"write the table here (default {os.path.relpath(REPORT_PATH)} for a "
                                         "full run of every figure; a --quick or --only run writes none)")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    say(f"tricktune bench{' --quick' if args.quick else ''}: load average {load()} at the start")
    figures, errors = [], []
    for name in args.only or list(BENCHES):
        started = time.perf_counter()
        try:
            figures += BENCHES[name](args.quick)
            say(f"  ({name} took {(time.perf_counter() - started) / 60:.1f} min)")
        except Exception as err:  # noqa: BLE001 - one broken figure must not hide the others
            errors.append(name)
            figures.append(Figure(f"{name}: ERROR", f"{type(err).__name__}: {err}"[:200], "-", False))
            print(f"[{name}] failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
    stop_ray()
    seconds = time.perf_counter() - t0
    say(f"\n{table(figures)}\n\ntotal {seconds / 60:.1f} min, load average {load()} at the end"
        + (" (--quick)" if args.quick else ""))
    short = [f.name for f in figures if f.passed is False]
    if short:
        say("FALL SHORT: " + "; ".join(short) + " (details above)")
    report = args.report or (REPORT_PATH if not args.quick and not args.only else None)
    if report:
        write_report(report, figures, seconds, args.quick, argv)
        say(f"table written to {report}")
    return 1 if errors else 0


__all__ = ["BENCHES", "REPORT_PATH", "Figure", "table", "provenance", "write_report", "main"]
