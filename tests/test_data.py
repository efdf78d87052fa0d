"""load_data on every data set kind, built offline in tmp_path from real Fashion-MNIST images.

CIFAR: the test writes CIFAR's own on-disk format (pickled dict batches in
``cifar-10-batches-py/`` / ``cifar-100-python/``) and loads it through
``torchvision.datasets.CIFAR10/100`` unchanged, so torchvision's real reading and
md5-checking code runs. Only the class attributes listing the expected md5s are
monkeypatched to the md5s of the files written here (the real CIFAR md5s cannot match
other pixels); the download function is patched only in the no-network test, to
fail the way an offline machine does without waiting on a network timeout.
"""

import hashlib
import importlib.resources
import os
import pickle
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets

from trainable.config import ConfigError, TrainConfig, from_dict
from trainable.data import DataError, interleave_by_class, load_data, steps_per_epoch

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def fmnist():
    """Real Fashion-MNIST images from the embedded set: (x_train, y_train, x_val, y_val) numpy arrays."""
    with (importlib.resources.files("trainable") / "assets" / "fashion_mnist_subset.npz").open("rb") as f:
        npz = np.load(f)
        return npz["x_train"], npz["y_train"], npz["x_val"], npz["y_val"]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def all_batches(batches):
    xs, ys = zip(*batches)
    return torch.cat(xs), torch.cat(ys)


def denormalize(x, data):
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return ((x * std + mean) * 255).round().to(torch.uint8)


# --- the embedded subset and both loader paths ------------------------------------------


def test_subset_sizes_stratified_prefix_shapes_and_dtypes():
    data = load_data(TrainConfig(train_subset=100, val_subset=50), CPU)
    assert (data.n_train, data.n_val, data.num_classes, data.in_channels, data.image_size) == (100, 50, 10, 1, 28)
    assert data.loader == "memory" and data.class_names[0] == "T-shirt/top"
    x, y = all_batches(data.train_batches(32, gen(), CPU))
    assert x.shape == (100, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [10] * 10
    xv, yv = all_batches(data.val_batches(16, CPU))
    assert xv.shape == (50, 1, 28, 28) and torch.bincount(yv).tolist() == [5] * 10
    assert abs(x.mean().item()) < 0.2 and abs(x.std().item() - 1) < 0.2  # normalized with the right stats


def test_full_embedded_set_sizes():
    data = load_data(TrainConfig(), CPU)
    assert (data.n_train, data.n_val) == (10000, 2000)


@pytest.mark.parametrize("loader", ["memory", "dataloader"])
def test_shuffle_follows_the_generator_and_last_batch_rule(loader):
    def sizes(n, batch_size):
        data = load_data(TrainConfig(train_subset=n, val_subset=10, loader=loader, num_workers=0), CPU)
        return [len(y) for _, y in data.train_batches(batch_size, gen(), CPU)]

    assert sizes(130, 64) == [64, 64, 2]  # a last batch of 2 is kept
    assert sizes(129, 64) == [64, 64]  # a last batch of 1 is dropped
    assert sizes(40, 64) == [40] and sizes(128, 64) == [64, 64]
    # The loop's step count (and so its LR schedule) comes from the same rule.
    for n, batch_size in ((130, 64), (129, 64), (40, 64), (128, 64)):
        assert steps_per_epoch(n, batch_size) == len(sizes(n, batch_size))
    data = load_data(TrainConfig(train_subset=129, val_subset=10, loader=loader, num_workers=0), CPU)
    order = lambda seed: torch.cat([y for _, y in data.train_batches(64, gen(seed), CPU)])  # noqa: E731
    assert torch.equal(order(1), order(1)) and not torch.equal(order(1), order(2))


@pytest.mark.parametrize("image_size", [0, 40])
def test_memory_and_dataloader_paths_give_the_same_val_images(image_size):
    cfg = dict(train_subset=64, val_subset=40, image_size=image_size, num_workers=0)
    memory = load_data(TrainConfig(loader="memory", **cfg), CPU)
    loader = load_data(TrainConfig(loader="dataloader", **cfg), CPU)
    assert loader.loader == "dataloader" and memory.image_size == loader.image_size == (image_size or 28)
    xm, ym = all_batches(memory.val_batches(16, CPU))
    xd, yd = all_batches(loader.val_batches(16, CPU))
    assert torch.equal(ym, yd) and torch.allclose(xm, xd, atol=1e-5)
    # Same shuffle from the same generator, too (no augmentation on): both are
    # torch.randperm(n, generator), the permutation the hand-written sampler drew before
    # RandomSampler replaced it, so runs keep their data order.
    tm, lm = all_batches(memory.train_batches(16, gen(3), CPU))
    td, ld = all_batches(loader.train_batches(16, gen(3), CPU))
    assert torch.equal(lm, ld) and torch.allclose(tm, td, atol=1e-5)
    assert torch.equal(ld, memory._batches.y_train[torch.randperm(64, generator=gen(3))])


def test_dataloader_with_a_worker_process_and_augmentation():
    cfg = TrainConfig(loader="dataloader", num_workers=1, train_subset=40, val_subset=20,
                      crop="pad", hflip=True, augment="randaugment", random_erasing=0.5)
    data = load_data(cfg, CPU)
    for _ in range(2):  # persistent workers serve a second epoch
        x, y = all_batches(data.train_batches(16, gen(), CPU))
        assert x.shape == (40, 1, 28, 28) and x.dtype == torch.float32 and torch.bincount(y).tolist() == [4] * 10


def test_interleave_by_class_is_stratified_and_stable():
    labels = torch.tensor([2, 2, 0, 1, 0, 2, 1, 0])
    order = interleave_by_class(labels)
    assert labels[order].tolist() == [0, 1, 2, 0, 1, 2, 0, 2]
    assert order.tolist()[:3] == [2, 3, 0]  # first of each class, in file order
    assert torch.equal(interleave_by_class(labels[order]), torch.arange(8))  # idempotent


# --- full Fashion-MNIST from idx files ----------------------------------------------------


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="needs the Debian package dataset-fashion-mnist")
def test_full_fashion_mnist_from_idx_files():
    data = load_data(TrainConfig(dataset="fashion_mnist", train_subset=20, val_subset=10), CPU)
    assert (data.n_train, data.n_val, data.in_channels) == (20, 10, 1)
    _, y = all_batches(data.val_batches(10, CPU))
    assert torch.bincount(y).tolist() == [1] * 10


def test_fashion_mnist_missing_files(tmp_path):
    with pytest.raises(DataError, match="no train-images-idx3-ubyte.gz .*set data_dir"):
        load_data(TrainConfig(dataset="fashion_mnist", data_dir=str(tmp_path)), CPU)


# --- CIFAR, in its own on-disk format -------------------------------------------------------


def _rgb32(gray28):
    """[N,28,28] gray -> [N,3,32,32] (2 px zero border, gray copied to R, G and B)."""
    x = np.pad(gray28, ((0, 0), (2, 2), (2, 2)))
    return np.repeat(x[:, None], 3, axis=1)


def _write_cifar(root, cls, fmnist, n_train=30, n_val=20):
    """Write a tiny CIFAR-10/100 folder and point cls's md5 lists at its files."""
    x_train, y_train, x_val, y_val = fmnist
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    label_key = "labels" if cls is datasets.CIFAR10 else "fine_labels"
    names_key = cls.meta["key"]
    n_classes = 10 if cls is datasets.CIFAR10 else 100
    files = {}
    train_names = [name for name, _ in cls.train_list]
    chunks = np.array_split(np.arange(n_train), len(train_names))
    for name, idx in zip(train_names, chunks):
        files[name] = {"data": _rgb32(x_train[idx]).reshape(len(idx), -1), label_key: y_train[idx].tolist()}
    files[cls.test_list[0][0]] = {"data": _rgb32(x_val[:n_val]).reshape(n_val, -1), label_key: y_val[:n_val].tolist()}
    files[cls.meta["filename"]] = {names_key: [f"class_{i}" for i in range(n_classes)]}
    md5 = {}
    for name, obj in files.items():
        (folder / name).write_bytes(pickle.dumps(obj))
        md5[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    return md5


def _patch_md5s(monkeypatch, cls, md5):
    monkeypatch.setattr(cls, "train_list", [[name, md5[name]] for name, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[name, md5[name]] for name, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5[cls.meta["filename"]]})


@pytest.mark.parametrize("name, cls", [("cifar10", datasets.CIFAR10), ("cifar100", datasets.CIFAR100)])
def test_cifar_from_local_files(tmp_path, monkeypatch, fmnist, name, cls):
    _patch_md5s(monkeypatch, cls, _write_cifar(tmp_path, cls, fmnist))
    monkeypatch.setattr(datasets.cifar, "download_and_extract_archive",
                        lambda *a, **k: pytest.fail("files are in place: no download may be tried"))
    data = load_data(TrainConfig(dataset=name, data_dir=str(tmp_path)), CPU)
    assert (data.n_train, data.n_val, data.in_channels, data.image_size) == (30, 20, 3, 32)
    assert data.num_classes == (10 if name == "cifar10" else 100) and data.loader == "memory"
    x, y = all_batches(data.val_batches(8, CPU))
    assert y.tolist() == fmnist[3][:20].tolist()  # written in interleaved order already
    assert torch.equal(denormalize(x, data), torch.from_numpy(_rgb32(fmnist[2][:20])))
    via_loader = load_data(TrainConfig(dataset=name, data_dir=str(tmp_path), loader="dataloader", num_workers=0), CPU)
    assert torch.allclose(all_batches(via_loader.val_batches(8, CPU))[0], x, atol=1e-5)


def test_cifar_absent_and_offline(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datasets.cifar, "download_and_extract_archive", offline)
    fix = "put cifar-10-python.tar.gz or the extracted cifar-10-batches-py/ folder"
    with pytest.raises(DataError, match=fix) as e:
        load_data(TrainConfig(dataset="cifar10", data_dir=str(tmp_path)), CPU)
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)


# --- CUB-200-2011 and ImageFolder from PNG trees ------------------------------------------


def _png(path, gray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gray).convert("RGB").save(path)


def _write_cub(root, fmnist, n_classes=3, per_class=5):
    """CUB_200_2011 layout; the last 2 images of each class are the test split."""
    x, y = fmnist[0], fmnist[1]
    images, split, labels = [], [], []
    for c in range(n_classes):
        picks = np.flatnonzero(y == c)[:per_class]
        for k, i in enumerate(picks):
            rel = f"{c + 1:03d}.Class_{c}/Class_{c}_{k:04d}.png"
            _png(root / "images" / rel, x[i])
            image_id = len(images) + 1
            images.append(f"{image_id} {rel}")
            split.append(f"{image_id} {int(k < per_class - 2)}")
            labels.append(f"{image_id} {c + 1}")
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "classes.txt").write_text("".join(f"{c + 1} {c + 1:03d}.Class_{c}\n" for c in range(n_classes)))


def test_cub200(tmp_path, fmnist):
    _write_cub(tmp_path / "CUB_200_2011", fmnist)
    data = load_data(TrainConfig(dataset="cub200", data_dir=str(tmp_path), loader="dataloader", num_workers=0), CPU)
    assert (data.n_train, data.n_val, data.num_classes, data.in_channels) == (9, 6, 3, 3)
    assert data.loader == "dataloader" and data.image_size == 28  # image_size=0: the images' own size
    assert data.class_names == ["Class 0", "Class 1", "Class 2"]  # "001.Class_0" in classes.txt
    x, y = all_batches(data.train_batches(3, gen(), CPU))
    assert x.shape == (9, 3, 28, 28) and x.dtype == torch.float32 and torch.bincount(y).tolist() == [3, 3, 3]
    xv, yv = all_batches(data.val_batches(4, CPU))
    assert yv.tolist() == [0, 1, 2, 0, 1, 2]
    memory = load_data(TrainConfig(dataset="cub200", data_dir=str(tmp_path / "CUB_200_2011"), loader="memory"), CPU)
    xm, ym = all_batches(memory.val_batches(4, CPU))
    assert torch.equal(ym, yv) and torch.equal(xm, xv)


def test_cub200_missing_index_file(tmp_path, fmnist):
    _write_cub(tmp_path, fmnist)
    (tmp_path / "train_test_split.txt").unlink()
    with pytest.raises(DataError, match="has no train_test_split.txt; point data_dir at the extracted CUB_200_2011"):
        load_data(TrainConfig(dataset="cub200", data_dir=str(tmp_path)), CPU)


def test_cub200_missing_image(tmp_path, fmnist):
    _write_cub(tmp_path, fmnist)
    next((tmp_path / "images").rglob("*.png")).unlink()
    with pytest.raises(DataError, match="1 image.* listed in images.txt are not in"):
        load_data(TrainConfig(dataset="cub200", data_dir=str(tmp_path)), CPU)


def _write_imagefolder(root, fmnist, classes=("bag", "coat", "shirt"), n_train=4, n_val=2):
    x, y, names = fmnist[0], fmnist[1], {"bag": 8, "coat": 4, "shirt": 6}
    for name in classes:
        picks = np.flatnonzero(y == names[name])
        for k, i in enumerate(picks[:n_train + n_val]):
            _png(root / ("train" if k < n_train else "val") / name / f"{k}.png", x[i])


def test_imagefolder(tmp_path, fmnist):
    _write_imagefolder(tmp_path, fmnist)
    data = load_data(TrainConfig(dataset="imagefolder", data_dir=str(tmp_path), image_size=32, num_workers=0), CPU)
    assert (data.n_train, data.n_val, data.num_classes, data.image_size) == (12, 6, 3, 32)
    assert data.class_names == ["bag", "coat", "shirt"] and data.mean == (0.485, 0.456, 0.406)
    x, y = all_batches(data.train_batches(5, gen(), CPU))
    assert x.shape == (12, 3, 32, 32) and torch.bincount(y).tolist() == [4, 4, 4]
    subset = load_data(TrainConfig(dataset="imagefolder", data_dir=str(tmp_path), train_subset=6, num_workers=0), CPU)
    _, y = all_batches(subset.train_batches(6, gen(), CPU))
    assert torch.bincount(y).tolist() == [2, 2, 2]  # folder order is interleaved too


def test_imagefolder_with_one_class(tmp_path, fmnist):
    _write_imagefolder(tmp_path, fmnist, classes=("bag",))
    with pytest.raises(DataError, match="needs at least 2 classes"):
        load_data(TrainConfig(dataset="imagefolder", data_dir=str(tmp_path)), CPU)


def test_imagefolder_without_images(tmp_path):
    for split in ("train", "val"):
        for name in ("bag", "coat"):
            (tmp_path / split / name).mkdir(parents=True)
    with pytest.raises(DataError, match=r"put images \(.jpg, .png, ...\) in train/<class>/ folders"):
        load_data(TrainConfig(dataset="imagefolder", data_dir=str(tmp_path)), CPU)


def test_imagefolder_without_val_folder(tmp_path, fmnist):
    _write_imagefolder(tmp_path, fmnist)
    for path in (tmp_path / "val").rglob("*.png"):
        path.unlink()
    for folder in sorted((tmp_path / "val").rglob("*"), reverse=True):
        folder.rmdir()
    (tmp_path / "val").rmdir()
    with pytest.raises(DataError, match="no val/ folder"):
        load_data(TrainConfig(dataset="imagefolder", data_dir=str(tmp_path)), CPU)


# --- other errors ---------------------------------------------------------------------------


def test_missing_data_dir(tmp_path):
    # config.validate checks the folder exists, before load_data is ever called.
    with pytest.raises(ConfigError, match="data_dir: no directory at .*point it at"):
        from_dict(dataset="cifar10", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="dataset=cub200 needs data_dir"):
        from_dict(dataset="cub200")


def test_subset_larger_than_the_split():
    with pytest.raises(DataError, match="train_subset=20000 but fashion_mnist_subset has only 10000"):
        load_data(TrainConfig(train_subset=20000), CPU)


def test_data_error_is_a_config_error():
    from trainable.config import ConfigError

    assert issubclass(DataError, ConfigError)
