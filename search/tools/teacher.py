"""``python -m search.tools.teacher [--recipe NAME] [--data-dir DIR]`` (``make teacher RECIPE=...``).

Trains a recipe's distillation teacher: the recipe's training values with its
``teacher:`` section on top (a bigger model, often longer), through the same
``python -m trainable`` run a user would type, and writes ``teachers/<recipe>.pt``, the
file spaces/kd_temperature.yaml reads (``teacher_checkpoint: teachers/{recipe}.pt``).
"""

from __future__ import annotations

import argparse
import sys

import trainable.__main__ as trainable_cli
from spaces import PROJECT_ROOT, SpaceError, load_recipe


def teacher_argv(recipe_name: str | None, data_dir: str | None, out: str | None) -> list[str]:
    """The ``python -m trainable`` arguments that train ``recipe_name``'s teacher."""
    recipe = load_recipe(recipe_name)
    if not recipe.teacher:
        raise SpaceError(recipe.file, "teacher", "this recipe names no teacher; add a `teacher:` section with "
                         "the model and epochs to distil from")
    values = {**recipe.fixed, **recipe.teacher, **({"data_dir": data_dir} if data_dir else {})}
    argv = [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]
    out = out or str(PROJECT_ROOT / "teachers" / f"{recipe.name}.pt")
    return [*argv, "--save-weights", out, "--checkpoint-dir", str(PROJECT_ROOT / "runs" / f"teacher-{recipe.name}")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search.tools.teacher", description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", help="a recipe in spaces/recipes/ (default: the embedded one)")
    parser.add_argument("--data-dir", help="where the recipe's data set is (its data_dir)")
    parser.add_argument("--out", help="weights file to write (default teachers/<recipe>.pt)")
    args = parser.parse_args(argv)
    try:
        run = teacher_argv(args.recipe, args.data_dir, args.out)
    except SpaceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return trainable_cli.main(run)


if __name__ == "__main__":
    sys.exit(main())
