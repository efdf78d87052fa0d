"""The validated, typed form of a space file: :class:`Param` and :class:`Space`."""

from __future__ import annotations

import pathlib
import typing
from dataclasses import dataclass

from spaces.errors import SpaceError
from spaces.files import absolute, display
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
    any command-line override. Built only by spaces/loader.py (``build``, ``override``)."""

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
        return display(pathlib.Path(self.path))

    @property
    def searched(self) -> tuple[str, ...]:
        """The keys a trial's config varies: the searched params, then ``variant`` if there are variants."""
        return (*self.params, *(("variant",) if self.variants else ()))

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
        values = {k: absolute(k, v, self.recipe) for k, v in {**self.fixed, **sampled, **overrides}.items()}
        try:
            return from_dict(values)
        except ConfigError as err:
            raise SpaceError(self.file, "trial", str(err)) from None


__all__ = ["Param", "Space"]
