"""Data augmentation: thin adapters to torchvision v2, each trick off by default.

Tricks and the config key that turns each one on:

* ``crop="pad"``: pad 4 px with zeros, then take a random crop of the original
  size: the CIFAR augmentation of He et al. 2016, "Deep Residual Learning for Image
  Recognition", sec. 4.2, https://arxiv.org/abs/1512.03385.
* ``crop="random_resized"``: Inception-style crop (8-100 % of the area, aspect 3/4-4/3),
  resized back to the input size (``v2.RandomResizedCrop``).
* ``hflip``: mirror left-right with probability 0.5.
* ``rotation_degrees=d``: rotate by an angle ~ U(-d, d) degrees, bilinear, black corners
  (``v2.RandomRotation``; batched in :mod:`trainable.tricks.batch_geometry`).
* ``augment="autoaugment"``: Cubuk et al. 2019, "AutoAugment: Learning Augmentation
  Strategies from Data", https://arxiv.org/abs/1805.09501. The CIFAR-10 policy for
  inputs up to 64 px, the ImageNet policy above.
* ``augment="randaugment"``: Cubuk et al. 2020, "RandAugment: Practical automated data
  augmentation with a reduced search space", https://arxiv.org/abs/1909.13719.
  ``randaugment_n`` ops per image, each at magnitude ``randaugment_m`` on a 0..30 scale.
* ``augment="trivialaugment"``: Müller & Hutter 2021, "TrivialAugment: Tuning-free Yet
  State-of-the-Art Data Augmentation", https://arxiv.org/abs/2103.10158 (one random op at
  a random magnitude; ``v2.TrivialAugmentWide``).
* ``color_jitter=s``: brightness, contrast and saturation each scaled by a factor drawn
  from [1-s, 1+s] (saturation does nothing to 1-channel images).
* ``random_erasing=p``: Zhong et al. 2020, "Random Erasing Data Augmentation", AAAI,
  https://arxiv.org/abs/1708.04896. With probability ``p`` per image a rectangle of 2-33 %
  of the area is set to 0 after normalization, i.e. to the data set's mean colour
  (timm's ``mode="const"``).

Order, on both loader paths: crop, flip, rotation, policy, colour jitter, to float and
normalize, erasing. :class:`BatchAugment` runs it on a uint8 batch that already sits on the
training device (memory path); :func:`sample_transform` builds the same pipeline per
sample for a DataLoader. All randomness comes from torch's global RNG, which the
training loop seeds, so a run is reproducible from ``cfg.seed``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

from trainable.tricks.batch_geometry import random_crop_flip_rotate, to_uint8

PAD = 4  # px of zero padding for crop="pad"; He et al.'s value for 32-px CIFAR images
# Above this side the ImageNet AutoAugment policy fits better than the CIFAR one: the
# CIFAR policy was searched on 32-px images, the ImageNet policy on 224-px crops.
AUTOAUGMENT_CIFAR_MAX_SIZE = 64


def policy(cfg, image_size: int) -> v2.Transform | None:
    """The learned/random augmentation policy named by ``cfg.augment`` (None for "none")."""
    if cfg.augment == "none":
        return None
    if cfg.augment == "autoaugment":
        which = (v2.AutoAugmentPolicy.CIFAR10 if image_size <= AUTOAUGMENT_CIFAR_MAX_SIZE
                 else v2.AutoAugmentPolicy.IMAGENET)
        return v2.AutoAugment(which)
    if cfg.augment == "randaugment":
        # num_magnitude_bins=31 makes `magnitude` the paper's 0..30 scale (torchvision's default).
        return v2.RandAugment(num_ops=cfg.randaugment_n, magnitude=cfg.randaugment_m, num_magnitude_bins=31)
    return v2.TrivialAugmentWide()  # "trivialaugment", the last of config.AUGMENTS


def _color_jitter(cfg) -> v2.Transform | None:
    s = cfg.color_jitter
    return v2.ColorJitter(brightness=s, contrast=s, saturation=s) if s > 0 else None


def _random_erasing(cfg) -> v2.Transform | None:
    return v2.RandomErasing(p=cfg.random_erasing, value=0) if cfg.random_erasing > 0 else None


def pad_crop(x: Tensor, pad: int = PAD) -> Tensor:
    """Zero-pad a [B,C,H,W] batch by ``pad`` px and crop each image back at its own random offset.

    One gather for the whole batch instead of B slicing calls: ~1 ms for 128 28-px
    images on one CPU thread, against ~12 ms for a per-image v2.RandomCrop loop.
    """
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (b, 2)).to(x.device)  # (dy, dx) per image
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # [B,H]
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # [B,W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indices around a slice put their broadcast dims [B,H,W] first: -> [B,H,W,C].
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def random_hflip(x: Tensor, p: float = 0.5) -> Tensor:
    """Mirror each image of a [B,C,H,W] batch left-right with its own coin flip."""
    flip = (torch.rand(x.shape[0]) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _per_image(transform: v2.Transform, x: Tensor) -> Tensor:
    # A torchvision v2 transform called on a [B,C,H,W] tensor draws its random parameters
    # once and applies them to every image of the batch, so the batch would share one
    # crop box / one policy op / one erased rectangle. Looping gives each image its own draw.
    return torch.stack([transform(img) for img in x])


def to_unit_float(image: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [0, 1] as ``x / 255``: the one rule both loader paths use, so
    their pixels agree to the bit (v2.ToDtype(scale=True) multiplies by 1/255 instead, which
    differs in the last bit for some values)."""
    return image.float() / 255


class BatchAugment:
    """Memory path: uint8 batch [B,C,H,W] on any device -> float32 normalized (augmented) batch.

    With every trick off (or ``train=False``) this is exactly ``(x / 255 - mean) / std``.
    Crop "pad", random_resized crop, hflip and rotation are vectorized over the batch; the
    policy, colour jitter and erasing loop over images (torchvision ops, one random draw each).
    """

    def __init__(self, cfg, mean: Sequence[float], std: Sequence[float], train: bool):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.crop = cfg.crop if train else "none"
        self.hflip = bool(cfg.hflip) and train
        self.rotation_degrees = cfg.rotation_degrees if train else 0.0
        self.cfg = cfg
        self.train = train
        self._erasing = _random_erasing(cfg) if train else None
        self._per_image_uint8: dict[int, v2.Transform | None] = {}

    def _uint8_ops(self, image_size: int) -> v2.Transform | None:
        """Policy + colour jitter for this input size (AutoAugment's policy depends on it)."""
        if image_size not in self._per_image_uint8:
            ops = [t for t in (policy(self.cfg, image_size), _color_jitter(self.cfg)) if t is not None]
            self._per_image_uint8[image_size] = (v2.Compose(ops) if len(ops) > 1 else ops[0]) if ops else None
        return self._per_image_uint8[image_size]

    def __call__(self, x: Tensor) -> Tensor:
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise TypeError(f"BatchAugment expects a uint8 [B,C,H,W] batch, got {x.dtype} {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if self.crop == "pad":
            x = pad_crop(x)
        if self.crop == "random_resized" or self.rotation_degrees > 0:
            # Crop, flip and rotation in one resampling pass; float out (trainable/tricks/batch_geometry.py).
            x = random_crop_flip_rotate(x, self.crop == "random_resized", self.hflip, self.rotation_degrees)
        elif self.hflip:
            x = random_hflip(x)
        if self.train:
            ops = self._uint8_ops(max(h, w))
            if ops is not None:
                x = _per_image(ops, to_uint8(x))
        if self.mean.device != x.device:
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        # The ops of to_unit_float and v2.Normalize (divided by 255, minus, divided by), so
        # validation pixels equal the DataLoader path's exactly; in place, as x is a new tensor
        # here (x.float() copies uint8), saving two batch-sized allocations.
        x = x.float().div_(255).sub_(self.mean).div_(self.std)
        if self._erasing is not None:
            x = _per_image(self._erasing, x)
        return x


def sample_transform(cfg, image_size: int, mean: Sequence[float], std: Sequence[float],
                     train: bool) -> v2.Compose:
    """DataLoader path: one sample (PIL image or uint8 [C,H,W] tensor) -> normalized float32 [C,S,S].

    Images of any size are brought to ``image_size`` x ``image_size``: by the random
    resized crop when that trick is on, else by resizing the short side and centre
    cropping (both no-ops for an image that already has that size, so the memory and
    DataLoader paths see the same validation pixels).
    """
    steps: list[v2.Transform] = [v2.ToImage()]
    if train and cfg.crop == "random_resized":
        steps.append(v2.RandomResizedCrop(image_size, antialias=True))
    else:
        steps += [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
    if train:
        if cfg.crop == "pad":
            steps.append(v2.RandomCrop(image_size, padding=PAD))
        if cfg.hflip:
            steps.append(v2.RandomHorizontalFlip())
        if cfg.rotation_degrees > 0:
            steps.append(v2.RandomRotation(cfg.rotation_degrees, interpolation=v2.InterpolationMode.BILINEAR))
        steps += [t for t in (policy(cfg, image_size), _color_jitter(cfg)) if t is not None]
    steps += [to_unit_float, v2.Normalize(list(mean), list(std))]
    if train and (erasing := _random_erasing(cfg)) is not None:
        steps.append(erasing)
    return v2.Compose(steps)


__all__ = ["policy", "BatchAugment", "sample_transform", "pad_crop", "random_hflip"]
