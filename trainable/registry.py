"""What a config may name: every data set and model, with the facts the rest of trainable needs.

One table each. :mod:`trainable.config` takes its choices from them (and which data sets need
a ``data_dir``, how many stages a model has), :mod:`trainable.data` the statistics, input size
and reader, :mod:`trainable.models` the architecture. Torch-free, like the config, so a typo
in a space file still fails before anything heavy is imported. Adding a data set or a model is
one line here plus its reader or builder.
"""

from __future__ import annotations

from dataclasses import dataclass

# Published per-channel statistics, in [0,1] pixel units.
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))  # train split; our 10k subset: 0.2869/0.3531
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
# ImageNet's: what pretrained torchvision ResNets expect, the usual choice for fine-tuning.
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class DatasetInfo:
    reader: str  # the function of trainable.data that reads its files (its _READERS key)
    mean: tuple[float, ...]  # per channel, [0,1] pixel units
    std: tuple[float, ...]
    # Side of the network input for image_size=0, px. None: an image folder, whose median
    # short side it is, at most 224 (trainable.folder_cache.FolderCache.default_size).
    native_size: int | None
    # What data_dir must point at, for a data set with no default place (None: it has one).
    needs_data_dir: str | None = None


DATASETS: dict[str, DatasetInfo] = {
    "fashion_mnist_subset": DatasetInfo("embedded", *FASHION_MNIST_STATS, native_size=28),
    "fashion_mnist": DatasetInfo("idx", *FASHION_MNIST_STATS, native_size=28),
    "cifar10": DatasetInfo("cifar", *CIFAR10_STATS, native_size=32),
    "cifar100": DatasetInfo("cifar", *CIFAR100_STATS, native_size=32),
    "cub200": DatasetInfo("cub200", *IMAGENET_STATS, native_size=None,
                          needs_data_dir="<CUB_200_2011 folder with images.txt>"),
    "imagefolder": DatasetInfo("imagefolder", *IMAGENET_STATS, native_size=None,
                               needs_data_dir="<root with train/ and val/ folders>"),
}


@dataclass(frozen=True)
class ModelInfo:
    depth: int  # weighted layers
    # True: He et al. 2016's CIFAR ResNet (3 stages, built in trainable.models);
    # False: torchvision's ImageNet ResNet (4 stages).
    cifar: bool

    @property
    def stages(self) -> int:
        return 3 if self.cifar else 4


MODELS: dict[str, ModelInfo] = {
    **{f"resnet{depth}": ModelInfo(depth, cifar=True) for depth in (20, 32, 44, 56, 110)},
    **{f"resnet{depth}": ModelInfo(depth, cifar=False) for depth in (18, 34, 50, 101, 152)},
}

__all__ = ["DatasetInfo", "DATASETS", "ModelInfo", "MODELS", "FASHION_MNIST_STATS", "CIFAR10_STATS",
           "CIFAR100_STATS", "IMAGENET_STATS"]
