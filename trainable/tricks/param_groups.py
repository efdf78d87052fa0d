"""Optimizer parameter groups: no weight decay on biases/BN, and layer-wise LRs.

Hyperparameters (names as in :class:`trainable.config.TrainConfig`):

* ``no_bias_decay`` -- biases and BatchNorm gamma/beta get weight decay 0 (He et al.
  2019, "Bag of Tricks for Image Classification with Convolutional Neural Networks",
  arXiv:1812.01187, sec. 3.1): decay is meant to keep weights small against
  overfitting, while on BN scales and biases it only shrinks the output. The rule is
  timm's: every parameter with ``ndim <= 1`` (all biases and all norm parameters).
* ``layer_lr_decay`` -- discriminative learning rates (Howard & Ruder 2018, ULMFiT,
  "Universal Language Model Fine-tuning for Text Classification", arXiv:1801.06146):
  stage k counted from the head gets ``lr * d**k`` -- head (``fc``) k=0, the last
  ``layerN`` k=1, ..., ``layer1`` k=N, stem (``conv1``/``bn1``) k=N+1 -- so the
  generic early features move least, which matters most when fine-tuning pretrained
  weights. None (or 1) = one LR for all.
* ``stage_lr_divisors`` -- the same idea with one divisor per stage, from the stem to the
  head, as the CUB-200 fine-tuning studies wrote it: (10, 8, 6, 4, 2, 2) = stem lr/10,
  layer1 lr/8, layer2 lr/6, layer3 lr/4, layer4 and head lr/2. Empty = off.

Stages are read from torchvision's ResNet attribute names (``conv1``, ``bn1``,
``layer1..N``, ``fc``), which this project's CIFAR ResNets use too.
"""

from __future__ import annotations

import re

from torch import nn

_LAYER = re.compile(r"layer(\d+)\.")


def _stage(name: str, num_layers: int) -> tuple[str, int]:
    """(stage name, k = distance from the head) for a parameter name."""
    name = name.removeprefix("_orig_mod.")  # torch.compile's wrapper prefixes every name
    if name.startswith("fc."):
        return "head", 0
    match = _LAYER.match(name)
    if match:
        i = int(match.group(1))
        return f"layer{i}", num_layers - i + 1
    if name.startswith(("conv1", "bn1")):
        return "stem", num_layers + 1
    raise ValueError(f"per-stage LRs: cannot place parameter {name!r} in a stage; they expect torchvision "
                     "ResNet names (conv1/bn1, layer1..N, fc); set layer_lr_decay=None, stage_lr_divisors=()")


def param_groups(model: nn.Module, lr: float, weight_decay: float, no_bias_decay: bool,
                 layer_lr_decay: float | None, stage_lr_divisors: tuple[float, ...] = ()) -> list[dict]:
    """Groups for ``torch.optim``: dicts with ``params``, ``lr``, ``weight_decay`` and ``name``.

    ``name`` is the stage (``"stem"``, ``"layer3"``, ``"head"``; ``"all"`` without per-stage
    LRs) plus ``".no_decay"`` for the weight-decay-0 group. Empty groups are dropped; groups
    run from the stem to the head. ``stage_lr_divisors`` (stem, layer1..N, head) divide
    ``lr`` stage by stage, as the CUB fine-tuning studies did (10, 8, 6, 4, 2, 2)."""
    root = getattr(model, "_orig_mod", model)
    num_layers = sum(1 for child, _ in root.named_children() if re.fullmatch(r"layer\d+", child))
    per_stage = layer_lr_decay is not None or bool(stage_lr_divisors)
    groups: dict[str, dict] = {}
    order: dict[str, tuple] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:  # frozen parameters have nothing to optimise
            continue
        stage, k = _stage(name, num_layers) if per_stage else ("all", 0)
        decay = not (no_bias_decay and param.ndim <= 1)
        key = stage if decay else f"{stage}.no_decay"
        if key not in groups:
            # k counts from the head; the divisors run from the stem (position num_layers + 1 - k).
            factor = 1 / stage_lr_divisors[num_layers + 1 - k] if stage_lr_divisors else (layer_lr_decay or 1.0) ** k
            # Groups exist only once a parameter lands in them, so none is ever empty.
            groups[key] = {"params": [], "lr": lr * factor, "weight_decay": weight_decay if decay else 0.0,
                           "name": key}
            order[key] = (-k, not decay)
        groups[key]["params"].append(param)
    return [groups[key] for key in sorted(groups, key=order.get)]


__all__ = ["param_groups"]
