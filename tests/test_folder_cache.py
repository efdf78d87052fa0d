"""The folder cache (trainable/folder_cache.py) on real, small generated JPEG folders, really decoded.

Every test gets its own cache folder (``TRICKTUNE_FOLDER_CACHE`` in tmp_path), so the
build log (``builds.jsonl``: one line per decode pass) counts only its own decodes.
"""

import dataclasses
import fcntl
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from search.bench.synthetic_cub import write_cub_folder, write_jpeg
from trainable import data as data_module
from trainable.config import from_dict
from trainable.data import DataError, load_data
from trainable.folder_cache import CACHE_ENV, FolderCache
from trainable.loop import fit, preflight

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("heron", "tern", "wren")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(path))  # os.environ: subprocesses inherit it too
    return path


def write_imagefolder(root, size=(48, 36), n_train=4, n_val=2, seed=0):
    """train/<class>/*.jpg and val/<class>/*.jpg; ``size`` (width, height) or a function of the image number."""
    k = 0
    for split, n in (("train", n_train), ("val", n_val)):
        for name in CLASSES:
            for i in range(n):
                path = root / split / name / f"{i}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_jpeg(path, size(k) if callable(size) else size, seed * 1000 + k)
                k += 1
    return root


def config(root, **overrides):
    return from_dict({"dataset": "imagefolder", "data_dir": str(root), "num_workers": 0, "device": "cpu",
                      "model": "resnet20", "epochs": 1, "batch_size": 4, **overrides})


def batches(iterator):
    xs, ys = zip(*iterator)
    return torch.cat(xs), torch.cat(ys)


def builds(cache_dir):
    return [json.loads(line) for path in cache_dir.glob("*/builds.jsonl") for line in path.read_text().splitlines()]


@pytest.mark.parametrize("layout", ["imagefolder", "cub200"])
def test_cache_gives_the_dataloader_paths_pixels(tmp_path, cache_dir, layout):
    if layout == "cub200":
        root = write_cub_folder(tmp_path / "CUB_200_2011", classes=3, train_per_class=3, test_per_class=2,
                                size=(60, 45))
    else:  # sizes and aspect ratios differ, so resize and centre crop both do something
        root = write_imagefolder(tmp_path / "data", size=lambda k: (40 + 7 * (k % 5), 30 + 11 * (k % 3)))
    cfg = dict(dataset=layout, image_size=28)
    cached = load_data(config(root, **cfg, loader="memory"), "cpu")
    loader = load_data(config(root, **cfg, loader="dataloader"), "cpu")
    assert cached.loader == "memory" and loader.loader == "dataloader"
    assert (cached.n_train, cached.n_val, cached.num_classes) == (loader.n_train, loader.n_val, 3)
    x_cache, y_cache = batches(cached.val_batches(4, "cpu"))
    x_loader, y_loader = batches(loader.val_batches(4, "cpu"))
    assert torch.equal(y_cache, y_loader) and torch.equal(x_cache, x_loader)  # equal, not close
    # Without augmentation the training batches are the same pixels in the same shuffled order.
    x_cache, y_cache = batches(cached.train_batches(4, torch.Generator().manual_seed(5), "cpu"))
    x_loader, y_loader = batches(loader.train_batches(4, torch.Generator().manual_seed(5), "cpu"))
    assert torch.equal(y_cache, y_loader) and torch.equal(x_cache, x_loader)
    assert [b["images"] for b in builds(cache_dir)] == [cached.n_train + cached.n_val]


def test_cub_layout_goes_through_the_cache_by_default(tmp_path, cache_dir):
    write_cub_folder(tmp_path / "CUB_200_2011", classes=4, train_per_class=3, test_per_class=1, size=(50, 40))
    data = load_data(from_dict(dataset="cub200", data_dir=str(tmp_path), device="cpu"), "cpu")  # loader=auto
    assert data.loader == "memory" and (data.n_train, data.n_val, data.num_classes) == (12, 4, 4)
    assert data.image_size == 40 and data.class_names[0] == "Species 1"
    x, y = batches(data.train_batches(5, torch.Generator().manual_seed(0), "cpu"))
    assert x.shape == (12, 3, 40, 40) and torch.bincount(y).tolist() == [3, 3, 3, 3]
    assert [b["images"] for b in builds(cache_dir)] == [16]


def test_two_trials_decode_each_image_once(tmp_path, cache_dir):
    root = write_imagefolder(tmp_path / "data")
    cfg = config(root, crop="random_resized", hflip=True, rotation_degrees=5)
    preflight(cfg)  # the search's driver: builds the cache before any trial
    assert [(b["images"], b["size"]) for b in builds(cache_dir)] == [(18, 36)]
    for seed in (0, 1):  # two trials
        metrics = fit(dataclasses.replace(cfg, seed=seed))
        assert metrics["epoch"] == 1 and metrics["images_per_second"] > 0
    assert len(builds(cache_dir)) == 1  # still the one decode pass, 18 images


SUBPROCESS = """
import sys
from trainable.config import from_dict
from trainable.data import load_data
print("ready", flush=True)
data = load_data(from_dict(dataset="imagefolder", data_dir=sys.argv[1], loader="memory", num_workers=0), "cpu")
x, _ = next(iter(data.val_batches(64, "cpu")))
print("checksum", float(x.double().sum()), flush=True)
"""


def blocked_on(lock_path) -> set[int]:
    """The processes the kernel lists as waiting for the flock on ``lock_path`` (Linux /proc/locks:
    ``N: -> FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> ...``, device numbers in hex)."""
    st = os.stat(lock_path)
    file_id = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as f:
        rows = [line.split() for line in f if "->" in line]
    return {int(row[5]) for row in rows if row[2] == "FLOCK" and row[6] == file_id}


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="needs Linux's /proc/locks to see who waits")
def test_concurrent_processes_wait_for_one_decode(tmp_path, cache_dir):
    root = write_imagefolder(tmp_path / "data")
    cache = FolderCache(sorted(str(p) for p in root.rglob("*.jpg")))  # the same root folder's lock
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    with open(cache.dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a process that is decoding holds it
        procs = [subprocess.Popen([sys.executable, "-c", SUBPROCESS, str(root)], cwd=ROOT, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        for proc in procs:
            assert proc.stdout.readline() == "ready\n", proc.stderr.read()
        # Not a timed wait: the kernel must list both as blocked on this lock, and neither may
        # finish first (a build that skipped the lock would decode and exit).
        deadline = time.monotonic() + 120
        while blocked_on(cache.dir / ".lock") != {proc.pid for proc in procs}:
            assert [proc.poll() for proc in procs] == [None, None], "a process did not wait on the lock"
            assert time.monotonic() < deadline, "the processes never waited on the lock"
            time.sleep(0.05)
        assert [proc.poll() for proc in procs] == [None, None]  # both wait on the lock
        assert not list(cache.dir.glob("*px.npy"))
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    sums = {line for out, _ in outputs for line in out.splitlines() if line.startswith("checksum")}
    assert len(sums) == 1  # both read the same pixels
    assert [b["images"] for b in builds(cache_dir)] == [18]  # decoded by one of them, once


def test_an_image_that_is_not_one_is_named_in_one_line_on_both_paths(tmp_path, cache_dir):
    root = write_imagefolder(tmp_path / "data")
    bad = root / "train" / "tern" / "2.jpg"
    bad.write_bytes(b"this is a text file with a .jpg name\n")
    for loader in ("memory", "dataloader"):
        with pytest.raises(DataError) as err:
            preflight(config(root, loader=loader))
        message = str(err.value)
        assert message.startswith(f"{bad}: not an image Pillow can read") and "\n" not in message
        assert "replace the file or remove it from the data set" in message
    assert builds(cache_dir) == []


def test_a_truncated_jpeg_is_named_in_one_line_before_training(tmp_path, cache_dir):
    root = write_imagefolder(tmp_path / "data")
    bad = root / "val" / "wren" / "1.jpg"
    jpeg = bad.read_bytes()
    bad.write_bytes(jpeg[:jpeg.index(b"\xff\xda") + 40])  # cut 40 bytes into the pixels: the header survives
    with pytest.raises(DataError) as err:
        preflight(config(root))
    message = str(err.value)
    assert message.startswith(f"{bad}: cannot decode this image (image file is truncated") and "\n" not in message
    folder = next(cache_dir.iterdir())
    assert not list(folder.glob("*px.npy*")) and builds(cache_dir) == []  # nothing half-written is left


def test_a_changed_data_set_is_decoded_again(tmp_path, cache_dir):
    root = write_imagefolder(tmp_path / "data")
    cfg = config(root, image_size=32)

    def val_pixels():
        return batches(load_data(cfg, "cpu").val_batches(8, "cpu"))[0]

    before = val_pixels()
    assert len(builds(cache_dir)) == 1 and torch.equal(val_pixels(), before) and len(builds(cache_dir)) == 1
    changed = root / "val" / "heron" / "0.jpg"
    write_jpeg(changed, (48, 36), seed=999)  # replaced: new pixels, same name
    after = val_pixels()
    assert len(builds(cache_dir)) == 2 and not torch.equal(after, before)
    assert torch.equal(after, batches(load_data(config(root, image_size=32, loader="dataloader"), "cpu")
                                      .val_batches(8, "cpu"))[0])
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched only
    val_pixels()
    write_jpeg(root / "val" / "tern" / "9.jpg", (48, 36), seed=7)  # a file added
    assert load_data(cfg, "cpu").n_val == 7
    (root / "train" / "wren" / "3.jpg").unlink()  # a file removed
    assert load_data(cfg, "cpu").n_train == 11
    assert [b["images"] for b in builds(cache_dir)] == [18, 18, 18, 19, 18]
    # Each rebuild removed the data set's previous version: one pixel file is left.
    assert len(list(cache_dir.glob("*/*px.npy"))) == 1


def test_image_size_default_is_the_median_short_side_capped_at_224(tmp_path, cache_dir, capsys):
    shorts = [20, 30, 40, 50, 60, 70]  # cycling over 18 images: median short side 40 (median_low of 18)
    root = write_imagefolder(tmp_path / "small", size=lambda k: (shorts[k % 6] + 10, shorts[k % 6]))
    data = load_data(config(root), "cpu")
    assert data.image_size == 40 and next(data.val_batches(4, "cpu"))[0].shape[-2:] == (40, 40)
    assert "image_size=0: using 40 px, the median short side of the 18 images (40 px)" in capsys.readouterr().out
    big = write_imagefolder(tmp_path / "big", size=(320, 240), n_train=2, n_val=1)
    assert load_data(config(big), "cpu").image_size == 224
    assert "using 224 px, the median short side of the 9 images (240 px) capped at 224" in capsys.readouterr().out
    assert load_data(config(big, image_size=64), "cpu").image_size == 64  # a recipe's explicit size wins
    assert "image_size=0" not in capsys.readouterr().out


def test_subsets_are_views_of_one_shared_mapping(tmp_path, cache_dir):
    root = write_imagefolder(tmp_path / "data")
    data = load_data(config(root, train_subset=6, val_subset=3, loader="memory"), "cpu")
    x_train, x_val = data._batches.x_train, data._batches.x_val
    assert (len(x_train), len(x_val)) == (6, 3)
    # One storage (the memory-mapped cache file) under both splits: nothing was copied.
    assert x_train.untyped_storage().data_ptr() == x_val.untyped_storage().data_ptr()
    assert x_train.untyped_storage().nbytes() == 18 * 3 * 36 * 36


def test_auto_uses_the_dataloader_when_the_cache_would_not_fit(tmp_path, cache_dir, monkeypatch):
    root = write_imagefolder(tmp_path / "data")
    monkeypatch.setattr(data_module, "AUTO_MEMORY_LIMIT_BYTES", 18 * 3 * 36 * 36 - 1)  # one byte short
    data = load_data(config(root), "cpu")
    assert data.loader == "dataloader" and builds(cache_dir) == []
    monkeypatch.setattr(data_module, "AUTO_MEMORY_LIMIT_BYTES", 18 * 3 * 36 * 36)
    assert load_data(config(root), "cpu").loader == "memory"


def test_an_unwritable_cache_folder_is_named_with_the_fix(tmp_path, monkeypatch):
    root = write_imagefolder(tmp_path / "data", n_train=1, n_val=1)
    (tmp_path / "file").write_text("a file where the cache folder should be\n")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "file" / "cache"))
    with pytest.raises(DataError, match=r"folder cache: cannot create .*; set TRICKTUNE_FOLDER_CACHE to a writable"):
        load_data(config(root), "cpu")
    assert load_data(config(root, loader="dataloader"), "cpu").n_train == 3  # the fix the message offers works


@pytest.mark.slow
def test_a_real_search_decodes_each_image_once(tmp_path, cache_dir):
    # python -m search: preflight in the driver builds the cache; three Ray trials map it.
    import yaml

    root = write_imagefolder(tmp_path / "data")
    space = tmp_path / "folder.yaml"
    doc = {"metric": "val_top1", "mode": "max",
           "fixed": {"dataset": "imagefolder", "data_dir": str(root), "train_subset": 0, "val_subset": 0,
                     "batch_size": 4, "crop": "random_resized",
                     "hflip": True, "rotation_degrees": 5},
           "params": {"lr": {"type": "loguniform", "low": 0.01, "high": 0.3}},
           "budget": {"num_samples": 3, "max_epochs": 1, "max_concurrent": 2, "cpus_per_trial": 1},
           "scheduler": "none", "seed": 0}
    space.write_text("# Question: does a search decode each image once?\n# Run: python -m search <this file>\n"
                     + yaml.safe_dump(doc, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    run = subprocess.run([sys.executable, "-m", "search", str(space), "--storage", str(tmp_path / "ray")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    results = list((tmp_path / "ray").glob("*/*/result.json"))
    assert len(results) == 3 and all(path.read_text().strip() for path in results)  # 3 trials trained
    assert [(b["images"], b["size"]) for b in builds(cache_dir)] == [(18, 36)]  # one decode pass in all
    # ... by the driver: a trial that decoded (into any folder) would print this line too, and
    # Ray forwards the trials' output to the driver's.
    output = run.stdout + run.stderr
    assert output.count("folder cache: decoded 18 images") == 1
    assert output.count("image_size=0: using 36 px") >= 2  # the trials' own lines did reach the driver
