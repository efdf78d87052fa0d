"""Random-resized crop and random rotation for a whole uint8 batch, one kernel call each.

The memory path (array data sets and the folder cache) augments a [B,C,H,W] batch that
already sits on the training device. A torchvision v2 transform called on such a batch
draws one set of parameters for all B images, so the per-image way is a Python loop of B
calls; these functions draw B parameter sets at once and apply them in one call.

* :func:`random_resized_crop`: the Inception crop of Szegedy et al. 2015, "Going Deeper
  with Convolutions", https://arxiv.org/abs/1409.4842 (8-100 % of the area, aspect ratio
  3/4-4/3, resized to the output size). The boxes follow ``v2.RandomResizedCrop``'s rules
  exactly (:func:`random_resized_crop_boxes`: 10 attempts, then a centre-crop fallback);
  the resize is ``torchvision.ops.roi_align`` over per-image boxes. For a crop no larger
  than the output (always the case here: output size = input size), roi_align with one
  sample per bin and ``aligned=True`` is bilinear interpolation at the same source points
  as ``F.interpolate(align_corners=False)``.
* :func:`random_rotation`: rotate each image about its centre by an angle drawn uniformly
  from [-degrees, +degrees] (``v2.RandomRotation``'s rule), bilinear, corners filled with 0;
  one ``affine_grid`` + ``grid_sample`` with per-image angles.

All randomness comes from torch's global CPU generator (as the rest of
:mod:`trainable.tricks.augment`), so a run replays from its seed on any device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

SCALE = (0.08, 1.0)  # fraction of the image area (torchvision's and the Inception paper's range)
RATIO = (3 / 4, 4 / 3)  # width/height
ATTEMPTS = 10  # torchvision tries 10 boxes before falling back to a centre crop


def random_resized_crop_boxes(n: int, height: int, width: int, scale=SCALE, ratio=RATIO) -> Tensor:
    """``n`` crop boxes as int64 [n,4] (top, left, height, width), drawn as ``v2.RandomResizedCrop`` does.

    Per image: up to 10 attempts of area ~ U(scale) * H * W and log-aspect ~ U(log ratio),
    rounded to whole pixels; the first that fits is placed uniformly at random. When none
    fits, the centre crop of the largest box whose aspect ratio lies in ``ratio``.
    """
    area = torch.empty(n, ATTEMPTS, dtype=torch.float64).uniform_(*scale) * (height * width)
    log_ratio = torch.empty(n, ATTEMPTS, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_ratio)
    # torch.round and Python's round both round half to even.
    w = torch.round(torch.sqrt(area * aspect)).long()
    h = torch.round(torch.sqrt(area / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.long().argmax(1, keepdim=True)  # the first attempt that fits (0 when none does)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    top = (torch.rand(n, dtype=torch.float64) * (height - h + 1)).long()  # uniform in 0..height-h
    left = (torch.rand(n, dtype=torch.float64) * (width - w + 1)).long()
    # The fallback, for images where none of the 10 attempts fit.
    fw, fh = width, height
    if width / height < min(ratio):
        fh = int(round(width / min(ratio)))
    elif width / height > max(ratio):
        fw = int(round(height * max(ratio)))
    found = fits.any(1)
    h, w = torch.where(found, h, fh), torch.where(found, w, fw)
    top = torch.where(found, top, (height - fh) // 2)
    left = torch.where(found, left, (width - fw) // 2)
    return torch.stack([top, left, h, w], 1)


def resized_crops(x: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Crop box ``boxes[i]`` (top, left, height, width) of image i and resize it to ``size``; float32 out."""
    top, left, h, w = boxes.to(x.device, torch.float32).unbind(1)
    index = torch.arange(len(boxes), device=x.device, dtype=torch.float32)
    rois = torch.stack([index, left, top, left + w, top + h], 1)  # (batch index, x1, y1, x2, y2)
    # sampling_ratio=-1: ceil(box/output) samples per output pixel, i.e. one when upsampling.
    return roi_align(x.float(), rois, size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def random_resized_crop(x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """uint8 [B,C,H,W] -> uint8 [B,C,*size]: each image its own Inception crop, resized (default: H x W)."""
    b, _, height, width = x.shape
    boxes = random_resized_crop_boxes(b, height, width)
    return _to_uint8(resized_crops(x, boxes, size or (height, width)))


def rotation_grid(angles_degrees: Tensor, shape: torch.Size) -> Tensor:
    """``affine_grid`` that rotates image i of a [B,C,H,W] batch by ``angles_degrees[i]`` counter-clockwise."""
    _, _, height, width = shape
    a = torch.deg2rad(angles_degrees.to(torch.float32))
    cos, sin = torch.cos(a), torch.sin(a)
    # Output -> input coordinates in grid_sample's [-1, 1] units; the H/W factors rotate in
    # pixel units, so a non-square image is not sheared. y points down, hence the signs.
    theta = torch.zeros(len(a), 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * height / width
    theta[:, 1, 0], theta[:, 1, 1] = sin * width / height, cos
    return F.affine_grid(theta, list(shape), align_corners=False)


def random_rotation(x: Tensor, degrees: float) -> Tensor:
    """uint8 [B,C,H,W] -> uint8, each image rotated by its own angle ~ U(-degrees, +degrees), corners 0."""
    angles = torch.empty(x.shape[0]).uniform_(-degrees, degrees)
    grid = rotation_grid(angles, x.shape).to(x.device)
    return _to_uint8(F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False))


def _to_uint8(x: Tensor) -> Tensor:
    # Bilinear weights sum to 1, so values stay in [0, 255] up to float error; round, as
    # torchvision does for uint8 images.
    return x.round_().clamp_(0, 255).to(torch.uint8)


__all__ = ["random_resized_crop_boxes", "resized_crops", "random_resized_crop", "rotation_grid", "random_rotation"]
