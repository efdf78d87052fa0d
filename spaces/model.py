"""The validated, typed form of a space file: :class:`Param` and :class:`Space`."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from spaces import validate
from spaces.errors import SpaceError
from spaces.files import display
from trainable.config import ConfigError, TrainConfig, from_dict


@dataclass(frozen=True)
class Param:
    """One searched training key.

    uniform / loguniform: a float in [low, high] (loguniform: sampled in log space, low > 0).
    int: an integer in [low, high], both ends included (Ray's ``randint`` excludes ``high``:
    search/domains.py passes ``high + 1``). choice: one of ``values``, searched by Optuna's
    TPE. grid: every one of ``values`` is run (Ray's ``grid_search``).
    """

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    values: tuple | None = None
    relative_to: str | None = None  # low/high are `scale` times the recipe's value of this key
    scale: tuple[float, float] | None = None

    def contains(self, value) -> bool:
        if self.type in ("choice", "grid"):
            return value in self.values
        if self.type == "int" and (isinstance(value, bool) or not float(value).is_integer()):
            return False
        return self.low <= value <= self.high

    def describe(self) -> str:
        if self.values is not None:
            return f"{self.type} of {list(self.values)}"
        relative = f" ({self.scale[0]:g}x-{self.scale[1]:g}x {self.relative_to})" if self.relative_to else ""
        return f"{self.type} [{self.low}, {self.high}]{relative}"


@dataclass(frozen=True)
class Space:
    """A validated space layered on its recipe. ``fixed`` and ``baseline`` hold coerced
    TrainConfig values; the budget fields are the recipe's, then the space file's, then
    any command-line override."""

    name: str
    path: str
    question: str
    command: str
    recipe: str
    metric: str
    mode: str
    fixed: dict
    params: dict[str, Param]
    baseline: dict
    variants: dict[str, dict]
    num_samples: int
    max_epochs: int
    grace_period: int
    reduction_factor: int
    max_concurrent: int
    cpus_per_trial: float
    gpus_per_trial: float
    confirm_top: int
    confirm_seeds: int
    rung_metric: str | None  # what ASHA ranks on at a rung; None = ``metric``
    scheduler: str
    seed: int
    searcher: str

    @property
    def file(self) -> str:
        return display_path(self.path)

    def trial_config(self, sampled: typing.Mapping) -> TrainConfig:
        """fixed + the sampled values (+ the overrides of ``sampled["variant"]``) -> TrainConfig.

        ``sampled`` must hold every searched param; it may also repeat training keys
        (a Ray config that carries ``fixed`` too). No ``variant`` means "baseline".
        """
        sampled = dict(sampled)
        variant = sampled.pop("variant", None)
        missing = [name for name in self.params if name not in sampled]
        if missing:
            raise SpaceError(self.file, "trial", f"no value for the searched param(s) {', '.join(missing)}; "
                             "pass one value for every key of params")
        overrides = {}
        if variant is not None or self.variants:
            variant = "baseline" if variant is None else variant
            if variant not in self.variants:
                raise SpaceError(self.file, "variant", f"unknown variant {variant!r}; choose one of "
                                 f"{', '.join(self.variants) or '(this space has no variants)'}")
            overrides = self.variants[variant]
        values = {k: validate.absolute(k, v, self.recipe) for k, v in {**self.fixed, **sampled, **overrides}.items()}
        try:
            return from_dict(values)
        except ConfigError as err:
            raise SpaceError(self.file, "trial", str(err)) from None

    def override(self, fixed: typing.Mapping | None = None, num_samples: int | None = None,
                 **budget) -> Space:
        """A revalidated copy with ``fixed`` keys set (``--set``) and budget keys replaced.

        A searched key set here becomes fixed and leaves ``params`` (and the baseline takes
        the set value). ``epochs`` is the budget's ``max_epochs``. Lowering ``max_epochs``
        below the grace period also lowers the grace period (ASHA cannot wait longer than a
        trial runs) unless ``grace_period`` is given too. ``scheduler`` and ``seed`` too.
        """
        file = self.file
        fixed = validate.set_values(file, dict(fixed or {}), self.recipe)
        if "epochs" in fixed:
            budget.setdefault("max_epochs", fixed.pop("epochs"))
        if num_samples is not None:
            budget["num_samples"] = num_samples
        top = {key: budget.pop(key) for key in ("scheduler", "seed") if key in budget}
        validate.known_budget_keys(file, budget, "override ")
        if "max_epochs" in budget and "grace_period" not in budget:
            budget["grace_period"] = min(self.grace_period, validate.budget_int(file, "max_epochs",
                                                                                budget["max_epochs"]))
        merged = validate.budget({**self.budget(), **budget}, file)
        scheduler, seed = validate.scheduler_and_seed(file, {"scheduler": self.scheduler, "seed": self.seed, **top})
        new_fixed = {**self.fixed, **fixed, "epochs": merged["max_epochs"]}
        baseline = {**self.baseline, **fixed, "epochs": merged["max_epochs"]}
        validate.whole_config(file, "--set", baseline)
        params = validate.resolve(file, {k: p for k, p in self.params.items() if k not in fixed}, baseline)
        validate.inside(file, params, baseline)
        validate.domains(file, params, baseline)
        for name, overrides in self.variants.items():
            validate.whole_config(file, f"variants.{name}", {**baseline, **overrides})
        validate.rungs_validated(file, scheduler, new_fixed, params, self.variants)
        return dataclasses.replace(self, fixed=new_fixed, params=params, baseline=baseline, scheduler=scheduler,
                                   seed=seed, **merged)

    def budget(self) -> dict:
        """The budget as a dict of the budget keys (``validate.BUDGET_DEFAULTS``' keys)."""
        return {key: getattr(self, key) for key in validate.BUDGET_DEFAULTS}


def display_path(path: str) -> str:
    import pathlib

    return display(pathlib.Path(path))


__all__ = ["Param", "Space"]
