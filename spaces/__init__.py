"""Search spaces: ``spaces/<name>.yaml`` files layered on ``spaces/recipes/<name>.yaml``.

A space file is data: a header comment with the question it answers and its
``make search SPACE=<name>`` command, then ``metric``/``mode``, ``fixed:`` training
overrides, ``params:`` with typed distributions, optional ``baseline:`` and ``variants:``,
and a ``budget:``. It is layered on a recipe (the model, data, optimizer and budget of
one setup; the embedded Fashion-MNIST one by default), so a space asks its question in
words that hold for any recipe.

:func:`load_space` checks the whole file before it returns -- every key, every
distribution against the training key it samples (by building a TrainConfig at its
bounds), the reference trial and every variant -- so a typo fails in milliseconds with
one line naming the file, the key and the fix, before Ray starts. This package imports
no Ray, Optuna or MLflow; ``search/`` turns a :class:`Space` into Ray Tune domains.

Modules: ``files`` (where files live, YAML + header), ``validate`` (one validator per
section), ``model`` (the typed Param/Space), ``recipes``, ``loader`` (``load_space`` and
``override``, the one way a Space is built).
"""

from spaces.errors import SpaceError
from spaces.files import PROJECT_ROOT, RECIPES_DIR, SPACES_DIR
from spaces.loader import list_spaces, load_space, override
from spaces.model import Param, Space
from spaces.recipes import DEFAULT_RECIPE, Recipe, list_recipes, load_recipe
from spaces.validate import BUDGET_DEFAULTS
from trainable.config import REPORTED_METRICS

__all__ = ["SpaceError", "Param", "Space", "Recipe", "load_space", "override", "list_spaces", "load_recipe",
           "list_recipes", "DEFAULT_RECIPE", "BUDGET_DEFAULTS", "SPACES_DIR", "RECIPES_DIR", "PROJECT_ROOT",
           "REPORTED_METRICS"]
