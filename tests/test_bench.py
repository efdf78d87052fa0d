"""The benchmark's code works and prints its lines; its numbers are not checked (see search/bench/)."""

import os
import re
import subprocess
import sys

import pytest
import torch

from search import bench
from search.bench import common as bench_common
from search.bench import gpu as bench_gpu
from search.bench import loop as bench_loop
from search.bench import rungs as bench_rungs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_epochs_to_find_counts_every_reported_epoch_until_a_finished_near_best_trial():
    results = [("a", 1, 50.0), ("b", 1, 60.0), ("a", 2, 70.0),  # a finished, 1.0 below the best
               ("b", 2, 71.0)]  # b finished: the best
    assert bench_rungs.best_final(results, max_epochs=2) == 71.0
    assert bench_rungs.epochs_to_find(results, max_epochs=2, target=70.5) == (4, True)
    assert bench_rungs.epochs_to_find(results, max_epochs=2, target=69.5) == (3, True)
    # An unfinished trial never counts, however good its early epoch.
    assert bench_rungs.epochs_to_find([("c", 1, 99.0)], max_epochs=2, target=50.0) == (1, False)


def test_table_marks_each_figure():
    figures = [bench.Figure("2. b", "1.10x", "<= 1.05x", False), bench.Figure("1. a", "1.20x", ">= 1.0x", True),
               bench.Figure("1b. c", "0.90x", "info", None),
               bench.Figure("5. gpu", "skipped (no CUDA device)", ">= 2470 img/s", None)]
    rows = bench.table(figures).splitlines()
    assert rows[0] == "| figure | measured | goal | result |"
    assert rows[2:] == ["| 1. a | 1.20x | >= 1.0x | PASS |", "| 1b. c | 0.90x | info | info |",
                        "| 2. b | 1.10x | <= 1.05x | FALL SHORT |",
                        "| 5. gpu | skipped (no CUDA device) | >= 2470 img/s | skipped |"]


def test_quick_loop_and_gpu_print_their_lines_and_write_the_table(capsys, tmp_path):
    report = tmp_path / "bench.md"
    assert bench.main(["--quick", "--only", "loop", "--only", "gpu", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "fit() vs plain DataLoader loop" in out and "channels_last on/off for fit" in out
    if not torch.cuda.is_available():
        assert "GPU: skipped (no CUDA device)" in out
    assert "| figure | measured | goal | result |" in out and "total " in out
    text = report.read_text()
    assert "| 1. fit() vs plain DataLoader loop, images/s |" in text and "--quick" in text
    # One provenance line first: machine, date, commit, the command that measured it.
    first = text.splitlines()[0]
    assert first.startswith("Measured on ") and f"{os.cpu_count()} CPU cores" in first and " UTC; commit " in first
    assert ("no GPU" in first) != torch.cuda.is_available()
    assert re.search(r" UTC; commit ([0-9a-f]{7}(\+dirty)?|unknown); `", first)
    assert first.endswith(f"`python -m search.bench --quick --only loop --only gpu --report {report}`")


def test_plain_loop_trains_on_the_same_images_as_fit():
    # Figure 1 compares two ways of feeding one training set: the plain loop's images must be
    # fit()'s, pixel for pixel and label for label (here without augmentation, in fit()'s order).
    from trainable.data import load_data

    n = 64
    cfg = bench_common.recipe(train_subset=n, val_subset=32, batch_size=n, epochs=1, threads=1, hflip=False,
                              crop="none")
    images, labels = bench_loop.embedded_train_images(n)
    data = load_data(cfg, "cpu")
    ((x, y),) = list(data.train_batches(n, torch.Generator().manual_seed(3), "cpu"))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (data.mean, data.std))
    assert torch.equal(y, labels[order])
    assert torch.allclose(x, (images[order].float() / 255 - mean) / std)
    assert bench_loop.plain_loop_images_per_second(cfg, num_workers=0) > 0


def test_gpu_measurements_run_on_the_cpu_too():
    # The GPU figure only runs where CUDA is; its two measurements are device-agnostic, so
    # check them here on a sliver: bf16 convolutions are slow on a CPU without bf16
    # instructions (32-px images and 64 of them took 110 s here), hence 16 px and 8 images.
    import torchvision

    assert bench_gpu.train_images_per_second(torchvision.models.resnet18(num_classes=10), batch=2, size=16,
                                             channels=3, classes=10, steps=1, device="cpu", warmup=1) > 0
    assert bench_gpu.cifar_epoch_seconds("cpu", n=8, batch=4, size=16) > 0


def test_quick_packing_prints_the_three_arrangements(capsys):
    assert bench.main(["--quick", "--only", "packing"]) == 0
    out = capsys.readouterr().out
    assert "2 trials x 1 thread / 1 trial x 2 threads" in out and "tricktune runs 2 trials x 1 thread" in out


def test_quick_cache_figure_compares_both_paths_on_a_cub_shaped_folder(capsys):
    # 10 classes x 3 real 500x375 JPEGs, decoded into a cold cache and by DataLoader workers.
    assert bench.main(["--quick", "--only", "cache"]) == 0
    out = capsys.readouterr().out
    assert "folder cache: decoded 30 images to 224 px" in out  # once, into the bench's own cache
    assert "training pass: cache" in out and "vs ImageFolder + DataLoader" in out
    assert "validation pass (resize + centre crop" in out and "decode cost of one search of 50 trials" in out
    assert "| 7. folder cache vs ImageFolder + DataLoader, training images/s |" in out


def test_bench_gpu_without_a_gpu_runs_tiny_and_says_nothing_was_measured(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: make bench-gpu measures it")
    assert bench_gpu.main(["--no-search"]) == 0
    out = capsys.readouterr().out
    assert "NO CUDA DEVICE" in out and "no GPU figure is measured" in out
    assert "ResNet-50, 32 px, batch 2, bf16, channels_last" in out  # the real training step ran, tiny
    assert "cub200_resnet50 recipe (32 px, batch 4, adamw + onecycle" in out and "epoch 1 took" in out
    assert "| 2. cub200_resnet50 recipe, seconds per epoch | skipped: no GPU |" in out


@pytest.mark.slow
def test_bench_gpu_packing_runs_real_searches_with_fractional_resources():
    run = subprocess.run([sys.executable, "-m", "search.bench.gpu"], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "real Ray Tune searches: 4 at once x" in run.stdout
    assert "| 3. 4 trials x 0.25 GPU vs 1 x 1 GPU, trial-epochs/min |" in run.stdout


@pytest.mark.slow
def test_quick_ray_figures_run_a_real_search():
    # A subprocess: the figures start and stop Ray, which must not leak into other tests.
    run = subprocess.run([sys.executable, "-m", "search.bench", "--quick", "--only", "overhead", "--only", "search",
                          "--only", "fidelity"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "whole trial (Ray time_total_s) / fit() twin wall" in run.stdout
    assert "trial-epochs until a trial finished within 0.5" in run.stdout
    assert "| 3. ASHA+TPE vs random, trial-epochs to a near-best config |" in run.stdout
    assert "Spearman of each epoch's value with the final val_top1 ranking" in run.stdout
    assert "| 6. first rung (val_loss at epoch " in run.stdout and "noise floor" in run.stdout
