"""A search as MLflow recorded it: the parent run and its trial runs, parsed once.

Only MLflow is read (never Ray's result files), so a report works for a finished or an
interrupted search, and for one that ran on a cluster against a tracking server.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient

from search.stats import mean_std
from search.tracking import experiment_name
from spaces import Space
from trainable.config import REPORTED_METRICS, ConfigError, coerce_value

# Per-epoch curves the report reads back (step = epoch in MLflow): every reported metric but
# the epoch itself and the throughput (epoch_seconds already says what it costs).
CURVES = tuple(m for m in REPORTED_METRICS if m not in ("epoch", "images_per_second"))
SEED_KEY = "seed"  # a repetition, not a treatment: its runs are grouped, not compared


class ReportError(Exception):
    """Nothing to report; one line that says why and what to run."""


@dataclass
class TrialRun:
    """One trial's MLflow run, with the values the report needs already parsed."""

    run_id: str
    trial_id: str
    is_baseline: bool
    outcome: str
    treatment: dict  # searched key (seed excluded) -> value; "variant" -> its name
    seed: int | None
    params: dict  # the full resolved TrainConfig, as MLflow stores it (strings)
    candidate: str | None = None  # a confirmation run's configuration label (stage=confirm)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        """The last epoch this trial reported (0: it never finished one); any metric counts, as
        a run with eval_every > 1 (a confirmation run) logs val_* only after some epochs."""
        return max((step for points in self.curves.values() for step, _ in points), default=0)

    def final(self, metric: str) -> float | None:
        points = self.curves.get(metric)  # sorted by epoch
        return points[-1][1] if points else None

    def at(self, metric: str, epoch: int) -> float | None:
        return next((value for step, value in self.curves.get(metric, []) if step == epoch), None)

    def mean_epoch_seconds(self) -> float | None:
        seconds = [value for _, value in self.curves.get("epoch_seconds", [])]
        return mean_std(seconds)[0]


@dataclass
class SearchRecord:
    """A search's parent run and its trials, plus what the search was run with."""

    space: Space
    tracking_uri: str
    parent_id: str
    name: str
    started: _dt.datetime
    state: str
    git_commit: str
    recipe: str  # the recipe the search ran on (spaces/recipes/)
    question: str
    metric: str
    mode: str
    max_epochs: int
    treatments: list[str]  # searched keys that change the recipe (variant included, seed not)
    seed_searched: bool
    trials: list[TrialRun]  # the search phase
    confirm_runs: list[TrialRun] = field(default_factory=list)  # the confirmation phase (stage=confirm)


def _no_search(space: Space, tracking_uri: str) -> ReportError:
    return ReportError(f"no search of space {space.name!r} in {tracking_uri}; "
                       f"run `make search SPACE={space.name}` first")


def open_store(space: Space, tracking_uri: str) -> MlflowClient:
    # MlflowClient on a SQLite file that is not there creates an empty store (and logs
    # two lines about creating tables); a report only reads, so say "no search" instead.
    if tracking_uri.startswith("sqlite:///") and not os.path.isfile(tracking_uri[len("sqlite:///"):]):
        raise _no_search(space, tracking_uri)
    return MlflowClient(tracking_uri)


def find_search(client: MlflowClient, space: Space, tracking_uri: str, run_id: str | None = None):
    """The parent run to report on: ``run_id``, else the latest search of the space."""
    if run_id:
        return _given_search(client, space, tracking_uri, run_id)
    try:
        experiment = client.get_experiment_by_name(experiment_name(space.name))
    except Exception as err:  # noqa: BLE001 - an unreachable server or a broken store
        raise ReportError(f"MLflow tracking store {tracking_uri!r} is unreachable ({type(err).__name__}); "
                          "start the server or set MLFLOW_TRACKING_URI") from None
    if experiment is None or experiment.lifecycle_stage == "deleted":
        raise _no_search(space, tracking_uri)
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.tricktune_role = 'search'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise _no_search(space, tracking_uri)
    return runs[0]


def _given_search(client: MlflowClient, space: Space, tracking_uri: str, run_id: str):
    try:
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - MLflow raises its own types per store; all mean "not there"
        raise ReportError(f"no run {run_id!r} in {tracking_uri}; give the parent run id of a search "
                          "(MLflow UI, or the last lines a search prints)") from None
    if run.data.tags.get("tricktune_role") != "search":
        raise ReportError(f"run {run_id} is not a search's parent run (it is a trial or another run); "
                          "give the id `python -m search` printed as 'parent run'")
    if run.data.tags.get("space") != space.name:
        raise ReportError(f"run {run_id} is a search of space {run.data.tags.get('space')!r}, not "
                          f"{space.name!r}; use `make report SPACE={run.data.tags.get('space')}`")
    return run


def load_search(client: MlflowClient, parent, space: Space, tracking_uri: str) -> SearchRecord:
    params, tags = parent.data.params, parent.data.tags
    # What the search actually ran with (a --set or an edited space file may differ
    # from today's file); the space file fills in what an older parent run lacks.
    searched = [k for k in params.get("searched", ",".join(space.searched)).split(",") if k]
    record = SearchRecord(
        space=space, tracking_uri=tracking_uri, parent_id=parent.info.run_id,
        name=parent.info.run_name or parent.info.run_id,
        started=_dt.datetime.fromtimestamp(parent.info.start_time / 1000, _dt.UTC),
        state=tags.get("state", "running" if parent.info.status == "RUNNING" else parent.info.status.lower()),
        git_commit=tags.get("git_commit", "unknown"), recipe=params.get("recipe", "fashion_mnist_resnet20"),
        question=tags.get("question", space.question),
        metric=params.get("metric", space.metric), mode=params.get("mode", space.mode),
        max_epochs=int(params.get("max_epochs", space.max_epochs)),
        treatments=[k for k in searched if k != SEED_KEY], seed_searched=SEED_KEY in searched, trials=[])
    metrics = CURVES + ((record.metric,) if record.metric not in CURVES else ())
    for run in _child_runs(client, parent):
        confirming = run.data.tags.get("stage") == "confirm"
        (record.confirm_runs if confirming else record.trials).append(_trial(client, run, record.treatments, metrics))
    return record


def _child_runs(client: MlflowClient, parent) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _trial(client: MlflowClient, run, treatments: list[str], metrics: tuple) -> TrialRun:
    params, tags = run.data.params, run.data.tags
    treatment = {}
    for key in treatments:
        raw = params.get(key, tags.get(key))
        treatment[key] = raw if key == "variant" else parse(key, raw)
    seed = parse(SEED_KEY, params[SEED_KEY]) if SEED_KEY in params else None
    curves = {}
    for metric in metrics:
        history = client.get_metric_history(run.info.run_id, metric)
        # A retried trial logs an epoch twice; the later value is the one it went on from.
        by_step = {m.step: m.value for m in sorted(history, key=lambda m: m.timestamp)}
        curves[metric] = sorted(by_step.items())
    outcome = tags.get("outcome") or ("running" if run.info.status == "RUNNING" else run.info.status.lower())
    return TrialRun(run_id=run.info.run_id, trial_id=tags.get("trial_id", run.info.run_id[:8]),
                    is_baseline=tags.get("is_baseline") == "true", outcome=outcome, treatment=treatment,
                    seed=seed, params=dict(params), curves=curves, candidate=tags.get("candidate"))


def parse(key: str, text):
    """An MLflow param string back to the TrainConfig value (so 0.1 sorts as a number)."""
    if text is None or text == "None":
        return None
    try:
        return coerce_value(key, text)
    except (ConfigError, TypeError):
        return text


__all__ = ["CURVES", "SEED_KEY", "ReportError", "TrialRun", "SearchRecord", "open_store", "find_search",
           "load_search", "parse"]
