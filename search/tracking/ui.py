"""Where a search lives in MLflow and how the MLflow UI opens it: the store, the space's
experiment (a model-training one), a saved view of a search's runs and the link to it."""

from __future__ import annotations

import base64
import json
import os
import time
import zlib
from urllib.parse import quote

from mlflow.tracking import MlflowClient


def default_tracking_uri() -> str:
    """The store a search, a report and an import use: $MLFLOW_TRACKING_URI, else mlflow.db in the repo."""
    from spaces import PROJECT_ROOT

    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def experiment_name(space_name: str) -> str:
    return f"tricktune/{space_name}"


# --- how the MLflow UI opens a search --------------------------------------------------------
# MLflow 3.x's UI has two faces, GenAI (traces, token usage) and model training (the runs
# table). Which one an experiment opens on is read from two places, depending on the release:
# the experiment tag below (MLflow 3.x's experiment-kind selector writes it), and, in 3.17,
# the `workflowType` URL parameter or the "GenAI | Model training" switch the browser
# remembers: 3.17's bundle derives the kind from that switch and reads the tag only when
# that feature flag is off (it is hard-wired on). So both are set: the tag on the experiment,
# and `workflowType=machine_learning` in every link tricktune prints.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
# Values the UI writes when it only guessed the kind; a person's own choice is left alone.
_UNDECIDED_KINDS = {"", "empty", "no_inferred_type", "genai_development_inferred",
                    "custom_model_development_inferred"}
# A saved view of the runs table ("Views" in the UI), stored the way the UI's "Save as new
# view" stores one: an experiment tag holding {"name", "state": "deflate;" + base64(zlib(JSON))}.
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
RUN_NAME_COLUMN = "attributes.`Run Name`"  # the runs table's column ids: "<type>.`<key>`"
DEFAULT_UI = "http://127.0.0.1:5000"  # make mlflow


def experiment_for_space(client: MlflowClient, space_name: str) -> str:
    """The space's experiment id: created (or restored if deleted) as a model-training experiment."""
    name = experiment_name(space_name)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    if exp.tags.get(EXPERIMENT_KIND_TAG, "") in _UNDECIDED_KINDS:  # created before tricktune set the tag
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    return exp.experiment_id


def save_runs_view(client: MlflowClient, experiment_id: str, search: str, metric: str, mode: str,
                   searched: list[str]) -> str:
    """A saved view of one search's runs: flat (no collapsed parent), best first, with the outcome
    next to the run name, then the metric, Top-1/Top-5, seconds per epoch and the searched values
    as columns. Returns its key."""
    metrics = dict.fromkeys([metric, "val_top1", "val_top5", "epoch_seconds"])
    outcome = "tags.`outcome`"  # beside the name: completed, stopped_early or a failure, at a glance
    columns = ([f"metrics.`{m}`" for m in metrics] + [f"params.`{p}`" for p in searched]
               + [outcome, "tags.`trial_id`"])
    state = {"searchFilter": f"tags.search = '{search}'",
             # Sorting by a metric lists nested runs flat; the parent (no such metric) comes last.
             "orderByKey": f"metrics.`{metric}`", "orderByAsc": mode == "min",
             "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [],
             "modelVersionFilter": "All Runs", "selectedColumns": columns,
             # The run name says what the trial is: wide enough for it (the UI's default cuts at ~18 chars).
             "columnOrder": [RUN_NAME_COLUMN, outcome, "runDateAndNestInfo", "duration",
                             *(c for c in columns if c != outcome)],
             "columnWidths": {RUN_NAME_COLUMN: 290}}
    packed = base64.b64encode(zlib.compress(json.dumps(state).encode())).decode()
    now = int(time.time() * 1000)
    view = {"name": f"search {search}: trials by {metric}", "createdAt": now, "updatedAt": now,
            "state": f"deflate;{packed}"}
    client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + search, json.dumps(view))
    return search


def runs_url(tracking_uri: str, experiment_id: str, view: str | None = None) -> str:
    """The link that opens a search in the MLflow UI on its runs table (see EXPERIMENT_KIND_TAG)."""
    ui = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else DEFAULT_UI
    url = f"{ui}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    return url + (f"&viewStateShareKey={quote(view)}" if view else "")

