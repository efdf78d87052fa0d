"""End to end: real Ray Tune searches (Optuna TPE + ASHA) with a real MLflow store in tmp_path."""

import dataclasses
import glob
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import tiny_space_yaml
from mlflow.tracking import MlflowClient

from trainable.config import FIELDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MIXUP_LR = {"mixup_alpha": {"type": "uniform", "low": 0.0, "high": 1.0},
            "lr": {"type": "loguniform", "low": 0.01, "high": 0.3}}


def write_space(tmp_path, samples=6, epochs=3, name="tiny", train_subset=256):
    path = tmp_path / f"{name}.yaml"
    path.write_text(tiny_space_yaml("does the search path record every trial?", MIXUP_LR, samples=samples,
                                    epochs=epochs, train_subset=train_subset))
    return path


def search_cmd(space, tmp_path, *extra):
    return [sys.executable, "-m", "search", str(space), "--storage", str(tmp_path / "ray"), *extra]


def search_env(tmp_path):
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1"}


def trial_runs(tmp_path, space_name="tiny"):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name(f"tricktune/{space_name}")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("tricktune_role") == "search"]
    trials = [r for r in runs if "trial_id" in r.data.tags]
    return client, parents, trials


def test_real_search_records_every_trial_in_mlflow(tmp_path):
    space = write_space(tmp_path, samples=6, epochs=3)
    out = subprocess.run(search_cmd(space, tmp_path), capture_output=True, text=True, cwd=ROOT,
                         env=search_env(tmp_path), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "best single run" in out.stdout and "baseline run    val_top1" in out.stdout

    client, parents, trials = trial_runs(tmp_path)
    (parent,) = parents
    exp_dirs = os.listdir(tmp_path / "ray")
    ray_trials = [d for d in os.listdir(tmp_path / "ray" / exp_dirs[0]) if d.startswith("run_trial_")]
    assert len(trials) == len(ray_trials) == 6
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    assert {r.info.status for r in trials} == {"FINISHED"}
    # The baseline (mixup off, the recipe's lr) runs first and is marked.
    baseline = [r for r in trials if r.data.tags["is_baseline"] == "true"]
    assert len(baseline) == 1 and float(baseline[0].data.params["mixup_alpha"]) == 0.0
    # ASHA may stop any trial but the reference: every delta is against a full-length baseline.
    assert baseline[0].data.tags["outcome"] == "completed" and baseline[0].data.tags["epochs_run"] == "3"
    stopped = 0
    for run in trials:
        assert set(FIELDS) <= set(run.data.params)  # the full resolved config, space-file names
        epochs = int(run.data.tags["epochs_run"])
        history = client.get_metric_history(run.info.run_id, "val_top1")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, epochs + 1))
        if run.data.tags["outcome"] == "stopped_early":
            stopped += 1
            assert run.info.status == "FINISHED" and epochs < 3  # not KILLED: the UI draws that as a crash
        else:
            assert run.data.tags["outcome"] == "completed" and epochs == 3
    assert stopped >= 1  # ASHA (reduction factor 3) stopped some of the 6 trials
    # The parent run holds the summary, the space file and the best checkpoint.
    assert parent.info.status == "FINISHED"
    assert {"best_val_top1", "baseline_val_top1", "delta_vs_baseline"} <= set(parent.data.metrics)
    assert parent.data.tags["git_commit"] and parent.data.tags["version.torch"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"space", "best_checkpoint"} <= artifacts


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_search_resumes_with_every_trial_recorded_once(tmp_path, sig):
    # 512 images x 4 epochs: trials last seconds, so a trial is caught mid-run (with 256 x 3 a
    # quiet machine finished the search between two looks of a 2-s poll).
    space = write_space(tmp_path, samples=5, epochs=4, train_subset=512)
    env = search_env(tmp_path)
    proc = subprocess.Popen(search_cmd(space, tmp_path), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    # Interrupt once a trial has finished and another is mid-run with a reported epoch: the
    # resumed process then meets a running trial it never saw start (a bug this test caught).
    deadline = time.time() + 400
    while time.time() < deadline:
        time.sleep(0.5)
        assert proc.poll() is None, "the search ended before the test could interrupt it"
        # Read MLflow only once the search has set up the store (tricktune.json is written
        # after its parent run): a second process migrating a fresh sqlite store races it.
        if glob.glob(str(tmp_path / "ray" / "*" / "tricktune.json")):
            try:
                _, _, trials = trial_runs(tmp_path)
            except Exception:  # experiment not created yet
                continue
            if any(r.info.status in ("FINISHED", "KILLED") for r in trials) and any(
                    r.info.status == "RUNNING" and "val_top1" in r.data.metrics for r in trials):
                break
    proc.send_signal(sig)
    t0 = time.time()
    output, _ = proc.communicate(timeout=120)
    assert time.time() - t0 < 60, "the search must exit within seconds of the signal"
    assert "INTERRUPTED" in output and "RESUME=1" in output, output[-3000:]
    _, parents, trials = trial_runs(tmp_path)
    assert all(r.info.status != "RUNNING" for r in trials + parents)
    assert parents[0].data.tags["state"] == "interrupted"
    assert len(trials) < 5 or any(r.data.tags.get("outcome") == "interrupted" for r in trials)

    out = subprocess.run(search_cmd(space, tmp_path, "--resume"), capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    client, parents, trials = trial_runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    ids = [r.data.tags["trial_id"] for r in trials]
    assert len(ids) == len(set(ids)) == 5  # the whole budget, each trial once
    for run in trials:
        assert run.info.status in ("FINISHED", "KILLED") and run.data.tags["outcome"] in ("completed",
                                                                                           "stopped_early")
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_top1")]
        assert sorted(steps) == list(range(1, int(run.data.tags["epochs_run"]) + 1))  # no epoch twice


def test_a_trial_terminated_by_ctrl_c_counts_as_unfinished():
    # Ray's clean-up after Ctrl-C marks live trials TERMINATED without on_trial_complete; a
    # search once printed a normal summary (no INTERRUPTED, no RESUME hint) because of it.
    # The other cases are covered end to end by the slow interrupt tests above.
    from types import SimpleNamespace

    from search.runner import _unfinished
    from spaces import load_space, override

    space = override(load_space("baseline"), num_samples=3)
    tracker = SimpleNamespace(trial_status={"done": "FINISHED", "live": "RUNNING"})

    def grid(*trials):
        return SimpleNamespace(_experiment_analysis=SimpleNamespace(trials=list(trials)))

    done = SimpleNamespace(trial_id="done", status="TERMINATED", last_result={"epoch": 6})
    failed = SimpleNamespace(trial_id="failed", status="ERROR", last_result={})
    from_before = SimpleNamespace(trial_id="old", status="TERMINATED", last_result={"epoch": 2})  # a resumed search's
    live = SimpleNamespace(trial_id="live", status="TERMINATED", last_result={"epoch": 2})
    starting = SimpleNamespace(trial_id="starting", status="TERMINATED", last_result={})
    pending = SimpleNamespace(trial_id="pending", status="PENDING", last_result={})
    assert not _unfinished(grid(done, failed, from_before), space.num_samples, tracker)
    assert _unfinished(grid(done, failed), space.num_samples, tracker)  # fewer trials than the budget
    for unfinished in (live, starting, pending):
        assert _unfinished(grid(done, failed, unfinished), space.num_samples, tracker)


def test_asha_rungs_survive_a_resume(tmp_path):
    # Tuner.restore unpickles the scheduler as it was created, with empty rungs: a resumed
    # search then judged its next trials against nothing (measured: a trial the uninterrupted
    # search cut at its first rung ran to the end). The rungs now come back from the results folder.
    import pickle

    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from search import tuners
    from spaces import load_space, override

    space = override(load_space("mixup_alpha"), num_samples=6)  # ASHA on val_loss, first rung at grace_period
    created = tuners.scheduler(space, str(tmp_path))
    as_saved = pickle.dumps(created)  # what the Tuner stores when a search starts
    rung = space.grace_period

    def trial(mixup_alpha):
        return Trial("run_trial", config={"mixup_alpha": mixup_alpha, "lr": 0.05}, stub=True)

    def judge(scheduler, t, val_loss):
        scheduler.on_trial_add(None, t)
        return scheduler.on_trial_result(None, t, {"training_iteration": rung, "val_loss": val_loss})

    for i, loss in enumerate((0.60, 0.55, 0.50)):  # three trials reach the first rung, each better
        assert judge(created, trial(0.1 * (i + 1)), loss) == TrialScheduler.CONTINUE
    assert judge(created, trial(0.9), 1.50) == TrialScheduler.STOP  # the uninterrupted search cuts it
    resumed = pickle.loads(as_saved)
    assert judge(resumed, trial(0.8), 1.50) == TrialScheduler.STOP  # and so does the resumed one
    fresh = tuners.scheduler(space)  # without the rungs file: nothing to judge against
    assert judge(fresh, trial(0.8), 1.50) == TrialScheduler.CONTINUE
    assert (tmp_path / tuners.RUNGS_FILE).exists()


GRID_LR = {"lr": {"type": "grid", "values": [0.004, 0.025]}}
GRID_SHAPES = {  # space name -> (params, baseline, the lr of each trial): each grid point once, the baseline once
    "on_grid": (GRID_LR, {"lr": 0.004}, [0.004, 0.025]),  # the baseline is one of the grid's points
    # Next to a sampled key the grid's points are not the baseline: it runs apart, first.
    "off_grid": ({**GRID_LR, "mixup_alpha": {"type": "uniform", "low": 0.0, "high": 1.0}}, {"lr": 0.025},
                 [0.004, 0.025, 0.025]),
}


def test_a_grid_runs_every_point_once_and_the_baseline_once(tmp_path):
    # A baseline on the grid once took the grid's one sample: the search announced 2 trials,
    # ran the baseline alone and called itself INTERRUPTED. Both shapes, in one process (one Ray).
    paths = []
    for name, (params, baseline, _) in GRID_SHAPES.items():
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(tiny_space_yaml("does a grid run each point once?", params, samples=1, epochs=1,
                                             train_subset=64, scheduler="none", baseline=baseline))
    script = ("import sys; from search.__main__ import main; "
              "sys.exit(max(main([p, '--storage', sys.argv[1]]) for p in sys.argv[2:]))")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "ray"), *map(str, paths)], capture_output=True,
                         text=True, cwd=ROOT, env=search_env(tmp_path), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "INTERRUPTED" not in out.stdout, out.stdout[-3000:]
    for name, (_, baseline, lrs) in GRID_SHAPES.items():
        assert f"search {name} on recipe fashion_mnist_resnet20: {len(lrs)} trials" in out.stdout
        _, (parent,), trials = trial_runs(tmp_path, name)
        assert parent.data.tags["state"] == "finished"
        assert sorted(float(r.data.params["lr"]) for r in trials) == lrs
        (base,) = [r for r in trials if r.data.tags["is_baseline"] == "true"]
        assert float(base.data.params["lr"]) == baseline["lr"] and float(base.data.params["mixup_alpha"]) == 0.0
        assert {r.data.tags["outcome"] for r in trials} == {"completed"}


def test_smoke_fits_its_slice_to_a_small_folder(tmp_path):
    # --smoke trains on 512/256 images (at most the recipe's 300/1000): a folder with fewer
    # once failed on the smoke's own subset ("train_subset=512 but cub200 has only 439 images").
    from search.bench.synthetic_cub import write_cub_folder
    from search.domains import baseline_point
    from search.runner import SearchOptions, prepare_space
    from trainable.data import load_data
    from trainable.loop import preflight

    cub = write_cub_folder(tmp_path / "CUB_200_2011", classes=10, train_per_class=2, test_per_class=1, size=(32, 32))
    opts = SearchOptions(space="mixup_alpha", overrides={"dataset": "cub200", "data_dir": str(cub)}, smoke=True)
    space = prepare_space(opts)
    assert (space.fixed["train_subset"], space.fixed["val_subset"], space.max_epochs) == (20, 10, 2)
    cfg = space.trial_config(baseline_point(space))
    preflight(cfg)
    data = load_data(cfg, "cpu")
    assert (data.n_train, data.n_val) == (20, 10)
    # On a data set larger than the slice, the smoke keeps it; a subset set by the user stays the user's.
    assert prepare_space(SearchOptions(space="mixup_alpha", overrides={}, smoke=True)).fixed["train_subset"] == 300
    mine = prepare_space(dataclasses.replace(opts, overrides={**opts.overrides, "train_subset": "0"}))
    assert mine.fixed["train_subset"] == 0 and mine.fixed["val_subset"] == 10
