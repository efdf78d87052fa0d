"""Bench figure 7 (``python -m search.bench --only cache``): image folders decoded once vs per epoch.

On a CUB-shaped folder the figure writes itself (search/bench/synthetic_cub.py: JPEGs at CUB's
typical 500x375, 200 classes, 3 training + 1 test image each, so it runs in a minute or
two on 2 cores), rounds alternate two ways of delivering the same training images to
the loop, and the same validation images:

* tricktune's memory path over the folder cache (trainable/folder_cache.py): every file
  decoded once into a uint8 memory-mapped file, batches augmented in one pass
  (trainable/tricks/batch_geometry.py), on 1 torch thread, as a trial runs it;
* torchvision ``ImageFolder`` + ``DataLoader`` with tricktune's DataLoader-path transforms
  (``sample_transform``: the same crop, flip, rotation and normalization) and its worker
  count (2), persistent workers, after an untimed warm-up epoch: the baseline at its best.

The figure is the median of per-round ratios of images/s (goal >= 5x); the CPU time per
image of each side (this process + its workers, psutil) is printed beside it, steadier
than wall time on a machine other jobs share. Also printed: the decode cost one search
of 50 trials x 10 epochs pays on each path.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

import torch
from torch.utils.data import DataLoader

from search.bench.common import Figure, background_cpu_seconds, cpu_delta, load, paired_ratio, rounds, said, say, spread
from trainable.config import TrainConfig

# One search, for the decode-cost line: 50 trials (a typical num_samples) x 10 epochs (the
# long end of the CUB fine-tuning studies' 5-10).
SEARCH_TRIALS, SEARCH_EPOCHS = 50, 10


def _cub_config(root: str, **overrides) -> TrainConfig:
    """The CUB recipe's data side: 224 px, batch 64, random-resized crop, flip, rotation 5."""
    from trainable.config import from_dict

    return from_dict({"dataset": "cub200", "data_dir": root, "image_size": 224, "batch_size": 64,
                      "crop": "random_resized", "hflip": True, "rotation_degrees": 5, "device": "cpu",
                      "num_workers": 2, **overrides})


def _images_per_second(batches, cpu_per_image: list[float]) -> float:
    """Images/s of one pass; appends the CPU seconds per image that this process and its
    children (DataLoader workers) spent, which other jobs' load does not inflate."""
    before = background_cpu_seconds(set())
    t0 = time.perf_counter()
    seen = sum(len(y) for _x, y in batches)
    seconds = time.perf_counter() - t0
    cpu_per_image.append(cpu_delta(before, background_cpu_seconds(set())) / seen)
    return seen / seconds


def _measure(classes: int, train_per_class: int, repeats: int) -> dict:
    """Rounds of one pass each way over a generated CUB-shaped folder, in a cold cache of its own."""
    from search.bench.synthetic_cub import CUB_SIZE, write_cub_folder
    from trainable import folder_cache

    tmp = tempfile.mkdtemp(prefix="tricktune-bench-cache-")
    saved_env, saved_threads = os.environ.get(folder_cache.CACHE_ENV), torch.get_num_threads()
    os.environ[folder_cache.CACHE_ENV] = os.path.join(tmp, "cache")  # a cold cache, and none left behind
    try:
        root = str(write_cub_folder(os.path.join(tmp, "CUB_200_2011"), classes, train_per_class, 1))
        cfg = _cub_config(root, loader="memory")
        say(f"[7 cache] CUB-shaped folder: {classes} classes x {train_per_class} train + 1 test JPEGs at "
            f"{CUB_SIZE[0]}x{CUB_SIZE[1]}; {cfg.image_size} px, batch {cfg.batch_size}; {repeats} rounds of one "
            f"pass over each split each way, images/s delivered to the loop; training pass with the CUB recipe's "
            f"random-resized crop + flip + rotation {cfg.rotation_degrees:g}; the cache path on 1 torch thread (a "
            f"trial's default) vs ImageFolder + DataLoader with tricktune's {cfg.num_workers} workers")
        t0, cpu0 = time.perf_counter(), time.process_time()
        cpu: dict[str, list[float]] = {name: [] for name in ("cache train", "DataLoader train", "cache val",
                                                               "DataLoader val")}
        cached = _cached_path(cfg, cpu)  # decodes every image once, into the cache
        build, build_cpu = time.perf_counter() - t0, time.process_time() - cpu0
        loaders = _imagefolder_loaders(cfg, root, cpu)
        arms = {"cache train": cached["train"], "DataLoader train": loaders["train"],
                "cache val": cached["val"], "DataLoader val": loaders["val"]}
        for arm in arms.values():  # warm-up: worker start-up, page cache, allocator growth
            arm()
        for values in cpu.values():
            values.clear()  # the warm-up's
        measured = rounds(arms, repeats)
        per_image = _decode_cpu_seconds(sorted(loaders["files"])[:20], cfg.image_size)
    finally:
        torch.set_num_threads(saved_threads)
        if saved_env is None:
            os.environ.pop(folder_cache.CACHE_ENV, None)
        else:
            os.environ[folder_cache.CACHE_ENV] = saved_env
        shutil.rmtree(tmp, ignore_errors=True)
    return {"measured": measured, "cpu": cpu, "cfg": cfg, "n_all": cached["n"], "per_image": per_image,
            "build": build, "build_cpu": build_cpu}


def bench_cache(quick: bool) -> list[Figure]:
    classes, train_per_class, repeats = (10, 2, 1) if quick else (200, 3, 5)
    m = _measure(classes, train_per_class, repeats)
    measured, cpu, cfg, n_all, per_image = m["measured"], m["cpu"], m["cfg"], m["n_all"], m["per_image"]
    build, build_cpu = m["build"], m["build_cpu"]
    train = paired_ratio(measured["cache train"], measured["DataLoader train"])
    val = paired_ratio(measured["cache val"], measured["DataLoader val"])
    decodes = SEARCH_TRIALS * SEARCH_EPOCHS * n_all
    cub = SEARCH_TRIALS * SEARCH_EPOCHS * 11788
    lines = [f"training pass: cache {statistics.median(measured['cache train']):.0f} img/s vs ImageFolder + "
             f"DataLoader {statistics.median(measured['DataLoader train']):.0f} img/s (medians): {train:.2f}x "
             f"({spread(measured['cache train'], measured['DataLoader train'])})",
             f"validation pass (resize + centre crop, no augmentation: the decoding saved, alone): cache "
             f"{statistics.median(measured['cache val']):.0f} img/s vs "
             f"{statistics.median(measured['DataLoader val']):.0f} img/s: {val:.2f}x "
             f"({spread(measured['cache val'], measured['DataLoader val'])})",
             "CPU time per delivered image (this process + its DataLoader workers, psutil; medians): training "
             f"{_cpu_comparison(cpu['cache train'], cpu['DataLoader train'])}, validation "
             f"{_cpu_comparison(cpu['cache val'], cpu['DataLoader val'])}",
             f"decode cost of one search of {SEARCH_TRIALS} trials x {SEARCH_EPOCHS} epochs over these {n_all} "
             f"images: DataLoader path {decodes:,} decodes = {decodes * per_image / 60:.0f} CPU-min at the measured "
             f"{per_image * 1000:.1f} ms CPU per image (decode + resize to {cfg.image_size} px); cache {n_all} "
             f"decodes once: {build_cpu:.1f} CPU-s, {build:.1f} s wall ({load()} load)",
             f"the same search on the real CUB-200 (11,788 images): {cub:,} decodes = {cub * per_image / 3600:.1f} "
             f"CPU-hours on the DataLoader path, {11788 * per_image / 60:.1f} CPU-min once with the cache"]
    return said(lines, Figure("7. folder cache vs ImageFolder + DataLoader, training images/s", f"{train:.2f}x",
                              ">= 5x", train >= 5.0, lines),
                Figure("7b. folder cache vs ImageFolder + DataLoader, validation images/s", f"{val:.2f}x", "info",
                       None))


def _cpu_comparison(cache: list[float], loader: list[float]) -> str:
    text = f"{statistics.median(cache) * 1000:.2f} ms vs {statistics.median(loader) * 1000:.2f} ms"
    # Linux counts CPU time in 10-ms ticks (/proc, which psutil reads): a --quick pass of 20 images can read 0.
    return text + (f" ({paired_ratio(loader, cache):.2f}x less)" if min(cache) > 0 else " (too short to divide)")


def _cached_path(cfg: TrainConfig, cpu: dict[str, list[float]]) -> dict:
    """tricktune's memory path over the folder cache: one pass over each split per call."""
    from trainable.data import load_data

    data = load_data(cfg, "cpu")
    epoch = [0]

    def train() -> float:
        torch.set_num_threads(1)  # as a trial runs it: threads = cpus_per_trial = 1 (search/trial.py)
        epoch[0] += 1
        return _images_per_second(data.train_batches(cfg.batch_size, torch.Generator().manual_seed(epoch[0]), "cpu"),
                                  cpu["cache train"])

    def val() -> float:
        torch.set_num_threads(1)
        return _images_per_second(data.val_batches(cfg.batch_size, "cpu"), cpu["cache val"])

    return {"train": train, "val": val, "n": data.n_train + data.n_val}


def _imagefolder_loaders(cfg: TrainConfig, root: str, cpu: dict[str, list[float]]) -> dict:
    """torchvision ImageFolder + DataLoader over the same files, with tricktune's DataLoader-path
    transforms; persistent workers and a warm-up epoch: the baseline at its best."""
    from torchvision import datasets

    from trainable.registry import IMAGENET_STATS
    from trainable.tricks.augment import sample_transform

    mean, std = IMAGENET_STATS
    files = _cub_train_files(root)
    with open(os.path.join(root, "images.txt")) as fh:
        every = {os.path.join(root, "images", line.split()[1]) for line in fh if line.strip()}
    loaders = {}
    for split, keep, train in (("train", files, True), ("val", every - files, False)):
        folder = datasets.ImageFolder(os.path.join(root, "images"), is_valid_file=keep.__contains__,
                                      transform=sample_transform(cfg, cfg.image_size, mean, std, train=train))
        loaders[split] = DataLoader(folder, batch_size=cfg.batch_size, shuffle=train, num_workers=cfg.num_workers,
                                    persistent_workers=cfg.num_workers > 0)

    def run(split):
        def arm() -> float:
            torch.set_num_threads(1)  # the main process only collects batches; the workers decode
            return _images_per_second(loaders[split], cpu[f"DataLoader {split}"])
        return arm

    return {"train": run("train"), "val": run("val"), "files": files}


def _decode_cpu_seconds(files: list[str], size: int) -> float:
    """CPU seconds (not wall: other jobs' load does not count) to decode and resize one file, one thread."""
    from trainable.folder_cache import decode

    torch.set_num_threads(1)
    t0 = time.thread_time()
    for path in files:
        decode(path, 3, size)
    return (time.thread_time() - t0) / len(files)


def _cub_train_files(root: str) -> set[str]:
    """The training split's image paths, read from a CUB folder's index files."""
    with open(os.path.join(root, "train_test_split.txt")) as fh:
        is_train = dict(line.split() for line in fh if line.strip())
    with open(os.path.join(root, "images.txt")) as fh:
        return {os.path.join(root, "images", rel) for image_id, rel in (line.split() for line in fh if line.strip())
                if is_train[image_id] == "1"}


__all__ = ["bench_cache", "SEARCH_TRIALS", "SEARCH_EPOCHS"]
