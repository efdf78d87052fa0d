"""make report: a search's MLflow runs -> report.md + PNGs, logged back to the parent run.

The slow tests run real (tiny) searches with ``python -m search`` into a SQLite store in
a temporary folder, then ``python -m search.report`` on them, and check the report
against the runs read back from MLflow. The fast ones use a hand-made store (every
trial outcome, an interrupted search) and the statistics on known numbers.
"""

import csv
import os
import statistics
import subprocess
import sys

import matplotlib.image
import pytest
from conftest import tiny_space_yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from search import report
from search.labels import short
from search.stats import NO_DIFFERENCE
from spaces import load_space
from trainable.config import from_dict, to_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MIXUP_LR = {"mixup_alpha": {"type": "uniform", "low": 0.0, "high": 1.0},
            "lr": {"type": "loguniform", "low": 0.3, "high": 3.0, "relative_to": "lr"}}


def space_text(question: str, samples: int, scheduler: str, params: dict = MIXUP_LR, **sections) -> str:
    # Half a CPU per trial: a tiny trial's time is mostly its worker starting (torch import),
    # so 4 at once on 2 cores finish a 6-trial search in one round instead of three.
    return tiny_space_yaml(question, params, samples=samples, epochs=2, max_concurrent=4, cpus_per_trial=0.5,
                           scheduler=scheduler, **sections)


# TPE over two params. No ASHA, so every trial completes and fANOVA has >= 3 finished
# trials to work with (the hand-made store below covers ASHA-stopped trials).
TPE_PARAMS = MIXUP_LR
# The baseline and a variant whose label smoothing is too small to matter, 3 seeds each.
SEED_PARAMS = {"seed": {"type": "grid", "values": [0, 1, 2]}}
SEED_SECTIONS = {"variants": {"smoothing_tiny": {"label_smoothing": 0.001}}}


def _env(folder) -> dict:
    # The working directory is the temporary folder, so MLflow's artifacts land there
    # too; PYTHONPATH finds the project from there.
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "PYTHONUNBUFFERED": "1"}


def _run(args, folder, timeout=600):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=folder,
                          env=_env(folder), timeout=timeout)


def _start_search(folder, name, params, samples, sections=None):
    space = folder / f"{name}.yaml"
    space.write_text(space_text(f"does the {name} report match MLflow?", samples, "none", params,
                                **(sections or {})))
    log = open(folder / "search.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "search", str(space), "--storage", str(folder / "ray")],
                            stdout=log, stderr=subprocess.STDOUT, text=True, cwd=folder, env=_env(folder))
    return folder, name, space, proc, log


def _report_on(folder, name, space, proc, log):
    """Wait for a search, run its report; returns what the tests read."""
    returncode = proc.wait(timeout=600)
    log.close()
    assert returncode == 0, (folder / "search.log").read_text()[-4000:]
    made = _run(["search.report", str(space), "--out", str(folder / "report")], folder, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    exp = client.get_experiment_by_name(f"tricktune/{name}")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("tricktune_role") == "search"]
    trials = {r.data.tags["trial_id"]: r for r in runs if "trial_id" in r.data.tags}
    return {"folder": folder, "out": folder / "report", "space": space, "client": client, "parent": parent,
            "trials": trials, "markdown": (folder / "report" / "report.md").read_text()}


@pytest.fixture(scope="module")
def searches(tmp_path_factory):
    """Both real searches, each run once and side by side: a tiny search mostly waits for
    Ray and its trial workers to start, so two at once take little longer than one."""
    jobs = {"tpe": _start_search(tmp_path_factory.mktemp("tpe"), "tiny_tpe", TPE_PARAMS, samples=3),
            "seeds": _start_search(tmp_path_factory.mktemp("seeds"), "tiny_seeds", SEED_PARAMS, samples=1,
                                   sections=SEED_SECTIONS)}
    try:
        return {key: _report_on(*job) for key, job in jobs.items()}
    finally:
        for *_, proc, log in jobs.values():
            if proc.poll() is None:  # a failed assertion above: stop the other search too
                proc.terminate()
                proc.wait(timeout=60)
            log.close()


@pytest.fixture(scope="module")
def tpe(searches):
    return searches["tpe"]


@pytest.fixture(scope="module")
def seeds(searches):
    return searches["seeds"]


def table(markdown: str, first_column: str) -> list[dict]:
    """The rows of the markdown table whose header starts with ``first_column``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def assert_png(path) -> None:
    assert path.is_file() and path.stat().st_size > 0, path
    image = matplotlib.image.imread(str(path))
    assert image.shape[0] > 0 and image.shape[1] > 0


# --- real searches -------------------------------------------------------------------------

@pytest.mark.slow
def test_table_matches_the_runs_in_mlflow(tpe):
    rows = table(tpe["markdown"], "rank")
    assert sorted(t for row in rows for t in row["trials"].split(", ")) == sorted(tpe["trials"])
    base = next(r for r in tpe["trials"].values() if r.data.tags["is_baseline"] == "true")
    base_top1 = base.data.metrics["val_top1"]
    for row in rows:
        run = tpe["trials"][row["trials"]]
        metrics = run.data.metrics  # MLflow's latest value = the last epoch
        assert row["val Top-1"] == f"{metrics['val_top1']:.2f}"
        assert row["val Top-5"] == f"{metrics['val_top5']:.2f}"
        seconds = [m.value for m in tpe["client"].get_metric_history(run.info.run_id, "epoch_seconds")]
        assert row["s/epoch"] == f"{sum(seconds) / len(seconds):.2f}"
        assert row["epochs"] == f"{run.data.tags['epochs_run']}/2" and row["outcome"] == run.data.tags["outcome"]
        assert row["mixup_alpha"] == short(float(run.data.params["mixup_alpha"]))
        if run is base:
            assert "baseline" in row["rank"] and row["Δ val_top1 vs baseline"] == "—"
        else:
            assert row["Δ val_top1 vs baseline"] == f"{metrics['val_top1'] - base_top1:+.2f}"
    top1 = [float(r["val Top-1"]) for r in rows]
    assert top1 == sorted(top1, reverse=True)  # best first (all trials ran both epochs)
    # The header names the search.
    parent = tpe["parent"]
    for text in (parent.info.run_id, parent.data.tags["git_commit"], "val_top1", "3 completed",
                 "does the tiny_tpe report match MLflow?"):
        assert text in tpe["markdown"]
    # trials.csv keeps full precision.
    with open(tpe["out"] / "trials.csv") as fh:
        for line in csv.DictReader(fh):
            assert float(line["val_top1"]) == tpe["trials"][line["trial_id"]].data.metrics["val_top1"]


@pytest.mark.slow
def test_plots_are_images_and_importances_sum_to_one(tpe):
    assert_png(tpe["out"] / "curves.png")
    assert_png(tpe["out"] / "importances.png")
    assert "![curves](curves.png)" in tpe["markdown"] and "![importances](importances.png)" in tpe["markdown"]

    space = load_space(tpe["space"])
    record = report.load_search(tpe["client"], tpe["parent"], space, "test")
    importances, _ = report.param_importances(record)
    assert set(importances) == {"mixup_alpha", "lr"}
    assert abs(sum(importances.values()) - 1) < 1e-6
    shown = {r["parameter"]: r["importance"] for r in table(tpe["markdown"], "parameter")}
    assert shown == {k: f"{v:.3f}" for k, v in importances.items()}  # fANOVA is seeded: same runs, same numbers


@pytest.mark.slow
def test_report_files_are_logged_to_the_parent_run(tpe):
    logged = {f.path for f in tpe["client"].list_artifacts(tpe["parent"].info.run_id, "report")}
    assert logged == {"report/report.md", "report/curves.png", "report/importances.png", "report/trials.csv",
                      "report/cost.png", "report/effect.png"}
    local = tpe["client"].download_artifacts(tpe["parent"].info.run_id, "report/report.md", str(tpe["folder"]))
    with open(local) as fh:
        assert fh.read() == tpe["markdown"]


@pytest.mark.slow
def test_seed_repeats_are_grouped_and_tested(seeds):
    rows = table(seeds["markdown"], "rank")
    assert len(rows) == 2 and {r["n"] for r in rows} == {"3"}
    for row in rows:
        finals = [seeds["trials"][t].data.metrics["val_top1"] for t in row["trials"].split(", ")]
        assert row["val Top-1"] == f"{statistics.mean(finals):.2f} ± {statistics.stdev(finals):.2f}"
    (tiny,) = [r for r in rows if r["variant"].startswith("smoothing_tiny")]
    assert "label_smoothing=0.001" in tiny["variant"]  # what the variant changed, read from the runs

    (verdict,) = table(seeds["markdown"], "change")
    assert verdict["n"] == "3" and verdict["test"] == "paired t-test over 3 seeds"
    # CPU training is deterministic per seed here (two searches gave identical numbers),
    # so this verdict is a fixed fact of these runs, not a 95%-of-the-time event.
    assert verdict["verdict"] == f"**{NO_DIFFERENCE}**"
    # The delta and its CI are the paired ones, recomputed here from MLflow's numbers.
    by_seed = {}
    for run in seeds["trials"].values():
        side = run.data.params["variant"]
        by_seed.setdefault(side, {})[int(run.data.params["seed"])] = run.data.metrics["val_top1"]
    diffs = [by_seed["smoothing_tiny"][s] - by_seed["baseline"][s] for s in (0, 1, 2)]
    assert verdict["Δ [95% CI]"].startswith(f"{statistics.mean(diffs):+.2f} [")
    low, high = (float(x) for x in verdict["Δ [95% CI]"].split("[")[1].rstrip("]").split(","))
    assert low <= 0 <= high  # the overlap the verdict is about
    assert_png(seeds["out"] / "curves.png")
    # The effect chart draws that comparison: the seed statistics' delta and interval.
    assert_png(seeds["out"] / "effect.png") and "![effect](effect.png)" in seeds["markdown"]
    record = report.load_search(seeds["client"], seeds["parent"], load_space(seeds["space"]), "test")
    configs = report.group_configs(record)
    (effect,) = report.effects(record, configs, report.seed_statistics(record, configs))
    assert effect.n == 3 and f"{effect.delta:+.2f} [{effect.ci_low:+.2f}, {effect.ci_high:+.2f}]" == \
        verdict["Δ [95% CI]"]


# --- errors: one line, exit code 2 ----------------------------------------------------------

def test_unknown_space_lists_the_spaces(tmp_path):
    made = _run(["search.report", "no_such_space"], tmp_path, timeout=120)
    lines = made.stderr.strip().splitlines()
    assert made.returncode == 2 and len(lines) == 1, made.stderr
    assert "unknown space 'no_such_space'" in lines[0] and "mixup_alpha" in lines[0]


def test_empty_store_says_run_a_search_first(tmp_path):
    made = _run(["search.report", "lr"], tmp_path, timeout=120)
    lines = made.stderr.strip().splitlines()
    assert made.returncode == 2 and len(lines) == 1, made.stderr
    assert lines[0] == (f"error: no search of space 'lr' in sqlite:///{tmp_path}/mlflow.db; "
                        "run `make search SPACE=lr` first")
    assert not (tmp_path / "mlflow.db").exists()  # reading never creates a store


# --- a hand-made store: every outcome, an interrupted search ------------------------------

def _fake_search(tmp_path, space, trials):
    """Write a parent run and trial runs the way search.runner/search.tracking do."""
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment(f"tricktune/{space.name}", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(exp, run_name=f"{space.name}-1", tags={
        "tricktune_role": "search", "space": space.name, "git_commit": "abc123", "question": space.question,
        "state": "interrupted"})
    client.log_batch(parent.info.run_id, params=[Param(k, v) for k, v in {
        "metric": "val_top1", "mode": "max", "max_epochs": "3", "searched": "mixup_alpha,lr"}.items()])
    for trial_id, (mixup, lr, outcome, top1) in trials.items():
        run = client.create_run(exp, tags={"mlflow.parentRunId": parent.info.run_id, "trial_id": trial_id,
                                           "is_baseline": str(mixup == 0.0).lower(), "outcome": outcome,
                                           "epochs_run": str(len(top1))})
        cfg = to_dict(from_dict({**space.fixed, "mixup_alpha": mixup, "lr": lr}))
        metrics = [Metric(name, value, 0, epoch) for epoch, acc in enumerate(top1, 1) for name, value in
                   (("val_top1", acc), ("val_top5", acc + 40), ("train_loss", 3 - acc / 50), ("lr", lr / epoch),
                    ("epoch_seconds", 2.0), ("val_loss", 2.0))]
        client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in cfg.items()], metrics=metrics,
                         tags=[RunTag("mlflow.runName", trial_id)])
    return client, parent


def test_interrupted_asha_search_with_every_outcome(tmp_path):
    path = tmp_path / "fake.yaml"
    path.write_text(space_text("a hand-made search", 6, "asha"))
    space = load_space(path)
    client, parent = _fake_search(tmp_path, space, {
        "base": (0.0, 0.1, "completed", [40.0, 50.0, 60.0]),
        "good": (0.2, 0.1, "completed", [45.0, 55.0, 65.0]),
        "worse": (0.8, 0.2, "completed", [30.0, 40.0, 50.0]),
        "early": (0.5, 0.05, "stopped_early", [41.0]),  # better than the baseline at epoch 1: +1
        "cut": (0.3, 0.3, "interrupted", [20.0, 48.0]),
        "broke": (0.9, 0.25, "error", []),
    })
    out = tmp_path / "out"
    path_md = report.build_report(str(path), str(out), tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    markdown = open(path_md).read()
    rows = table(markdown, "rank")
    assert [r["trials"] for r in rows] == ["good", "base", "worse", "cut", "early", "broke"]
    by_id = {r["trials"]: r for r in rows}
    # vs the baseline at the same epoch, not at its last one
    assert by_id["early"]["Δ val_top1 vs baseline"] == "+1.00 (at epoch 1)"
    assert by_id["cut"]["Δ val_top1 vs baseline"] == "-2.00 (at epoch 2)"
    assert by_id["good"]["Δ val_top1 vs baseline"] == "+5.00"
    assert by_id["broke"]["val Top-1"] == "—" and by_id["broke"]["outcome"] == "error"
    assert by_id["early"]["epochs"] == "1/3" and by_id["base"]["rank"] == "**2 baseline**"
    assert "interrupted" in markdown and "6 (" in markdown
    assert "Over seeds" not in markdown  # nothing repeated
    importances, note = report.param_importances(report.load_search(client, parent, space, "x"))
    assert "3 completed" in note and abs(sum(importances.values()) - 1) < 1e-6
    for name in ("curves.png", "importances.png", "cost.png", "effect.png"):
        assert_png(out / name)
        assert f"]({name})" in markdown
    logged = {f.path for f in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/curves.png", "report/cost.png", "report/effect.png"} <= logged
    # Completed configurations only, in both charts: cost = 2.0 s/epoch each, as logged above.
    record = report.load_search(client, parent, space, "x")
    configs = report.group_configs(record)
    points = report.cost_points(record, configs)
    assert sorted((report.config_label(c), s, v) for c, s, v in points) == [
        ("baseline: mixup_alpha=0 lr=0.1", 2.0, 60.0), ("mixup_alpha=0.2 lr=0.1", 2.0, 65.0),
        ("mixup_alpha=0.8 lr=0.2", 2.0, 50.0)]
    # One run each: deltas without intervals, worst first (the chart draws the best on top).
    assert [(e.label, e.delta, e.ci_low) for e in report.effects(record, configs, None)] == [
        ("mixup_alpha=0.8 lr=0.2", -10.0, None), ("mixup_alpha=0.2 lr=0.1", 5.0, None)]


def test_pareto_front_is_the_best_value_for_its_cost():
    points = [(1.0, 50.0), (2.0, 60.0), (2.0, 55.0), (3.0, 58.0), (1.5, 50.0), (4.0, 70.0), (4.0, 70.0),
              (0.5, 10.0)]
    # (2, 55) costs as much as (2, 60) for less; (3, 58) costs more than (2, 60) for less; (1.5, 50) costs
    # more than (1, 50) for the same. The two (4, 70) are the same point: neither beats the other.
    assert report.pareto_front(points) == [7, 0, 1, 5, 6]
    assert report.pareto_front([]) == [] and report.pareto_front([(3.0, 1.0)]) == [0]


def test_pareto_front_agrees_with_the_definition_on_random_points():
    import random

    rng = random.Random(0)
    for _ in range(200):
        # Few distinct values, so ties in cost and in value are common.
        points = [(rng.randint(1, 6) / 2, rng.randint(0, 8) * 5.0) for _ in range(rng.randint(1, 12))]
        # The definition, pair by pair: beaten by a point at most as costly, at least as good, not equal.
        unbeaten = [i for i, p in enumerate(points) if not any(q[0] <= p[0] and q[1] >= p[1] and q != p
                                                              for q in points)]
        assert sorted(report.pareto_front(points)) == unbeaten


def test_importances_skipped_with_fewer_than_three_finished_trials(tmp_path):
    path = tmp_path / "few.yaml"
    path.write_text(space_text("too few", 2, "asha"))
    space = load_space(path)
    client, parent = _fake_search(tmp_path, space, {"base": (0.0, 0.1, "completed", [40.0, 50.0, 60.0]),
                                                    "other": (0.4, 0.2, "stopped_early", [30.0])})
    (out := tmp_path / "out").mkdir()
    (out / "importances.png").write_bytes(b"from an earlier report")
    markdown = open(report.build_report(str(path), str(out), tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")).read()
    assert "Skipped: 1 completed trial(s); fANOVA needs at least 3" in markdown
    assert not (out / "importances.png").exists()  # a stale chart would contradict the note


