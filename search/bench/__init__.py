"""``make bench``: does tricktune's machinery cost or save time, and do its early stops decide on evidence?

Every figure compares two things measured *side by side in the same run*, never against
a stored number, because on a shared 2-core machine the absolute speed swings
several-fold from one minute to the next (one 2,000-image ResNet-20 epoch took 5 s and,
minutes later, 72 s). How each stays side by side:

1. loop      fit()'s in-memory batches vs a plain DataLoader loop, images/s; goal >= 1.0x.
             Rounds of A B C, the order reversed every other round; median of per-round ratios.
2. overhead  a trial-epoch inside a search (run_search: Ray Tune + Optuna + MLflow) vs fit()
             alone; goal <= 1.05x. The fit() twin runs *during* the trial, one core each, so
             outside load hits both; Ray's own daemons' CPU is measured and added back.
3. search    ASHA + TPE vs random search run to the end, with the default rung design
             (search/bench_rungs.py); goal >= 3x fewer trial-epochs to a near-best config.
4. packing   trial-epochs per minute, 2 trials x 1 thread at once vs 1 trial x 2 threads at a
             time (and 2 x 2, oversubscribed); rounds as in 1.
5. gpu       with CUDA: ResNet-50 224 px bf16 images/s vs NVIDIA's A100 reference, and a
             CIFAR-10-size ResNet-18 epoch; without: "GPU: skipped (no CUDA device)".
6. fidelity  the default space's first rung against the final ranking, Spearman over 8
             configurations x 2 seeds run to the end, with the noise floor
             (search/bench_rungs.py, search/fidelity.py); goal >= 0.7.
7. cache     image folders decoded once into tricktune's cache vs torchvision ImageFolder +
             DataLoader on a generated CUB-shaped folder, images/s delivered to the loop;
             goal >= 5x (search/bench_cache.py). Rounds as in 1.

Usage: ``python -m search.bench [--quick] [--only NAME]`` (``make bench``); it writes the
table to ``reports/bench.md`` and prints the load average (other jobs slow every figure).
``--quick`` runs seconds-long versions that check the code, not the speed. No figure is a
timed unit test; a figure that misses its goal says FALL SHORT.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime as _dt
import importlib.resources
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from search.bench.cache import bench_cache
from search.bench.common import CORES, Figure
from search.bench.common import paired_ratio as _paired_ratio
from search.bench.common import rounds as _rounds
from search.bench.common import said as _said
from search.bench.common import say as _say
from search.bench.common import space_file as _space_file
from search.bench.common import spread as _spread
from search.bench.common import start_ray as _start_ray
from search.bench.common import stop_ray as _stop_ray
from search.bench.rungs import bench_fidelity, bench_search
from spaces import PROJECT_ROOT, load_space
from trainable.config import TrainConfig
from trainable.data import FASHION_MNIST_STATS, interleave_by_class
from trainable.loop import fit
from trainable.models import build_model
from trainable.tricks.augment import PAD

REPORT_PATH = str(PROJECT_ROOT / "reports" / "bench.md")
# NVIDIA DeepLearningExamples, ResNet-50 v1.5 for PyTorch, training performance table:
# 2,470 img/s on one A100 80GB with mixed precision (DGX A100, batch 256).
A100_RESNET50_IMAGES_PER_SECOND = 2470


def _recipe(**overrides) -> TrainConfig:
    """The default recipe's training config (spaces/recipes/) with ``overrides``, on the CPU."""
    space = load_space("baseline").override(fixed={"device": "cpu", **overrides})
    return space.trial_config({})


# --- 1. training-loop throughput ----------------------------------------------------------


class _AugmentedImages(Dataset):
    """uint8 [N,1,H,W] images with a per-sample transform: what a plain PyTorch script does."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def _embedded_train_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images of the embedded subset in the order ``train_subset`` takes them."""
    asset = importlib.resources.files("trainable") / "assets" / "fashion_mnist_subset.npz"
    with asset.open("rb") as fh, np.load(fh) as npz:
        images = torch.from_numpy(npz["x_train"]).unsqueeze(1)
        labels = torch.from_numpy(npz["y_train"].astype(np.int64))
    order = interleave_by_class(labels)[:n]
    return images[order], labels[order]


def plain_loop_images_per_second(cfg: TrainConfig, num_workers: int = 2) -> float:
    """Train ``cfg.epochs`` epochs the textbook way; images/s of the training passes.

    DataLoader with per-sample torchvision v2 transforms equivalent to the recipe's
    augmentation (4-px pad + random crop, horizontal flip), the same model and SGD
    settings, cross-entropy. Worker start-up is inside the timed epoch: a DataLoader
    without persistent workers pays it every epoch.
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    images, labels = _embedded_train_images(cfg.train_subset)
    mean, std = FASHION_MNIST_STATS
    steps = []
    if cfg.crop == "pad":
        steps.append(v2.RandomCrop(images.shape[-1], padding=PAD))
    if cfg.hflip:
        steps.append(v2.RandomHorizontalFlip())
    transform = v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])
    loader = DataLoader(_AugmentedImages(images, labels, transform), batch_size=cfg.batch_size, shuffle=True,
                        num_workers=num_workers)
    model = build_model(cfg, 10, 1, images.shape[-1])
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    model.train()
    seen, seconds = 0, 0.0
    for _ in range(cfg.epochs):
        t0 = time.perf_counter()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
        seconds += time.perf_counter() - t0
    return seen / seconds


def fit_images_per_second(cfg: TrainConfig) -> float:
    """fit()'s own training-pass throughput (its ``images_per_second``), over all epochs."""
    history = []
    fit(cfg, lambda metrics, _checkpoint: history.append(metrics))
    # Every epoch trains on all n_train images (only a last batch of one is dropped).
    seconds = sum(cfg.train_subset / m["images_per_second"] for m in history)
    return cfg.train_subset * len(history) / seconds


def bench_loop(quick: bool) -> list[Figure]:
    n, rounds = (256, 1) if quick else (1000, 5)
    base = dict(train_subset=n, val_subset=200, epochs=1, threads=min(2, CORES))
    arms: dict[str, Callable[[], float]] = {
        "fit channels_last": lambda: fit_images_per_second(_recipe(**base, channels_last=True)),
        "plain DataLoader": lambda: plain_loop_images_per_second(_recipe(**base)),
        "fit NCHW": lambda: fit_images_per_second(_recipe(**base, channels_last=False))}
    _say(f"[1 loop] ResNet-20, {n} Fashion-MNIST images x 1 epoch, {base['threads']} threads; {rounds} rounds "
         f"of {' / '.join(arms)}, the order reversed every other round")
    # Warm-up: the first training in a process pays one-off costs (oneDNN kernel set-up,
    # allocator growth) that would otherwise be charged to whichever arm goes first.
    for layout in (True, False):
        fit_images_per_second(_recipe(**{**base, "train_subset": 256}, channels_last=layout))
    measured = _rounds(arms, rounds)
    layout = _paired_ratio(measured["fit channels_last"], measured["fit NCHW"])
    best = "fit channels_last" if layout >= 1 else "fit NCHW"  # fit as tricktune would run it here
    ratio = _paired_ratio(measured[best], measured["plain DataLoader"])
    lines = [f"{best} {statistics.median(measured[best]):.0f} img/s vs plain DataLoader loop (2 workers) "
             f"{statistics.median(measured['plain DataLoader']):.0f} img/s (medians): {ratio:.2f}x "
             f"({_spread(measured[best], measured['plain DataLoader'])})",
             f"channels_last on/off for fit: {layout:.2f}x "
             f"({'helps' if layout > 1.02 else 'hurts' if layout < 0.98 else 'no difference'} on this CPU; "
             f"{_spread(measured['fit channels_last'], measured['fit NCHW'])})"]
    for line in lines:
        _say("  " + line)
    return [Figure("1. fit() vs plain DataLoader loop, images/s", f"{ratio:.2f}x", ">= 1.0x", ratio >= 1.0, lines),
            Figure("1b. fit() channels_last on/off, images/s", f"{layout:.2f}x", "info", None)]


# --- 2. framework overhead ------------------------------------------------------------------

def bench_overhead(quick: bool) -> list[Figure]:
    n, epochs, rounds = (256, 1, 1) if quick else (1500, 3, 2)
    fixed = {"train_subset": n, "val_subset": 500 if not quick else 128, "device": "cpu"}
    tmp = tempfile.mkdtemp(prefix="tricktune-bench-")
    _start_ray()  # before run_search does, to keep the trial's own log lines off the bench's output
    space_file = _space_file(tmp, "overhead", "how much does running fit() as a search trial cost (bench figure 2)?",
                             fixed=fixed, params={"lr": {"type": "loguniform", "low": 0.03, "high": 0.3}},
                             baseline={"lr": 0.1}, budget={"num_samples": 1, "max_epochs": epochs,
                                                           "max_concurrent": 1}, scheduler="none")
    space = load_space(space_file)
    # The trial's own config: the baseline point (lr 0.1) with 1 thread, as search/trial.py
    # sets threads = cpus_per_trial (1, tricktune's default packing).
    cfg = dataclasses.replace(space.trial_config({"lr": 0.1}), epochs=epochs, threads=1)
    _say(f"[2 overhead] {n} images x {epochs} epochs, 1 thread each; {rounds} rounds of run_search (Ray Tune + "
         "Optuna + MLflow, 1 trial, scheduler none) with a fit()-alone twin started when the trial starts")
    rounds_measured = []
    try:
        for r in range(rounds):
            rounds_measured.append(_overhead_round(os.path.join(tmp, f"ray{r}"), space_file, cfg, tmp))
            m = rounds_measured[-1]
            _say(f"  round {r + 1}: trial {m['trial']:.1f} s, fit() twin {m['alone']:.1f} s: {m['ratio']:.3f}x; "
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
    return _said(lines, Figure("2. trial-epoch in a search vs fit() alone, wall time", f"{whole:.3f}x", "<= 1.05x",
                               whole <= 1.05, lines),
                 Figure("2b. same, training epoch_seconds only", f"{statistics.median(epoch_ratios):.3f}x", "info",
                        None))


def _overhead_round(storage: str, space_file: str, cfg: TrainConfig, tmp: str) -> dict:
    """One run_search of the one-trial space, with its fit() twin running alongside."""
    from search.runner import SearchOptions, run_search

    ctx = multiprocessing.get_context("spawn")
    # A fresh process per round, as the trial gets a fresh Ray worker: both pay the
    # first-training warm-up. Its imports happen before the clock, as the worker's do.
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx, initializer=_warm_worker) as pool:
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
        summary = run_search(SearchOptions(space=space_file, overrides={}, storage=storage,
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
    import glob

    while not glob.glob(started_glob) and not twin.done():
        time.sleep(0.05)
    cpu0, t0 = _background_cpu_seconds(exclude), time.perf_counter()
    concurrent.futures.wait([twin])
    elapsed = time.perf_counter() - t0
    out["share"] = _cpu_delta(cpu0, _background_cpu_seconds(exclude)) / elapsed if elapsed > 0 else 0.0


def _seconds(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.1f}" for v in values) + "] s"


def _twin_fit(cfg: TrainConfig, started_glob: str, timeout: float = 300) -> dict:
    """In a pool process: wait until a file matching ``started_glob`` appears, then run fit()."""
    import glob

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
    import glob
    import json

    (trial_dir,) = [d for d in glob.glob(os.path.join(exp_path, "*")) if os.path.isfile(os.path.join(d, "result.json"))]
    with open(os.path.join(trial_dir, "result.json")) as fh:
        results = [json.loads(line) for line in fh if line.strip()]
    return {**results[-1], "epoch_seconds": [r["epoch_seconds"] for r in results]}


def _background_cpu_seconds(exclude: set[int]) -> dict[int, float]:
    """CPU seconds so far of this process and its descendants (Ray's GCS, raylet, agents,
    dashboard, monitors), leaving out Ray's worker processes, which run the trial, and
    ``exclude``. Linux /proc; empty elsewhere, which counts as no background."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    procs = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                after_name = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().decode(errors="replace")
        except OSError:  # the process ended while we looked
            continue
        # Fields after "(name)": state, ppid, ..., utime at 11, stime at 12 (proc(5)).
        procs[int(entry)] = (int(after_name[1]), (int(after_name[11]) + int(after_name[12])) / tick, cmdline)
    ours, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _cpu, _cmd) in procs.items() if ppid == parent and pid not in exclude]
        ours.update(children)
        frontier += children
    workers = ("ray::ImplicitFunc", "ray::IDLE", "ray::run_trial")
    return {pid: procs[pid][1] for pid in ours if pid in procs and not procs[pid][2].startswith(workers)}


def _cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    # Processes alive at both ends: the daemons and the driver (a worker that became the
    # trial between the two looks would otherwise count as background).
    return sum(after[pid] - before[pid] for pid in before if pid in after)


# --- 3. search efficiency ------------------------------------------------------------------


# --- 4. trial packing ----------------------------------------------------------------------


def _warm_worker() -> None:
    import trainable.loop  # noqa: F401 - pays the torch import before the clock starts


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
    n, rounds = (128, 1) if quick else (600, 3)
    base = dict(train_subset=n, val_subset=200 if not quick else 64, epochs=1)
    # Each arrangement runs the same two whole small trials (data, model, 1 epoch, validation).
    arrangements = {"1 trial x 2 threads, one at a time": (1, 2),
                    "2 trials x 1 thread at once": (2, 1),
                    "2 trials x 2 threads at once": (2, 2)}
    _say(f"[4 packing] 2 trials of {n} images x 1 epoch per arrangement on {CORES} cores, trial-epochs per "
         f"minute; {rounds} rounds")
    ctx = multiprocessing.get_context("spawn")  # a fresh torch per worker, as Ray's workers have
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx, initializer=_warm_worker) as pool:
        list(pool.map(time.sleep, [0.5, 0.5]))  # start both workers (and their imports) before the clock
        measured = _rounds({name: (lambda c=c, t=t: _trial_epochs_per_minute(
            pool, [_recipe(**base, threads=t, seed=s) for s in range(2)], c))
            for name, (c, t) in arrangements.items()}, rounds)
    sequential, packed, oversubscribed = (measured[k] for k in arrangements)
    ratio = _paired_ratio(packed, sequential)
    over = _paired_ratio(oversubscribed, sequential)
    lines = [f"2 trials x 1 thread / 1 trial x 2 threads: {ratio:.2f}x trial-epochs per minute "
             f"({_spread(packed, sequential)})",
             f"2 trials x 2 threads / 1 trial x 2 threads: {over:.2f}x (more threads than cores; "
             f"{_spread(oversubscribed, sequential)})",
             "tricktune runs 2 trials x 1 thread: spaces' budget cpus_per_trial 1 and max_concurrent 2, and "
             "search/trial.py sets torch threads = cpus_per_trial"]
    for line in lines:
        _say("  " + line)
    return [Figure("4. packed 2 trials x 1 thread vs 1 x 2 threads, trial-epochs/min", f"{ratio:.2f}x",
                   ">= 1.0x", ratio >= 1.0, lines),
            Figure("4b. 2 trials x 2 threads (oversubscribed) vs 1 x 2 threads", f"{over:.2f}x", "info", None)]


# --- 5. GPU --------------------------------------------------------------------------------


def train_images_per_second(model: torch.nn.Module, batch: int, size: int, channels: int, classes: int,
                            steps: int, device: str, warmup: int = 3) -> float:
    """Training images/s on synthetic data: bf16 autocast, channels_last, SGD, cross-entropy."""
    model = model.to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, channels, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,), device=device)

    def step():
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):  # cuDNN autotuning and allocator growth happen here, not in the timing
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - t0)


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def cifar_epoch_seconds(device: str, n: int = 50_000, batch: int = 512, size: int = 32) -> float:
    """One epoch of tricktune's small-stem ResNet-18 over ``n`` synthetic CIFAR-size images held
    on ``device`` (uint8, normalised per batch as the memory path does); bf16, channels_last."""
    cfg = _recipe(model="resnet18", device=device)
    model = build_model(cfg, 10, 3, size).to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (n,), device=device)

    def step(index):
        x = (images[index].float() / 255 - 0.5).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), labels[index])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step(torch.arange(batch, device=device))
    _sync(device)
    t0 = time.perf_counter()
    order = torch.randperm(n, device=device)
    for start in range(0, n, batch):
        step(order[start:start + batch])
    _sync(device)
    return time.perf_counter() - t0


def bench_gpu(quick: bool) -> list[Figure]:
    if not torch.cuda.is_available():
        _say("GPU: skipped (no CUDA device)")
        return [Figure("5. GPU: ResNet-50 224 px bf16 images/s vs A100 reference", "skipped (no CUDA device)",
                       f">= {A100_RESNET50_IMAGES_PER_SECOND} img/s", None)]
    import torchvision

    gpu = torch.cuda.get_device_name()
    steps = 5 if quick else 50
    r50 = train_images_per_second(torchvision.models.resnet50(), batch=256 if not quick else 32, size=224,
                                  channels=3, classes=1000, steps=steps, device="cuda")
    ratio = r50 / A100_RESNET50_IMAGES_PER_SECOND
    epoch = cifar_epoch_seconds("cuda", n=50_000 if not quick else 2048)
    lines = [f"GPU: {gpu}",
             f"ResNet-50 224 px, batch 256, bf16, channels_last, synthetic: {r50:.0f} img/s = {ratio:.2f}x NVIDIA's "
             f"{A100_RESNET50_IMAGES_PER_SECOND} img/s on one A100 (mixed precision, DALI; theirs is an A100, "
             "so compare like with like)",
             f"CIFAR-size ResNet-18 (small stem), 50,000 synthetic 32 px images on the GPU, batch 512, bf16: "
             f"{epoch:.1f} s/epoch"]
    for line in lines:
        _say("  " + line)
    return [Figure(f"5. GPU ({gpu}): ResNet-50 224 px bf16 vs A100 reference", f"{r50:.0f} img/s ({ratio:.2f}x)",
                   f">= {A100_RESNET50_IMAGES_PER_SECOND} img/s", ratio >= 1.0, lines),
            Figure(f"5b. GPU ({gpu}): CIFAR-10-size ResNet-18 epoch", f"{epoch:.1f} s", "info", None)]


# --- the run ---------------------------------------------------------------------------------

# Ray-free figures first: Ray's background processes would add noise to their timings.
BENCHES: dict[str, Callable[[bool], list[Figure]]] = {
    "loop": bench_loop, "cache": bench_cache, "packing": bench_packing, "gpu": bench_gpu, "overhead": bench_overhead,
    "search": bench_search, "fidelity": bench_fidelity}


def table(figures: list[Figure]) -> str:
    rows = ["| figure | measured | goal | result |", "|---|---|---|---|"]
    rows += [f"| {f.name} | {f.measured} | {f.goal} | {f.verdict} |" for f in sorted(figures, key=lambda f: f.name)]
    return "\n".join(rows)


def write_report(path: str, figures: list[Figure], seconds: float, quick: bool) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    details = [f"- {line}" for f in sorted(figures, key=lambda f: f.name) for line in f.details]
    with open(path, "w") as fh:
        fh.write(f"# tricktune benchmark{' (--quick: checks the code, not the speed)' if quick else ''}\n\n"
                 f"`python -m search.bench` on {_dt.datetime.now():%Y-%m-%d %H:%M}, {CORES} CPU cores "
                 f"({platform.processor() or platform.machine()}), torch {torch.__version__}, "
                 f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}; "
                 f"total {seconds / 60:.1f} min, load average {_load()}. Each ratio compares two things run "
                 "alternately in this one run (medians), so a busy machine slows both sides alike.\n\n"
                 f"{table(figures)}\n\n## Details\n\n" + "\n".join(details) + "\n")


def _load() -> str:
    # Other jobs on the machine slow every figure; the load average says how busy it was.
    return f"{os.getloadavg()[0]:.1f} on {CORES} cores" if hasattr(os, "getloadavg") else "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long versions: check the code, not the speed")
    parser.add_argument("--only", choices=list(BENCHES), action="append", help="run only this figure (repeatable)")
    parser.add_argument("--report", help=f"write the table here (default {os.path.relpath(REPORT_PATH)} for a "
                                         "full run of every figure; a --quick or --only run writes none)")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    _say(f"tricktune bench{' --quick' if args.quick else ''}: load average {_load()} at the start")
    figures, errors = [], []
    for name in args.only or list(BENCHES):
        started = time.perf_counter()
        try:
            figures += BENCHES[name](args.quick)
            _say(f"  ({name} took {(time.perf_counter() - started) / 60:.1f} min)")
        except Exception as err:  # noqa: BLE001 - one broken figure must not hide the others
            errors.append(name)
            figures.append(Figure(f"{name}: ERROR", f"{type(err).__name__}: {err}"[:200], "-", False))
            print(f"[{name}] failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
    _stop_ray()
    seconds = time.perf_counter() - t0
    _say(f"\n{table(figures)}\n\ntotal {seconds / 60:.1f} min, load average {_load()} at the end"
         + (" (--quick)" if args.quick else ""))
    short = [f.name for f in figures if f.passed is False]
    if short:
        _say("FALL SHORT: " + "; ".join(short) + " (details above)")
    report = args.report or (REPORT_PATH if not args.quick and not args.only else None)
    if report:
        write_report(report, figures, seconds, args.quick)
        _say(f"table written to {report}")
    return 1 if errors else 0
