"""Mixed-precision training: torch.autocast, plus loss scaling for float16.

Micikevicius et al. 2018, "Mixed Precision Training" (ICLR 2018, arXiv:1710.03740):
run matmuls/convolutions in 16-bit, keep float32 master weights, and scale the loss
so small float16 gradients do not underflow to zero.

Hyperparameter: ``amp`` -- ``off`` (float32); ``bf16`` -- bfloat16 has float32's
exponent range, so no loss scaling is needed (the usual choice on Ampere+ GPUs and
recent CPUs); ``fp16`` -- float16 with torch's dynamic ``GradScaler``.
"""

from __future__ import annotations

import contextlib

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device | str, amp: str):
    """A context manager for the forward pass and loss: ``torch.autocast`` for bf16/fp16,
    a no-op for ``off``."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=_DTYPES[amp])


def grad_scaler(device: torch.device | str, amp: str) -> torch.amp.GradScaler:
    """torch's dynamic loss scaler, enabled only for fp16; disabled, its ``scale``,
    ``step`` and ``update`` pass straight through, so the loop calls them unconditionally."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=amp == "fp16")


__all__ = ["autocast", "grad_scaler"]
