"""``make bench-gpu``: the GPU figures, in under 10 minutes on one GPU; and ``make bench``'s figure 5.

1. ResNet-50 at 224 px, bf16, channels_last: training images/s on synthetic batches of
   256 (anchor: NVIDIA's 2,470 img/s on one A100; goal >= 3,000 on an H100/H200).
2. The cub200_resnet50 recipe (spaces/recipes/cub200_resnet50.yaml's ``fixed:``) on a
   CUB-shaped folder this script writes (200 classes x
   29 train + 28 test JPEGs at 500x375: CUB-200-2011's 5,994 + 5,794 spread evenly,
   rounded down): seconds per epoch of 5,800 training images, through fit()
   and the folder cache, pretrained from a local weights file written here (nothing is
   downloaded). The studies it replaces: 78 s per epoch on an A100; goal under 5 s.
3. Trial packing: the same 4 trials run by real Ray Tune searches as 4 at once x 0.25 GPU
   and as 1 at a time x 1 GPU (fractional ``gpus_per_trial``), trial-epochs per minute.
4. GPU utilisation while the packed search of 3 runs (nvidia-smi, sampled every 0.5 s).

Without CUDA every part runs at a tiny size on the CPU, to check the code, and the output
says plainly that no GPU figure was measured. ``--no-search`` skips parts 3-4 (Ray).

``make bench``'s figure 5 (``bench_gpu``, ``python -m search.bench --only gpu``) is the quick
version: ResNet-50 images/s against the A100 anchor and a CIFAR-10-size ResNet-18 epoch;
without CUDA it says "GPU: skipped (no CUDA device)".

Usage: ``python -m search.bench.gpu [--tiny] [--no-search]`` (``make bench-gpu``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import torch
import torch.nn.functional as F

from search.bench.common import Figure, recipe, say, start_ray, stop_ray, table
from spaces import PROJECT_ROOT
from trainable.config import TrainConfig, from_dict
from trainable.models import build_model

# NVIDIA DeepLearningExamples, ResNet-50 v1.5 for PyTorch, training performance table:
# 2,470 img/s on one A100 80GB with mixed precision (DGX A100, batch 256).
A100_RESNET50_IMAGES_PER_SECOND = 2470
RESNET50_GOAL = 3000  # img/s on an H100/H200: the A100 anchor plus the newer chip's margin
STUDY_EPOCH_SECONDS = 78  # the CUB-200 ResNet-50 studies' epoch on an A100 (~8,500 images, PIL decoding)
EPOCH_GOAL_SECONDS = 5
CUB_TRAIN, CUB_TEST = 5994, 5794  # CUB-200-2011's split
RECIPE_FILE = PROJECT_ROOT / "spaces" / "recipes" / "cub200_resnet50.yaml"


# --- the training steps measured, on any device -----------------------------------------------


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
    cfg = recipe(model="resnet18", device=device)
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
    """``make bench``'s figure 5."""
    if not torch.cuda.is_available():
        say("GPU: skipped (no CUDA device)")
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
        say("  " + line)
    return [Figure(f"5. GPU ({gpu}): ResNet-50 224 px bf16 vs A100 reference", f"{r50:.0f} img/s ({ratio:.2f}x)",
                   f">= {A100_RESNET50_IMAGES_PER_SECOND} img/s", ratio >= 1.0, lines),
            Figure(f"5b. GPU ({gpu}): CIFAR-10-size ResNet-18 epoch", f"{epoch:.1f} s", "info", None)]


# --- make bench-gpu: 1 and 2, one trial's speed -----------------------------------------------


def resnet50_throughput(device: str, tiny: bool) -> list[Figure]:
    import torchvision

    batch, size, steps = (2, 32, 1) if tiny else (256, 224, 50)
    rate = train_images_per_second(torchvision.models.resnet50(), batch=batch, size=size, channels=3, classes=1000,
                                   steps=steps, device=device, warmup=1 if tiny else 5)
    line = (f"ResNet-50, {size} px, batch {batch}, bf16, channels_last, synthetic: {rate:.1f} img/s "
            f"(NVIDIA's A100 anchor {A100_RESNET50_IMAGES_PER_SECOND}; goal >= {RESNET50_GOAL})")
    say("  " + line)
    if device == "cpu":
        return [Figure("1. ResNet-50 224 px bf16 training img/s", "skipped: no GPU", f">= {RESNET50_GOAL}",
                       None, [line + " - CPU, tiny: checks the code only"])]
    return [Figure("1. ResNet-50 224 px bf16 training img/s", f"{rate:.0f} img/s", f">= {RESNET50_GOAL}",
                   rate >= RESNET50_GOAL, [line])]


def write_weights(path: str) -> str:
    """A ResNet-50 state-dict file, as a user's downloaded ImageNet weights would be (random here)."""
    import torchvision

    torch.save(torchvision.models.resnet50().state_dict(), path)
    return path


def cub_recipe() -> dict:
    """The cub200_resnet50 recipe's fixed training keys (spaces/recipes/cub200_resnet50.yaml)."""
    import yaml

    with open(RECIPE_FILE) as fh:
        return dict(yaml.safe_load(fh)["fixed"])


def recipe_config(root: str, weights: str, tiny: bool, device: str) -> TrainConfig:
    # Tiny (the CPU check): 32 px, fp32, the ImageNet stem so the ResNet-50 weights still fit
    # (auto picks the small stem at 32 px); bf16 convolutions crawl on a CPU without bf16 units.
    # One thread: two OpenMP threads on a loaded 2-core machine spin against each other
    # (one ResNet-50 step at 32 px took 10 s on 2 threads, 0.45 s on 1, here).
    sizes = {"image_size": 32, "batch_size": 4, "amp": "off", "stem": "imagenet", "threads": 1} if tiny else {}
    # The recipe's pretrained=IMAGENET1K_V1 would download; a local file stands in for it.
    return from_dict({**cub_recipe(), **sizes, "data_dir": root, "pretrained": weights, "epochs": 1 if tiny else 2,
                      "device": device, "num_workers": min(8, os.cpu_count() or 1)})


def cub_recipe_epoch(device: str, tiny: bool, tmp: str) -> list[Figure]:
    from search.bench.synthetic_cub import write_cub_folder
    from trainable.loop import fit, preflight

    classes, train_per_class, test_per_class = (2, 2, 1) if tiny else (200, CUB_TRAIN // 200, CUB_TEST // 200)
    t0 = time.perf_counter()
    root = str(write_cub_folder(os.path.join(tmp, "CUB_200_2011"), classes, train_per_class, test_per_class))
    written = time.perf_counter() - t0
    cfg = recipe_config(root, write_weights(os.path.join(tmp, "resnet50.pth")), tiny, device)
    t0 = time.perf_counter()
    preflight(cfg)  # as the search's driver does: the folder cache is built here, once
    cache_seconds = time.perf_counter() - t0
    history = []
    fit(cfg, lambda metrics, _checkpoint: history.append(metrics))
    last = history[-1]  # epoch 2 (tiny: 1): cuDNN autotuning and the copy of the cache to the GPU are behind it
    n = classes * (train_per_class + test_per_class)
    lines = [f"CUB-shaped folder: {n} JPEGs at 500x375 written in {written:.0f} s; folder cache built by preflight "
             f"in {cache_seconds:.1f} s",
             f"cub200_resnet50 recipe ({cfg.image_size} px, batch {cfg.batch_size}, adamw + onecycle, amp {cfg.amp}, "
             f"channels_last, random-resized crop + flip + rotation {cfg.rotation_degrees:g}, pretrained from a "
             f"local file): epoch {last['epoch']} took {last['epoch_seconds']:.1f} s (training "
             f"{last['images_per_second']:.0f} img/s); epoch 1 {history[0]['epoch_seconds']:.1f} s; "
             f"the studies: {STUDY_EPOCH_SECONDS} s on an A100, goal < {EPOCH_GOAL_SECONDS} s"]
    for line in lines:
        say("  " + line)
    name = "2. cub200_resnet50 recipe, seconds per epoch"
    if device == "cpu":
        return [Figure(name, "skipped: no GPU", f"< {EPOCH_GOAL_SECONDS} s", None,
                       [line + " - CPU, tiny: checks the code only" for line in lines])]
    return [Figure(name, f"{last['epoch_seconds']:.1f} s", f"< {EPOCH_GOAL_SECONDS} s",
                   last["epoch_seconds"] < EPOCH_GOAL_SECONDS, lines)]


# --- make bench-gpu: 3 and 4, packing trials on one GPU ---------------------------------------


def _space_yaml(path: str, trials: int, at_once: int, gpus: float, cpus: float, fixed: dict) -> str:
    import yaml

    doc = {"metric": "val_top1", "mode": "max", "fixed": {k: v for k, v in fixed.items() if k != "epochs"},
           # A decade around the recipe's lr, so its baseline is inside the domain.
           "params": {"lr": {"type": "loguniform", "low": 0.3, "high": 3.0, "relative_to": "lr"}},
           # Packing is measured on the search phase alone: no confirmation runs.
           "budget": {"num_samples": trials, "max_epochs": fixed["epochs"], "max_concurrent": at_once,
                      "cpus_per_trial": cpus, "gpus_per_trial": gpus, "confirm_seeds": 0},
           "scheduler": "none", "seed": 0}
    with open(path, "w") as fh:
        fh.write(f"# Question: trial-epochs per minute with {at_once} trial(s) at once x {gpus:g} GPU "
                 f"(bench figure 3)\n# Run: python -m search.bench.gpu\n")
        yaml.safe_dump(doc, fh, sort_keys=False)
    return path


def _trial_epochs(exp_path: str) -> int:
    """Epochs every trial reported (one line of result.json each)."""
    total = 0
    for folder in os.listdir(exp_path):
        result = os.path.join(exp_path, folder, "result.json")
        if os.path.isfile(result):
            with open(result) as fh:
                total += sum(1 for line in fh if line.strip())
    return total


class GpuSampler(threading.Thread):
    """GPU utilisation (%) from nvidia-smi every ``period`` s until stopped."""

    def __init__(self, period: float = 0.5):
        super().__init__(daemon=True)
        self.period, self.samples, self._stop_event = period, [], threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.period):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-i", "0"], capture_output=True, text=True, timeout=5).stdout
                self.samples.append(float(out.split()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return  # no nvidia-smi: the figure says it was not measured

    def stop(self) -> list[float]:
        self._stop_event.set()
        self.join()
        return self.samples


def packing(device: str, tiny: bool, tmp: str) -> list[Figure]:
    from search.runner import SearchOptions, run_search

    cores = os.cpu_count() or 1
    epochs = 1 if tiny else 3
    fixed = {"train_subset": 256 if tiny else 10000, "val_subset": 128 if tiny else 2000, "epochs": epochs,
             "batch_size": 128, "device": device, "channels_last": device == "cuda", "amp": "bf16"
             if device == "cuda" else "off"}
    # Without a GPU the same mechanics run on CPU shares: 4 x 1/4 of the cores against 1 x all.
    share = {True: (0.25, cores / 4), False: (1.0, cores)} if device == "cuda" else \
        {True: (0, cores / 4), False: (0, cores)}
    start_ray()
    rates, utilisation = {}, []
    try:
        for packed in (True, False):
            gpus, cpus = share[packed]
            at_once = 4 if packed else 1
            space = _space_yaml(os.path.join(tmp, f"pack{at_once}.yaml"), 4, at_once, gpus, cpus, fixed)
            sampler = GpuSampler() if device == "cuda" and packed else None
            if sampler:
                sampler.start()
            t0 = time.perf_counter()
            summary = run_search(SearchOptions(space=space, overrides={}, storage=os.path.join(tmp, f"ray{at_once}"),
                                               tracking_uri=f"sqlite:///{tmp}/mlflow.db", verbose=0))
            minutes = (time.perf_counter() - t0) / 60
            if sampler:
                utilisation = sampler.stop()
            rates[packed] = _trial_epochs(summary["results"]) / minutes
    finally:
        stop_ray()
    ratio = rates[True] / rates[False]
    packed_share, alone_share = (("0.25 GPU", "1 GPU") if device == "cuda" else
                                 (f"{cores / 4:g} CPU", f"{cores} CPUs"))
    lines = [f"4 trials x {epochs} epochs of ResNet-20 on {fixed['train_subset']} Fashion-MNIST images, real Ray Tune "
             f"searches: 4 at once x {packed_share} {rates[True]:.1f} trial-epochs/min vs 1 at a time x "
             f"{alone_share} {rates[False]:.1f}: {ratio:.2f}x (whole searches, each trial's start-up included)"]
    if utilisation:
        lines.append(f"GPU utilisation during the packed search: median {statistics.median(utilisation):.0f} %, "
                     f"mean {statistics.mean(utilisation):.0f} % over {len(utilisation)} samples (nvidia-smi, 0.5 s)")
    for line in lines:
        say("  " + line)
    if device == "cpu":
        return [Figure("3. 4 trials x 0.25 GPU vs 1 x 1 GPU, trial-epochs/min", "skipped: no GPU", "info", None,
                       [line + " - CPU, tiny: checks the code only" for line in lines]),
                Figure("4. GPU utilisation during a small search", "skipped: no GPU", "info", None)]
    util = f"{statistics.median(utilisation):.0f} % median" if utilisation else "not measured (no nvidia-smi)"
    return [Figure("3. 4 trials x 0.25 GPU vs 1 x 1 GPU, trial-epochs/min", f"{ratio:.2f}x", "info", None, lines),
            Figure("4. GPU utilisation during a small search", util, "info", None)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search.bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (always so without CUDA)")
    parser.add_argument("--no-search", action="store_true", help="skip the Ray figures (3, 4)")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tiny = args.tiny or device == "cpu"
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)  # see recipe_config: on a shared CPU two threads can be 20x slower
    if device == "cuda":
        say(f"tricktune bench-gpu on {torch.cuda.get_device_name()}{' (--tiny)' if tiny else ''}")
    else:
        say("tricktune bench-gpu: NO CUDA DEVICE - every part runs tiny on the CPU to check the code; "
            "no GPU figure is measured")
    t0 = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="tricktune-bench-gpu-")
    from trainable.folder_cache import CACHE_ENV

    saved = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = os.path.join(tmp, "cache")  # a cold cache, removed at the end
    figures = []
    try:
        parts = [resnet50_throughput, lambda d, t: cub_recipe_epoch(d, t, tmp)]
        if not args.no_search:
            parts.append(lambda d, t: packing(d, t, tmp))
        for part in parts:
            figures += part(device, tiny)
    finally:
        if saved is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = saved
        shutil.rmtree(tmp, ignore_errors=True)
        torch.set_num_threads(threads)
    say(f"\n{table(figures)}\n\ntotal {(time.perf_counter() - t0) / 60:.1f} min on "
        f"{torch.cuda.get_device_name() if device == 'cuda' else 'the CPU (no GPU figures measured)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
