"""What a trial is called wherever a person reads it: the console and the MLflow run name.

A trial is its searched values in the space file's own key names (``mixup_alpha=0.42
lr=0.13``); the reference trial says so (``baseline: mixup_alpha=0 lr=0.1``). Ray's
trial id stays in the console and in the run's ``trial_id`` tag, so the two can be joined.
"""

from __future__ import annotations


def short(value) -> str:
    """3 significant digits: enough to tell sampled values apart, short enough for a table."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def trial_label(config: dict, baseline: bool) -> str:
    """``config``: a trial's searched values (Ray's ``trial.config``), in the space's order."""
    parts = [str(v) if k == "variant" else f"{k}={short(v)}" for k, v in config.items()]
    text = " ".join(parts)
    if baseline and config.get("variant") != "baseline":  # an ablation's variant already says it
        return f"baseline: {text}" if text else "baseline"
    return text or "recipe"


__all__ = ["short", "trial_label"]
