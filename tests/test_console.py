"""What a person sees: what a search prints (search/console/), and where MLflow opens it.

Fast: the console's model and formatting, and the callback driven with Ray's own ``Trial``
objects (``stub=True``: no cluster) through the events a search sends, in both renderings.
Slow: real smoke searches (Ray Tune, Optuna, ASHA, MLflow in tmp_path) with stdout a pipe,
as in CI or ``| tee``: short, with progress lines and the summary, without Ray's boxes and
worker lines; and the same with --verbose, where those come back.
"""

import io
import os
import re
import subprocess
import sys

import pytest
from ray.tune.experiment import Trial

from search.console import (
    Phase,
    SearchConsole,
    TrialRow,
    best_line,
    dashboard_sign_in,
    duration,
    means_line,
    trial_table,
)
from search.labels import trial_label

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = {"mixup_alpha": 0.0, "lr": 0.1}


def row(trial_id, status, values, baseline=False):
    return TrialRow(trial_id, trial_id, baseline, status, dict(values), epoch=max(values, default=0))


def test_budget_shrinks_by_the_epochs_of_trials_that_ended_early():
    phase = Phase("search", budget=4 * 6, max_epochs=6, started=0.0)
    phase.rows = {"a": row("a", "completed", dict.fromkeys(range(1, 7), 50.0), baseline=True),
                  "b": row("b", "stopped early", {1: 20.0}),
                  "c": row("c", "failed (NaN loss)", {1: 0.0, 2: 0.0}),
                  "d": row("d", "running", {1: 30.0, 2: 31.0, 3: 32.0})}
    assert phase.done() == 6 + 1 + 2 + 3
    assert phase.total() == 24 - 5 - 4  # b and c will never run their other epochs
    # 12 trial-epochs in 60 s: 5 s each; 3 left.
    assert phase.eta(now=60.0) == pytest.approx(15.0)
    phase.epochs_before = 12  # all of them done by an earlier process: no rate yet
    assert phase.eta(now=60.0) is None


def test_best_is_a_completed_trial_compared_with_the_baseline_at_its_epoch():
    phase = Phase("search", budget=18, max_epochs=2, started=0.0)
    phase.rows = {"base": row("base", "running", {1: 40.0}, baseline=True),
                  "good": row("good", "completed", {1: 45.0, 2: 61.5}),
                  "early": row("early", "stopped early", {1: 99.0})}  # better, but after 1 epoch of 2
    assert best_line(phase, "val_top1", "max") == "best      good: val_top1 61.50 (baseline still running)"
    phase.rows["base"].values[2] = 60.0
    phase.rows["base"].status = "completed"
    assert best_line(phase, "val_top1", "max") == "best      good: val_top1 61.50, baseline 60.00, delta +1.50"
    assert phase.best("min").trial_id == "base"


def test_the_confirmation_shows_each_configurations_mean_over_its_completed_seeds():
    phase = Phase("confirm", budget=4 * 2, max_epochs=2, started=0.0)
    assert means_line(phase, "val_top1", "max") == "means     none completed yet"
    def run(trial_id, candidate, seed, status, values):
        return TrialRow(trial_id, f"{candidate} seed={seed}", candidate == "baseline", status, values,
                        epoch=max(values), configuration=candidate)

    phase.rows = {"b0": run("b0", "baseline", 1000, "completed", {1: 50.0, 2: 70.0}),
                  "b1": run("b1", "baseline", 1001, "completed", {1: 50.0, 2: 74.0}),
                  "m0": run("m0", "mixup_alpha=0.2", 1000, "completed", {1: 40.0, 2: 75.0}),
                  "m1": run("m1", "mixup_alpha=0.2", 1001, "running", {1: 99.0})}  # not yet
    assert means_line(phase, "val_top1", "max") == \
        "means     val_top1: mixup_alpha=0.2 75.00 (n=1), baseline 72.00 (n=2)"
    assert means_line(phase, "val_loss", "min").startswith("means     val_loss: baseline 72.00 (n=2)")


def test_a_table_that_does_not_fit_keeps_the_running_trials_and_the_best_finished():
    phase = Phase("search", budget=60, max_epochs=2, started=0.0)
    for i in range(10):
        phase.rows[f"t{i}"] = row(f"t{i}", "completed", {1: 1.0, 2: float(i)})
    phase.rows["live"] = row("live", "running", {1: 5.0})
    lines = trial_table(phase, "val_top1", "max", max_rows=4)
    ids = [line.split()[0] for line in lines[1:-1]]
    assert ids == ["t8", "t9", "live"]  # in start order: the best two finished, the running one
    assert lines[-1] == "  … 8 more finished trials (the whole table: make report)"


def test_trial_labels_name_the_searched_values_and_mark_the_baseline():
    assert trial_label({"mixup_alpha": 0.42371, "lr": 0.13274}, False) == "mixup_alpha=0.4237 lr=0.1327"
    assert trial_label({"candidate": "mixup_alpha=0.4237 lr=0.1327", "seed": 1000}) == \
        "mixup_alpha=0.4237 lr=0.1327 seed=1000"  # a confirmation trial: its candidate and seed
    assert trial_label({"mixup_alpha": 0.0, "lr": 0.1}, True) == "baseline: mixup_alpha=0 lr=0.1"
    assert trial_label({"variant": "mixup", "seed": 2}, False) == "mixup seed=2"
    assert trial_label({"variant": "baseline", "seed": 0}, True) == "baseline seed=0"  # said once


def test_durations():
    assert [duration(s) for s in (None, 4.4, 65, 3725)] == ["?", "4s", "1m05s", "1h02m"]


def test_dashboard_address_and_sign_in_never_put_the_token_into_a_log(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "s3cret-token-for-this-test")
    lines = dashboard_sign_in("127.0.0.1:8265", tty=False)
    assert lines[0] == "Ray dashboard  http://127.0.0.1:8265"
    assert "ray get-auth-token` prints" in lines[1] and "s3cret" not in "\n".join(lines)


def _console(live):
    out = io.StringIO()
    console = SearchConsole("val_top1", "max", baseline_key=BASELINE, max_epochs=2, stream=out, live=live)
    console.start_phase("search", 3 * 2, detail="tiny, 3 trials x up to 2 epochs")
    return console, out


def _search_events(console):
    """What Ray Tune sends a callback during a 3-trial search: the baseline completes, one trial
    is stopped by ASHA after epoch 1, one raises."""
    base, other, broken = (Trial("run_trial", config=c, stub=True) for c in
                           (BASELINE, {"mixup_alpha": 0.6, "lr": 0.2}, {"mixup_alpha": 0.3, "lr": 0.05}))
    trials = [base, other, broken]
    console.on_step_begin(0, trials)
    for trial in trials:
        console.on_trial_start(0, trials, trial)
    for trial, epoch, value in ((base, 1, 40.0), (other, 1, 30.0), (base, 2, 55.5)):
        trial.update_last_result({"epoch": epoch, "val_top1": value})  # what Ray's controller does first
        console.on_trial_result(0, trials, trial, trial.last_result)
    console.on_trial_result(0, trials, base, {"epoch": 2, "val_top1": 55.5})  # a retried trial replays an epoch
    console.on_trial_complete(0, trials, other)
    console.on_trial_complete(0, trials, base)
    console.on_trial_error(0, trials, broken)
    console.on_experiment_end(trials)
    return base, other, broken


def test_without_a_terminal_one_line_per_event():
    console, out = _console(live=False)
    base, other, broken = _search_events(console)
    lines = out.getvalue().splitlines()
    assert "\x1b[" not in out.getvalue()  # nothing redrawn in a log
    assert lines[0] == "search: tiny, 3 trials x up to 2 epochs, at most 6 trial-epochs; val_top1 (max)"
    events = [re.sub(r"^ *\d+s  ", "", line) for line in lines[1:]]
    kind = "{:<13} ".format  # the event column: as wide as "stopped early"
    assert events[:3] == [f"{kind('start')}{base.trial_id}  baseline: mixup_alpha=0 lr=0.1",
                          f"{kind('start')}{other.trial_id}  mixup_alpha=0.6 lr=0.2",
                          f"{kind('start')}{broken.trial_id}  mixup_alpha=0.3 lr=0.05"]
    epochs = [e for e in events if e.startswith("epoch")]
    # The replayed epoch is not a new one, and a trial's last epoch is said once, on its "completed" line.
    assert epochs == [e for e in events if e.startswith("epoch 1/2")] and len(epochs) == 2
    assert f"{kind('stopped early')}{other.trial_id}  val_top1 30.00 at epoch 1/2   [" in "\n".join(events)
    (completed,) = [e for e in events if e.startswith(kind("completed"))]
    assert completed.startswith(f"{kind('completed')}{base.trial_id}  val_top1 55.50 at epoch 2/2   [")
    assert "3/5 trial-epochs" in completed  # the stopped trial's unrun epoch left the budget
    assert "        best      baseline: mixup_alpha=0 lr=0.1: val_top1 55.50 (the baseline)" in lines
    assert any(e.startswith(f"{kind('failed')}{broken.trial_id}  no epoch reported") for e in events)
    # The budget lost the unrun epochs: 1 of the stopped trial's, 2 of the failed one's.
    assert events[-1] == "search done: 3/3 trial-epochs in 0s"


def test_in_a_terminal_one_block_redrawn_in_place():
    console, out = _console(live=True)
    base, other, broken = _search_events(console)
    frames = re.split(r"\x1b\[\d+F\x1b\[J", out.getvalue())
    assert len(frames) > 5  # redrawn on every event, not appended
    last = frames[-1].splitlines()
    assert last[0].startswith("search    [████████████████████]  3/3 trial-epochs in")
    table = {line.split()[0]: line for line in last[2:5]}
    assert table[base.trial_id].endswith("2/2       55.50  completed")
    assert table[other.trial_id].endswith("1/2       30.00  stopped early")
    assert table[broken.trial_id].endswith("0/2           —  failed")
    assert last[-1] == "best      baseline: mixup_alpha=0 lr=0.1: val_top1 55.50 (the baseline)"
    # Each frame erases exactly the lines the previous one drew.
    heights = [len(frame.splitlines()) for frame in frames[:-1]]
    moves = [int(n) for n in re.findall(r"\x1b\[(\d+)F", out.getvalue())]
    assert moves == heights[:len(moves)]


def test_a_later_phase_is_shown_as_its_own_bar():
    console, out = _console(live=True)
    _search_events(console)
    console.start_phase("confirm", 4 * 2, detail="top 2 and the baseline over 2 seeds")
    lines = re.split(r"\x1b\[\d+F\x1b\[J", out.getvalue())[-1].splitlines()
    assert lines[0].startswith("search    done  3/3 trial-epochs in")
    assert lines[1].startswith("confirm   [░░░░░░░░░░░░░░░░░░░░]  0/8 trial-epochs (0%)")


def test_an_epoch_without_validation_moves_the_progress_but_prints_no_value():
    # A confirmation run validates only some epochs (eval_every): the others still count.
    console, out = _console(live=False)
    trial = Trial("run_trial", config=BASELINE, stub=True)
    console.on_trial_start(0, [trial], trial)
    for result in ({"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 1.5, "val_top1": 60.0}):
        trial.update_last_result(result)
        console.on_trial_result(0, [trial], trial, result)
    phase = console.phases[-1]
    row = phase.rows[trial.trial_id]
    assert (row.epoch, row.values, phase.done()) == (2, {2: 60.0}, 2)
    assert not [line for line in out.getvalue().splitlines() if "epoch 1/2" in line]


# --- MLflow: a model-training experiment, a saved runs view, the link ---------------------------

def test_experiments_are_model_training_ones_new_or_old(tmp_path):
    import json
    import zlib
    from base64 import b64decode

    from mlflow.tracking import MlflowClient

    from search.tracking import experiment_for_space, runs_url, save_runs_view

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    new = experiment_for_space(client, "mixup_alpha")
    old = client.create_experiment("tricktune/lr")  # made before tricktune set the kind
    chosen = client.create_experiment("tricktune/cutmix", tags={"mlflow.experimentKind": "genai_development"})
    client.delete_experiment(old)
    assert experiment_for_space(client, "lr") == old and experiment_for_space(client, "cutmix") == chosen
    kinds = {e: client.get_experiment(e).tags.get("mlflow.experimentKind") for e in (new, old, chosen)}
    assert kinds == {new: "custom_model_development", old: "custom_model_development",
                     chosen: "genai_development"}  # a person's own choice stays
    assert client.get_experiment(old).lifecycle_stage == "active"

    key = save_runs_view(client, new, "mixup_alpha-20260101-000000", "val_top1", "max", ["mixup_alpha", "lr"])
    view = json.loads(client.get_experiment(new).tags[f"mlflow.sharedViewState.{key}"])
    assert view["name"] == "search mixup_alpha-20260101-000000: trials by val_top1"
    encoding, packed = view["state"].split(";", 1)
    state = json.loads(zlib.decompress(b64decode(packed)))
    assert encoding == "deflate" and state["searchFilter"] == "tags.search = 'mixup_alpha-20260101-000000'"
    assert state["orderByKey"] == "metrics.`val_top1`" and state["orderByAsc"] is False
    assert state["selectedColumns"][:3] == ["metrics.`val_top1`", "metrics.`val_top5`", "metrics.`epoch_seconds`"]
    assert {"params.`mixup_alpha`", "params.`lr`", "tags.`outcome`"} <= set(state["selectedColumns"])
    assert runs_url(f"sqlite:///{tmp_path}/mlflow.db", new, key) == (
        f"http://127.0.0.1:5000/#/experiments/{new}/runs?workflowType=machine_learning"
        "&viewStateShareKey=mixup_alpha-20260101-000000")
    assert runs_url("http://mlflow-host:5000/", "7").startswith("http://mlflow-host:5000/#/experiments/7/runs?")


# --- real searches, output piped -------------------------------------------------------------

def _smoke(tmp_path, *flags):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_AIR_NEW_OUTPUT", None)
    return subprocess.Popen([sys.executable, "-m", "search", "mixup_alpha", "--smoke", "--storage",
                             str(tmp_path / "ray"), *flags], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def smoke_outputs(tmp_path_factory):
    """A default and a --verbose smoke search, side by side (each mostly waits for Ray to start)."""
    procs = {"default": _smoke(tmp_path_factory.mktemp("default")),
             "verbose": _smoke(tmp_path_factory.mktemp("verbose"), "--verbose")}
    outputs = {}
    for key, proc in procs.items():
        outputs[key] = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, outputs[key][-3000:]
    return outputs


@pytest.mark.slow
def test_smoke_search_without_a_terminal_prints_a_short_log(smoke_outputs):
    output = smoke_outputs["default"]
    print(output)  # what CI shows: pytest -s, or on a failure
    lines = output.splitlines()
    assert len(lines) <= 40, f"{len(lines)} lines"
    assert lines[0] == ("search: mixup_alpha, 3 trials x up to 2 epochs (ASHA stops weak ones early), at most 6 "
                        "trial-epochs; val_top1 (max)")
    # The confirmation runs the best finished configuration (none when ASHA stopped every one but
    # the baseline, which Ray's result order decides) and the baseline, 2 seeds each, 2 epochs.
    confirmed = 0 if "nothing to confirm: no configuration but the baseline finished" in output else 1
    runs = 2 * (1 + confirmed)
    # One progress line per epoch validated (the last one is its trial's "completed" line): the
    # search's 3 trials of 1 or 2 epochs, then the confirmation's runs of 2, which validate only
    # their last epoch (confirm.EVAL_EVERY): one line each.
    progress = [line for line in lines if re.search(r"(epoch \d/2|completed|stopped early) .* \[[█░]{10}\] "
                                                    r"\d/\d trial-epochs", line)]
    assert 3 + 1 + runs <= len(progress) <= 6 + runs  # the baseline always runs its 2 epochs
    assert sum(" start " in line for line in lines) == 3 + runs  # the search's trials, then the confirmation's
    assert re.search(r"search done: \d/\d trial-epochs in", output)
    assert re.search(rf"confirm done: {2 * runs}/{2 * runs} trial-epochs in", output)
    for summary in ("search mixup_alpha on recipe fashion_mnist_resnet20: 3 trials", "best single run ",
                    "baseline run    val_top1", "confirmed over seeds 1000, 1001", "winner ",
                    "runs: http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning"):
        assert summary in output
    for noise in ("Checkpoint successfully created", "Trial status", "╭", "View detailed results",
                  "Token authentication is enabled", "A new study created", "\x1b["):
        assert noise not in output, noise


@pytest.mark.slow
def test_verbose_brings_back_rays_boxes_and_worker_lines(smoke_outputs):
    output = smoke_outputs["verbose"]
    assert "Checkpoint successfully created" in output and "Trial status" in output and "╭" in output
    assert "search: mixup_alpha" in output and "search done:" in output  # tricktune's lines, not redrawn
    assert "\x1b[J" not in output
