"""Bench figure 4 (``python -m search.bench --only packing``): how to share the cores between trials.

The same two whole small trials (data, model, 1 epoch, validation) run in three
arrangements in fresh spawned processes, as Ray's workers are: 1 trial x 2 threads at a
time, 2 trials x 1 thread at once (tricktune's default packing) and 2 x 2 (more threads
than cores). Trial-epochs per minute, rounds with the order reversed every other round,
the figure the median of per-round ratios; goal >= 1.0x.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import time

from search.bench.common import CORES, Figure, paired_ratio, recipe, rounds, say, spread, warm_worker
from trainable.config import TrainConfig
from trainable.loop import fit


def _packed_trial(cfg: TrainConfig) -> int:
    fit(cfg)
    return cfg.epochs


def _trial_epochs_per_minute(pool, cfgs: list[TrainConfig], concurrent: int) -> float:
    t0 = time.perf_counter()
    epochs = 0
    for i in range(0, len(cfgs), concurrent):
        epochs += sum(f.result() for f in [pool.submit(_packed_trial, c) for c in cfgs[i:i + concurrent]])
    return 60 * epochs / (time.perf_counter() - t0)


def bench_packing(quick: bool) -> list[Figure]:
    n, repeats = (128, 1) if quick else (600, 3)
    base = dict(train_subset=n, val_subset=200 if not quick else 64, epochs=1)
    # Each arrangement runs the same two whole small trials (data, model, 1 epoch, validation).
    arrangements = {"1 trial x 2 threads, one at a time": (1, 2),
                    "2 trials x 1 thread at once": (2, 1),
                    "2 trials x 2 threads at once": (2, 2)}
    say(f"[4 packing] 2 trials of {n} images x 1 epoch per arrangement on {CORES} cores, trial-epochs per "
        f"minute; {repeats} rounds")
    ctx = multiprocessing.get_context("spawn")  # a fresh torch per worker, as Ray's workers have
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx, initializer=warm_worker) as pool:
        list(pool.map(time.sleep, [0.5, 0.5]))  # start both workers (and their imports) before the clock
        measured = rounds({name: (lambda c=c, t=t: _trial_epochs_per_minute(
            pool, [recipe(**base, threads=t, seed=s) for s in range(2)], c))
            for name, (c, t) in arrangements.items()}, repeats)
    sequential, packed, oversubscribed = (measured[k] for k in arrangements)
    ratio = paired_ratio(packed, sequential)
    over = paired_ratio(oversubscribed, sequential)
    lines = [f"2 trials x 1 thread / 1 trial x 2 threads: {ratio:.2f}x trial-epochs per minute "
             f"({spread(packed, sequential)})",
             f"2 trials x 2 threads / 1 trial x 2 threads: {over:.2f}x (more threads than cores; "
             f"{spread(oversubscribed, sequential)})",
             "tricktune runs 2 trials x 1 thread: spaces' budget cpus_per_trial 1 and max_concurrent 2, and "
             "search/trial.py sets torch threads = cpus_per_trial"]
    for line in lines:
        say("  " + line)
    return [Figure("4. packed 2 trials x 1 thread vs 1 x 2 threads, trial-epochs/min", f"{ratio:.2f}x",
                   ">= 1.0x", ratio >= 1.0, lines),
            Figure("4b. 2 trials x 2 threads (oversubscribed) vs 1 x 2 threads", f"{over:.2f}x", "info", None)]


__all__ = ["bench_packing"]
