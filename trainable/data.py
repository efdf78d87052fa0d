"""Data sets as batches of normalized float32 NCHW tensors on the training device.

``load_data(cfg, device)`` reads one of six data sets and returns a :class:`Data`
whose ``train_batches`` / ``val_batches`` the training loop iterates. Two paths:

* **memory**: the whole (resized) split is a uint8 NCHW tensor moved once to the
  device; a batch is an index slice, augmented on the device by
  :class:`~trainable.tricks.augment.BatchAugment`. No DataLoader, no worker
  processes: for 28-32 px images the per-sample Python of a DataLoader costs more
  than the model on a small CPU.
  Image folders (CUB, ImageFolder) come from :mod:`trainable.folder_cache`: decoded once
  per machine into a shared memory-mapped file.
* **dataloader**: a torch DataLoader with ``cfg.num_workers`` persistent workers and
  per-sample torchvision v2 transforms (:func:`~trainable.tricks.augment.sample_transform`),
  for sets that do not fit in memory (image folders are decoded per sample, every epoch).

``loader="auto"`` picks memory while the decoded train+val set (for a folder: the
whole cache) stays under 2 GB, else the DataLoader. A folder's ``image_size=0`` is its
median short side, at most 224 px.

Every data set is put in class-interleaved order (class 0, 1, ..., K-1, 0, 1, ...,
stable within a class), so ``train_subset``/``val_subset`` keep a stratified prefix.

Where the files come from:

* ``fashion_mnist_subset``: ``trainable/assets/fashion_mnist_subset.npz``, 10k/2k
  stratified images that ship with the package (see ``FASHION_MNIST_LICENSE.md``).
* ``fashion_mnist``: the four idx files (``.gz`` or not) in ``data_dir``, default
  ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
* ``cifar10``/``cifar100``: ``torchvision.datasets.CIFAR10/100`` under ``data_dir``,
  default ``~/.cache/tricktune/cifar``; downloaded when missing and online.
* ``cub200``: the official ``CUB_200_2011`` folder (``images.txt``,
  ``train_test_split.txt``, ``image_class_labels.txt``, ``classes.txt``, ``images/``).
* ``imagefolder``: ``data_dir/train/<class>/*`` and ``data_dir/val/<class>/*``.
"""

from __future__ import annotations

import gzip
import importlib.resources
import itertools
import os
import pickle
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision.transforms import v2

from trainable.config import DataError, TrainConfig
from trainable.folder_cache import FolderCache
from trainable.registry import DATASETS
from trainable.tricks.augment import BatchAugment, sample_transform

# loader=auto keeps a data set on the device up to this many bytes of uint8 pixels
# (train+val): CIFAR-10 at 32 px is 184 MB, at 224 px 9 GB; CUB-200 (11,788 images) at
# 224 px is 1.8 GB.
AUTO_MEMORY_LIMIT_BYTES = 2 * 10**9

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
DEFAULT_CIFAR_DIR = "~/.cache/tricktune/cifar"
CUB_INDEX_FILES = ("images.txt", "train_test_split.txt", "image_class_labels.txt", "classes.txt")
CUB_URL = "https://www.vision.caltech.edu/datasets/cub_200_2011/"


@dataclass
class Data:
    """A loaded data set: its shape facts for the model, and batch iterators for the loop."""

    num_classes: int
    in_channels: int  # 1 for Fashion-MNIST, 3 for CIFAR/CUB/ImageFolder
    image_size: int  # side of the (square) network input, px
    mean: tuple[float, ...]  # per channel, [0,1] pixel units
    std: tuple[float, ...]
    class_names: list[str]
    n_train: int
    n_val: int
    loader: str  # the path in use, "memory" or "dataloader" ("auto" resolved)
    _batches: _MemoryBatches | _LoaderBatches = field(repr=False, compare=False)

    def train_batches(self, batch_size: int, generator: torch.Generator,
                      device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch: shuffled by ``generator``, augmented, float32 normalized images and int64 labels;
        :func:`steps_per_epoch` batches (a last batch of one image is dropped)."""
        return self._batches.train(batch_size, generator, torch.device(device))

    def val_batches(self, batch_size: int, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
        """The validation split in a fixed order, normalized, not augmented."""
        return self._batches.val(batch_size, torch.device(device))


def load_data(cfg: TrainConfig, device: torch.device | str) -> Data:
    """Read ``cfg.dataset``, apply subsets and resizing, and set up the batch path.

    ``cfg`` is trusted as :func:`trainable.config.validate` left it (known data set, a
    ``data_dir`` that exists where one is needed); what only the files can tell (missing
    or corrupt files, too few images) raises DataError.
    """
    device = torch.device(device)
    info = DATASETS[cfg.dataset]
    train, val, class_names = _READERS[info.reader](cfg)
    train, val = train.interleaved(), val.interleaved()
    folder = None
    if train.files is not None:  # stats and reads the header of every file (trainable/folder_cache.py)
        folder = FolderCache(train.files + val.files, train.channels)
    n_train_all = len(train)
    train = _prefix(train, cfg.train_subset, "train_subset", cfg.dataset)
    val = _prefix(val, cfg.val_subset, "val_subset", cfg.dataset)
    if len(train) < 2:
        raise DataError(f"{cfg.dataset}: {len(train)} training image(s); BatchNorm needs at least 2, "
                        "so raise train_subset or add images")
    if len(val) == 0:
        raise DataError(f"{cfg.dataset}: the validation split is empty; add validation images")

    size = cfg.image_size or (folder.default_size() if folder else info.native_size)
    mean, std = info.mean, info.std
    loader = _resolve_loader(cfg, len(folder) if folder else len(train) + len(val), len(mean), size)
    if loader == "memory" and folder is not None:
        # Rows of the shared cache: [0, n_train_all) the train split, then val, each in
        # interleaved order, so a subset (a prefix) is a slice that shares the file's pages.
        pixels = folder.pixels(size)
        batches = _MemoryBatches(pixels[:len(train)], train.labels, pixels[n_train_all:n_train_all + len(val)],
                                 val.labels, cfg, mean, std, device)
    elif loader == "memory":
        batches = _MemoryBatches(train.decoded(size), train.labels, val.decoded(size), val.labels,
                                 cfg, mean, std, device)
    else:
        batches = _LoaderBatches(train.dataset(sample_transform(cfg, size, mean, std, train=True)),
                                 val.dataset(sample_transform(cfg, size, mean, std, train=False)),
                                 cfg, device)
    return Data(num_classes=len(class_names), in_channels=len(mean), image_size=size, mean=mean, std=std,
                class_names=list(class_names), n_train=len(train), n_val=len(val), loader=loader,
                _batches=batches)


def split_sizes(cfg: TrainConfig) -> tuple[int, int]:
    """(training, validation) images of ``cfg.dataset`` before any subset, read as ``load_data``
    reads them but nothing decoded or cached: a folder's files are only listed."""
    train, val, _ = _READERS[DATASETS[cfg.dataset].reader](cfg)
    return len(train), len(val)


def _resolve_loader(cfg: TrainConfig, n_images: int, channels: int, size: int) -> str:
    if cfg.loader != "auto":
        return cfg.loader
    return "memory" if n_images * channels * size * size <= AUTO_MEMORY_LIMIT_BYTES else "dataloader"


# --- one split, as arrays or as files ------------------------------------------------


@dataclass
class _Split:
    """Labels plus either uint8 images [N,C,H,W] (array data sets) or image files (folders)."""

    labels: Tensor  # int64 [N]
    images: Tensor | None = None
    files: list[str] | None = None
    channels: int = 3  # for files: 1 decodes as grayscale, 3 as RGB

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, index: Tensor) -> _Split:
        return _Split(self.labels[index], None if self.images is None else self.images[index],
                      None if self.files is None else [self.files[i] for i in index.tolist()], self.channels)

    def interleaved(self) -> _Split:
        return self.select(interleave_by_class(self.labels))

    def decoded(self, size: int) -> Tensor:
        """uint8 [N,C,size,size] on the CPU: short side resized to ``size`` (antialiased), centre crop.
        Array data sets only: image folders are decoded once into trainable/folder_cache.py."""
        # Chunks bound the peak memory of upsampling; resize is per image, so same pixels.
        return torch.cat([_fit(chunk, size) for chunk in self.images.split(1024)])

    def dataset(self, transform) -> Dataset:
        if self.images is not None:
            return _TensorDataset(self.images, self.labels, transform)
        return _FileDataset(self.files, self.labels, self.channels, transform)


def _fit(images: Tensor, size: int) -> Tensor:
    # The same two ops sample_transform uses for validation, so both paths see the same pixels.
    images = v2.functional.resize(images, [size], antialias=True)
    return v2.functional.center_crop(images, [size])


def interleave_by_class(labels: Tensor) -> Tensor:
    """Order: 1st of class 0, 1st of class 1, ..., 2nd of class 0, ... (stable within a class).

    Any prefix then holds each class as evenly as the split allows; idempotent.
    """
    if len(labels) == 0:
        return torch.zeros(0, dtype=torch.long)
    by_class = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(labels)
    rank[by_class] = torch.arange(len(labels)) - first[labels[by_class]]
    return torch.argsort(rank * len(counts) + labels, stable=True)


def _prefix(split: _Split, n: int, key: str, dataset: str) -> _Split:
    if n == 0:
        return split
    if n > len(split):
        raise DataError(f"{key}={n} but {dataset} has only {len(split)} images in that split; "
                        f"use {key}=0 for all of them or a smaller number")
    return split.select(torch.arange(n))


class _TensorDataset(Dataset):
    def __init__(self, images: Tensor, labels: Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), int(self.labels[i])


class _FileDataset(Dataset):
    def __init__(self, files: list[str], labels: Tensor, channels: int, transform):
        self.files, self.labels, self.channels, self.transform = files, labels, channels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        with Image.open(self.files[i]) as image:
            image = image.convert("L" if self.channels == 1 else "RGB")
        return self.transform(image), int(self.labels[i])


# --- the two batch paths -------------------------------------------------------------


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Training batches (optimizer steps) in one epoch: every full batch, and the last
    partial one unless it holds a single image. BatchNorm cannot train on one image: a
    1x1 feature map leaves one value per channel and torch raises (resnet50, ImageNet
    stem, 32 px: layer4 is 1x1), and larger maps give statistics of one image only."""
    full, rest = divmod(n_train, batch_size)
    return full + (rest >= 2)


class _MemoryBatches:
    def __init__(self, x_train: Tensor, y_train: Tensor, x_val: Tensor, y_val: Tensor,
                 cfg: TrainConfig, mean, std, device: torch.device):
        self.x_train, self.y_train = x_train.to(device), y_train.to(device)
        self.x_val, self.y_val = x_val.to(device), y_val.to(device)
        self.train_augment = BatchAugment(cfg, mean, std, train=True)
        self.val_augment = BatchAugment(cfg, mean, std, train=False)

    def train(self, batch_size: int, generator: torch.Generator, device: torch.device):
        n = len(self.y_train)
        order = torch.randperm(n, generator=generator, device=generator.device).to(self.x_train.device)
        for index in order.split(batch_size)[:steps_per_epoch(n, batch_size)]:
            yield self.train_augment(self.x_train[index]).to(device), self.y_train[index].to(device)

    def val(self, batch_size: int, device: torch.device):
        for start in range(0, len(self.y_val), batch_size):
            x = self.x_val[start:start + batch_size]
            yield self.val_augment(x).to(device), self.y_val[start:start + batch_size].to(device)


class _LoaderBatches:
    def __init__(self, train: Dataset, val: Dataset, cfg: TrainConfig, device: torch.device):
        self.datasets = {"train": train, "val": val}
        self.num_workers = cfg.num_workers
        self.pin_memory = device.type == "cuda"
        self._loaders: dict[tuple[str, int], DataLoader] = {}  # one per (split, batch size), kept for its workers

    def _loader(self, split: str, batch_size: int) -> DataLoader:
        key = (split, batch_size)
        if key not in self._loaders:
            dataset = self.datasets[split]
            # The DataLoader (and its persistent workers) lives across epochs, while each
            # epoch's order must come from the generator the loop passes in: train() sets the
            # sampler's generator, which the main process reads when an epoch starts.
            sampler = RandomSampler(dataset) if split == "train" else None
            self._loaders[key] = DataLoader(
                dataset, batch_size=batch_size, sampler=sampler, num_workers=self.num_workers,
                pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0)
        return self._loaders[key]

    def _to(self, batch, device):
        x, y = batch
        return x.to(device, non_blocking=self.pin_memory), y.to(device, non_blocking=self.pin_memory)

    def train(self, batch_size: int, generator: torch.Generator, device: torch.device):
        loader = self._loader("train", batch_size)
        loader.sampler.generator = generator
        for batch in itertools.islice(loader, steps_per_epoch(len(loader.dataset), batch_size)):
            yield self._to(batch, device)

    def val(self, batch_size: int, device: torch.device):
        for batch in self._loader("val", batch_size):
            yield self._to(batch, device)


# --- readers: cfg -> (train split, val split, class names) ----------------------------


def _read_fashion_mnist_subset(cfg: TrainConfig):
    asset = importlib.resources.files("trainable") / "assets" / "fashion_mnist_subset.npz"
    if not asset.is_file():
        raise DataError(f"fashion_mnist_subset: the embedded file {asset} is missing; reinstall tricktune "
                        "or run `make data` to rebuild it")
    with asset.open("rb") as f, np.load(f, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in ("x_train", "y_train", "x_val", "y_val", "class_names")}
    return (_array_split(arrays["x_train"], arrays["y_train"]), _array_split(arrays["x_val"], arrays["y_val"]),
            [str(name) for name in arrays["class_names"]])


def _array_split(images: np.ndarray, labels: np.ndarray) -> _Split:
    images = torch.from_numpy(np.ascontiguousarray(images))
    if images.dim() == 3:  # [N,H,W] grayscale
        images = images.unsqueeze(1)
    return _Split(torch.from_numpy(np.asarray(labels, dtype=np.int64)), images=images)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx (LeCun MNIST format) file of uint8, gzipped or not."""
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an idx file of uint8; replace it with the original Fashion-MNIST file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    # bytearray: a writable buffer, so torch.from_numpy shares it without a warning.
    return np.frombuffer(bytearray(data), dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _read_fashion_mnist(cfg: TrainConfig):
    root = Path(os.path.expanduser(cfg.data_dir or DEFAULT_FASHION_MNIST_DIR))
    fix = ("set data_dir to a folder with the four idx files of https://github.com/zalandoresearch/fashion-mnist "
           "(or install the Debian package dataset-fashion-mnist)")
    if not root.is_dir():
        raise DataError(f"fashion_mnist: no directory {root}; {fix}")
    splits = []
    for official in ("train", "t10k"):
        arrays = []
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{official}-{kind}-ubyte"
            path = next((root / n for n in (name + ".gz", name) if (root / n).is_file()), None)
            if path is None:
                raise DataError(f"fashion_mnist: no {name}.gz in {root}; {fix}")
            arrays.append(read_idx(path))
        splits.append(_array_split(*arrays))
    return splits[0], splits[1], FASHION_MNIST_CLASSES


def _read_cifar(cfg: TrainConfig):
    from torchvision import datasets  # imported here: pulls in more of torchvision than the rest needs

    name = cfg.dataset
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    root = Path(os.path.expanduser(cfg.data_dir or DEFAULT_CIFAR_DIR))
    if root.name == cls.base_folder:  # data_dir given as the extracted folder itself
        root = root.parent
    try:
        # download=True first checks the md5s of the files in place and only downloads
        # (or extracts a cls.filename archive found in root) when they are missing.
        train = cls(str(root), train=True, download=True)
        val = cls(str(root), train=False, download=False)
    except (OSError, RuntimeError, EOFError, tarfile.TarError, pickle.UnpicklingError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"{name}: no usable files in {root} and the download failed ({reason}); put "
                        f"{cls.filename} or the extracted {cls.base_folder}/ folder there, or set data_dir "
                        "to where they are") from e
    splits = [_array_split(ds.data.transpose(0, 3, 1, 2), np.asarray(ds.targets)) for ds in (train, val)]
    return splits[0], splits[1], list(train.classes)


def _read_index(path: Path) -> dict[int, str]:
    with open(path) as f:
        return {int(key): value.strip() for key, value in (line.split(maxsplit=1) for line in f if line.strip())}


def _read_cub200(cfg: TrainConfig):
    root = Path(os.path.expanduser(cfg.data_dir))
    if not (root / "images.txt").is_file() and (root / "CUB_200_2011" / "images.txt").is_file():
        root = root / "CUB_200_2011"  # data_dir given as the folder the archive was extracted into
    fix = f"point data_dir at the extracted CUB_200_2011 folder ({CUB_URL})"
    for name in CUB_INDEX_FILES:
        if not (root / name).is_file():
            raise DataError(f"cub200: {root} has no {name}; {fix}")
    images = _read_index(root / "images.txt")
    is_train = _read_index(root / "train_test_split.txt")
    labels = _read_index(root / "image_class_labels.txt")
    classes = _read_index(root / "classes.txt")
    if not images:
        raise DataError(f"cub200: {root / 'images.txt'} lists no images; {fix}")
    for table, name in ((is_train, "train_test_split.txt"), (labels, "image_class_labels.txt")):
        missing = images.keys() - table.keys()
        if missing:
            raise DataError(f"cub200: image id {min(missing)} of images.txt has no line in {name}; {fix}")
    missing = [images[i] for i in images if not (root / "images" / images[i]).is_file()]
    if missing:
        raise DataError(f"cub200: {len(missing)} image(s) listed in images.txt are not in {root / 'images'} "
                        f"(first: {missing[0]}); {fix}")
    class_ids = sorted(classes)  # 1-based in the files
    column = {class_id: k for k, class_id in enumerate(class_ids)}
    names = [classes[c].split(".", 1)[-1].replace("_", " ") for c in class_ids]  # "001.Black_footed_Albatross"
    splits = []
    for wanted in ("1", "0"):  # 1 = train, 0 = test (the val split here)
        ids = [i for i in sorted(images) if is_train[i] == wanted]
        splits.append(_Split(torch.tensor([column[int(labels[i])] for i in ids], dtype=torch.long),
                             files=[str(root / "images" / images[i]) for i in ids]))
    return splits[0], splits[1], names


def _read_imagefolder(cfg: TrainConfig):
    from torchvision import datasets

    root = Path(os.path.expanduser(cfg.data_dir))
    layout = "data_dir needs train/<class>/*.jpg and val/<class>/*.jpg (ImageFolder layout)"
    found = {}
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataError(f"imagefolder: no {split}/ folder in {root}; {layout}")
        try:
            found[split] = datasets.ImageFolder(str(root / split))
        except FileNotFoundError as e:  # no class folders, or class folders without images
            reason = " ".join(str(e).split())
            raise DataError(f"imagefolder: {reason}; put images (.jpg, .png, ...) in {split}/<class>/ folders") from e
    classes = found["train"].classes
    if len(classes) < 2:
        raise DataError(f"imagefolder: {root / 'train'} has {len(classes)} class folder ({', '.join(classes)}); "
                        "classification needs at least 2 classes, one folder each")
    if found["val"].classes != classes:
        differ = sorted(set(found["val"].classes) ^ set(classes))
        raise DataError(f"imagefolder: train/ and val/ have different class folders ({', '.join(differ)}); "
                        "give val/ the same class folders as train/")
    splits = [_Split(torch.tensor([label for _, label in found[s].samples], dtype=torch.long),
                     files=[path for path, _ in found[s].samples]) for s in ("train", "val")]
    return splits[0], splits[1], list(classes)


# By DatasetInfo.reader (trainable/registry.py, the one list of data sets).
_READERS = {
    "embedded": _read_fashion_mnist_subset,
    "idx": _read_fashion_mnist,
    "cifar": _read_cifar,
    "cub200": _read_cub200,
    "imagefolder": _read_imagefolder,
}

__all__ = ["Data", "DataError", "load_data", "split_sizes", "steps_per_epoch", "interleave_by_class", "read_idx"]
