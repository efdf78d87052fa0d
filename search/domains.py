"""Turn a loaded space (plain data from ``spaces/``) into Ray Tune search domains."""

from __future__ import annotations

# Ray Tune is imported inside the two functions that build domains, so reading a search's
# records (make report, the console summary) does not start Ray Tune's import.


def tune_domain(param):
    from ray import tune

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
    from ray import tune

    out = {}
    for name, p in space.params.items():
        if p.type == "grid":
            # The baseline's value first, so a grid that holds the baseline runs it first.
            base = space.baseline[name]
            out[name] = tune.grid_search(sorted(p.values, key=lambda value: value != base))
        else:
            out[name] = tune_domain(p)
    if space.variants:
        out["variant"] = tune.grid_search(list(space.variants))  # "baseline" is the first variant
    return out


def baseline_point(space) -> dict:
    """The searched keys' values in the reference trial (evaluated first)."""
    return {key: "baseline" if key == "variant" else space.baseline[key] for key in space.searched}


def grid_size(space) -> int:
    """The configurations one sample of a grid space walks (1 without a grid)."""
    size = 1
    for p in space.params.values():
        if p.type == "grid":
            size *= len(p.values)
    return size * (len(space.variants) if space.variants else 1)


def baseline_apart(space) -> bool:
    """Whether a grid search runs the baseline as a trial of its own before the grid: when
    the grid does not hold it, i.e. a grid next to sampled params. A grid of every searched
    key holds the baseline's values; with variants, the "baseline" variant is a grid point."""
    return space.searcher == "grid" and not space.variants and any(p.type != "grid" for p in space.params.values())


def search_trials(space) -> int:
    """The trials of the search phase. TPE: num_samples, the baseline first among them. A grid:
    every point once per sample, plus the baseline once when the grid does not hold it."""
    if space.searcher != "grid":
        return space.num_samples
    return space.num_samples * grid_size(space) + baseline_apart(space)


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

