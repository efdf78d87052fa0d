"""Random-resized crop, flip and rotation for a whole batch in one resampling pass.

The memory path (array data sets and the folder cache) augments a uint8 [B,C,H,W] batch
that already sits on the training device. A torchvision v2 transform called on such a
batch draws one set of parameters for all B images, so the per-image way is a Python
loop of B calls. Here B parameter sets are drawn at once and applied by one
``affine_grid`` + ``grid_sample`` (bilinear), each image with its own 2x3 matrix: crop
box, mirror and rotation composed, so a pixel is interpolated once, not once per step.

* Crop: the Inception crop of Szegedy et al. 2015, "Going Deeper with Convolutions",
  https://arxiv.org/abs/1409.4842 (8-100 % of the area, aspect ratio 3/4-4/3, resized to
  the output size). :func:`random_resized_crop_boxes` follows ``v2.RandomResizedCrop``'s
  rules exactly (10 attempts rounded to whole pixels, then a centre-crop fallback). The
  output size is the input size here, so a crop is only ever enlarged: bilinear at the
  same source points as ``F.interpolate(align_corners=False)``, no antialiasing needed.
* Mirror: left-right with probability 0.5 (``v2.RandomHorizontalFlip``).
* Rotation: about the image centre by an angle ~ U(-degrees, +degrees)
  (``v2.RandomRotation``'s rule), applied after crop and mirror as on the DataLoader
  path; what it brings in from outside the crop is black (torchvision's fill=0). The
  one-pixel line where black begins is sharp here and blended with black in torchvision
  (~4 % of a 96-px image's pixels differ by more than 2 levels; tests/test_augment.py).

All randomness comes from torch's global CPU generator (as the rest of
:mod:`trainable.tricks.augment`), so a run replays from its seed on any device.

Why not kornia.augmentation: on the same uint8 batches (one torch thread, median of 5
alternating rounds, kornia 0.9.0), its RandomResizedCrop + RandomHorizontalFlip +
RandomRotation(5) took 209 ms per 64-image 224-px batch against 66-75 ms here (three
resampling passes against one), and its RandomCrop(padding=4) + flip 1.05 ms per 32-image
28-px batch against 0.17 ms for augment.pad_crop + random_hflip.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

SCALE = (0.08, 1.0)  # fraction of the image area (torchvision's and the Inception paper's range)
RATIO = (3 / 4, 4 / 3)  # width/height
ATTEMPTS = 10  # torchvision tries 10 boxes before falling back to a centre crop
# On a CPU the batch is resampled in slices of at most this many bytes of float32: glibc
# hands allocations over 32 MB back to the kernel when freed, so each new one faults its
# pages in again. 64 images at 224 px (38.5 MB a tensor) took 210-440 ms per batch in one
# piece and 75-115 ms in 16-MB slices, on one loaded core here.
CPU_SLICE_BYTES = 16 * 2**20


def random_resized_crop_boxes(n: int, height: int, width: int, scale=SCALE, ratio=RATIO) -> Tensor:
    """``n`` crop boxes as int64 [n,4] (top, left, height, width), drawn as ``v2.RandomResizedCrop`` does.

    Per image: up to 10 attempts of area ~ U(scale) * H * W and log-aspect ~ U(log ratio),
    rounded to whole pixels; the first that fits is placed uniformly at random. When none
    fits, the centre crop of the largest box whose aspect ratio lies in ``ratio``.
    """
    area = torch.empty(n, ATTEMPTS, dtype=torch.float64).uniform_(*scale) * (height * width)
    aspect = torch.exp(torch.empty(n, ATTEMPTS, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1])))
    # torch.round and Python's round both round half to even.
    w = torch.round(torch.sqrt(area * aspect)).long()
    h = torch.round(torch.sqrt(area / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.long().argmax(1, keepdim=True)  # the first attempt that fits (0 when none does)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    top = (torch.rand(n, dtype=torch.float64) * (height - h + 1)).long()  # uniform in 0..height-h
    left = (torch.rand(n, dtype=torch.float64) * (width - w + 1)).long()
    fw, fh = width, height  # the fallback, for images where none of the 10 attempts fit
    if width / height < min(ratio):
        fh = int(round(width / min(ratio)))
    elif width / height > max(ratio):
        fw = int(round(height * max(ratio)))
    found = fits.any(1)
    h, w = torch.where(found, h, fh), torch.where(found, w, fw)
    top = torch.where(found, top, (height - fh) // 2)
    left = torch.where(found, left, (width - fw) // 2)
    return torch.stack([top, left, h, w], 1)


def crop_flip_rotate(x: Tensor, boxes: Tensor | None, flips: Tensor | None, angles: Tensor | None,
                     size: tuple[int, int] | None = None) -> Tensor:
    """[B,C,H,W] (any dtype) -> float32 [B,C,*size] in the input's units, one bilinear pass.

    Image i: crop ``boxes[i]`` (top, left, height, width; None = whole image) resized to
    ``size`` (default H x W), mirrored if ``flips[i]``, then rotated ``angles[i]`` degrees
    counter-clockwise about its centre (None = no flip / no rotation).
    """
    b, c, height, width = x.shape
    out_h, out_w = size or (height, width)
    f64 = dict(dtype=torch.float64)
    top, left, h, w = (boxes.to(torch.float64).unbind(1) if boxes is not None else
                       (torch.zeros(b, **f64), torch.zeros(b, **f64), torch.full((b,), height, **f64),
                        torch.full((b,), width, **f64)))
    rad = torch.deg2rad(angles.to(torch.float64)) if angles is not None else torch.zeros(b, **f64)
    cos, sin = torch.cos(rad), torch.sin(rad)
    mirror = 1 - 2 * flips.to(torch.float64) if flips is not None else torch.ones(b, **f64)
    # Output pixel (u, v) -> source pixel, both in grid_sample's [-1, 1] units (align_corners=False):
    # rotate (k keeps pixels square), giving the crop's own coordinates, in which it spans
    # [-1, 1]; mirror; then map the crop box into the source image.
    k = out_h / out_w
    rot = torch.stack([cos, -sin * k, sin / k, cos], 1).view(b, 2, 2)
    matrix = torch.stack([mirror * w / width, h / height], 1)[:, :, None] * rot
    shift = torch.stack([(2 * left + w) / width - 1, (2 * top + h) / height - 1], 1)
    # Per image, per output row: the span of u whose rotated point stays inside the crop.
    v = _centres(out_h, torch.device("cpu")).to(torch.float64)[None, :]
    lo1, hi1 = _solve(rot[:, 0, 0, None], -1 - rot[:, 0, 1, None] * v, 1 - rot[:, 0, 1, None] * v)
    lo2, hi2 = _solve(rot[:, 1, 0, None], -1 - rot[:, 1, 1, None] * v, 1 - rot[:, 1, 1, None] * v)
    inside = torch.stack([torch.maximum(lo1, lo2), torch.minimum(hi1, hi2)], 1)  # [b,2,out_h]

    def to(t: Tensor) -> Tensor:
        return t.to(x.device, torch.float32)

    matrix, shift, inside = to(matrix), to(shift), to(inside)
    u = _centres(out_w, x.device)[None, None, :, None]  # [1,1,W,1]
    v = _centres(out_h, x.device)[None, :, None, None]  # [1,H,1,1]
    step = b if x.device.type != "cpu" else max(1, CPU_SLICE_BYTES // (4 * c * max(height * width, out_h * out_w)))
    out = torch.empty(b, c, out_h, out_w, device=x.device)
    for i in range(0, b, step):
        j = slice(i, i + step)
        m = matrix[j, None, None]  # [n,1,1,2,2]
        # Broadcast straight into the [n,H,W,2] layout grid_sample wants (stacking two
        # [n,H,W] planes costs twice as long: 13 vs 6 ms for 26 images at 224 px here).
        grid = u * m[..., 0] + (v * m[..., 1] + shift[j, None, None])
        # "border": a crop touching the image edge samples up to half a pixel beyond it,
        # which must repeat the edge pixel, not fade to black.
        out[j] = F.grid_sample(x[j].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        if angles is not None:  # what the rotation brings in from outside the crop is black
            lo, hi = inside[j, 0, :, None], inside[j, 1, :, None]  # [n,H,1]
            outside = (u[..., 0] < lo) | (u[..., 0] > hi)
            out[j].masked_fill_(outside[:, None], 0)
    return out


def _solve(a: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
    """The interval of u with low <= a*u <= high, elementwise (empty: lo > hi)."""
    safe = torch.where(a == 0, torch.ones_like(a), a)
    lo = torch.where(a > 0, low / safe, high / safe)
    hi = torch.where(a > 0, high / safe, low / safe)
    always = (low <= 0) & (high >= 0)  # a == 0: every u or none
    inf = torch.full_like(lo, float("inf"))
    lo = torch.where(a == 0, torch.where(always, -inf, inf), lo)
    hi = torch.where(a == 0, torch.where(always, inf, -inf), hi)
    return lo, hi


def _centres(n: int, device) -> Tensor:
    """Pixel centres of an n-pixel axis in [-1, 1] units (align_corners=False)."""
    return (2 * torch.arange(n, device=device, dtype=torch.float32) + 1) / n - 1


def random_crop_flip_rotate(x: Tensor, crop: bool, hflip: bool, degrees: float) -> Tensor:
    """uint8 [B,C,H,W] -> float32 [B,C,H,W] in 0..255: each image its own crop box, coin and angle."""
    b, _, height, width = x.shape
    boxes = random_resized_crop_boxes(b, height, width) if crop else None
    flips = torch.rand(b) < 0.5 if hflip else None
    angles = torch.empty(b).uniform_(-degrees, degrees) if degrees > 0 else None
    return crop_flip_rotate(x, boxes, flips, angles)


def to_uint8(x: Tensor) -> Tensor:
    """Resampled float pixels back to uint8 (rounded, as torchvision's uint8 kernels do)."""
    if x.dtype == torch.uint8:
        return x
    # Bilinear weights sum to 1: values stay in [0, 255] up to float error.
    return x.round().clamp_(0, 255).to(torch.uint8)


__all__ = ["random_resized_crop_boxes", "crop_flip_rotate", "random_crop_flip_rotate", "to_uint8"]
