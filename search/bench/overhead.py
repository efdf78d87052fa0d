"""Bench figure 2 (``python -m search.bench --only overhead``): a trial-epoch in a search vs fit() alone.

One run_search (Ray Tune + Optuna + MLflow, one trial, scheduler none) per round, with a
fit() twin of the same config started in a plain process when the trial starts, one
core each, so outside load hits both. The pairing cancels load that slows both sides,
including Ray's own daemons and the driver's Tune loop, so their CPU while the trial
trains is measured (psutil) and added back as a share of the machine's cores.
Goal: <= 1.05x.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import json
import multiprocessing
import os
import shutil
import statistics
import tempfile
import threading
import time

from search.bench.common import (
    CORES,
    Figure,
    background_cpu_seconds,
    cpu_delta,
    said,
    say,
    space_file,
    start_ray,
    warm_worker,
)
from spaces import load_space
from trainable.config import TrainConfig
from trainable.loop import fit


def bench_overhead(quick: bool) -> list[Figure]:
    n, epochs, rounds = (256, 1, 1) if quick else (1500, 3, 2)
    fixed = {"train_subset": n, "val_subset": 500 if not quick else 128, "device": "cpu"}
    tmp = tempfile.mkdtemp(prefix="tricktune-bench-")
    start_ray()  # before run_search does, to keep the trial's own log lines off the bench's output
    path = space_file(tmp, "overhead", "how much does running fit() as a search trial cost (bench figure 2)?",
                      fixed=fixed, params={"lr": {"type": "loguniform", "low": 0.03, "high": 0.3}},
                      baseline={"lr": 0.1}, budget={"num_samples": 1, "max_epochs": epochs, "max_concurrent": 1},
                      scheduler="none")
    space = load_space(path)
    # The trial's own config: the baseline point (lr 0.1) with 1 thread, as search/trial.py
    # sets threads = cpus_per_trial (1, tricktune's default packing).
    cfg = dataclasses.replace(space.trial_config({"lr": 0.1}), epochs=epochs, threads=1)
    say(f"[2 overhead] {n} images x {epochs} epochs, 1 thread each; {rounds} rounds of run_search (Ray Tune + "
        "Optuna + MLflow, 1 trial, scheduler none) with a fit()-alone twin started when the trial starts")
    rounds_measured = []
    try:
        for r in range(rounds):
            rounds_measured.append(_overhead_round(os.path.join(tmp, f"ray{r}"), path, cfg, tmp))
            m = rounds_measured[-1]
            say(f"  round {r + 1}: trial {m['trial']:.1f} s, fit() twin {m['alone']:.1f} s: {m['ratio']:.3f}x; "
                f"epochs {_seconds(m['trial_epochs'])} vs {_seconds(m['alone_epochs'])}; run_search call "
                f"{m['wall']:.1f} s; Ray + driver CPU while it trained {m['background']:.0%} of a core")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratios, epoch_ratios, background, fixed_cost = ([m[k] for m in rounds_measured]
                                                    for k in ("ratio", "epoch_ratio", "background", "fixed_cost"))
    outside = [(m["trial_outside"], m["alone_outside"]) for m in rounds_measured]
    paired = statistics.median(ratios)
    # The pairing cancels load that slows both sides, and that includes Ray's own daemons
    # and the driver's Tune loop; add their CPU back as a share of the machine's cores.
    share = statistics.median(background) / CORES
    whole = paired * (1 + share)
    lines = [f"whole trial (Ray time_total_s) / fit() twin wall: {paired:.3f}x (median of {rounds} rounds), times "
             f"1 + {share:.3f} for the CPU Ray's daemons and the driver used while it trained "
             f"({statistics.median(background):.0%} of one of {CORES} cores) = {whole:.3f}x  <- the figure: a "
             "trial-epoch's wall time in a search, everything the framework adds included",
             f"per epoch, training + validation only (trial's epoch_seconds / twin's): "
             f"{statistics.median(epoch_ratios):.3f}x",
             f"outside the epochs, per epoch (data, model, checkpoints, report): trial "
             f"{statistics.median(o[0] for o in outside):.2f} s, "
             f"fit() {statistics.median(o[1] for o in outside):.2f} s",
             f"once per search, outside the trial (Tuner and trial start-up, MLflow runs, summary): "
             f"{statistics.median(fixed_cost):.1f} s; Ray itself was started once before"]
    return said(lines, Figure("2. trial-epoch in a search vs fit() alone, wall time", f"{whole:.3f}x", "<= 1.05x",
                              whole <= 1.05, lines),
                Figure("2b. same, training epoch_seconds only", f"{statistics.median(epoch_ratios):.3f}x", "info",
                       None))


def _overhead_round(storage: str, path: str, cfg: TrainConfig, tmp: str) -> dict:
    """One run_search of the one-trial space, with its fit() twin running alongside."""
    from search.runner import SearchOptions, run_search

    ctx = multiprocessing.get_context("spawn")
    # A fresh process per round, as the trial gets a fresh Ray worker: both pay the
    # first-training warm-up. Its imports happen before the clock, as the worker's do.
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx, initializer=warm_worker) as pool:
        pool.submit(time.sleep, 0).result()
        twin_pids = set(pool._processes)
        # Side by side, not one after the other: the twin runs the same config in a plain
        # process during the same seconds, so whatever else loads the machine slows both
        # alike. It starts when Ray writes the trial's params.json.
        started = os.path.join(storage, "*", "run_trial_*", "params.json")
        twin = pool.submit(_twin_fit, cfg, started)
        # Ray's daemons' and the driver's CPU while the trial trains: what competes with it.
        # (The once-per-search start-up is timed on its own.)
        window: dict = {}
        watcher = threading.Thread(target=_watch_background, args=(started, twin, twin_pids, window))
        watcher.start()
        t0 = time.perf_counter()
        summary = run_search(SearchOptions(space=path, overrides={}, storage=storage,
                                           tracking_uri=f"sqlite:///{tmp}/mlflow.db", verbose=0))
        wall = time.perf_counter() - t0
        alone = twin.result()
        watcher.join()
    trial = _only_trial_result(summary["results"])
    epochs = len(trial["epoch_seconds"])
    return {"trial": trial["time_total_s"], "alone": alone["wall"], "wall": wall,
            "ratio": trial["time_total_s"] / alone["wall"],
            "epoch_ratio": statistics.mean(trial["epoch_seconds"]) / statistics.mean(alone["epoch_seconds"]),
            "trial_outside": (trial["time_total_s"] - sum(trial["epoch_seconds"])) / epochs,
            "alone_outside": (alone["wall"] - sum(alone["epoch_seconds"])) / epochs,
            "trial_epochs": trial["epoch_seconds"], "alone_epochs": alone["epoch_seconds"],
            "background": window.get("share", 0.0), "fixed_cost": wall - trial["time_total_s"]}


def _watch_background(started_glob: str, twin, exclude: set[int], out: dict) -> None:
    """From the trial's start (its params.json) until the fit() twin ends: the CPU share of
    one core that Ray's daemons and the driver used, into ``out["share"]``."""
    while not glob.glob(started_glob) and not twin.done():
        time.sleep(0.05)
    cpu0, t0 = background_cpu_seconds(exclude), time.perf_counter()
    concurrent.futures.wait([twin])
    elapsed = time.perf_counter() - t0
    out["share"] = cpu_delta(cpu0, background_cpu_seconds(exclude)) / elapsed if elapsed > 0 else 0.0


def _seconds(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.1f}" for v in values) + "] s"


def _twin_fit(cfg: TrainConfig, started_glob: str, timeout: float = 300) -> dict:
    """In a pool process: wait until a file matching ``started_glob`` appears, then run fit()."""
    deadline = time.monotonic() + timeout
    while not glob.glob(started_glob):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the trial never started: no {started_glob} after {timeout} s")
        time.sleep(0.05)
    history = []
    t0 = time.perf_counter()
    fit(cfg, lambda metrics, _checkpoint: history.append(metrics))
    return {"wall": time.perf_counter() - t0, "epoch_seconds": [m["epoch_seconds"] for m in history]}


def _only_trial_result(exp_path: str) -> dict:
    """The single trial's last result, and every epoch's epoch_seconds, from Ray's result.json."""
    (trial_dir,) = [d for d in glob.glob(os.path.join(exp_path, "*")) if os.path.isfile(os.path.join(d, "result.json"))]
    with open(os.path.join(trial_dir, "result.json")) as fh:
        results = [json.loads(line) for line in fh if line.strip()]
    return {**results[-1], "epoch_seconds": [r["epoch_seconds"] for r in results]}


__all__ = ["bench_overhead"]
