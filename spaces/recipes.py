"""Recipes: ``spaces/recipes/<name>.yaml``, the fixed training setup every space is layered on.

A recipe is one model on one data set, as a study trains it: its ``fixed`` training
values (data, model, optimizer, schedule, augmentation), its ``budget`` (how many epochs a
trial trains, ASHA's rungs, how many trials share the machine and its CPUs/GPUs) and,
optionally, the ``teacher`` that ``make teacher RECIPE=<name>`` trains for distillation
(training values that replace the recipe's, ``epochs`` included). The header states what
the recipe is (``# Recipe:``) and why its budget is what it is, with the evidence.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass

from spaces import validate
from spaces.errors import SpaceError
from spaces.files import RECIPES_DIR, display, header, names_in, read_yaml, resolve

# The embedded default: runs offline, in minutes, on 2 CPU cores.
DEFAULT_RECIPE = "fashion_mnist_resnet20"
RECIPE_KEYS = ("fixed", "budget", "teacher")
# The budget keys a recipe may set: all but how many trials a question needs.
RECIPE_BUDGET_KEYS = tuple(k for k in validate.BUDGET_DEFAULTS if k != "num_samples")


@dataclass(frozen=True)
class Recipe:
    name: str
    path: str
    title: str  # the header's `# Recipe:` line
    fixed: dict  # coerced training values (no epochs: that is budget.max_epochs)
    budget: dict  # raw budget values, checked again once layered under a space
    teacher: dict  # coerced training values for the distillation teacher (with epochs)

    @property
    def file(self) -> str:
        return display(pathlib.Path(self.path))


def list_recipes() -> list[str]:
    return names_in(RECIPES_DIR)


def load_recipe(name_or_path: str | os.PathLike | None = None) -> Recipe:
    """A recipe by name in spaces/recipes/ or by path; None = the embedded default."""
    path = resolve(name_or_path or DEFAULT_RECIPE, RECIPES_DIR, "recipe")
    file = display(path)
    raw, text = read_yaml(path, "`fixed: {...}` and `budget: {max_epochs: N}` (see spaces/recipes/)")
    title = header(text, ("Recipe",), multiline=("Recipe",)).get("Recipe")
    if not title:
        raise SpaceError(file, "header", "no `# Recipe: ...` comment at the top; begin the file with what "
                         "the recipe trains, on what data, and why its budget is what it is")
    for key in raw:
        if key not in RECIPE_KEYS:
            raise SpaceError(file, str(key), f"unknown top-level key of a recipe; use {', '.join(RECIPE_KEYS)}")
    name = path.stem
    own = validate.mapping(file, "fixed", raw.get("fixed"), "{model: resnet20}")
    validate.training_keys(file, "fixed", own)
    if "epochs" in own:
        raise SpaceError(file, "fixed.epochs", "set the epoch count with budget.max_epochs")
    fixed = {k: validate.value(file, f"fixed.{k}", k, v, name) for k, v in own.items()}
    budget = validate.mapping(file, "budget", raw.get("budget"), "{max_epochs: 6}")
    for key in budget:
        if key not in RECIPE_BUDGET_KEYS:
            hint = ("how many trials a question needs is the space's budget.num_samples" if key == "num_samples"
                    else f"a recipe's budget takes {', '.join(RECIPE_BUDGET_KEYS)}")
            raise SpaceError(file, f"budget.{key}", f"not a recipe budget key; {hint}")
    if "max_epochs" not in budget:
        raise SpaceError(file, "budget.max_epochs", "missing; a recipe states how many epochs a trial trains")
    validate.budget({**validate.BUDGET_DEFAULTS, "num_samples": 1, **budget}, file)
    teacher_raw = validate.mapping(file, "teacher", raw.get("teacher"), "{model: resnet56, epochs: 12}")
    validate.training_keys(file, "teacher", teacher_raw)
    teacher = {k: validate.value(file, f"teacher.{k}", k, v, name) for k, v in teacher_raw.items()}
    if teacher and "epochs" not in teacher:
        raise SpaceError(file, "teacher.epochs", "missing; say how long the teacher trains")
    return Recipe(name=name, path=str(path), title=title, fixed=fixed, budget=budget, teacher=teacher)


__all__ = ["Recipe", "DEFAULT_RECIPE", "list_recipes", "load_recipe"]
