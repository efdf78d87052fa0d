"""The space files and their loader: every shipped space loads and samples valid configs;
every kind of mistake in a space file fails with one line naming the file, key and fix."""

import dataclasses
import pickle
import subprocess
import sys

import pytest

from spaces import (
    DEFAULT_RECIPE,
    PROJECT_ROOT,
    SPACES_DIR,
    Param,
    Space,
    SpaceError,
    list_recipes,
    list_spaces,
    load_recipe,
    load_space,
    override,
)
from trainable.config import ConfigError, TrainConfig, from_dict

TEACHER = PROJECT_ROOT / "teachers" / f"{DEFAULT_RECIPE}.pt"
SHIPPED = list_spaces()


def draw(space: Space, n: int, seed: int = 0) -> list[dict]:
    """``n`` points drawn the way a search draws them: through search/domains.py's Ray Tune
    domains, by Optuna (TPE's space, sampled at random here) or by Ray's variant generator."""
    from search.domains import param_space

    domains = param_space(space)
    if space.searcher == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        distributions = OptunaSearch.convert_search_space(domains)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        return [study.ask(distributions).params for _ in range(n)]
    from ray.tune.search.variant_generator import generate_variants

    return [config for _ in range(n) for _, config in generate_variants(domains)][:n]


def test_the_named_spaces_are_all_there():
    assert set(SHIPPED) >= {"baseline", "lr", "mixup_alpha", "label_smoothing", "cutmix", "kd_temperature",
                            "sam_rho", "augment", "schedule", "tricks", "ablation"}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_space_loads_samples_and_builds_valid_configs(name):
    if name == "kd_temperature" and not TEACHER.is_file():
        with pytest.raises(SpaceError, match="make teacher"):
            load_space(name)
        pytest.skip("teachers/teacher.pt is absent (run `make teacher`); checked that loading says so")
    space = load_space(name)
    assert space.name == name and space.question
    assert space.command == f"make search SPACE={name}"
    assert isinstance(from_dict(space.baseline), TrainConfig)
    assert space.fixed["epochs"] == space.max_epochs
    for sampled in draw(space, 10):
        cfg = space.trial_config(sampled)
        assert isinstance(cfg, TrainConfig) and cfg.epochs == space.max_epochs
        for key, value in sampled.items():
            if key != "variant":
                assert space.params[key].contains(value)
    for variant in space.variants:
        assert isinstance(space.trial_config({**space.baseline, "variant": variant}), TrainConfig)


def test_kd_space_loads_when_a_teacher_file_exists(tmp_path):
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"")  # load_space checks only that the file is there
    text = (SPACES_DIR / "kd_temperature.yaml").read_text().replace("teachers/{recipe}.pt", str(teacher))
    path = tmp_path / "kd.yaml"
    path.write_text(text)
    space = load_space(str(path))
    assert space.fixed["teacher_checkpoint"] == str(teacher)
    assert space.baseline["kd_weight"] == 0.0  # the reference trial does not distil
    assert space.trial_config(draw(space, 1)[0]).teacher_checkpoint == str(teacher)


def test_every_space_file_states_its_question_and_command_first():
    for name in SHIPPED:
        lines = (SPACES_DIR / f"{name}.yaml").read_text().splitlines()
        assert lines[0].startswith("# Question: ") and lines[0].endswith("?"), name
        assert lines[1] == f"# Run: make search SPACE={name}", name


def test_baseline_recipe_is_layered_under_every_space():
    recipe = load_space("baseline")
    assert recipe.params == {} and recipe.num_samples == 1 and recipe.searcher == "grid"
    mixup = load_space("mixup_alpha")
    for key in ("model", "dataset", "crop", "hflip", "weight_decay"):
        assert mixup.fixed[key] == recipe.fixed[key]
    assert "lr" not in mixup.fixed and "lr" in mixup.params  # searched keys leave fixed
    assert mixup.baseline["mixup_alpha"] == 0.0 and mixup.baseline["lr"] == recipe.fixed["lr"]
    assert mixup.searcher == "optuna"


def test_ablation_is_a_grid_of_variants_and_seeds():
    space = load_space("ablation")
    assert space.searcher == "grid" and space.scheduler == "none"
    assert list(space.variants)[0] == "baseline" and space.variants["baseline"] == {}
    assert space.params["seed"] == Param("seed", "grid", values=(0, 1, 2, 3, 4))
    cfg = space.trial_config({"seed": 2, "variant": "mixup"})
    assert cfg.mixup_alpha == 0.2 and cfg.seed == 2
    assert space.trial_config({"seed": 0, "variant": "baseline"}).mixup_alpha == 0.0
    with pytest.raises(SpaceError, match="unknown variant 'mixupp'"):
        space.trial_config({"seed": 0, "variant": "mixupp"})


def test_searched_is_what_a_trials_config_varies():
    assert load_space("mixup_alpha").searched == ("mixup_alpha", "lr")
    assert load_space("ablation").searched == ("seed", "variant")
    assert override(load_space("mixup_alpha"), fixed={"lr": "0.05"}).searched == ("mixup_alpha",)


def test_trial_config_needs_every_param_and_valid_values():
    space = load_space("mixup_alpha")
    with pytest.raises(SpaceError, match="lr"):
        space.trial_config({"mixup_alpha": 0.2})
    with pytest.raises(ConfigError, match="mixup_alpha"):
        space.trial_config({"mixup_alpha": -1.0, "lr": 0.1})


def test_relative_paths_are_made_absolute_against_the_project_root(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    path = write(tmp_path, "fixed: {data_dir: data, pretrained: IMAGENET1K_V1}\n" + PARAMS + BUDGET)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpaceError, match=f"no directory at '{PROJECT_ROOT / 'data'}'"):
        load_space(str(path))
    monkeypatch.setattr("spaces.files.PROJECT_ROOT", tmp_path)
    space = load_space(str(path))
    assert space.fixed["data_dir"] == str(tmp_path / "data")
    assert space.fixed["pretrained"] == "IMAGENET1K_V1"  # a weights name, not a path


def test_spaces_imports_no_ray_optuna_mlflow_or_torch():
    code = ("import sys, spaces; spaces.load_space('mixup_alpha'); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'optuna', 'mlflow', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- override: --set, --samples, --smoke ------------------------------------------------

def test_override_of_a_fixed_key_changes_it():
    space = override(load_space("mixup_alpha"), fixed={"weight_decay": "1e-4", "hflip": "false"})
    assert space.fixed["weight_decay"] == 1e-4 and space.fixed["hflip"] is False
    assert space.baseline["weight_decay"] == 1e-4
    assert space.trial_config(draw(space, 1)[0]).weight_decay == 1e-4


def test_override_of_a_searched_key_fixes_it_and_removes_it_from_params():
    space = override(load_space("mixup_alpha"), fixed={"lr": "0.05"})
    assert "lr" not in space.params and space.fixed["lr"] == 0.05
    assert list(space.params) == ["mixup_alpha"]
    assert space.trial_config({"mixup_alpha": 0.3}).lr == 0.05


def test_override_of_the_budget_and_epochs():
    space = override(load_space("lr"), num_samples=2, max_concurrent=1)
    assert (space.num_samples, space.max_concurrent) == (2, 1)
    shorter = override(load_space("ablation"), fixed={"epochs": "2"})
    assert shorter.max_epochs == 2 and shorter.fixed["epochs"] == 2
    assert shorter.trial_config({"seed": 1, "variant": "cutmix"}).epochs == 2


@pytest.mark.parametrize("name", [n for n in SHIPPED if n != "kd_temperature" or TEACHER.is_file()])
def test_every_space_survives_a_two_epoch_smoke_override(name):
    # What --smoke needs: 2 epochs, a slice of the data, two trials. (1 epoch would make
    # the warmup domains of schedule/tricks/ablation invalid: warmup must end before training.)
    space = override(load_space(name), fixed={"epochs": "2", "train_subset": "512", "val_subset": "256"},
                     num_samples=2)
    assert space.max_epochs == 2 and space.grace_period <= 2
    assert space.trial_config(draw(space, 1)[0]).train_subset == 512


def test_eval_every_needs_a_search_that_stops_nothing_early(tmp_path):
    # ASHA ranks at its rungs on the validation metric; without ASHA a search may validate less.
    with pytest.raises(SpaceError, match="keep eval_every 1, or set scheduler: none"):
        override(load_space("mixup_alpha"), fixed={"eval_every": "5"})
    space = override(load_space("mixup_alpha"), fixed={"eval_every": "5"}, scheduler="none")
    assert space.trial_config(space.baseline).eval_every == 5


def test_override_lowers_the_grace_period_with_max_epochs(tmp_path):
    path = write(tmp_path, PARAMS + "budget: {num_samples: 2, max_epochs: 6, grace_period: 3}\n")
    space = override(load_space(str(path)), max_epochs=2)
    assert space.grace_period == 2


@pytest.mark.parametrize("overrides, fragment", [
    ({"fixed": {"lr": "-1"}}, "--set: lr=-1.0 is outside"),
    ({"fixed": {"hflip": "maybe"}}, "--set hflip: hflip: expected true/false"),
    ({"fixed": {"mixup_alhpa": "0.2"}}, "did you mean 'mixup_alpha'"),
    ({"fixed": {"epochs": "two"}}, "--set epochs"),
    ({"num_samples": 0}, "budget.num_samples: 0 is below 1"),
    ({"grace_peroid": 1}, "not a budget key"),
], ids=["out-of-range", "wrong-type", "unknown-key", "bad-epochs", "zero-samples", "unknown-budget-key"])
def test_a_bad_override_raises(overrides, fragment):
    with pytest.raises(SpaceError) as info:
        override(load_space("mixup_alpha"), **overrides)
    assert fragment in str(info.value)
    assert "mixup_alpha.yaml" in str(info.value) and "\n" not in str(info.value)


def test_override_keeps_the_space_frozen():
    space = load_space("mixup_alpha")
    override(space, fixed={"lr": "0.05"})
    assert "lr" in space.params
    with pytest.raises(dataclasses.FrozenInstanceError):
        space.metric = "val_loss"


# --- bad space files ----------------------------------------------------------------------

HEADER = "# Question: does this file load?\n# Run: make search SPACE=bad\n"
HEAD = "metric: val_top1\nmode: max\n"
PARAMS = "params:\n  mixup_alpha: {type: uniform, low: 0.0, high: 1.0}\n"
BUDGET = "budget: {num_samples: 2, max_epochs: 2}\n"
GOOD = HEAD + PARAMS + BUDGET


def write(tmp_path, body, header=HEADER, head=HEAD):
    path = tmp_path / "bad.yaml"
    path.write_text(header + head + body)
    return path


def param(spec):
    return "params:\n  " + spec + "\n" + BUDGET


# (id, file body after the header, expected message fragment). metric/mode are prepended
# unless the body starts with its own; None = an empty file; "no-header" = a good body, no header.
BAD = [
    ("malformed-yaml", PARAMS + "budget: {num_samples: 2, max_epochs: 2\n",
     "malformed YAML at line 8, column 1: expected ',' or '}', "
     "but got '<stream end>' "
     "(while parsing a flow mapping begun at line 7)"),
    ("duplicate-key", PARAMS + "  mixup_alpha: {type: uniform, low: 0.0, high: 0.5}\n" + BUDGET,
     "duplicate key 'mixup_alpha' at line 7 (first on line 6); keep one"),
    ("empty-file", None, "the file is empty"),
    ("top-level-list", "- metric\n- mode\n", "the top level is a list, not a mapping"),
    ("no-header", "no-header", "no `# Question: ...` comment"),
    ("unknown-top-level-key", PARAMS + BUDGET + "schedular: asha\n", "schedular: unknown top-level key; did you "
     "mean 'scheduler'?"),
    ("training-key-at-top-level", PARAMS + BUDGET + "hflip: true\n", "hflip: unknown top-level key; a training "
     "key belongs under `fixed:`"),
    ("missing-metric", "mode: max\n" + PARAMS + BUDGET, "metric: missing; add `metric: val_top1`"),
    ("missing-params", "metric: val_top1\nmode: max\n" + BUDGET, "params: missing"),
    ("missing-budget", "metric: val_top1\nmode: max\n" + PARAMS, "budget: missing"),
    ("metric-not-reported", "metric: accuracy\nmode: max\n" + PARAMS + BUDGET,
     "'accuracy' is not reported by the trainable; choose one of epoch, train_loss, val_loss, val_top1"),
    ("mode-not-max-min", "metric: val_top1\nmode: maximize\n" + PARAMS + BUDGET, "mode: 'maximize' is not max or min"),
    ("mode-against-metric", "metric: val_loss\nmode: max\n" + PARAMS + BUDGET,
     "max val_loss would search for the worst trials; use mode: min"),
    ("unknown-fixed-key", "fixed: {mixup_alhpa: 0.2}\n" + PARAMS + BUDGET,
     "fixed.mixup_alhpa: unknown training key 'mixup_alhpa'; did you mean 'mixup_alpha'?"),
    ("fixed-wrong-type", "fixed: {hflip: maybe}\n" + PARAMS + BUDGET, "fixed.hflip: hflip: expected true/false"),
    ("fixed-yaml-boolean-for-string", "fixed: {amp: off}\n" + PARAMS + BUDGET, "quote the value, e.g. amp: 'off'"),
    ("fixed-out-of-range", "fixed: {label_smoothing: 1.5}\n" + PARAMS + BUDGET,
     "fixed: label_smoothing=1.5 is outside [0, 1)"),
    ("fixed-epochs", "fixed: {epochs: 3}\n" + PARAMS + BUDGET, "fixed.epochs: set the epoch count with "
     "budget.max_epochs"),
    ("teacher-missing", "fixed: {teacher_checkpoint: no/such/teacher.pt}\n" + PARAMS + BUDGET, "make teacher"),
    ("param-also-fixed", "fixed: {mixup_alpha: 0.2}\n" + PARAMS + BUDGET, "a distribution over a fixed key"),
    ("unknown-param-key", param("mixup_alfa: {type: uniform, low: 0.0, high: 1.0}"),
     "params.mixup_alfa: unknown training key 'mixup_alfa'; did you mean 'mixup_alpha'?"),
    ("param-not-a-mapping", param("mixup_alpha: [0.0, 1.0]"), "expected a distribution mapping"),
    ("unknown-distribution", param("mixup_alpha: {type: normal, low: 0.0, high: 1.0}"),
     "unknown distribution type 'normal'"),
    ("missing-type", param("mixup_alpha: {low: 0.0, high: 1.0}"), "no `type`"),
    ("unknown-distribution-field", param("mixup_alpha: {type: uniform, lo: 0.0, high: 1.0}"),
     "params.mixup_alpha.lo: not a field of a uniform distribution; did you mean 'low'?"),
    ("missing-high", param("mixup_alpha: {type: uniform, low: 0.0}"), "uniform needs `high`"),
    ("missing-values", param("augment: {type: choice}"), "choice needs `values`"),
    ("inverted-range", param("mixup_alpha: {type: uniform, low: 1.0, high: 0.0}"),
     "low=1.0 is not below high=0.0 (an empty or inverted range)"),
    ("empty-range", param("randaugment_n: {type: int, low: 2, high: 2}"), "an empty or inverted range"),
    ("loguniform-from-zero", param("lr: {type: loguniform, low: 0.0, high: 0.5}"), "loguniform needs low > 0"),
    ("int-fractional-bounds", param("randaugment_n: {type: int, low: 0.5, high: 3}"),
     "params.randaugment_n.low: expected an integer, got 0.5"),
    ("uniform-over-int-key", param("randaugment_m: {type: uniform, low: 1, high: 15}"),
     "uniform draws fractions but randaugment_m is an integer; use type: int"),
    ("number-over-string-key", param("augment: {type: uniform, low: 0, high: 1}"), "use type: choice"),
    ("choice-empty", param("augment: {type: choice, values: []}"), "params.augment.values: empty"),
    ("grid-duplicates", param("seed: {type: grid, values: [0, 1, 1]}"), "1 listed twice"),
    ("bound-invalid-for-key", param("label_smoothing: {type: uniform, low: 0.0, high: 1.0}"),
     "params.label_smoothing: high 1.0 is not a valid label_smoothing (label_smoothing=1.0 is outside [0, 1)"),
    ("choice-value-invalid-for-key", param("augment: {type: choice, values: [none, cutout]}"),
     "value 'cutout' is not a valid augment (augment: unknown value 'cutout'; choose one of none"),
    ("bound-against-another-key", "fixed: {min_lr: 0.01}\n" + param("lr: {type: loguniform, low: 0.001, high: 0.5}"),
     "low 0.001 is not a valid lr (min_lr=0.01 is above the peak lr 0.001"),
    ("baseline-outside-domain", param("mixup_alpha: {type: uniform, low: 0.1, high: 1.0}"),
     "baseline.mixup_alpha: the reference value 0.0 (default) is outside uniform [0.1, 1.0]"),
    ("baseline-given-outside-domain", PARAMS + "baseline: {mixup_alpha: 2.0}\n" + BUDGET,
     "baseline.mixup_alpha: the reference value 2.0 (given) is outside"),
    ("baseline-of-unsearched-key", PARAMS + "baseline: {lr: 0.1}\n" + BUDGET,
     "baseline.lr: not a searched param"),
    ("variants-not-a-mapping", PARAMS + "variants: [mixup, cutmix]\n" + BUDGET, "variants: expected a mapping"),
    ("variant-not-a-mapping", PARAMS + "variants: {smooth: 0.1}\n" + BUDGET,
     "variants.smooth: expected a mapping of training keys to values"),
    ("variant-unknown-key", PARAMS + "variants: {smooth: {label_smoothin: 0.1}}\n" + BUDGET,
     "variants.smooth.label_smoothin: unknown training key"),
    ("variant-bad-value", PARAMS + "variants: {smooth: {label_smoothing: 2}}\n" + BUDGET,
     "variants.smooth: label_smoothing=2.0 is outside [0, 1)"),
    ("variant-overrides-param", PARAMS + "variants: {mix: {mixup_alpha: 0.2}}\n" + BUDGET,
     "variants.mix.mixup_alpha: mixup_alpha is searched in params"),
    ("budget-not-a-mapping", PARAMS + "budget: 12\n", "budget: expected a mapping"),
    ("unknown-budget-key", PARAMS + "budget: {num_sample: 2, max_epochs: 2}\n",
     "budget.num_sample: unknown budget key; did you mean 'num_samples'?"),
    ("missing-num-samples", PARAMS + "budget: {max_epochs: 2}\n", "budget.num_samples: missing"),
    ("zero-samples", PARAMS + "budget: {num_samples: 0, max_epochs: 2}\n", "budget.num_samples: 0 is below 1"),
    ("grace-above-max-epochs", PARAMS + "budget: {num_samples: 2, max_epochs: 2, grace_period: 3}\n",
     "budget.grace_period: 3 is above max_epochs=2"),
    ("grace-zero", PARAMS + "budget: {num_samples: 2, max_epochs: 2, grace_period: 0}\n",
     "budget.grace_period: 0 is below 1"),
    ("reduction-factor-one", PARAMS + "budget: {num_samples: 2, max_epochs: 2, reduction_factor: 1}\n",
     "budget.reduction_factor: 1 is below 2"),
    ("max-concurrent-zero", PARAMS + "budget: {num_samples: 2, max_epochs: 2, max_concurrent: 0}\n",
     "budget.max_concurrent: 0 is below 1"),
    ("cpus-zero", PARAMS + "budget: {num_samples: 2, max_epochs: 2, cpus_per_trial: 0}\n",
     "budget.cpus_per_trial: 0 is not above 0"),
    ("gpus-negative", PARAMS + "budget: {num_samples: 2, max_epochs: 2, gpus_per_trial: -1}\n",
     "budget.gpus_per_trial: -1 is negative"),
    ("gpus-fraction-above-one", PARAMS + "budget: {num_samples: 2, max_epochs: 2, gpus_per_trial: 1.5}\n",
     "Ray shares a GPU only in fractions up to 1"),
    ("relative-to-unknown-key", param("lr: {type: loguniform, low: 0.3, high: 3.0, relative_to: lrr}"),
     "params.lr.relative_to: 'lrr' is not a numeric training key"),
    ("relative-to-zero", param("lr: {type: loguniform, low: 0.3, high: 3.0, relative_to: min_lr}"),
     "params.lr.relative_to: min_lr is 0.0 here; bounds relative to it need a positive value"),
    ("relative-on-choice", param("augment: {type: choice, values: [none], relative_to: lr}"),
     "params.augment.relative_to: not a field of a choice distribution"),
    ("scheduler-unknown", GOOD.replace(HEAD, "") + "scheduler: hyperband\n", "scheduler: 'hyperband' is not one "
     "of asha, none"),
    ("scheduler-in-budget", PARAMS + "budget: {num_samples: 2, max_epochs: 2, scheduler: none}\n",
     "`scheduler` is a top-level key"),
    ("eval-every-under-asha", GOOD + "fixed: {eval_every: 2}\n",
     "fixed.eval_every: eval_every=2 leaves ASHA's rungs without a validation metric"),
]


@pytest.mark.parametrize("body, fragment", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_a_bad_space_file_is_rejected_with_one_line_naming_file_key_and_fix(tmp_path, body, fragment):
    if body is None:
        path = tmp_path / "bad.yaml"
        path.write_text("")
    elif body == "no-header":
        path = write(tmp_path, GOOD.replace(HEAD, ""), header="")
    else:
        head = "" if body.startswith(("metric:", "mode:", "- ")) else HEAD
        path = write(tmp_path, body, head=head)
    with pytest.raises(SpaceError) as info:
        load_space(str(path))
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert message.startswith(f"{path}: ")  # outside the working directory the path is absolute
    assert isinstance(info.value, ConfigError)  # callers that catch the trainable's error catch this too


def test_the_bad_cases_are_distinct_and_many():
    ids = [case[0] for case in BAD]
    assert len(set(ids)) == len(ids) >= 20
    assert len({case[2] for case in BAD}) == len(BAD)


def test_a_good_file_in_tmp_path_loads(tmp_path):
    space = load_space(str(write(tmp_path, PARAMS + BUDGET, header="# Question: does this file load?\n")))
    assert isinstance(space, Space) and space.name == "bad"
    assert space.command == f"make search SPACE={tmp_path / 'bad.yaml'}"  # no `# Run:` line: the path
    assert space.question == "does this file load?"


def test_unknown_space_name_lists_the_spaces():
    with pytest.raises(SpaceError) as info:
        load_space("mixup_alfa")
    message = str(info.value)
    assert "unknown space 'mixup_alfa'; did you mean 'mixup_alpha'?" in message
    assert "available: ablation, augment, baseline" in message


def test_space_error_survives_pickling():
    # Ray sends a trial's exception to the driver by pickling it.
    err = pickle.loads(pickle.dumps(SpaceError("spaces/x.yaml", "params.lr", "bad; fix it")))
    assert str(err) == "spaces/x.yaml: params.lr: bad; fix it" and err.key == "params.lr"


def test_missing_file_says_so(tmp_path):
    with pytest.raises(SpaceError, match="file not found") as info:
        load_space(str(tmp_path / "nope.yaml"))
    assert "nope.yaml" in str(info.value)


def test_yaml_exponent_without_a_dot_is_read_as_a_number(tmp_path):
    # YAML 1.1 reads 1e-4 as the string "1e-4"; the loader accepts it as a number anyway.
    body = "fixed: {weight_decay: 1e-4}\nparams:\n  lr: {type: loguniform, low: 1e-3, high: 1e-1}\n" + BUDGET
    space = load_space(str(write(tmp_path, body)))
    assert space.fixed["weight_decay"] == 1e-4 and space.params["lr"].low == 1e-3


def test_header_question_may_continue_on_the_next_comment_line(tmp_path):
    header = "# Question: does a question\n# that wraps load?\n# Run: make search SPACE=wrapped\n"
    space = load_space(str(write(tmp_path, PARAMS + BUDGET, header=header)))
    assert space.question == "does a question that wraps load?" and space.command == "make search SPACE=wrapped"


def test_int_params_include_both_ends():
    space = load_space("augment")
    draws = {point["randaugment_n"] for point in draw(space, 200)}
    assert draws == {1, 2, 3}


def test_unknown_space_name_in_message_is_one_line():
    with pytest.raises(SpaceError) as info:
        load_space("nonsense")
    assert "\n" not in str(info.value) and str(info.value).startswith("spaces/nonsense.yaml: ")


# --- recipes: the setup every space is layered on -----------------------------------------

RECIPE_HEADER = "# Recipe: a tiny test recipe\n"
RECIPE_GOOD = "fixed: {train_subset: 256, val_subset: 128}\nbudget: {max_epochs: 3, grace_period: 2}\n"


def write_recipe(tmp_path, body, header=RECIPE_HEADER):
    path = tmp_path / "tiny_recipe.yaml"
    path.write_text(header + body)
    return path


def test_every_shipped_recipe_loads_and_states_its_budget():
    assert DEFAULT_RECIPE in list_recipes()
    for name in list_recipes():
        recipe = load_recipe(name)
        assert recipe.name == name and recipe.title and recipe.budget["max_epochs"] >= 1
        text = (SPACES_DIR / "recipes" / f"{name}.yaml").read_text()
        assert text.startswith("# Recipe: ") and "Budget:" in text, name  # what it is and why its budget


def test_the_budget_comes_from_defaults_then_recipe_then_space(tmp_path):
    recipe = write_recipe(tmp_path, RECIPE_GOOD)
    space = load_space(str(write(tmp_path, PARAMS + "budget: {num_samples: 4, grace_period: 1}\n")),
                       recipe=str(recipe))
    assert space.recipe == "tiny_recipe" and space.max_epochs == 3  # the recipe's
    assert space.grace_period == 1 and space.num_samples == 4  # the space's own
    assert space.reduction_factor == 3 and space.max_concurrent == 2  # the defaults
    assert space.fixed["train_subset"] == 256 and space.fixed["epochs"] == 3


def test_recipe_placeholder_in_paths_names_the_recipe(tmp_path, monkeypatch):
    teacher = tmp_path / "teachers" / "tiny_recipe.pt"
    teacher.parent.mkdir()
    teacher.write_bytes(b"")
    monkeypatch.setattr("spaces.files.PROJECT_ROOT", tmp_path)
    body = "fixed:\n  teacher_checkpoint: teachers/{recipe}.pt\n" + PARAMS + BUDGET
    space = load_space(str(write(tmp_path, body)), recipe=str(write_recipe(tmp_path, RECIPE_GOOD)))
    assert space.fixed["teacher_checkpoint"] == str(teacher)


BAD_RECIPES = [
    ("no-header", RECIPE_GOOD, "", "no `# Recipe: ...` comment"),
    ("no-max-epochs", "budget: {grace_period: 1}\n", RECIPE_HEADER, "budget.max_epochs: missing"),
    ("num-samples", "budget: {max_epochs: 2, num_samples: 4}\n", RECIPE_HEADER,
     "budget.num_samples: not a recipe budget key; how many trials a question needs is the space's"),
    ("epochs-in-fixed", "fixed: {epochs: 3}\nbudget: {max_epochs: 2}\n", RECIPE_HEADER, "fixed.epochs"),
    ("unknown-key", "fixed: {lrr: 0.1}\nbudget: {max_epochs: 2}\n", RECIPE_HEADER, "did you mean 'lr'"),
    ("unknown-section", RECIPE_GOOD + "params: {}\n", RECIPE_HEADER, "params: unknown top-level key of a recipe"),
    ("teacher-no-epochs", RECIPE_GOOD + "teacher: {model: resnet32}\n", RECIPE_HEADER, "teacher.epochs: missing"),
    ("bad-budget", "budget: {max_epochs: 2, grace_period: 5}\n", RECIPE_HEADER, "grace_period: 5 is above"),
]


@pytest.mark.parametrize("body, header, fragment", [c[1:] for c in BAD_RECIPES], ids=[c[0] for c in BAD_RECIPES])
def test_a_bad_recipe_is_rejected_with_one_line(tmp_path, body, header, fragment):
    path = write_recipe(tmp_path, body, header)
    with pytest.raises(SpaceError) as info:
        load_recipe(str(path))
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith(f"{path}: ")


def test_unknown_recipe_name_lists_the_recipes():
    with pytest.raises(SpaceError, match=f"unknown recipe 'fashion_mnist'; did you mean '{DEFAULT_RECIPE}'"):
        load_recipe("fashion_mnist")


@pytest.mark.parametrize("recipe", list_recipes())
def test_every_space_asks_its_question_on_every_recipe(recipe, tmp_path):
    # Relative bounds (relative_to) and the recipe's own reference values make one space file
    # valid on any recipe: SGD at lr 0.1, Adam at 2e-3, 6 or 200 epochs.
    import dataclasses

    loaded = load_recipe(recipe)
    if loaded.fixed.get("dataset") in ("cub200", "imagefolder"):  # no default place: the user's folder
        loaded = dataclasses.replace(loaded, fixed={**loaded.fixed, "data_dir": str(tmp_path)})
    for name in SHIPPED:
        if name == "kd_temperature":
            continue  # needs teachers/<recipe>.pt (make teacher RECIPE=...)
        if name == "lr" and loaded.fixed.get("weight_decay") == 0:
            with pytest.raises(SpaceError, match="weight_decay is 0.0 here; bounds relative to it need a positive"):
                load_space(name, recipe=loaded)
            continue
        space = load_space(name, recipe=loaded)
        assert space.recipe == recipe and space.max_epochs == loaded.budget["max_epochs"]
        for sampled in draw(space, 3):
            assert space.trial_config(sampled).epochs == space.max_epochs
        if "lr" in space.params:
            assert space.params["lr"].contains(loaded.fixed["lr"])


def test_relative_bounds_follow_the_recipe_and_a_set_value():
    space = load_space("schedule")  # min_lr up to lr/10, warmup up to a quarter of training
    recipe = load_recipe(DEFAULT_RECIPE)
    assert (space.params["min_lr"].high, space.params["warmup_epochs"].high) == pytest.approx(
        (recipe.fixed["lr"] / 10, recipe.budget["max_epochs"] / 4))
    assert "0x-0.1x lr" in space.params["min_lr"].describe()
    shorter = override(space, fixed={"epochs": "2", "lr": "0.05"})
    assert (shorter.params["min_lr"].high, shorter.params["warmup_epochs"].high) == (0.005, 0.5)
    assert load_space("lr", recipe="cifar100_resnet50").params["lr"].low == 0.025  # 0.1 x its 0.25
