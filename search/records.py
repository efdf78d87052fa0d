"""What a search writes before it trains: the MLflow parent run and the state file.

``tricktune.json`` in the search's results folder holds how to rebuild the search on
``--resume`` (space, recipe, overrides), its MLflow ids, and which phase it reached
(``search``, then ``confirm`` with the chosen candidates and seeds), so a resumed search
neither repeats a finished phase nor picks other candidates.
"""

from __future__ import annotations

import datetime as _dt
import glob
import json
import os
import platform
import subprocess

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from search.tracking import experiment_for_space, save_runs_view
from spaces import PROJECT_ROOT, Space
from trainable.files import write_text_atomically

STATE_FILE = "tricktune.json"


class SearchError(Exception):
    """A problem found before any training starts; one line with the fix."""


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (sha or "unknown") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict:
    import optuna
    import ray
    import torch
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "ray": ray.__version__, "optuna": optuna.__version__, "mlflow": mlflow.__version__}


def check_tracking(tracking_uri: str) -> MlflowClient:
    """Fail before training if the MLflow store cannot be reached."""
    # MLflow's HTTP client retries with backoff for minutes by default; an unreachable
    # server should fail the start in seconds, and mid-search our writer retries itself.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    client = MlflowClient(tracking_uri)
    try:
        client.search_experiments(max_results=1)
    except MlflowException as err:
        if err.get_http_status_code() in (401, 403):  # the server is up and asks who is there
            raise SearchError(_sign_in_error(tracking_uri, err.get_http_status_code())) from None
        raise _unreachable(tracking_uri, err) from None
    except Exception as err:  # noqa: BLE001 - any failure here means "cannot record results"
        raise _unreachable(tracking_uri, err) from None
    return client


def _unreachable(tracking_uri: str, err: Exception) -> SearchError:
    return SearchError(f"MLflow tracking store {tracking_uri!r} is unreachable ({type(err).__name__}); "
                       "start the server or set MLFLOW_TRACKING_URI=sqlite:///mlflow.db")


def _sign_in_error(tracking_uri: str, status: int) -> str:
    """The fix for a server behind a sign-in (MLflow's basic-auth app): which variables to set."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if not user or not os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        return (f"MLflow tracking server {tracking_uri!r} asks for a sign-in (HTTP {status}): set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account of that server")
    refused = "refused the sign-in of" if status == 401 else "does not let"
    return (f"MLflow tracking server {tracking_uri!r} {refused} user {user!r} (HTTP {status}): check "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or ask its admin for access")


def close_runs_left_open(client: MlflowClient, experiment_id: str, parent_run_id: str) -> int:
    """Close, as interrupted, the trial runs of a search that are still RUNNING when it resumes.

    A driver killed with SIGKILL (or a lost machine) runs no handler, so its open runs stay
    RUNNING. Closing them is what Ctrl-C would have done: a trial Ray continues reopens its
    run; one Ray had not saved before the kill is run again under a new id, and its old run
    keeps what it recorded, closed instead of RUNNING forever."""
    runs = client.search_runs([experiment_id], max_results=10_000, filter_string=(
        f"tags.`mlflow.parentRunId` = '{parent_run_id}' and attributes.status = 'RUNNING'"))
    for run in runs:
        client.set_tag(run.info.run_id, "outcome", "interrupted")
        client.set_terminated(run.info.run_id, status="KILLED")
    return len(runs)


def latest_experiment(storage: str, space_name: str) -> str | None:
    found = sorted(p for p in glob.glob(os.path.join(storage, f"{space_name}-*"))
                   if os.path.isfile(os.path.join(p, STATE_FILE)))
    return found[-1] if found else None


def resume_state(target: str, storage: str, space_name) -> tuple[str, dict]:
    """(results folder, state) of the search to resume: ``target`` is a results folder, or a
    space whose latest search under ``storage`` is meant (``space_name()`` names it)."""
    if os.path.isdir(target):  # a results folder of one search
        exp_path = target
        if not os.path.isfile(os.path.join(exp_path, STATE_FILE)):
            raise SearchError(f"nothing to resume in {exp_path!r}: it has no {STATE_FILE}, so it is not the "
                              "results folder of a search; give the space name or a ray_results/<space>-* folder")
    else:
        exp_path = latest_experiment(storage, space_name())
    if exp_path is None:
        raise SearchError(f"nothing to resume: no search of space {target!r} under {storage}; "
                          f"start one with `make search SPACE={target}`")
    with open(os.path.join(exp_path, STATE_FILE)) as fh:
        return exp_path, json.load(fh)


def save_state(exp_path: str, state: dict) -> None:
    """Write the state file whole or not at all: a kill mid-write keeps the previous one."""
    write_text_atomically(os.path.join(exp_path, STATE_FILE), json.dumps(state, indent=2))


def start(client: MlflowClient, space: Space, opts, storage: str) -> tuple[str, dict]:
    """Create the results folder, the MLflow parent run and the state file of a new search."""
    name = f"{space.name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    exp_path = os.path.join(storage, name)
    os.makedirs(exp_path, exist_ok=True)
    exp_id = experiment_for_space(client, space.name)
    tags = {"space": space.name, "recipe": space.recipe, "search": name, "git_commit": git_commit(),
            "ray_results": exp_path,
            "question": space.question, "command": space.command,
            **{f"version.{k}": v for k, v in package_versions().items()}}
    parent = client.create_run(exp_id, run_name=name, tags={**tags, "tricktune_role": "search"})
    client.log_batch(parent.info.run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in {
        "space": space.name, "recipe": space.recipe, "metric": space.metric, "mode": space.mode,
        "num_samples": space.num_samples, "max_epochs": space.max_epochs, "grace_period": space.grace_period,
        "reduction_factor": space.reduction_factor, "scheduler": space.scheduler, "searcher": space.searcher,
        "confirm_top": space.confirm_top, "confirm_seeds": space.confirm_seeds,
        "searched": ",".join(space.searched),
        "overrides": json.dumps(opts.overrides), "smoke": opts.smoke}.items()])
    client.log_artifact(parent.info.run_id, space.path, "space")
    view = save_runs_view(client, exp_id, name, space.metric, space.mode, list(space.searched))
    state = {"space": opts.space, "recipe": opts.recipe, "overrides": opts.overrides, "samples": opts.samples,
             "smoke": opts.smoke, "confirm_top": opts.confirm_top, "confirm_seeds": opts.confirm_seeds,
             "experiment_id": exp_id, "parent_run_id": parent.info.run_id, "tags": tags, "name": name,
             "phase": "search", "view": view}
    save_state(exp_path, state)
    return exp_path, state


__all__ = ["STATE_FILE", "SearchError", "git_commit", "package_versions", "check_tracking", "close_runs_left_open",
           "latest_experiment", "resume_state", "save_state", "start"]
