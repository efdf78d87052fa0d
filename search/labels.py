"""What a trial is called wherever a person reads it: the console, the MLflow run name and the
report (search/report/rows.py adds an ablation variant's changes, in the same form).

A trial is its searched values in the space file's own key names (``mixup_alpha=0.42
lr=0.13``); the reference trial says so (``baseline: mixup_alpha=0 lr=0.1``). Ray's
trial id stays in the console and in the run's ``trial_id`` tag, so the two can be joined.
"""

from __future__ import annotations


def short(value) -> str:
    """4 significant digits: enough to tell sampled values apart (confirmation candidates are
    told apart by their labels), short enough for a table."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trial_label(config: dict, baseline: bool = False) -> str:
    """``config``: a trial's searched values (Ray's ``trial.config``), in the space's order; a
    confirmation trial's config is its candidate's label and a seed (search/confirm.py)."""
    if "candidate" in config:
        return f"{config['candidate']} seed={config.get('seed')}"
    parts = [str(v) if k == "variant" else f"{k}={short(v)}" for k, v in config.items()]
    text = " ".join(parts)
    if baseline and config.get("variant") != "baseline":  # an ablation's variant already says it
        return f"baseline: {text}" if text else "baseline"
    return text or "recipe"


__all__ = ["short", "trial_label"]
