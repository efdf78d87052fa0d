"""Sharpness-Aware Minimization (SAM).

Foret, Kleiner, Mobahi & Neyshabur 2021, "Sharpness-Aware Minimization for
Efficiently Improving Generalization" (ICLR 2021, arXiv:2010.01412). Each step first
climbs to the worst point in an L2 ball of radius rho, ``w + e(w)`` with
``e(w) = rho * g / ||g||``, takes the gradient there, goes back to ``w`` and lets the
base optimizer (SGD here) step with that gradient. Costs two forward/backward passes
per step.

Hyperparameter: ``sam_rho`` -- rho, the radius of the neighbourhood; 0.05 is the
paper's CIFAR value; 0 = off (the training loop then builds the base optimizer alone).

torch has no SAM and none of this project's dependencies has a maintained one, so it
is written here, following the widely used PyTorch implementation
https://github.com/davda54/sam (``sam.py``, non-adaptive variant; the authors' own
code, github.com/google-research/sam, is JAX).

Use, one optimizer step::

    enable_running_stats(model)
    loss_fn(model(x), y).backward()
    opt.first_step(zero_grad=True)
    disable_running_stats(model)   # the second forward must not move BN running stats
    loss_fn(model(x), y).backward()
    opt.second_step(zero_grad=True)
    scheduler.step()
"""

from __future__ import annotations

import torch
from torch import nn


class SAM(torch.optim.Optimizer):
    """Wraps ``base_optimizer_cls(params, **base_kwargs)``; shares its ``param_groups``,
    so an LR scheduler built on the SAM object drives the base optimizer's LR."""

    def __init__(self, params, base_optimizer_cls, rho: float, **base_kwargs):
        if rho < 0:
            raise ValueError(f"sam_rho={rho} must be >= 0")
        super().__init__(params, dict(rho=rho, **base_kwargs))
        # The base optimizer fills in its defaults on the same group dicts, so both see
        # one set of groups: LR changes made through either reach the base's update.
        self.base_optimizer = base_optimizer_cls(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        # OneCycleLR looks for "momentum"/"betas" here to cycle them.
        self.defaults.update(self.base_optimizer.defaults)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = True) -> None:
        """Move to ``w + rho * g / ||g||`` (``||g||`` over all parameters), remembering ``w``."""
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)  # 1e-12: the reference's guard for g = 0
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["old_p"] = p.detach().clone()
                p.add_(p.grad * scale.to(p))
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = True) -> None:
        """Return to ``w`` and take the base optimizer's step with the gradient from ``w + e(w)``."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or "old_p" not in self.state[p]:
                    continue
                # Restore the saved copy, as the reference does: w + e - e is not exactly w in floats.
                p.copy_(self.state[p].pop("old_p"))
        self.base_optimizer.step()
        # LR schedulers warn "lr_scheduler.step() before optimizer.step()" unless this
        # flag (set by their wrapper around step()) is set; SAM's update happens here.
        self._opt_called = True
        if zero_grad:
            self.zero_grad()

    # The base optimizer holds the state worth saving (momentum buffers); old_p exists
    # only between first_step and second_step.
    def state_dict(self):
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups  # load_state_dict made new group dicts


def disable_running_stats(model: nn.Module) -> None:
    """BN momentum 0 so the second (perturbed) forward pass leaves running stats as they are."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.backup_momentum = module.momentum
            module.momentum = 0


def enable_running_stats(model: nn.Module) -> None:
    """Undo :func:`disable_running_stats`."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and hasattr(module, "backup_momentum"):
            module.momentum = module.backup_momentum


__all__ = ["SAM", "disable_running_stats", "enable_running_stats"]
