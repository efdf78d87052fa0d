"""Validators, one per section of a space file; each raises a one-line SpaceError.

Every training value is coerced and checked by ``trainable.config`` (the one validator
of training values): these functions only say *where* in the file a value sits, and
check what is the space's own business (distributions, budget, baseline, variants).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing

from spaces.errors import SpaceError
from spaces.files import absolute
from spaces.model import Param
from trainable.config import (
    FIELDS,
    METRICS,
    REPORTED_METRICS,
    ConfigError,
    coerce_float,
    coerce_int,
    coerce_value,
    explain,
    from_dict,
    is_int_key,
    is_number_key,
    unknown_key_hint,
)

TOP_KEYS = ("metric", "mode", "fixed", "params", "baseline", "variants", "budget", "scheduler", "seed")
# The one set of budget defaults. A recipe states how long a trial trains and how many run
# at once on its hardware; a space states how many trials its question needs; anything
# neither states comes from here. None = required (num_samples from the space, max_epochs
# from the recipe).
BUDGET_DEFAULTS = {"num_samples": None, "max_epochs": None, "grace_period": 1, "reduction_factor": 3,
                   "max_concurrent": 2, "cpus_per_trial": 1, "gpus_per_trial": 0,
                   # The confirmation stage (search/confirm.py): the top 2 configurations and the
                   # baseline again for 3 paired seeds, the fewest that give a t-interval (2 df).
                   "confirm_top": 2, "confirm_seeds": 3,
                   # What ASHA ranks trials on at a rung (None: the space's metric). A recipe sets it
                   # from `python -m search.tools.fidelity`: e.g. val_loss, where it predicts the final
                   # ranking better than an early val_top1.
                   "rung_metric": None}
# (minimum, what to do) for the integer budget keys.
_BUDGET_INTS = {"num_samples": (1, "run at least one trial"),
                "max_epochs": (1, "train for at least one epoch"),
                "grace_period": (1, "ASHA needs at least one epoch before it can stop a trial"),
                "reduction_factor": (2, "ASHA keeps 1/reduction_factor of the trials at each rung; 3 is usual"),
                "max_concurrent": (1, "at least one trial must run at a time"),
                "confirm_top": (0, "confirm the best 0 or more configurations"),
                "confirm_seeds": (0, "0 turns confirmation off; 2 or more seeds give a spread")}
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice", "grid")
_DIST_FIELDS = {"uniform": ("low", "high"), "loguniform": ("low", "high"), "int": ("low", "high"),
                "choice": ("values",), "grid": ("values",)}
# `relative_to: <key>`: low and high are multiples of the recipe's value of <key> (or of the
# epoch count for `epochs`), so one space file asks its question on any recipe: lr
# 0.3x-3x the recipe's lr is 0.03-0.3 for SGD at 0.1 and 6e-4-6e-3 for Adam at 2e-3.
_OPTIONAL_FIELDS = {"uniform": ("relative_to",), "loguniform": ("relative_to",)}
SCHEDULERS = ("asha", "none")


# --- values --------------------------------------------------------------------------------

def value(file: str, where: str, key: str, raw, recipe: str = ""):
    """One training value, coerced by trainable.config; errors name ``where`` in the file."""
    try:
        return absolute(key, coerce_value(key, raw), recipe)
    except ConfigError as err:
        raise SpaceError(file, where, explain(key, raw, err)) from None


def training_keys(file: str, where: str, mapping: dict) -> None:
    for key in mapping:
        if key not in FIELDS:
            raise SpaceError(file, f"{where}.{key}", f"unknown training key {unknown_key_hint(key)}")


def whole_config(file: str, where: str, values: dict) -> None:
    """The values together must make a valid TrainConfig (cross-key rules: min_lr < lr, ...)."""
    try:
        from_dict(values)
    except ConfigError as err:
        raise SpaceError(file, where, str(err)) from None


def mapping(file: str, key: str, raw, example: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpaceError(file, key, f"expected a mapping, got {type(raw).__name__} {raw!r}; write e.g. {example}")
    return raw


def integer(file: str, key: str, raw, minimum: int | None = None, fix: str = "") -> int:
    try:
        number = coerce_int(key, raw)
    except ConfigError:
        raise SpaceError(file, key, f"expected an integer, got {raw!r}{'; ' + fix if fix else ''}") from None
    if minimum is not None and number < minimum:
        raise SpaceError(file, key, f"{number} is below {minimum}{'; ' + fix if fix else ''}")
    return number


def number(file: str, key: str, raw) -> float:
    try:
        return coerce_float(key, raw)
    except ConfigError:
        raise SpaceError(file, key, f"expected a number, got {raw!r}") from None


# --- sections ------------------------------------------------------------------------------

def top_keys(file: str, raw: dict) -> None:
    for key in raw:
        if key in TOP_KEYS:
            continue
        if key in FIELDS:
            hint = "a training key belongs under `fixed:` (or `params:` to search it)"
        elif key in BUDGET_DEFAULTS:
            hint = "budget keys belong under `budget:`"
        else:
            close = difflib.get_close_matches(str(key), TOP_KEYS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the top-level keys are {', '.join(TOP_KEYS)}"
        raise SpaceError(file, str(key), f"unknown top-level key; {hint}")
    fixes = {"metric": "add `metric: val_top1`", "mode": "add `mode: max`",
             "params": "add `params:` with the searched keys, or `params: {}` to run the fixed recipe",
             "budget": "add `budget:` with at least num_samples"}
    for key, fix in fixes.items():
        if key not in raw:
            raise SpaceError(file, key, f"missing; {fix}")


def metric_and_mode(file: str, raw: dict) -> tuple[str, str]:
    metric, mode = raw["metric"], raw["mode"]
    if metric not in REPORTED_METRICS:
        close = difflib.get_close_matches(str(metric), REPORTED_METRICS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SpaceError(file, "metric", f"{metric!r} is not reported by the trainable; {hint}choose one of "
                         f"{', '.join(REPORTED_METRICS)}")
    if mode not in ("max", "min"):
        raise SpaceError(file, "mode", f"{mode!r} is not max or min; use max for accuracies, min for losses")
    if (METRICS[metric] or mode) != mode:
        raise SpaceError(file, "mode", f"{mode} {metric} would search for the worst trials; "
                         f"use mode: {METRICS[metric]}")
    return metric, mode


def known_budget_keys(file: str, budget_raw: dict, where: str = "budget.") -> None:
    for key in budget_raw:
        if key in BUDGET_DEFAULTS:
            continue
        if where != "budget.":
            hint = f"not a budget key; use one of {', '.join([*BUDGET_DEFAULTS, 'scheduler', 'seed'])}"
            raise SpaceError(file, f"{where}{key}", hint)
        if key in ("scheduler", "seed"):
            hint = f"`{key}` is a top-level key, not a budget key"
        elif key == "epochs":
            hint = "did you mean 'max_epochs'?"
        else:
            close = difflib.get_close_matches(str(key), BUDGET_DEFAULTS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the budget keys are {', '.join(BUDGET_DEFAULTS)}"
        raise SpaceError(file, f"{where}{key}", f"unknown budget key; {hint}")


def budget_int(file: str, key: str, raw) -> int:
    minimum, fix = _BUDGET_INTS[key]
    return integer(file, f"budget.{key}", raw, minimum, fix)


def budget(merged: dict, file: str) -> dict:
    """Every budget key coerced and checked (``merged``: defaults < recipe < space < overrides)."""
    required = {"num_samples": "add `num_samples: N` (trials; for grid spaces, repeats of the grid)",
                "max_epochs": "add `max_epochs: N` (the epochs of a trial that is never stopped) or use a recipe"}
    for key, fix in required.items():
        if merged.get(key) is None:
            raise SpaceError(file, f"budget.{key}", f"missing; {fix}")
    out = {key: budget_int(file, key, merged[key]) for key in _BUDGET_INTS}
    if out["grace_period"] > out["max_epochs"]:
        raise SpaceError(file, "budget.grace_period", f"{out['grace_period']} is above max_epochs="
                         f"{out['max_epochs']}; a trial cannot be stopped after it has finished: lower grace_period")
    if out["confirm_seeds"] == 1:
        raise SpaceError(file, "budget.confirm_seeds", "1 seed gives no spread to compare; use 0 (off) or 2 or more")
    cpus = number(file, "budget.cpus_per_trial", merged["cpus_per_trial"])
    if cpus <= 0:
        raise SpaceError(file, "budget.cpus_per_trial", f"{merged['cpus_per_trial']} is not above 0; give each "
                         "trial a CPU share, e.g. 1")
    gpus = number(file, "budget.gpus_per_trial", merged["gpus_per_trial"])
    if gpus < 0:
        raise SpaceError(file, "budget.gpus_per_trial", f"{merged['gpus_per_trial']} is negative; use 0 for "
                         "CPU-only trials")
    if gpus > 1 and not gpus.is_integer():
        raise SpaceError(file, "budget.gpus_per_trial", f"{gpus}: Ray shares a GPU only in fractions up to 1; "
                         "use a whole number above 1")
    rung_metric = merged.get("rung_metric")
    if rung_metric is not None and (rung_metric not in METRICS or METRICS[rung_metric] is None):
        ranked = [m for m, mode in METRICS.items() if mode]
        raise SpaceError(file, "budget.rung_metric", f"{rung_metric!r} cannot rank trials; use one of "
                         f"{', '.join(ranked)}")
    return {**out, "cpus_per_trial": cpus, "gpus_per_trial": gpus, "rung_metric": rung_metric}


def scheduler_and_seed(file: str, raw: dict) -> tuple[str, int]:
    scheduler = raw.get("scheduler", "asha")
    if scheduler not in SCHEDULERS:
        raise SpaceError(file, "scheduler", f"{scheduler!r} is not one of {', '.join(SCHEDULERS)}; asha stops "
                         "poor trials early, none runs every trial to max_epochs")
    return scheduler, integer(file, "seed", raw.get("seed", 0), 0, "use a search seed >= 0")


def fixed(file: str, recipe_fixed: dict, own: dict, params_raw: dict, max_epochs: int, recipe: str) -> dict:
    """The recipe's fixed values, then the space's own, minus the searched keys; coerced."""
    training_keys(file, "fixed", own)
    training_keys(file, "params", params_raw)
    if "epochs" in own:
        raise SpaceError(file, "fixed.epochs", "set the epoch count with budget.max_epochs (ASHA's max_t "
                         "and every trial's epochs), not in fixed")
    for key in params_raw:
        if key in own:
            raise SpaceError(file, f"params.{key}", f"a distribution over a fixed key ({key} is also in fixed); "
                             "remove it from fixed to search it, or from params to keep it fixed")
    own = {k: value(file, f"fixed.{k}", k, v, recipe) for k, v in own.items()}
    return {**{k: v for k, v in {**recipe_fixed, **own}.items() if k not in params_raw}, "epochs": max_epochs}


def rungs_validated(file: str, scheduler: str, fixed_values: dict, params: typing.Iterable[str],
                    variants: dict) -> None:
    """ASHA ranks trials on the validation metric at its rungs: every epoch must be validated."""
    if scheduler != "asha":
        return
    if "eval_every" in params:
        raise SpaceError(file, "params.eval_every", "ASHA needs every epoch validated: search eval_every only "
                         "with scheduler: none")
    for where, values in [("fixed", fixed_values), *((f"variants.{n}", v) for n, v in variants.items())]:
        if values.get("eval_every", 1) != 1:
            raise SpaceError(file, f"{where}.eval_every", f"eval_every={values['eval_every']} leaves ASHA's rungs "
                             "without a validation metric; keep eval_every 1, or set scheduler: none")


def set_values(file: str, pairs: dict, recipe: str) -> dict:
    """``--set key=value`` pairs, each coerced on its own so an error names the --set."""
    out = {}
    for key, raw in pairs.items():
        if key not in FIELDS:
            raise SpaceError(file, f"--set {key}", f"unknown training key {unknown_key_hint(key)}")
        out[key] = value(file, f"--set {key}", key, raw, recipe)
    return out


def param(file: str, name: str, spec):
    """One ``params:`` entry -> Param (structure and types; bounds are checked by ``domains``)."""
    where = f"params.{name}"
    kind = _distribution_type(file, where, name, spec)
    if kind in ("choice", "grid"):
        return Param(name=name, type=kind, values=_choices(file, where, name, spec["values"]))
    if not is_number_key(name):
        raise SpaceError(file, where, f"{name} is not a number; use type: choice with a list of values")
    if kind in ("uniform", "loguniform") and is_int_key(name):
        raise SpaceError(file, where, f"{kind} draws fractions but {name} is an integer; use type: int")
    low, high = number(file, f"{where}.low", spec["low"]), number(file, f"{where}.high", spec["high"])
    if kind == "int":
        low = integer(file, f"{where}.low", low, fix="int bounds are whole numbers")
        high = integer(file, f"{where}.high", high, fix="int bounds are whole numbers")
    if low >= high:
        raise SpaceError(file, where, f"low={low} is not below high={high} (an empty or inverted range); "
                         "swap them, or put a single value in fixed")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(file, f"{where}.low", f"loguniform needs low > 0, got {low}; use a small positive low, "
                         "or uniform to include 0")
    relative_to = spec.get("relative_to")
    if relative_to is None:
        return Param(name=name, type=kind, low=low, high=high)
    if relative_to != "epochs" and (relative_to not in FIELDS or not is_number_key(relative_to)):
        raise SpaceError(file, f"{where}.relative_to", f"{relative_to!r} is not a numeric training key; bounds "
                         "can be relative to one (e.g. lr) or to epochs")
    return Param(name=name, type=kind, relative_to=relative_to, scale=(low, high))


def references(file: str, params_raw: dict, baseline_raw, fixed_values: dict, recipe_fixed: dict) -> dict:
    """The values relative bounds are multiples of: the fixed values, and for a searched key
    its reference (the file's baseline, else the recipe's value, else the default)."""
    given = mapping(file, "baseline", baseline_raw, "{mixup_alpha: 0.0}")
    out = dict(fixed_values)
    for key in params_raw:
        if key in given and key in FIELDS:
            out[key] = value(file, f"baseline.{key}", key, given[key])
        elif key in FIELDS:
            out[key] = recipe_fixed.get(key, FIELDS[key].default)
    return out


def resolve(file: str, params: dict, refs: dict) -> dict:
    """Relative bounds made absolute against ``refs`` (rounded to 12 digits: 0.3 x 0.1 is 0.03)."""
    out = {}
    for name, p in params.items():
        if p.relative_to is None:
            out[name] = p
            continue
        base = refs[p.relative_to] if p.relative_to in refs else FIELDS[p.relative_to].default
        if isinstance(base, bool) or not isinstance(base, (int, float)) or base <= 0:
            raise SpaceError(file, f"params.{name}.relative_to", f"{p.relative_to} is {base!r} here; bounds "
                             f"relative to it need a positive value: --set {p.relative_to}=... or give {name} "
                             "absolute bounds in a space of your own")
        low, high = (float(f"{factor * base:.12g}") for factor in p.scale)
        out[name] = dataclasses.replace(p, low=low, high=high)
    return out


def _distribution_type(file: str, where: str, name: str, spec) -> str:
    if not isinstance(spec, dict):
        raise SpaceError(file, where, f"expected a distribution mapping, got {spec!r}; write e.g. "
                         f"{name}: {{type: uniform, low: 0.0, high: 1.0}} or {{type: choice, values: [a, b]}}")
    kind = spec.get("type")
    if kind is None:
        raise SpaceError(file, where, f"no `type`; give one of {', '.join(DISTRIBUTIONS)}")
    if kind not in DISTRIBUTIONS:
        close = difflib.get_close_matches(str(kind), DISTRIBUTIONS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SpaceError(file, where, f"unknown distribution type {kind!r}; {hint}use one of "
                         f"{', '.join(DISTRIBUTIONS)}")
    allowed = _DIST_FIELDS[kind]
    for key in spec:
        if key != "type" and key not in allowed + _OPTIONAL_FIELDS.get(kind, ()):
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"{kind} takes {' and '.join(allowed)}"
            raise SpaceError(file, f"{where}.{key}", f"not a field of a {kind} distribution; {hint}")
    for key in allowed:
        if spec.get(key) is None:
            example = f"{{type: {kind}, values: [a, b]}}" if key == "values" else f"{{type: {kind}, low: 1, high: 3}}"
            raise SpaceError(file, where, f"{kind} needs `{key}`; write e.g. {name}: {example}")
    return kind


def _choices(file: str, where: str, name: str, values) -> tuple:
    if not isinstance(values, (list, tuple)):
        raise SpaceError(file, f"{where}.values", f"expected a list, got {values!r}; write e.g. values: [a, b]")
    if not values:
        raise SpaceError(file, f"{where}.values", "empty; list at least one value (two to compare anything)")
    coerced = tuple(value(file, f"{where}.values", name, v) for v in values)
    duplicates = sorted({repr(v) for v in coerced if coerced.count(v) > 1})
    if duplicates:
        raise SpaceError(file, f"{where}.values", f"{', '.join(duplicates)} listed twice; list each value once")
    return coerced


def baseline(file: str, raw, params: dict, fixed_values: dict, recipe_fixed: dict) -> dict:
    """The reference trial: a searched key's value is the file's `baseline:`, else the
    recipe's value, else TrainConfig's default (the trick off)."""
    raw = mapping(file, "baseline", raw, "{mixup_alpha: 0.0}")
    for key in raw:
        if key not in params:
            hint = f"unknown training key {unknown_key_hint(key)}" if key not in FIELDS else \
                "not a searched param; a value for a key that is not searched belongs in fixed"
            raise SpaceError(file, f"baseline.{key}", hint)
    out = dict(fixed_values)
    for name, p in params.items():
        if name in raw:
            reference = value(file, f"baseline.{name}", name, raw[name])
        else:
            reference = recipe_fixed.get(name, FIELDS[name].default)
        if reference is None or not p.contains(reference):
            source = "given" if name in raw else "default"
            raise SpaceError(file, f"baseline.{name}", f"the reference value {reference!r} ({source}) is outside "
                             f"{p.describe()}; widen the domain to include it or set baseline.{name}")
        out[name] = reference
    try:
        from_dict(out)
    except ConfigError as err:
        key = re.match(r"\w+", str(err))
        raise SpaceError(file, "baseline" if key and key.group(0) in params else "fixed", str(err)) from None
    return out


def inside(file: str, params: dict, baseline_values: dict) -> None:
    """After an override, each searched key's reference value must still be in its domain."""
    for name, p in params.items():
        if not p.contains(baseline_values[name]):
            raise SpaceError(file, f"baseline.{name}", f"the reference value {baseline_values[name]!r} is outside "
                             f"{p.describe()} after the override; --set {name}=... to fix it instead")


def domains(file: str, params: dict, baseline_values: dict) -> None:
    """Each distribution's ends (or each of its values) must be a valid training value."""
    for name, p in params.items():
        points = p.values if p.values is not None else (p.low, p.high)
        labels = ("value",) * len(points) if p.values is not None else ("low", "high")
        for label, point in zip(labels, points):
            try:
                from_dict({**baseline_values, name: point})
            except ConfigError as err:
                raise SpaceError(file, f"params.{name}", f"{label} {point!r} is not a valid {name} ({err}); "
                                 "narrow the domain") from None


def variants(file: str, raw, params: dict, baseline_values: dict, recipe: str) -> dict[str, dict]:
    """Named override sets, each run once per grid point next to "baseline"; {} for none."""
    if raw is None:
        return {}
    raw = mapping(file, "variants", raw, "{label_smoothing: {label_smoothing: 0.1}}")
    if not raw:
        raise SpaceError(file, "variants", "empty; name at least one override set, or remove `variants:`")
    out: dict[str, dict] = {"baseline": {}}
    for name, overrides in raw.items():
        where = f"variants.{name}"
        if not isinstance(overrides, dict):
            raise SpaceError(file, where, f"expected a mapping of training keys to values, got {overrides!r}; "
                             f"write e.g. {name}: {{label_smoothing: 0.1}}")
        if name == "baseline":
            if overrides:
                raise SpaceError(file, where, "the baseline variant is the recipe itself and takes no overrides; "
                                 "give this override set another name")
            continue
        if not overrides:
            raise SpaceError(file, where, "no overrides; a variant must change at least one key")
        training_keys(file, where, overrides)
        for key in overrides:
            if key in params:
                raise SpaceError(file, f"{where}.{key}", f"{key} is searched in params; a variant can only "
                                 "override fixed keys")
            if key == "epochs":
                raise SpaceError(file, f"{where}.{key}", "every variant trains for budget.max_epochs; compare "
                                 "epochs in another space")
        coerced = {k: value(file, f"{where}.{k}", k, v, recipe) for k, v in overrides.items()}
        whole_config(file, where, {**baseline_values, **coerced})
        out[str(name)] = coerced
    return out
