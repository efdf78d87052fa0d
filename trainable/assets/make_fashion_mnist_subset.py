"""Make ``fashion_mnist_subset.npz``: a stratified, seeded slice of Fashion-MNIST that ships with tricktune.

10,000 training images (1,000 per class) from the official train split and 2,000
validation images (200 per class) from the official test split, so validation
images were never seen by anyone's training run on the official split either.

Order: image ``i`` has class ``i % 10`` and is the ``i // 10``-th pick of that class,
so every prefix whose length is a multiple of 10 holds exactly as many images of
each class (``train_subset=100`` -> 10 per class).

Run (from the repository root; reads the Debian package ``dataset-fashion-mnist``)::

    python trainable/assets/make_fashion_mnist_subset.py \
        --source /usr/share/datasets/fashion-mnist --seed 0

The output is deterministic for a given seed and source (numpy's PCG64).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
from pathlib import Path

import numpy as np

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def read_idx(path: Path) -> np.ndarray:
    """Read an idx (LeCun) file, gzipped or not: big-endian header, then uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = data[0] * 256 + data[1], data[2], data[3]
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an idx file of uint8 (magic {data[:4].hex()})")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def stratified_order(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``per_class`` random images of each class, interleaved class 0,1,..,9,0,1,..."""
    classes = np.unique(labels)
    picks = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    return np.stack(picks, axis=1).reshape(-1)  # row r = the r-th pick of every class


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--val-per-class", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("fashion_mnist_subset.npz"))
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    arrays = {}
    for split, official, per_class in (("train", "train", args.train_per_class),
                                       ("val", "t10k", args.val_per_class)):
        images = read_idx(args.source / f"{official}-images-idx3-ubyte.gz")
        labels = read_idx(args.source / f"{official}-labels-idx1-ubyte.gz")
        order = stratified_order(labels, per_class, rng)
        arrays[f"x_{split}"] = np.ascontiguousarray(images[order])
        arrays[f"y_{split}"] = labels[order].astype(np.int64)
        arrays[f"{split}_source_index"] = order.astype(np.int32)  # row in the official split
    np.savez_compressed(args.out, **arrays, class_names=np.array(CLASS_NAMES))
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, sha256 {digest[:16]}...): "
          + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
    main()
