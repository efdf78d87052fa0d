"""Bench figure 1 (``python -m search.bench --only loop``): fit()'s in-memory batches vs a plain DataLoader loop.

Both train the default recipe's ResNet-20 on the same Fashion-MNIST images for one epoch
on the same threads; the plain loop is what a textbook PyTorch script does (a DataLoader
with per-sample torchvision transforms and 2 workers). Rounds of fit() channels_last,
the plain loop and fit() NCHW, the order reversed every other round; the figure is the
median of per-round ratios of images/s, goal >= 1.0x. Also printed: channels_last on/off.
"""

from __future__ import annotations

import importlib.resources
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from search.bench.common import CORES, Figure, paired_ratio, recipe, rounds, say, spread
from trainable.config import TrainConfig
from trainable.data import interleave_by_class
from trainable.loop import fit
from trainable.models import build_model
from trainable.registry import FASHION_MNIST_STATS
from trainable.tricks.augment import PAD


class AugmentedImages(Dataset):
    """uint8 [N,1,H,W] images with a per-sample transform: what a plain PyTorch script does."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def embedded_train_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
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
    images, labels = embedded_train_images(cfg.train_subset)
    mean, std = FASHION_MNIST_STATS
    steps = []
    if cfg.crop == "pad":
        steps.append(v2.RandomCrop(images.shape[-1], padding=PAD))
    if cfg.hflip:
        steps.append(v2.RandomHorizontalFlip())
    transform = v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])
    loader = DataLoader(AugmentedImages(images, labels, transform), batch_size=cfg.batch_size, shuffle=True,
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
    n, repeats = (256, 1) if quick else (1000, 5)
    base = dict(train_subset=n, val_subset=200, epochs=1, threads=min(2, CORES))
    arms: dict[str, Callable[[], float]] = {
        "fit channels_last": lambda: fit_images_per_second(recipe(**base, channels_last=True)),
        "plain DataLoader": lambda: plain_loop_images_per_second(recipe(**base)),
        "fit NCHW": lambda: fit_images_per_second(recipe(**base, channels_last=False))}
    say(f"[1 loop] ResNet-20, {n} Fashion-MNIST images x 1 epoch, {base['threads']} threads; {repeats} rounds "
        f"of {' / '.join(arms)}, the order reversed every other round")
    # Warm-up: the first training in a process pays one-off costs (oneDNN kernel set-up,
    # allocator growth) that would otherwise be charged to whichever arm goes first.
    for layout in (True, False):
        fit_images_per_second(recipe(**{**base, "train_subset": 256}, channels_last=layout))
    measured = rounds(arms, repeats)
    layout = paired_ratio(measured["fit channels_last"], measured["fit NCHW"])
    best = "fit channels_last" if layout >= 1 else "fit NCHW"  # fit as tricktune would run it here
    ratio = paired_ratio(measured[best], measured["plain DataLoader"])
    lines = [f"{best} {statistics.median(measured[best]):.0f} img/s vs plain DataLoader loop (2 workers) "
             f"{statistics.median(measured['plain DataLoader']):.0f} img/s (medians): {ratio:.2f}x "
             f"({spread(measured[best], measured['plain DataLoader'])})",
             f"channels_last on/off for fit: {layout:.2f}x "
             f"({'helps' if layout > 1.02 else 'hurts' if layout < 0.98 else 'no difference'} on this CPU; "
             f"{spread(measured['fit channels_last'], measured['fit NCHW'])})"]
    for line in lines:
        say("  " + line)
    return [Figure("1. fit() vs plain DataLoader loop, images/s", f"{ratio:.2f}x", ">= 1.0x", ratio >= 1.0, lines),
            Figure("1b. fit() channels_last on/off, images/s", f"{layout:.2f}x", "info", None)]


__all__ = ["bench_loop", "plain_loop_images_per_second", "fit_images_per_second", "embedded_train_images"]
