"""Soft targets: mixup / cutmix and label smoothing, under one loss rule.

The rule: the loss is always cross-entropy against a soft target ``[B, K]``. Mixing
turns integer labels into soft targets (one-hot when a batch is not mixed), label
smoothing is then applied to that target, and integer labels are never mixed or
smoothed by hand elsewhere. Distillation (``distill.py``) adds its term on the same,
possibly mixed, images.

Hyperparameters (names as in :class:`trainable.config.TrainConfig`):

* ``mixup_alpha`` -- mixup (Zhang et al. 2018, "mixup: Beyond Empirical Risk
  Minimization", arXiv:1710.09412): lam ~ Beta(alpha, alpha), images and targets are
  ``lam * a + (1 - lam) * b``. 0.2 in Bag of Tricks; 0 = off.
* ``cutmix_alpha`` -- CutMix (Yun et al. 2019, arXiv:1905.04899): a box of area
  fraction ``1 - lam`` is pasted from another image, and the target weight is the
  area actually kept (the box is clipped at the border). 1.0 in the paper; 0 = off.
* ``mix_prob`` -- chance a batch is mixed at all; ``mix_switch_prob`` -- with both on,
  chance of CutMix rather than mixup (timm's ``Mixup(prob, switch_prob)``).
* ``label_smoothing`` -- eps: target ``(1 - eps) * soft + eps / K`` (Szegedy et al.
  2016, "Rethinking the Inception Architecture", arXiv:1512.00567); 0 = off.

torchvision's ``transforms.v2.MixUp`` / ``CutMix`` do the mixing; they pair each image
with the previous one in the batch (``x.roll(1, 0)``), which is fine because batches
are shuffled. ``F.cross_entropy`` does the smoothing.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2


class Mixer:
    """Per-batch mixup / cutmix returning ``(images, soft_targets)``; off when both alphas are 0."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 mix_prob: float = 1.0, switch_prob: float = 0.5):
        self.num_classes = num_classes
        self.active = (mixup_alpha > 0 or cutmix_alpha > 0) and mix_prob > 0
        self._mix = None
        if not self.active:
            return
        # torchvision's Beta(alpha, alpha) rejects alpha == 0, so build only what is on.
        mixup = v2.MixUp(alpha=mixup_alpha, num_classes=num_classes) if mixup_alpha > 0 else None
        cutmix = v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes) if cutmix_alpha > 0 else None
        if mixup is not None and cutmix is not None:
            mix = v2.RandomChoice([cutmix, mixup], p=[switch_prob, 1.0 - switch_prob])
        else:
            mix = mixup or cutmix
        # RandomApply leaves a skipped batch's labels as integers; __call__ one-hots them.
        self._mix = v2.RandomApply([mix], p=mix_prob)

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``x``: float images ``[B, C, H, W]`` (torchvision's in-place mixing cannot
        write fractions into uint8); ``y``: int64 labels ``[B]``. Returns the maybe-mixed
        images and float32 targets ``[B, K]`` whose rows sum to 1."""
        if self._mix is not None:
            x, y = self._mix(x, y)
        if y.ndim == 1:  # off, or this batch drew "not mixed"
            y = F.one_hot(y, self.num_classes)
        return x, y.float()


def soft_cross_entropy(logits: Tensor, soft_targets: Tensor, label_smoothing: float) -> Tensor:
    """Mean cross-entropy against soft targets, smoothed by ``label_smoothing`` (0 = off)."""
    # torch smooths probability targets too: (1 - eps) * soft + eps / K, then the cross-entropy.
    return F.cross_entropy(logits, soft_targets, label_smoothing=label_smoothing)


__all__ = ["Mixer", "soft_cross_entropy"]
