"""Turn a loaded space (plain data from ``spaces/``) into Ray Tune search domains."""

from __future__ import annotations

from ray import tune


def tune_domain(param):
    if param.type == "uniform":
        return tune.uniform(param.low, param.high)
    if param.type == "loguniform":
        return tune.loguniform(param.low, param.high)
    if param.type == "int":
        return tune.randint(param.low, param.high + 1)  # Ray's upper bound is exclusive
    if param.type == "choice":
        return tune.choice(list(param.values))
    if param.type == "grid":
        return tune.grid_search(list(param.values))
    raise ValueError(f"unknown distribution {param.type!r}")  # the space loader already rejects these


def param_space(space) -> dict:
    out = {name: tune_domain(p) for name, p in space.params.items()}
    if space.variants:
        out["variant"] = tune.grid_search(list(space.variants))
    return out


def baseline_point(space) -> dict:
    """The searched params' values in the reference trial (evaluated first)."""
    point = {name: space.baseline[name] for name in space.params}
    if space.variants:
        point["variant"] = "baseline"
    return point


def baseline_key(space) -> dict:
    """What makes a trial "the baseline": the reference values of the treatments.

    The seed is a repetition, not a treatment, so the baseline run with any seed counts.
    """
    if space.variants:
        return {"variant": "baseline"}
    return {k: v for k, v in baseline_point(space).items() if k != "seed"}


def is_baseline(config: dict, key: dict) -> bool:
    """Whether a trial's ``config`` is the baseline, ``key`` being ``baseline_key(space)``."""
    return all(config.get(k) == v for k, v in key.items())

