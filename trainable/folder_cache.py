"""Image folders (cub200, imagefolder) decoded once per machine into a shared uint8 cache.

Why: the DataLoader path decodes every JPEG with PIL in every epoch of every trial. The
CUB-200 studies this tool replaces spent 78 s per epoch on an A100 that way (~110 img/s
for 8,500 images), while the GPU trains ResNet-50 at ~2,470 img/s. A search of 50 trials
x 10 epochs decodes each image 500 times; with this cache, once.

What is stored: every image of the data set (both splits), decoded as RGB, short side
resized to S px (antialiased) and centre-cropped to S x S: the same three steps the
DataLoader path's validation transform runs, so validation pixels are equal on both
paths. Train-time crops, flips and rotations then run on the batch, on the training
device (:class:`~trainable.tricks.augment.BatchAugment`). Random-resized crops are cut
from that S x S square, not from the full-size file as the DataLoader path does.

Layout, under ``$TRICKTUNE_FOLDER_CACHE`` (default ``~/.cache/tricktune/folders``)::

    <root id>/                     one folder per data set root (hash of its real path)
      <files id>.sizes.npy         int32 [N,2]: (width, height) of each file, from its header
      <files id>-<S>px.npy         uint8 [N,C,S,S], rows in the order load_data lists the files
      builds.jsonl                 one line per decode pass: pid, images decoded, S, seconds
      .lock                        fcntl lock, held while a process decodes

``<files id>`` hashes every file's path, size and modification time (ns), the channel
count and the Pillow and torchvision versions (their decoders and resize make the
pixels), so adding, removing, replacing or touching a file gives a new id: the old
files are deleted and the cache is rebuilt. A ``.npy`` file appears only complete (written
under another name, then renamed), so readers never lock; concurrent trials that find
it missing queue on the lock and the first one decodes while the others wait and then
map its file. Every process maps the same file (``np.load(mmap_mode="c")``), so on one
machine the pages are shared through the page cache.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import hashlib
import json
import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2

from trainable.config import DataError
from trainable.files import atomic_path

CACHE_ENV = "TRICKTUNE_FOLDER_CACHE"
DEFAULT_CACHE_DIR = "~/.cache/tricktune/folders"
# image_size=0 on a folder: its median short side, at most 224 px (the ImageNet/CUB
# fine-tuning size; ResNet-50 costs 4.1 GFLOPs per image there, growing with the square).
MAX_DEFAULT_SIZE = 224
CACHE_FORMAT = 1  # bump when what a cache file holds changes, so old files are not reused
# What PIL raises for a file it cannot open or decode (truncated JPEG: OSError; broken PNG
# chunk: SyntaxError; absurd dimensions: DecompressionBombError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def cache_root() -> Path:
    return Path(os.path.expanduser(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR))


def decode(path: str, channels: int, size: int) -> Tensor:
    """One file -> uint8 [C,size,size]: what sample_transform's validation branch makes of it
    (ToImage, Resize(size) antialiased, CenterCrop(size)), before ToDtype and Normalize."""
    try:
        with Image.open(path) as image:
            pixels = v2.functional.pil_to_tensor(image.convert("L" if channels == 1 else "RGB"))
    except _DECODE_ERRORS as err:
        raise DataError(f"{path}: cannot decode this image ({_one_line(err)}); replace the file or remove it "
                        "from the data set") from err
    return v2.functional.center_crop(v2.functional.resize(pixels, [size], antialias=True), [size])


class FolderCache:
    """The decoded-once pixels of one list of image files, at any size asked for.

    Constructing it stats every file and reads every header (once per machine: the sizes
    are kept in the cache folder), so a file that is not an image fails here, in one line.
    """

    def __init__(self, files: list[str], channels: int = 3, cache_dir: str | os.PathLike | None = None):
        if not files:
            raise DataError("image folder: no image files to cache")
        self.files, self.channels = list(files), channels
        root = os.path.realpath(os.path.commonpath([os.path.dirname(f) for f in self.files]))
        self.dir = Path(cache_dir or cache_root()) / hashlib.sha256(root.encode()).hexdigest()[:16]
        self.key = self._fingerprint()
        self.sizes = self._image_sizes()  # int32 [N,2], (width, height)

    def __len__(self) -> int:
        return len(self.files)

    def _fingerprint(self) -> str:
        digest = hashlib.sha256(f"{CACHE_FORMAT} {self.channels} {PIL.__version__} {torchvision.__version__}".encode())
        for path in self.files:
            try:
                st = os.stat(path)
            except OSError as err:
                raise DataError(f"{path}: {_one_line(err)}; the data set changed while it was read, run again") \
                    from err
            digest.update(f"\n{path}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        return digest.hexdigest()[:24]

    def _image_sizes(self) -> np.ndarray:
        path = self.dir / f"{self.key}.sizes.npy"
        if path.is_file():
            return np.load(path)
        sizes = np.empty((len(self), 2), dtype=np.int32)
        for k, file in enumerate(self.files):
            try:
                with Image.open(file) as image:
                    sizes[k] = image.size
            except _DECODE_ERRORS as err:
                raise DataError(f"{file}: not an image Pillow can read ({_one_line(err)}); replace the file or "
                                "remove it from the data set") from err
        try:  # kept so the next trial skips the headers; optional (the DataLoader path needs no cache folder)
            self.dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: np.save adds no ".npy"
                np.save(fh, sizes)
        except OSError:
            pass
        return sizes

    def _make_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DataError(f"folder cache: cannot create {self.dir} ({_one_line(err)}); set {CACHE_ENV} to a "
                            "writable folder on a local disk, or loader=dataloader") from err

    def default_size(self) -> int:
        """image_size for ``image_size=0``: the median short side, capped at 224; says what it chose."""
        median = statistics.median_low(self.sizes.min(axis=1).tolist())
        size = min(median, MAX_DEFAULT_SIZE)
        print(f"image_size=0: using {size} px, the median short side of the {len(self)} images ({median} px)"
              + (f" capped at {MAX_DEFAULT_SIZE}" if median > size else "") + "; set image_size to choose",
              flush=True)
        return size

    def nbytes(self, size: int) -> int:
        return len(self) * self.channels * size * size

    def path(self, size: int) -> Path:
        return self.dir / f"{self.key}-{size}px.npy"

    def pixels(self, size: int) -> Tensor:
        """uint8 [N,C,size,size] mapped from the cache file, decoding every image first if no
        process on this machine has yet; slices of it share the file's pages."""
        path = self.path(size)
        if not path.is_file():
            self._build(size, path)
        # "c" (copy-on-write) gives a writable array, so torch wraps it without a warning;
        # nothing writes to it, so every page stays shared with the file.
        return torch.from_numpy(np.load(path, mmap_mode="c"))

    def _build(self, size: int, path: Path) -> None:
        self._make_dir()
        free = shutil.disk_usage(self.dir).free
        if self.nbytes(size) > free:
            raise DataError(f"folder cache: {len(self)} images at {size} px need {self.nbytes(size) / 1e9:.1f} GB "
                            f"but {self.dir} has {free / 1e9:.1f} GB free; set {CACHE_ENV} to a folder with room, "
                            "or loader=dataloader")
        with open(self.dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
            if path.is_file():  # another process built it while this one waited
                return
            self._remove_stale()
            t0 = time.perf_counter()
            workers = _decode_into_new_file(path, self.files, self.channels, size)
            seconds = time.perf_counter() - t0
            with open(self.dir / "builds.jsonl", "a") as log:
                log.write(json.dumps({"pid": os.getpid(), "images": len(self), "size": size,
                                      "seconds": round(seconds, 2), "file": path.name}) + "\n")
        print(f"folder cache: decoded {len(self)} images to {size} px in {seconds:.1f} s ({workers} threads) "
              f"into {path}", flush=True)

    def _remove_stale(self) -> None:
        # Called holding the lock, so no other build is writing: a partial pixels file is left
        # over from a killed build, and files of another files id are an older version of the set.
        # (A partial sizes file may be another process's write in progress: it takes no lock.)
        for old in self.dir.iterdir():
            partial_pixels = old.suffix == ".part" and "px.npy." in old.name
            if partial_pixels or (old.suffix == ".npy" and not old.name.startswith(self.key)):
                old.unlink(missing_ok=True)


def _decode_into_new_file(path: Path, files: list[str], channels: int, size: int) -> int:
    """Decode ``files`` into ``path`` (written under a temporary name, renamed when complete); returns the
    threads used.

    Threads, not processes: Pillow's decoder and torch's resize release the GIL, and the
    threads write straight into the memory-mapped output. One torch thread each, so the
    pool does not multiply with torch's own intra-op threads.
    """
    workers = len(os.sched_getaffinity(0))
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    try:
        # The mapping stays valid across the rename at the end of the block; it closes on return.
        with atomic_path(path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), channels, size, size))

            def one(k: int) -> None:
                out[k] = decode(files[k], channels, size).numpy()

            for future in [pool.submit(one, k) for k in range(len(files))]:
                future.result()  # the first file that fails stops the build and is named
            out.flush()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(torch_threads)
    return workers


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


__all__ = ["FolderCache", "decode", "cache_root", "CACHE_ENV", "MAX_DEFAULT_SIZE"]
