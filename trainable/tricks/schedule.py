"""Learning-rate schedule as a pure function of the optimizer step.

Everything is counted in optimizer steps, not epochs (timm does the same), so warmup
and cosine have the same shape whether ASHA stops a trial after 1 epoch or lets it
run to 100, and a trial resumed from a checkpoint lands on the same LR.

Hyperparameters (names as in :class:`trainable.config.TrainConfig`):

* ``lr`` / ``lr_per_256`` -- peak LR; with ``lr_per_256`` it is per 256 images and is
  scaled by ``batch_size / 256``: the linear scaling rule of Goyal et al. 2017,
  "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour" (arXiv:1706.02677);
  :func:`trainable.config.effective_lr` computes it.
* ``warmup_epochs`` -- linear ramp from ~0 to the peak LR over that many epochs
  (Goyal et al. 2017, sec. 2.2; 5 epochs for big batches); 0 = off.
* ``schedule``:
  ``constant``; ``step`` -- multiply by ``step_gamma`` at each fraction in
  ``step_milestones`` (He et al. 2016; Bag of Tricks uses 0.1 at 30/60/90 of 120);
  ``cosine`` -- half-cosine from the peak down to ``min_lr``, reached at the last step
  (Loshchilov & Hutter 2017, SGDR, without restarts; arXiv:1608.03983);
  ``onecycle`` -- torch's OneCycleLR (Smith & Topin 2019, "Super-Convergence",
  arXiv:1708.07120): up from lr/25 to lr over ``warmup_epochs`` (30 % of training if
  0), then cosine down to lr/25e4; it also cycles momentum (or Adam's beta1)
  0.95 -> 0.85 -> 0.95, as in the paper, overriding ``momentum``.
"""

from __future__ import annotations

import math

import torch

from trainable.config import effective_lr


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, min_factor: float,
              milestones: list[int], gamma: float) -> float:
    """Multiplier of the peak LR for ``step`` (0-based: the optimizer step about to be taken).

    Warmup (if ``warmup_steps > 0``) goes 1/(w+1), 2/(w+1), ..., w/(w+1) over steps
    0..w-1, so the very first step is not taken at LR 0 and step ``w`` is the first at
    the peak. Then ``constant`` stays at 1, ``step`` multiplies by ``gamma`` at every
    milestone step reached, and ``cosine`` falls from 1 at step ``w`` to ``min_factor``
    at the last step (``total_steps - 1``) and stays there if stepped further.
    """
    if schedule not in ("constant", "step", "cosine"):  # checked first: warmup steps would hide it
        raise ValueError(f"schedule: unknown value {schedule!r}; lr_factor takes constant, step or cosine "
                         "(onecycle is torch's OneCycleLR, built by build_scheduler)")
    # Milestones count in absolute steps, so a milestone inside the warmup still applies.
    decay = gamma ** sum(step >= m for m in milestones) if schedule == "step" else 1.0
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1) * decay
    if schedule in ("constant", "step"):
        return decay
    span = total_steps - 1 - warmup_steps  # cosine
    if span <= 0:  # a single post-warmup step: take it at the peak rather than at min_lr
        return 1.0
    progress = min((step - warmup_steps) / span, 1.0)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, steps_per_epoch: int
                    ) -> torch.optim.lr_scheduler.LRScheduler:
    """The scheduler for ``cfg.schedule``; call its ``.step()`` once after every optimizer step.

    The optimizer's groups must already hold their peak LRs (``param_groups`` puts
    ``effective_lr`` times any layer-wise factor there); both LambdaLR and OneCycleLR
    scale each group from its own LR, so discriminative LRs keep their ratios (and
    ``min_lr`` is the floor of a group at the full peak; the others' floors scale with it).
    """
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "onecycle":
        pct_start = cfg.warmup_epochs / cfg.epochs if cfg.warmup_epochs > 0 else 0.3  # 0.3: torch's default
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total_steps, pct_start=pct_start)
    min_factor = cfg.min_lr / effective_lr(cfg)
    milestones = [round(frac * total_steps) for frac in cfg.step_milestones]

    def factor(step: int) -> float:
        return lr_factor(step, total_steps, warmup_steps, cfg.schedule, min_factor, milestones, cfg.step_gamma)

    # LambdaLR, not a composition of torch's schedulers: SequentialLR([LinearLR(1/(w+1) -> 1
    # over w steps), CosineAnnealingLR(T_max=total-1-w, eta_min=min_lr), ConstantLR(min_lr/peak)])
    # (ChainedScheduler([LinearLR, MultiStepLR]) for step) follows lr_factor within 1e-13
    # relative over 790 steps, but CosineAnnealingLR's eta_min is one absolute floor for all
    # groups: with groups at 0.1/0.01 and min_lr=1e-3 the small group is at 1.1e-3 instead of
    # 2.2e-4 at step 18 of 20, and a single step after warmup (T_max=0) is taken at 0 instead
    # of the peak. tests/test_tricks.py::test_why_lambdalr_not_torch_schedulers measures both.
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


__all__ = ["lr_factor", "build_scheduler"]
