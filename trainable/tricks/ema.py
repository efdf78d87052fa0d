"""Exponential moving average (EMA) of the weights, validated instead of the live model.

Polyak & Juditsky 1992 ("Acceleration of Stochastic Approximation by Averaging")
for averaging the iterates; torch's ``AveragedModel`` comes from SWA (Izmailov et al.
2018, "Averaging Weights Leads to Wider Optima and Better Generalization",
arXiv:1803.05407) and with ``get_ema_multi_avg_fn`` keeps an EMA instead of SWA's
equal-weight mean.

Hyperparameter: ``ema_decay`` -- d in ``ema = d * ema + (1 - d) * live`` after every
optimizer step; the average spans roughly ``1 / (1 - d)`` steps (0.999: ~1000 steps,
i.e. ~13 epochs of Fashion-MNIST at batch 128 -- keep it well below the run's length);
0 = off.

``use_buffers=True`` averages the BatchNorm running statistics too, so the averaged
model can be evaluated directly without recomputing BN statistics (``update_bn``).
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def build_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    """An EMA copy of ``model``; call ``.update_parameters(model)`` after each optimizer
    step and evaluate ``ema.module``. None when ``decay == 0``."""
    if decay == 0:
        return None
    # The first update_parameters() copies the live weights; later ones blend them in.
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


__all__ = ["build_ema"]
