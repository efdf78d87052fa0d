"""Bad input fails before anything runs: exit code 2, one `error:` line naming the fix, nothing recorded.

Inputs tried (one row of CASES each; ids in brackets):

  search space      unknown name [unknown_space], a near-miss name [space_typo], a .yaml path
                    that does not exist [space_file_missing], malformed YAML [malformed_yaml],
                    an unknown top-level key [unknown_top_key], an unknown budget key
                    [unknown_budget_key], an inverted range [inverted_range], loguniform with
                    low <= 0 [loguniform_low_zero], a distribution over a fixed key
                    [distribution_over_fixed], a metric the trainable does not report
                    [metric_not_reported], mode min on an accuracy [mode_against_metric],
                    grace_period > max_epochs [grace_above_max_epochs], an unknown training key
                    under params [unknown_param_key]
  --set             unknown key [set_unknown_key], no `=` [set_no_equals], wrong type
                    [set_wrong_type], a value out of range [set_out_of_range], epochs=0
                    [set_zero_epochs]
  data              a data_dir that does not exist [data_dir_missing], imagefolder without
                    data_dir [imagefolder_no_data_dir], an ImageFolder with empty train/ and val/
                    [imagefolder_empty], an ImageFolder with one class [imagefolder_one_class],
                    an ImageFolder without val/ [imagefolder_no_val]
  teacher           missing file [teacher_missing], random bytes [teacher_corrupt], a real
                    teacher with 3 classes for 10-class data [teacher_wrong_classes]
  pretrained        a resnet34 state dict for model=resnet18 [pretrained_wrong_model], a missing
                    file [pretrained_missing]
  budget / resume   --samples 0 [samples_zero], --samples -3 [samples_negative], --resume with
                    nothing to resume [resume_nothing], --resume of a folder that is not a
                    search's results folder [resume_not_a_search]
  MLflow            tracking server unreachable at start [mlflow_unreachable]
  python -m trainable   unknown key [trainable_unknown_key], bad value [trainable_bad_value],
                    no `=` [trainable_no_equals], --resume of a folder without a checkpoint
                    [trainable_resume_no_checkpoint], missing teacher [trainable_teacher_missing]

Every search case runs ``search.__main__.main`` in this process (the errors come before
Ray starts, so each takes well under a second) with a sqlite MLflow store and
``--storage`` in tmp_path, and checks that neither was created.
"""

from __future__ import annotations

import os
import signal

import pytest

import search.__main__ as search_cli
import trainable.__main__ as trainable_cli

SPACE = """\
# Question: does bad input fail before Ray starts?
metric: {metric}
mode: {mode}
fixed:
  train_subset: 256
  val_subset: 128
  batch_size: 64
{extra_fixed}params:
{params}
budget:
  num_samples: 2
  max_epochs: {max_epochs}
  grace_period: {grace_period}
  max_concurrent: 1
  cpus_per_trial: 1
{extra_budget}scheduler: asha
seed: 0
{extra_top}"""

GOOD_PARAMS = "  mixup_alpha: {type: uniform, low: 0.0, high: 1.0}"


def space_text(metric="val_top1", mode="max", params=GOOD_PARAMS, max_epochs=2, grace_period=1,
               extra_fixed="", extra_budget="", extra_top=""):
    return SPACE.format(metric=metric, mode=mode, params=params, max_epochs=max_epochs,
                        grace_period=grace_period, extra_fixed=extra_fixed, extra_budget=extra_budget,
                        extra_top=extra_top)


# --- builders of the files some cases need; each returns a path under tmp --------------------

def _png(path, shade):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade, shade, shade)).save(path)


def empty_imagefolder(tmp):
    for split in ("train", "val"):
        (tmp / "imgs" / split).mkdir(parents=True)
    return tmp / "imgs"


def one_class_imagefolder(tmp):
    for split in ("train", "val"):
        for i in range(3):
            _png(tmp / "imgs" / split / "cat" / f"{i}.png", 40 * i)
    return tmp / "imgs"


def imagefolder_without_val(tmp):
    for cls in ("cat", "dog"):
        for i in range(3):
            _png(tmp / "imgs" / "train" / cls / f"{i}.png", 40 * i)
    return tmp / "imgs"


def corrupt_file(tmp):
    path = tmp / "teacher.pt"
    path.write_bytes(os.urandom(4096))
    return path


def three_class_teacher(tmp):
    from trainable.config import from_dict
    from trainable.models import build_model, save_weights

    cfg = from_dict({"model": "resnet20"})
    path = tmp / "teacher3.pt"
    save_weights(path, build_model(cfg, 3, 1, 28), cfg, 3, 1, 28)
    return path


def resnet34_state_dict(tmp):
    import torch
    from torchvision.models import resnet34

    path = tmp / "resnet34.pt"
    torch.save(resnet34(num_classes=10).state_dict(), path)
    return path


def results_folder_without_state(tmp):
    (tmp / "not_a_search").mkdir()
    return tmp / "not_a_search"


def checkpointless_dir(tmp):
    (tmp / "ckpt").mkdir()
    return tmp / "ckpt"


# --- the table ------------------------------------------------------------------------------
# (id, cli, argv, space text or None, {placeholder: builder}, fragments that must all be in the error)
# argv may hold "{space}" (the space file in tmp_path) and "{name}" placeholders filled by builders.
SEARCH, TRAIN = "search", "trainable"
CASES = [
    ("unknown_space", SEARCH, ["no_such_space"], None, {}, ["unknown space 'no_such_space'", "mixup_alpha",
                                                            "label_smoothing"]),
    ("space_typo", SEARCH, ["mixup_alph"], None, {}, ["did you mean 'mixup_alpha'"]),
    ("space_file_missing", SEARCH, ["{missing}"], None, {"missing": lambda t: t / "nope.yaml"},
     ["file not found"]),
    ("malformed_yaml", SEARCH, ["{space}"], "metric: val_top1\nmode: max\nparams:\n  lr: {type: uniform, low: 0.1\n",
     {}, ["malformed YAML", "line"]),
    ("unknown_top_key", SEARCH, ["{space}"], space_text(extra_top="samples: 4\n"), {},
     ["samples", "unknown top-level key"]),
    ("unknown_budget_key", SEARCH, ["{space}"], space_text(extra_budget="  epochs: 3\n"), {},
     ["budget.epochs", "did you mean 'max_epochs'"]),
    ("inverted_range", SEARCH, ["{space}"], space_text(params="  lr: {type: uniform, low: 0.3, high: 0.01}"), {},
     ["params.lr", "not below high", "swap them"]),
    ("loguniform_low_zero", SEARCH, ["{space}"], space_text(params="  lr: {type: loguniform, low: 0.0, high: 0.3}"),
     {}, ["params.lr.low", "loguniform needs low > 0"]),
    ("distribution_over_fixed", SEARCH, ["{space}"],
     space_text(params="  batch_size: {type: choice, values: [32, 64]}"), {},
     ["params.batch_size", "distribution over a fixed key"]),
    ("metric_not_reported", SEARCH, ["{space}"], space_text(metric="val_accuracy"), {},
     ["metric", "'val_accuracy' is not reported", "val_top1"]),
    ("mode_against_metric", SEARCH, ["{space}"], space_text(mode="min"), {}, ["mode", "use mode: max"]),
    ("grace_above_max_epochs", SEARCH, ["{space}"], space_text(max_epochs=2, grace_period=3), {},
     ["budget.grace_period", "above max_epochs=2", "lower grace_period"]),
    ("unknown_param_key", SEARCH, ["{space}"], space_text(params="  mixup: {type: uniform, low: 0.0, high: 1.0}"),
     {}, ["params.mixup", "unknown training key", "did you mean 'mixup_alpha'"]),
    ("set_unknown_key", SEARCH, ["{space}", "--set", "lrr=0.1"], space_text(), {}, ["'lrr'", "did you mean 'lr'"]),
    ("set_no_equals", SEARCH, ["{space}", "--set", "lr"], space_text(), {}, ["--set 'lr'", "key=value"]),
    ("set_wrong_type", SEARCH, ["{space}", "--set", "batch_size=big"], space_text(), {},
     ["--set batch_size", "expected an integer", "'big'"]),
    ("set_out_of_range", SEARCH, ["{space}", "--set", "label_smoothing=1.5"], space_text(), {},
     ["label_smoothing", "outside"]),
    ("set_zero_epochs", SEARCH, ["{space}", "--set", "epochs=0"], space_text(), {}, ["epoch"]),
    ("data_dir_missing", SEARCH, ["{space}", "--set", "dataset=imagefolder", "--set", "data_dir={missing}"],
     space_text(), {"missing": lambda t: t / "no_such_dir"}, ["data_dir", "no directory", "no_such_dir"]),
    ("imagefolder_no_data_dir", SEARCH, ["{space}", "--set", "dataset=imagefolder"], space_text(), {},
     ["data_dir"]),
    ("imagefolder_empty", SEARCH, ["{space}", "--set", "dataset=imagefolder", "--set", "data_dir={imgs}"],
     space_text(), {"imgs": empty_imagefolder}, ["imagefolder", "put images"]),
    ("imagefolder_one_class", SEARCH, ["{space}", "--set", "dataset=imagefolder", "--set", "data_dir={imgs}"],
     space_text(), {"imgs": one_class_imagefolder}, ["1 class folder", "at least 2 classes"]),
    ("imagefolder_no_val", SEARCH, ["{space}", "--set", "dataset=imagefolder", "--set", "data_dir={imgs}"],
     space_text(), {"imgs": imagefolder_without_val}, ["no val/ folder", "ImageFolder layout"]),
    ("teacher_missing", SEARCH, ["{space}", "--set", "teacher_checkpoint={missing}"], space_text(),
     {"missing": lambda t: t / "teacher.pt"}, ["teacher_checkpoint", "no file at", "make teacher"]),
    ("teacher_corrupt", SEARCH, ["{space}", "--set", "teacher_checkpoint={bad}"], space_text(),
     {"bad": corrupt_file}, ["teacher_checkpoint", "not a readable torch weights file"]),
    ("teacher_wrong_classes", SEARCH, ["{space}", "--set", "teacher_checkpoint={teacher}"], space_text(),
     {"teacher": three_class_teacher}, ["has 3 classes but the data set has 10", "make teacher"]),
    ("pretrained_wrong_model", SEARCH, ["{space}", "--set", "model=resnet18", "--set", "pretrained={weights}"],
     space_text(), {"weights": resnet34_state_dict}, ["pretrained weights do not fit resnet18", "another model"]),
    ("pretrained_missing", SEARCH, ["{space}", "--set", "pretrained={missing}"], space_text(),
     {"missing": lambda t: t / "weights.pt"}, ["pretrained", "no file at"]),
    ("samples_zero", SEARCH, ["{space}", "--samples", "0"], space_text(), {}, ["--samples 0", "at least one trial"]),
    ("samples_negative", SEARCH, ["{space}", "--samples", "-3"], space_text(), {}, ["--samples -3"]),
    ("resume_nothing", SEARCH, ["{space}", "--resume"], space_text(), {}, ["nothing to resume", "make search"]),
    ("resume_not_a_search", SEARCH, ["{folder}", "--resume"], None, {"folder": results_folder_without_state},
     ["nothing to resume", "tricktune.json"]),
    ("mlflow_unreachable", SEARCH, ["{space}"], space_text(), {}, ["MLflow", "unreachable", "127.0.0.1:9"]),
    ("trainable_unknown_key", TRAIN, ["--set", "mixup=0.2"], None, {}, ["'mixup'", "did you mean 'mixup_alpha'"]),
    ("trainable_bad_value", TRAIN, ["--set", "lr=fast"], None, {}, ["lr", "expected a number", "'fast'"]),
    ("trainable_no_equals", TRAIN, ["--set", "lr"], None, {}, ["key=value"]),
    ("trainable_resume_no_checkpoint", TRAIN, ["--resume", "{ckpt}"], None, {"ckpt": checkpointless_dir},
     ["--resume", "no checkpoint", "--checkpoint-dir"]),
    ("trainable_teacher_missing", TRAIN, ["--set", "teacher_checkpoint={missing}"], None,
     {"missing": lambda t: t / "teacher.pt"}, ["teacher_checkpoint", "no file at"]),
]


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """The env the CLI sees, restored afterwards (main() sets a SIGTERM handler and MLflow's
    HTTP retry variables; neither may leak into the rest of the test session)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(name, "")  # recorded, so the value check_tracking sets is undone afterwards
        monkeypatch.delenv(name)  # the CLI's own defaults: an unreachable server must fail fast with them
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("TRICKTUNE_STORAGE", raising=False)
    monkeypatch.chdir(tmp_path)  # anything written relative to the working directory would show up here
    handler = signal.getsignal(signal.SIGTERM)
    yield tmp_path
    signal.signal(signal.SIGTERM, handler)


@pytest.mark.parametrize("case_id, cli, argv, space, builders, fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_before_anything_runs(isolated, capsys, monkeypatch, case_id, cli, argv, space, builders,
                                              fragments):
    tmp = isolated
    values = {"space": str(tmp / "bad.yaml")}
    if space is not None:
        (tmp / "bad.yaml").write_text(space)
    for name, build in builders.items():
        values[name] = str(build(tmp))
    argv = [a.format(**values) for a in argv]
    if case_id == "mlflow_unreachable":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: nothing listens
    before = set(os.listdir(tmp))
    capsys.readouterr()

    code = search_cli.main([*argv, "--storage", str(tmp / "ray")]) if cli == SEARCH else trainable_cli.main(argv)

    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert code == 2, out.err
    assert len(lines) == 1 and lines[0].startswith("error: "), out.err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in: {lines[0]}"
    assert not (tmp / "mlflow.db").exists(), "nothing may be recorded in MLflow"
    assert not (tmp / "ray").exists(), "no Ray results folder may be made"
    assert set(os.listdir(tmp)) == before, "the failed command wrote files"


def test_the_table_is_long_enough():
    assert len(CASES) >= 25 and len({c[0] for c in CASES}) == len(CASES)
