"""The confirmation stage: the top k configurations and the baseline again over n paired seeds.

End to end with real Ray Tune and a real MLflow store: the confirmation runs are tagged
and counted, the printed verdict is recomputed from the MLflow runs, a searched key that
cannot change the result gets "no measurable difference", and (slow) a search interrupted
during confirmation resumes with every confirmation run recorded once.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import tiny_space_yaml
from mlflow.tracking import MlflowClient

from search import confirm
from search.stats import NO_DIFFERENCE
from search.summary import confirmation_lines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# mix_switch_prob only chooses between mixup and cutmix, both off here: it cannot change a
# result, so every confirmed configuration must come out equal to the baseline, seed by seed.
INERT = {"mix_switch_prob": {"type": "uniform", "low": 0.0, "high": 1.0}}


def run(tmp_path, *extra, space_text=None, **popen):
    space = tmp_path / "inert.yaml"
    space.write_text(space_text or tiny_space_yaml("does a key that cannot matter come out equal?", INERT,
                                                   samples=3, epochs=1, scheduler="none"))
    cmd = [sys.executable, "-m", "search", str(space), "--storage", str(tmp_path / "ray"), "--confirm-top", "2",
           "--confirm-seeds", "2", *extra]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    if popen:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def confirm_runs(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("tricktune/inert")
    runs = client.search_runs([exp.experiment_id])
    return client, [r for r in runs if r.data.tags.get("stage") == "confirm"], runs


def recompute(client, runs, max_epochs=1) -> dict:
    """The confirmation, from MLflow alone: each run's final val_top1 by candidate and seed."""
    finals: dict = {}
    for r in runs:
        history = client.get_metric_history(r.info.run_id, "val_top1")
        final = max(history, key=lambda m: m.step)
        assert final.step == max_epochs
        finals.setdefault(r.data.tags["candidate"], {})[int(r.data.params["seed"])] = final.value
    finals = {confirm.BASELINE: finals.pop(confirm.BASELINE), **finals}
    return {"seeds": sorted({s for by_seed in finals.values() for s in by_seed}), **confirm.evaluate(finals, "max")}


def test_confirmation_runs_are_tagged_counted_and_the_verdict_matches_mlflow(tmp_path):
    out = run(tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client, runs, every = confirm_runs(tmp_path)
    # k x n candidates' runs plus the baseline's n, each (candidate, seed) once, all finished.
    assert len(runs) == (2 + 1) * 2
    assert len({(r.data.tags["candidate"], r.data.params["seed"]) for r in runs}) == 6
    assert {r.data.params["seed"] for r in runs} == {"1000", "1001"}  # fresh seeds, paired
    assert all(r.info.status == "FINISHED" and r.data.tags["outcome"] == "completed" for r in runs)
    (parent,) = [r for r in every if r.data.tags.get("tricktune_role") == "search"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in runs)
    # What the search printed is what MLflow's runs say, recomputed here line for line.
    recomputed = recompute(client, runs)
    for line in confirmation_lines(recomputed, "val_top1"):
        assert line in out.stdout, line
    # The key cannot change the result: every pair is equal, zero spread, a verdict (no NaN).
    verdicts = [row for row in recomputed["rows"] if "verdict" in row]
    assert len(verdicts) == 2 and all(r["verdict"] == NO_DIFFERENCE and r["delta"] == 0 for r in verdicts)
    assert NO_DIFFERENCE in out.stdout and "nan" not in out.stdout.lower()
    # The same figures are on the parent run, for the UI and make report.
    assert parent.data.tags["confirm_winner"] == recomputed["winner"]
    assert parent.data.tags["confirm_1_verdict"] == NO_DIFFERENCE
    assert parent.data.metrics["confirm_0_mean"] == pytest.approx(recomputed["rows"][0]["mean"])
    # make report shows them too, recomputed from the same runs.
    made = subprocess.run([sys.executable, "-m", "search.report", str(tmp_path / "inert.yaml"), "--out",
                           str(tmp_path / "report")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
    assert made.returncode == 0, made.stderr[-2000:]
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Confirmed over seeds: the answer" in markdown
    assert markdown.count(f"**{NO_DIFFERENCE}**") >= 2 and "Winner:" in markdown


def test_confirm_seeds_0_turns_it_off(tmp_path):
    out = run(tmp_path, "--confirm-seeds", "0")
    assert out.returncode == 0, out.stderr[-3000:]
    _, runs, every = confirm_runs(tmp_path)
    assert runs == [] and len(every) == 1 + 3
    assert "not confirmed over seeds" in out.stdout


def test_pick_takes_the_best_finished_distinct_configurations_after_the_baseline():
    from types import SimpleNamespace

    from spaces import load_space, override

    space = override(load_space("mixup_alpha"), fixed={"epochs": "2"})

    def result(alpha, lr, value, epoch=2):
        return SimpleNamespace(config={"mixup_alpha": alpha, "lr": lr},
                               metrics={"val_top1": value, "epoch": epoch, "trial_id": f"t{alpha}"})

    base_lr = space.baseline["lr"]  # the recipe's lr
    results = [result(0.0, base_lr, 90.0), result(0.2, 0.1, 80.0), result(0.3, 0.1, 85.0, epoch=1),
               result(0.4, 0.1, 70.0), result(0.2, 0.1, 79.0), result(0.5, 0.1, 60.0)]
    picked = confirm.pick(results, space, top=2)
    assert [c.label for c in picked] == ["baseline", "mixup_alpha=0.2 lr=0.1", "mixup_alpha=0.4 lr=0.1"]
    assert picked[0].values == {"mixup_alpha": 0.0, "lr": base_lr}  # the baseline, however it ranked
    assert picked[1].search_value == 80.0


def test_evaluate_names_the_best_mean_and_says_when_nothing_was_confirmed():
    finals = {"baseline": {1000: 80.0, 1001: 81.0, 1002: 79.0}, "a": {1000: 82.0, 1001: 83.5, 1002: 81.2}}
    result = confirm.evaluate(finals, "max")
    assert result["winner"] == "a" and result["rows"][1]["verdict"] == "helps" and result["note"] == ""
    only = confirm.evaluate({"baseline": finals["baseline"]}, "max")
    assert only["winner"] == "baseline" and "nothing to confirm" in only["note"]


@pytest.mark.slow
def test_interrupted_during_confirmation_resumes_with_each_run_recorded_once(tmp_path):
    # 6 epochs: a confirmation run lasts seconds, long enough to be caught mid-run (with 2
    # epochs the runs, two at a time, were over between two looks of a 2-s poll).
    epochs = 6
    text = tiny_space_yaml("does a confirmation survive an interrupt?", INERT, samples=2, epochs=epochs,
                           scheduler="none", max_concurrent=1)
    proc = run(tmp_path, space_text=text, popen=True)
    deadline = time.time() + 600
    # Interrupt once a confirmation run has finished and another is mid-run: it has logged
    # train_loss (a confirmation run logs val_* only for the epochs it validates).
    while time.time() < deadline:
        time.sleep(0.5)
        assert proc.poll() is None, "the search ended before the test could interrupt its confirmation"
        state_files = glob.glob(str(tmp_path / "ray" / "*" / "tricktune.json"))
        if not state_files or json.load(open(state_files[0])).get("phase") != "confirm":
            continue
        _, runs, _ = confirm_runs(tmp_path)
        if any(r.info.status == "FINISHED" for r in runs) and any(
                r.info.status == "RUNNING" and "train_loss" in r.data.metrics for r in runs):
            break
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert "INTERRUPTED" in output and "RESUME=1" in output, output[-3000:]
    _, runs, every = confirm_runs(tmp_path)
    assert all(r.info.status != "RUNNING" for r in every)
    # Interrupted mid-confirmation (2 search trials: the baseline and 1 candidate, x 2 seeds = 4
    # runs): some run not yet recorded, or recorded but not finished (closed KILLED).
    assert runs and (len(runs) < 4 or any(r.info.status != "FINISHED" for r in runs))
    resumed = run(tmp_path, "--resume", space_text=text)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client, runs, every = confirm_runs(tmp_path)
    keys = [(r.data.tags["candidate"], r.data.params["seed"]) for r in runs]
    assert len(keys) == len(set(keys)) == 4  # each confirmation run once
    assert len([r for r in every if r.data.tags.get("stage") == "search"]) == 2  # the search phase not redone
    for r in runs:
        assert r.info.status == "FINISHED" and r.data.tags["outcome"] == "completed"
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "train_loss")]
        assert sorted(steps) == list(range(1, epochs + 1))  # no epoch logged twice
        # A confirmation run validates every confirm.EVAL_EVERY-th epoch and the last.
        validated = sorted(m.step for m in client.get_metric_history(r.info.run_id, "val_top1"))
        assert validated == [e for e in range(1, epochs + 1) if e % confirm.EVAL_EVERY == 0 or e == epochs]
    assert "confirmed over seeds 1000, 1001" in resumed.stdout
