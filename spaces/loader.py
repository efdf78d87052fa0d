"""The one build path of a :class:`Space`: ``load_space`` (a space file layered on a recipe,
validated section by section) and ``override`` (a loaded space with ``--set`` values and budget
changes, validated again)."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import typing

from spaces import validate
from spaces.errors import SpaceError
from spaces.files import SPACES_DIR, display, header, names_in, read_yaml, resolve
from spaces.model import Space
from spaces.recipes import Recipe, load_recipe

EXAMPLE = "`metric: ...`, `mode: ...`, `params: ...`, `budget: ...`"


def list_spaces() -> list[str]:
    """The names of the space files in spaces/, sorted."""
    return names_in(SPACES_DIR)


def load_space(name_or_path: str | os.PathLike, recipe: str | os.PathLike | Recipe | None = None) -> Space:
    """Load and validate a space: a name in spaces/ (``mixup_alpha``) or a path to a .yaml
    file, layered on ``recipe`` (a name in spaces/recipes/, a path, or None for the default)."""
    path = resolve(name_or_path, SPACES_DIR, "space")
    raw, text = read_yaml(path, EXAMPLE + " (see spaces/mixup_alpha.yaml)")
    question, command = _question_and_command(path, text)
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    return build(path, raw, recipe, question, command)


def _question_and_command(path: pathlib.Path, text: str) -> tuple[str, str]:
    found = header(text, ("Question", "Run"), multiline=("Question",))
    if not found.get("Question"):
        raise SpaceError(display(path), "header", "no `# Question: ...` comment at the top; begin the file "
                         f"with the question it answers and `# Run: make search SPACE={path.stem}`")
    spelled = path.stem if path.parent == SPACES_DIR else display(path)
    return found["Question"], found.get("Run") or f"make search SPACE={spelled}"


def build(path: pathlib.Path, raw: dict, recipe: Recipe, question: str, command: str) -> Space:
    file = display(path)
    validate.top_keys(file, raw)
    metric, mode = validate.metric_and_mode(file, raw)
    budget_raw = validate.mapping(file, "budget", raw["budget"], "{num_samples: 12}")
    validate.known_budget_keys(file, budget_raw)
    budget = _budget(file, {**validate.BUDGET_DEFAULTS, **recipe.budget}, budget_raw)
    scheduler, seed = validate.scheduler_and_seed(file, raw)
    params_raw = validate.mapping(file, "params", raw["params"], "{mixup_alpha: {type: uniform, low: 0.0, high: 1.0}}")
    own_fixed = validate.mapping(file, "fixed", raw.get("fixed"), "{hflip: true}")
    fixed = validate.fixed(file, recipe.fixed, own_fixed, params_raw, budget["max_epochs"], recipe.name)
    params = {name: validate.param(file, name, spec) for name, spec in params_raw.items()}
    params = validate.resolve(file, params, validate.references(file, params_raw, raw.get("baseline"), fixed,
                                                                recipe.fixed))
    baseline = validate.baseline(file, raw.get("baseline"), params, fixed, recipe.fixed)
    validate.domains(file, params, baseline)
    variants = validate.variants(file, raw.get("variants"), params, baseline, recipe.name)
    validate.rungs_validated(file, scheduler, fixed, params, variants)
    # Grid search (Ray's variant generator) when there is a grid to walk, or nothing to
    # sample; Optuna's TPE otherwise.
    grid = not params or variants or any(p.type == "grid" for p in params.values())
    return Space(name=path.stem, path=str(path), question=question, command=command, recipe=recipe.name,
                 metric=metric, mode=mode, fixed=fixed, params=params, baseline=baseline, variants=variants,
                 scheduler=scheduler, seed=seed, searcher="grid" if grid else "optuna", **budget)


def override(space: Space, fixed: typing.Mapping | None = None, num_samples: int | None = None,
             **budget) -> Space:
    """A revalidated copy of ``space`` with ``fixed`` keys set (``--set``) and budget keys replaced.

    A searched key set here becomes fixed and leaves ``params`` (and the baseline takes
    the set value). ``epochs`` is the budget's ``max_epochs``. ``scheduler`` and ``seed``
    too. Lowering ``max_epochs`` lowers the grace period with it (see ``_budget``).
    """
    file = space.file
    fixed = validate.set_values(file, dict(fixed or {}), space.recipe)
    if "epochs" in fixed:
        budget.setdefault("max_epochs", fixed.pop("epochs"))
    if num_samples is not None:
        budget["num_samples"] = num_samples
    top = {key: budget.pop(key) for key in ("scheduler", "seed") if key in budget}
    validate.known_budget_keys(file, budget, "override ")
    merged = _budget(file, {key: getattr(space, key) for key in validate.BUDGET_DEFAULTS}, budget)
    scheduler, seed = validate.scheduler_and_seed(file, {"scheduler": space.scheduler, "seed": space.seed, **top})
    new_fixed = {**space.fixed, **fixed, "epochs": merged["max_epochs"]}
    baseline = {**space.baseline, **fixed, "epochs": merged["max_epochs"]}
    validate.whole_config(file, "--set", baseline)
    params = validate.resolve(file, {k: p for k, p in space.params.items() if k not in fixed}, baseline)
    validate.inside(file, params, baseline)
    validate.domains(file, params, baseline)
    for name, overrides in space.variants.items():
        validate.whole_config(file, f"variants.{name}", {**baseline, **overrides})
    validate.rungs_validated(file, scheduler, new_fixed, params, space.variants)
    return dataclasses.replace(space, fixed=new_fixed, params=params, baseline=baseline, scheduler=scheduler,
                               seed=seed, **merged)


def _budget(file: str, base: dict, given: dict) -> dict:
    """``given`` budget keys over ``base``, checked. A ``max_epochs`` given without a grace
    period of its own also caps the grace period: ASHA cannot wait longer than a trial runs."""
    merged = {**base, **given}
    if "max_epochs" in given and "grace_period" not in given:
        merged["grace_period"] = min(base["grace_period"], validate.budget_int(file, "max_epochs",
                                                                               given["max_epochs"]))
    return validate.budget(merged, file)


__all__ = ["load_space", "list_spaces", "build", "override"]
