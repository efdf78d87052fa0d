"""A CUB-200-2011-shaped folder of generated JPEGs, for benchmarks and tests that need one offline.

Same layout as the official archive (``images.txt``, ``train_test_split.txt``,
``image_class_labels.txt``, ``classes.txt``, ``images/<class>/<file>.jpg``), CUB's
typical 500 x 375 px, quality-75 JPEGs of about 37 kB (a smooth colour field plus
noise: decoding one costs about what a CUB photo costs, ~3-4 ms on one core here,
where random noise would be 5x larger and slower). The pixels carry no class signal;
they exist to be read, decoded and trained on.
"""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path

import numpy as np
from PIL import Image

CUB_SIZE = (500, 375)  # width, height: the most common CUB-200 image size
CUB_CLASSES = 200


def write_cub_folder(root: str | os.PathLike, classes: int = CUB_CLASSES, train_per_class: int = 2,
                     test_per_class: int = 1, size: tuple[int, int] = CUB_SIZE, seed: int = 0,
                     workers: int | None = None) -> Path:
    """Write the folder (``root`` is the CUB_200_2011 folder itself) and return ``root``.

    Class c's first ``train_per_class`` images are in the training split, the next
    ``test_per_class`` in the test split. Deterministic given ``seed``.
    """
    root = Path(root)
    jobs, images, split, labels = [], [], [], []
    for c in range(classes):
        folder = f"{c + 1:03d}.Species_{c + 1}"
        for k in range(train_per_class + test_per_class):
            rel = f"{folder}/Species_{c + 1}_{k:04d}.jpg"
            image_id = len(images) + 1
            images.append(f"{image_id} {rel}")
            split.append(f"{image_id} {int(k < train_per_class)}")
            labels.append(f"{image_id} {c + 1}")
            jobs.append((root / "images" / rel, size, seed * 1_000_003 + image_id))
    for c in range(classes):
        (root / "images" / f"{c + 1:03d}.Species_{c + 1}").mkdir(parents=True, exist_ok=True)
    # Encoding is ~10 ms an image; threads overlap it (Pillow releases the GIL while encoding).
    with concurrent.futures.ThreadPoolExecutor(workers or len(os.sched_getaffinity(0))) as pool:
        list(pool.map(lambda job: write_jpeg(*job), jobs))
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "classes.txt").write_text("".join(f"{c + 1} {c + 1:03d}.Species_{c + 1}\n" for c in range(classes)))
    return root


def write_jpeg(path: Path, size: tuple[int, int], seed: int) -> None:
    """One quality-75 JPEG of ``size`` (width, height): a smooth colour field plus noise, from ``seed``."""
    rng = np.random.default_rng(seed)
    width, height = size
    coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.int16)
    noisy = smooth + rng.integers(-20, 21, (height, width, 3), dtype=np.int16)
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, "JPEG", quality=75)


__all__ = ["write_cub_folder", "write_jpeg", "CUB_SIZE", "CUB_CLASSES"]
