"""Search spaces: ``spaces/<name>.yaml`` files, loaded and validated into a neutral :class:`Space`.

A space file is data: a header comment with the question it answers and its
``make search SPACE=<name>`` command, then ``metric``/``mode``, ``fixed:`` training
overrides (layered on ``baseline.yaml``'s recipe), ``params:`` with typed
distributions, optional ``baseline:`` and ``variants:``, and a ``budget:``.

:func:`load_space` checks the whole file before it returns -- every key, every
distribution against the training key it samples (by building a
:class:`~trainable.config.TrainConfig` at its bounds), the reference trial and every
variant -- so a typo fails in milliseconds with one line naming the file, the key
and the fix, before Ray starts. This module imports no Ray, Optuna or MLflow:
``search/`` turns a :class:`Space` into Ray Tune / Optuna domains.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import pathlib
import random
import re
import typing
from dataclasses import dataclass, field

import yaml

from trainable.config import (FIELDS, REPORTED_METRICS, ConfigError, TrainConfig, coerce_value,
                              from_dict)

SPACES_DIR = pathlib.Path(__file__).resolve().parent
# Relative file paths in a space are read against the folder that holds spaces/, not the
# working directory: Ray runs each trial in its own directory.
PROJECT_ROOT = SPACES_DIR.parent
BASELINE_NAME = "baseline"

TOP_KEYS = ("metric", "mode", "fixed", "params", "baseline", "variants", "budget", "scheduler", "seed")
# Budget keys and their defaults; None = required.
BUDGET_DEFAULTS = {"num_samples": None, "max_epochs": None, "grace_period": 1, "reduction_factor": 3,
                   "max_concurrent": 2, "cpus_per_trial": 1, "gpus_per_trial": 0}
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice", "grid")
# The fields each distribution takes besides `type`.
_DIST_FIELDS = {"uniform": ("low", "high"), "loguniform": ("low", "high"), "int": ("low", "high"),
                "choice": ("values",), "grid": ("values",)}
SCHEDULERS = ("asha", "none")
# Training keys that hold file paths; relative ones are made absolute against PROJECT_ROOT.
PATH_KEYS = ("teacher_checkpoint", "data_dir", "pretrained")
# Which way each reported metric improves, so `mode: min` on an accuracy is caught.
_METRIC_DIRECTION = {"val_top1": "max", "val_top5": "max", "images_per_second": "max",
                     "train_loss": "min", "val_loss": "min", "epoch_seconds": "min"}
_HINTS = typing.get_type_hints(TrainConfig)


class SpaceError(ConfigError):
    """A space file is wrong; one line: ``<file>: <key>: <problem>; <fix>``."""

    def __init__(self, file: str, key: str, message: str):
        self.file, self.key, self.message = file, key, message
        text = f"{file}: {key}: {message}" if key else f"{file}: {message}"
        super().__init__(" ".join(text.split()))  # always one line, whatever the cause said

    def __reduce__(self):  # Ray pickles a trial's exception to the driver
        return type(self), (self.file, self.key, self.message)


@dataclass(frozen=True)
class Param:
    """One searched training key.

    uniform / loguniform: a float in [low, high] (loguniform: sampled in log space, low > 0).
    int: an integer in [low, high], both ends included (Ray's ``randint`` excludes ``high``:
    the converter passes ``high + 1``). choice: one of ``values``, searched by Optuna's TPE.
    grid: every one of ``values`` is run (Ray's ``grid_search``).
    """

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    values: tuple | None = None

    def contains(self, value) -> bool:
        if self.type in ("choice", "grid"):
            return value in self.values
        if self.type == "int" and (isinstance(value, bool) or not float(value).is_integer()):
            return False
        return self.low <= value <= self.high

    def draw(self, rng: random.Random):
        if self.type == "uniform":
            return rng.uniform(self.low, self.high)
        if self.type == "loguniform":
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        if self.type == "int":
            return rng.randint(self.low, self.high)
        return rng.choice(self.values)

    def describe(self) -> str:
        if self.values is not None:
            return f"{self.type} of {list(self.values)}"
        return f"{self.type} [{self.low}, {self.high}]"


@dataclass(frozen=True)
class Space:
    """A validated space file. ``fixed`` and ``baseline`` hold coerced TrainConfig values."""

    name: str
    path: str
    question: str
    command: str
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
    scheduler: str
    seed: int
    searcher: str
    # What the space was built from, so override() can revalidate the whole thing.
    _raw: dict = field(default_factory=dict, repr=False, compare=False)
    _recipe: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def file(self) -> str:
        return _display(pathlib.Path(self.path))

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
        values = {**self.fixed, **sampled, **overrides}
        values = {k: _absolute(k, v) for k, v in values.items()}
        try:
            return from_dict(values)
        except ConfigError as err:
            raise SpaceError(self.file, "trial", str(err)) from None

    def sample(self, rng: random.Random) -> dict:
        """One random draw of every param (and a variant when the space has them)."""
        out = {name: param.draw(rng) for name, param in self.params.items()}
        if self.variants:
            out["variant"] = rng.choice(list(self.variants))
        return out

    def override(self, fixed: typing.Mapping | None = None, num_samples: int | None = None,
                 **budget) -> Space:
        """A revalidated copy with ``fixed`` keys set (``--set``) and budget keys replaced.

        A searched key set here becomes fixed and leaves ``params``. ``epochs`` is the
        budget's ``max_epochs``. Lowering ``max_epochs`` below the grace period also
        lowers the grace period (ASHA cannot wait longer than a trial runs) unless
        ``grace_period`` is given too. ``scheduler`` and ``seed`` are accepted as well.
        """
        raw = copy.deepcopy(self._raw)
        fixed = dict(fixed or {})
        for key in fixed:
            if key not in FIELDS:
                raise SpaceError(self.file, f"--set {key}", _unknown_training_key(key))
        if "epochs" in fixed:
            value = fixed.pop("epochs")
            try:
                budget.setdefault("max_epochs", coerce_value("epochs", value))
            except ConfigError as err:
                raise SpaceError(self.file, "--set epochs", str(err)) from None
        if num_samples is not None:
            budget["num_samples"] = num_samples
        for key in budget:
            if key not in BUDGET_DEFAULTS and key not in ("scheduler", "seed"):
                raise SpaceError(self.file, f"override {key}", "not a budget key; use one of "
                                 f"{', '.join([*BUDGET_DEFAULTS, 'scheduler', 'seed'])}")
        # Each --set value on its own first, so its error names --set, not the file's fixed.
        current = {**self.baseline, **fixed}
        if "max_epochs" in budget:
            current["epochs"] = budget["max_epochs"]
        for key, value in fixed.items():
            try:
                coerce_value(key, value)
            except ConfigError as err:
                raise SpaceError(self.file, f"--set {key}", _explain(key, value, err)) from None
        try:
            from_dict({k: _absolute(k, coerce_value(k, v)) for k, v in current.items()})
        except ConfigError as err:
            raise SpaceError(self.file, "--set", str(err)) from None

        own_fixed = raw.get("fixed") or {}
        raw["fixed"] = {**own_fixed, **fixed} if isinstance(own_fixed, dict) else own_fixed
        for key in fixed:
            if isinstance(raw.get("params"), dict):
                raw["params"].pop(key, None)
            if isinstance(raw.get("baseline"), dict):
                raw["baseline"].pop(key, None)
        raw_budget = dict(raw.get("budget") or {})
        if "max_epochs" in budget and "grace_period" not in budget:
            raw_budget["grace_period"] = min(self.grace_period, int(budget["max_epochs"]))
        for key in ("scheduler", "seed"):
            if key in budget:
                raw[key] = budget.pop(key)
        raw_budget.update(budget)
        raw["budget"] = raw_budget
        return _build(pathlib.Path(self.path), raw, self._recipe, self.question, self.command)


def list_spaces() -> list[str]:
    """The names of the space files in spaces/, sorted."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(name_or_path: str | os.PathLike) -> Space:
    """Load and validate a space: a name in spaces/ (``mixup_alpha``) or a path to a .yaml file."""
    text = str(name_or_path)
    if os.sep in text or "/" in text or text.endswith((".yaml", ".yml")):
        path = pathlib.Path(text).expanduser().resolve()
        if not path.is_file():
            raise SpaceError(text, "", "file not found; give a path to a .yaml space file or one of the "
                             f"names in spaces/: {', '.join(list_spaces())}")
    else:
        path = SPACES_DIR / f"{text}.yaml"
        if not path.is_file():
            close = difflib.get_close_matches(text, list_spaces(), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SpaceError(_display(path), "", f"unknown space {text!r}; {hint}available: "
                             f"{', '.join(list_spaces())}")
    raw, question, command = _read(path)
    recipe = _recipe(path)
    return _build(path, raw, recipe, question, command)


# --- reading ---------------------------------------------------------------------------

def _display(path: pathlib.Path) -> str:
    """The file as a user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(pathlib.Path.cwd().resolve()))
    except ValueError:
        return str(path)


class _DuplicateKey(Exception):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, but a key given twice is an error (YAML keeps the last one silently)."""


def _mapping_without_duplicates(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise _DuplicateKey(f"duplicate key {key!r} at line {key_node.start_mark.line + 1} (first on line "
                                f"{seen[key] + 1}); keep one of them")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _read(path: pathlib.Path) -> tuple[dict, str, str]:
    file = _display(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpaceError(file, "", f"cannot read the file ({err}); check the path") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 -- a SafeLoader subclass
    except _DuplicateKey as err:
        raise SpaceError(file, "", str(err)) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and context_mark:
            context += f" begun at line {context_mark.line + 1}"
        detail = f"{problem} ({context})" if context else problem
        raise SpaceError(file, "", f"malformed YAML{where}: {detail}; fix the syntax there "
                         "(indent with spaces, quote values that contain ': ' or '#')") from None
    if raw is None:
        raise SpaceError(file, "", "the file is empty; write metric, mode, params and budget "
                         "(see spaces/mixup_alpha.yaml)")
    if not isinstance(raw, dict):
        raise SpaceError(file, "", f"the top level is a {type(raw).__name__}, not a mapping; write "
                         "`metric: ...`, `mode: ...`, `params: ...`, `budget: ...` as top-level keys")
    question, command = _header(path, text)
    return raw, question, command


def _header(path: pathlib.Path, text: str) -> tuple[str, str]:
    """The question and run command from the leading comment block."""
    question, command, in_question = [], None, False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            if stripped:
                break
            continue
        body = stripped.lstrip("#").strip()
        if body.lower().startswith("question:"):
            question, in_question = [body.split(":", 1)[1].strip()], True
        elif body.lower().startswith("run:"):
            command, in_question = body.split(":", 1)[1].strip(), False
        elif in_question and body:
            question.append(body)
        else:
            in_question = False
    if not question or not question[0]:
        raise SpaceError(_display(path), "header", "no `# Question: ...` comment at the top; begin the file "
                         f"with the question it answers and `# Run: make search SPACE={path.stem}`")
    if not command:
        spelled = path.stem if path.parent == SPACES_DIR else _display(path)
        command = f"make search SPACE={spelled}"
    return " ".join(question), command


def _recipe(path: pathlib.Path) -> dict:
    """baseline.yaml's ``fixed`` (raw), the layer under every other space's ``fixed``."""
    base = SPACES_DIR / f"{BASELINE_NAME}.yaml"
    if path.resolve() == base.resolve() or not base.is_file():
        return {}
    raw, question, command = _read(base)
    _build(base, raw, {}, question, command)  # a broken recipe is reported against baseline.yaml
    return raw.get("fixed") or {}


# --- validation ------------------------------------------------------------------------

def _unknown_training_key(key) -> str:
    close = difflib.get_close_matches(str(key), FIELDS, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "run `python -m trainable --help-config` to list the keys"
    return f"unknown training key {key!r}; {hint}"


def _explain(key: str, value, err: ConfigError) -> str:
    """The trainable's message, plus the YAML pitfall behind most string-typed surprises."""
    message = str(err)
    if isinstance(value, bool) and _HINTS.get(key) in (str, str | None):
        message += ("; YAML reads off/on/no/yes as true/false: quote the value, e.g. "
                    f"{key}: '{'off' if not value else 'on'}'")
    return message


def _coerce(file: str, where: str, key: str, value):
    try:
        return _absolute(key, coerce_value(key, value))
    except ConfigError as err:
        raise SpaceError(file, where, _explain(key, value, err)) from None


def _absolute(key: str, value):
    if key not in PATH_KEYS or not isinstance(value, str):
        return value
    if key == "pretrained" and not _looks_like_path(value):
        return value  # a torchvision weights name such as IMAGENET1K_V1
    path = pathlib.Path(value).expanduser()
    return str(path if path.is_absolute() else PROJECT_ROOT / path)


def _looks_like_path(value: str) -> bool:
    return "/" in value or os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors"))


def _mapping(file: str, key: str, value, example: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpaceError(file, key, f"expected a mapping, got {type(value).__name__} {value!r}; "
                         f"write e.g. {example}")
    return value


def _check_training_keys(file: str, where: str, mapping: dict) -> None:
    for key in mapping:
        if key not in FIELDS:
            raise SpaceError(file, f"{where}.{key}", _unknown_training_key(key))


def _integer(file: str, key: str, value, minimum: int | None = None, fix: str = "") -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):  # from the command line
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise SpaceError(file, key, f"expected an integer, got {value!r}{'; ' + fix if fix else ''}")
    if minimum is not None and value < minimum:
        raise SpaceError(file, key, f"{value} is below {minimum}{'; ' + fix if fix else ''}")
    return int(value)


def _number(file: str, key: str, value) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpaceError(file, key, f"expected a number, got {value!r}")
    return value


def _build(path: pathlib.Path, raw: dict, recipe: dict, question: str, command: str) -> Space:
    file = _display(path)

    for key in raw:
        if key not in TOP_KEYS:
            if key in FIELDS:
                hint = f"a training key belongs under `fixed:` (or `params:` to search it)"
            elif key in BUDGET_DEFAULTS:
                hint = "budget keys belong under `budget:`"
            else:
                close = difflib.get_close_matches(str(key), TOP_KEYS, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"the top-level keys are {', '.join(TOP_KEYS)}"
            raise SpaceError(file, str(key), f"unknown top-level key; {hint}")

    # metric / mode
    for key in ("metric", "mode", "params", "budget"):
        if key not in raw:
            fixes = {"metric": "add `metric: val_top1`", "mode": "add `mode: max`",
                     "params": "add `params:` with the searched keys, or `params: {}` to run the fixed recipe",
                     "budget": "add `budget:` with at least num_samples and max_epochs"}
            raise SpaceError(file, key, f"missing; {fixes[key]}")
    metric, mode = raw["metric"], raw["mode"]
    if metric not in REPORTED_METRICS:
        close = difflib.get_close_matches(str(metric), REPORTED_METRICS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SpaceError(file, "metric", f"{metric!r} is not reported by the trainable; {hint}choose one of "
                         f"{', '.join(REPORTED_METRICS)}")
    if mode not in ("max", "min"):
        raise SpaceError(file, "mode", f"{mode!r} is not max or min; use max for accuracies, min for losses")
    if _METRIC_DIRECTION.get(metric, mode) != mode:
        raise SpaceError(file, "mode", f"{mode} {metric} would search for the worst trials; "
                         f"use mode: {_METRIC_DIRECTION[metric]}")

    # budget, scheduler, seed
    budget_raw = _mapping(file, "budget", raw["budget"], "{num_samples: 12, max_epochs: 6}")
    for key in budget_raw:
        if key not in BUDGET_DEFAULTS:
            if key in ("scheduler", "seed"):
                hint = f"`{key}` is a top-level key, not a budget key"
            elif key == "epochs":
                hint = "did you mean 'max_epochs'?"
            else:
                close = difflib.get_close_matches(str(key), BUDGET_DEFAULTS, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"the budget keys are {', '.join(BUDGET_DEFAULTS)}"
            raise SpaceError(file, f"budget.{key}", f"unknown budget key; {hint}")
    budget = {**BUDGET_DEFAULTS, **budget_raw}
    required = {"num_samples": "add `num_samples: N` (trials; for grid spaces, repeats of the grid)",
                "max_epochs": "add `max_epochs: N` (the epochs of a trial that is never stopped)"}
    for key, fix in required.items():
        if budget[key] is None:
            raise SpaceError(file, f"budget.{key}", f"missing; {fix}")
    num_samples = _integer(file, "budget.num_samples", budget["num_samples"], 1, "run at least one trial")
    max_epochs = _integer(file, "budget.max_epochs", budget["max_epochs"], 1, "train for at least one epoch")
    grace_period = _integer(file, "budget.grace_period", budget["grace_period"], 1,
                            "ASHA needs at least one epoch before it can stop a trial")
    if grace_period > max_epochs:
        raise SpaceError(file, "budget.grace_period", f"{grace_period} is above max_epochs={max_epochs}; "
                         "a trial cannot be stopped after it has finished: lower grace_period")
    reduction_factor = _integer(file, "budget.reduction_factor", budget["reduction_factor"], 2,
                                "ASHA keeps 1/reduction_factor of the trials at each rung; 3 is usual")
    max_concurrent = _integer(file, "budget.max_concurrent", budget["max_concurrent"], 1,
                              "at least one trial must run at a time")
    cpus = _number(file, "budget.cpus_per_trial", budget["cpus_per_trial"])
    if cpus <= 0:
        raise SpaceError(file, "budget.cpus_per_trial", f"{cpus} is not above 0; give each trial a CPU share, e.g. 1")
    gpus = _number(file, "budget.gpus_per_trial", budget["gpus_per_trial"])
    if gpus < 0:
        raise SpaceError(file, "budget.gpus_per_trial", f"{gpus} is negative; use 0 for CPU-only trials")
    if gpus > 1 and not float(gpus).is_integer():
        raise SpaceError(file, "budget.gpus_per_trial", f"{gpus}: Ray shares a GPU only in fractions up to 1; "
                         "use a whole number above 1")
    scheduler = raw.get("scheduler", "asha")
    if scheduler not in SCHEDULERS:
        raise SpaceError(file, "scheduler", f"{scheduler!r} is not one of {', '.join(SCHEDULERS)}; asha stops "
                         "poor trials early, none runs every trial to max_epochs")
    seed = _integer(file, "seed", raw.get("seed", 0), 0, "use a search seed >= 0")

    # fixed: baseline.yaml's recipe, then this file's own, each coerced; epochs = max_epochs
    own_fixed = _mapping(file, "fixed", raw.get("fixed"), "{hflip: true}")
    params_raw = _mapping(file, "params", raw["params"], "{mixup_alpha: {type: uniform, low: 0.0, high: 1.0}}")
    for where, mapping in (("fixed", recipe), ("fixed", own_fixed), ("params", params_raw)):
        _check_training_keys(file, where, mapping)
    for where, mapping in (("fixed", recipe), ("fixed", own_fixed)):
        if "epochs" in mapping:
            raise SpaceError(file, "fixed.epochs", "set the epoch count with budget.max_epochs (ASHA's max_t "
                             "and every trial's epochs), not in fixed")
    for key in params_raw:
        if key in own_fixed:
            raise SpaceError(file, f"params.{key}", f"a distribution over a fixed key ({key} is also in fixed); "
                             "remove it from fixed to search it, or from params to keep it fixed")
    fixed = {k: _coerce(file, f"fixed.{k}", k, v) for k, v in {**recipe, **own_fixed}.items()
             if k not in params_raw}
    fixed["epochs"] = max_epochs
    recipe_values = {k: _coerce(file, f"fixed.{k}", k, v) for k, v in recipe.items()}

    # params: structure and types (bounds against the training config come after the baseline)
    params = {name: _param(file, name, spec) for name, spec in params_raw.items()}

    # baseline: the reference trial; a searched key's value is this file's `baseline:`,
    # else baseline.yaml's recipe value, else TrainConfig's default (the trick off)
    baseline_raw = _mapping(file, "baseline", raw.get("baseline"), "{mixup_alpha: 0.0}")
    for key, value in baseline_raw.items():
        if key not in params:
            hint = _unknown_training_key(key) if key not in FIELDS else \
                "not a searched param; a value for a key that is not searched belongs in fixed"
            raise SpaceError(file, f"baseline.{key}", hint)
    baseline = dict(fixed)
    for name, param in params.items():
        if name in baseline_raw:
            value = _coerce(file, f"baseline.{name}", name, baseline_raw[name])
        elif name in recipe_values:
            value = recipe_values[name]
        else:
            value = FIELDS[name].default
        if value is None or not param.contains(value):
            source = "given" if name in baseline_raw else "default"
            raise SpaceError(file, f"baseline.{name}", f"the reference value {value!r} ({source}) is outside "
                             f"{param.describe()}; widen the domain to include it or set baseline.{name}")
        baseline[name] = value
    try:
        from_dict(baseline)
    except ConfigError as err:
        key = re.match(r"\w+", str(err))
        where = "baseline" if key and key.group(0) in params else "fixed"
        raise SpaceError(file, where, str(err)) from None

    # each distribution's ends (or each of its values) must be a valid training value
    for name, param in params.items():
        points = param.values if param.values is not None else (param.low, param.high)
        labels = ("value",) * len(points) if param.values is not None else ("low", "high")
        for label, point in zip(labels, points):
            try:
                from_dict({**baseline, name: point})
            except ConfigError as err:
                raise SpaceError(file, f"params.{name}", f"{label} {point!r} is not a valid {name} ({err}); "
                                 "narrow the domain") from None

    # variants: named override sets, each run once per grid point next to "baseline"
    variants_raw = raw.get("variants")
    variants: dict[str, dict] = {}
    if variants_raw is not None:
        variants_raw = _mapping(file, "variants", variants_raw, "{label_smoothing: {label_smoothing: 0.1}}")
        if not variants_raw:
            raise SpaceError(file, "variants", "empty; name at least one override set, or remove `variants:`")
        variants["baseline"] = {}
        for vname, overrides in variants_raw.items():
            where = f"variants.{vname}"
            if not isinstance(overrides, dict):
                raise SpaceError(file, where, f"expected a mapping of training keys to values, got {overrides!r}; "
                                 f"write e.g. {vname}: {{label_smoothing: 0.1}}")
            if vname == "baseline":
                if overrides:
                    raise SpaceError(file, where, "the baseline variant is the recipe itself and takes no "
                                     "overrides; give this override set another name")
                continue
            if not overrides:
                raise SpaceError(file, where, "no overrides; a variant must change at least one key")
            _check_training_keys(file, where, overrides)
            for key in overrides:
                if key in params:
                    raise SpaceError(file, f"{where}.{key}", f"{key} is searched in params; a variant can only "
                                     "override fixed keys")
                if key == "epochs":
                    raise SpaceError(file, f"{where}.{key}", "every variant trains for budget.max_epochs; "
                                     "compare epochs in another space")
            coerced = {k: _coerce(file, f"{where}.{k}", k, v) for k, v in overrides.items()}
            try:
                from_dict({**baseline, **coerced})
            except ConfigError as err:
                raise SpaceError(file, where, str(err)) from None
            variants[str(vname)] = coerced

    # Grid search (Ray's variant generator) when there is a grid to walk, or nothing to
    # sample; Optuna's TPE otherwise.
    grid = not params or variants or any(p.type == "grid" for p in params.values())
    return Space(
        name=path.stem, path=str(path), question=question, command=command, metric=metric, mode=mode,
        fixed=fixed, params=params, baseline=baseline, variants=variants, num_samples=num_samples,
        max_epochs=max_epochs, grace_period=grace_period, reduction_factor=reduction_factor,
        max_concurrent=max_concurrent, cpus_per_trial=float(cpus), gpus_per_trial=float(gpus),
        scheduler=scheduler, seed=seed, searcher="grid" if grid else "optuna",
        _raw=copy.deepcopy(raw), _recipe=dict(recipe))


def _param(file: str, name: str, spec) -> Param:
    where = f"params.{name}"
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
        if key != "type" and key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"{kind} takes {' and '.join(allowed)}"
            raise SpaceError(file, f"{where}.{key}", f"not a field of a {kind} distribution; {hint}")
    for key in allowed:
        if key not in spec or spec[key] is None:
            raise SpaceError(file, where, f"{kind} needs `{key}`; write e.g. {name}: "
                             + ("{type: %s, values: [a, b]}" % kind if key == "values"
                                else "{type: %s, low: 1, high: 3}" % kind))
    hint = _HINTS[name]
    if kind in ("choice", "grid"):
        values = spec["values"]
        if not isinstance(values, (list, tuple)):
            raise SpaceError(file, f"{where}.values", f"expected a list, got {values!r}; write e.g. values: [a, b]")
        if not values:
            raise SpaceError(file, f"{where}.values", "empty; list at least one value (two to compare anything)")
        coerced = tuple(_coerce(file, f"{where}.values", name, v) for v in values)
        duplicates = sorted({repr(v) for v in coerced if coerced.count(v) > 1})
        if duplicates:
            raise SpaceError(file, f"{where}.values", f"{', '.join(duplicates)} listed twice; list each value once")
        return Param(name=name, type=kind, values=coerced)

    numeric = (float, float | None, int, int | None)
    if hint not in numeric:
        raise SpaceError(file, where, f"{name} is a {getattr(hint, '__name__', hint)}, not a number; "
                         "use type: choice with a list of values")
    if kind in ("uniform", "loguniform") and hint in (int, int | None):
        raise SpaceError(file, where, f"{kind} draws fractions but {name} is an integer; use type: int")
    low = _number(file, f"{where}.low", spec["low"])
    high = _number(file, f"{where}.high", spec["high"])
    if kind == "int":
        low = _integer(file, f"{where}.low", low, fix="int bounds are whole numbers")
        high = _integer(file, f"{where}.high", high, fix="int bounds are whole numbers")
    else:
        low, high = float(low), float(high)
    if low >= high:
        raise SpaceError(file, where, f"low={low} is not below high={high} (an empty or inverted range); "
                         "swap them, or put a single value in fixed")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(file, f"{where}.low", f"loguniform needs low > 0, got {low}; use a small positive low, "
                         "or uniform to include 0")
    return Param(name=name, type=kind, low=low, high=high)


__all__ = ["SpaceError", "Param", "Space", "load_space", "list_spaces", "SPACES_DIR", "PROJECT_ROOT",
           "REPORTED_METRICS"]
