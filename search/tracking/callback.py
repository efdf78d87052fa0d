"""The Ray Tune callback that mirrors a search into MLflow: one parent run per search, one
nested run per trial, with its config as params, its per-epoch metrics and its outcome.

It runs in the driver and only queues records; the ``MlflowWriter``'s thread sends them.
"""

from __future__ import annotations

import os
import time

from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from ray import tune

from search import confirm
from search.domains import is_baseline
from search.labels import trial_label
from search.tracking.writer import PENDING_FILE, MlflowWriter, _Op
from trainable.config import REPORTED_METRICS, to_dict

# Per-epoch values logged as MLflow metrics (the epoch is their step), plus the diverged flag.
_METRIC_KEYS = {*REPORTED_METRICS, "nonfinite_loss"} - {"epoch"}


def trial_outcome(result: dict | None, max_epochs: int) -> tuple[str, str]:
    """(MLflow status, outcome tag) of a trial that ended without raising."""
    if result and result.get("nonfinite_loss"):
        return "FAILED", "nonfinite_loss"
    if result and int(result.get("epoch", 0)) < max_epochs:
        # ASHA stopped it: its curve is real but short, and it ended as the search meant it to.
        # FINISHED, not KILLED: the runs table draws KILLED with a crash's red cross, and a
        # person scanning a search's runs would read its stopped trials as failures.
        return "FINISHED", "stopped_early"
    return "FINISHED", "completed"


class MlflowTracker(tune.Callback):
    """Mirror every trial of a search into MLflow, nested under the search's parent run."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, space, results_dir: str,
                 base_tags: dict, baseline_key: dict):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.space = space
        self.results_dir = results_dir
        self.base_tags = base_tags
        self.baseline_key = baseline_key
        self.writer: MlflowWriter | None = None
        self.stage, self.candidates = "search", None
        self.trial_status: dict[str, str] = {}

    def __getstate__(self):  # Ray pickles callbacks into the experiment state for restore
        state = dict(self.__dict__)
        state["writer"] = None
        return state

    def setup(self, **info):
        self.writer = MlflowWriter(self.tracking_uri, self.experiment_id,
                                   os.path.join(self.results_dir, PENDING_FILE))
        self.writer.run_ids[self.parent_run_id] = self.parent_run_id  # the parent exists already
        self.writer.start()

    def _w(self) -> MlflowWriter:
        if self.writer is None:
            self.setup()
        return self.writer

    def _ensure_started(self, trial) -> None:
        # A search resumed in a new process may hear of a running trial first through a
        # result (Ray restores it without on_trial_start): register its run then.
        if trial.trial_id not in self.trial_status:
            self.on_trial_start(0, [], trial)

    def start_stage(self, stage: str, candidates: dict | None = None) -> None:
        """Trials from now on belong to ``stage`` ("search" or "confirm"); a confirmation trial's
        config names a candidate of ``candidates`` ({label: searched values}) and a seed."""
        self.stage, self.candidates = stage, candidates

    def _describe(self, config: dict) -> tuple[dict, dict, bool]:
        """(values for space.trial_config, tags, is it the baseline) of a trial's config."""
        if self.candidates and confirm.CANDIDATE_KEY in config:
            baseline = config[confirm.CANDIDATE_KEY] == confirm.BASELINE
            tags = {"candidate": config[confirm.CANDIDATE_KEY], MLFLOW_RUN_NAME: f"confirm {trial_label(config)}"}
            return confirm.sampled(config, self.candidates), tags, baseline
        baseline = is_baseline(config, self.baseline_key)
        return config, {MLFLOW_RUN_NAME: trial_label(config, baseline)}, baseline

    def on_trial_start(self, iteration, trials, trial, **info):
        key = trial.trial_id
        sampled, stage_tags, baseline = self._describe(trial.config)
        cfg = self.space.trial_config(sampled)
        tags = {**self.base_tags, MLFLOW_PARENT_RUN_ID: self.parent_run_id, "stage": self.stage,
                "trial_id": trial.trial_id, "is_baseline": str(baseline).lower(),
                "searched": ",".join(sorted(trial.config)), **stage_tags}
        if "variant" in sampled:
            tags["variant"] = sampled["variant"]
        w = self._w()
        if key in self.trial_status:  # restarted after a failure: same run, back to RUNNING
            w.put(_Op("reopen", key))
        else:
            w.put(_Op("create", key, {"tags": tags}))
            w.put(_Op("params", key, {"params": {**to_dict(cfg), **({"variant": sampled["variant"]}
                                                                   if "variant" in sampled else {})}}))
            w.put(_Op("reopen", key))
        self.trial_status[key] = "RUNNING"

    def on_trial_restore(self, iteration, trials, trial, **info):
        self._ensure_started(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._ensure_started(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        # A replayed epoch (a retried or resumed trial) is dropped by the writer: each once.
        ts = int(time.time() * 1000)
        metrics = [(k, v, ts, step) for k, v in result.items()
                   if k in _METRIC_KEYS and isinstance(v, (int, float)) and v == v]
        self._w().put(_Op("metrics", trial.trial_id, {"metrics": metrics}))
        if result.get("failure"):
            self._w().put(_Op("tags", trial.trial_id, {"tags": {"failure": result["failure"],
                                                                "failed_epoch": result.get("epoch")}}))

    def on_trial_complete(self, iteration, trials, trial, **info):
        status, outcome = trial_outcome(trial.last_result, self.space.max_epochs)
        self._end(trial, status, outcome)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._ensure_started(trial)
        self._w().put(_Op("tags", trial.trial_id, {"tags": {"retries": trial.num_failures,
                                                            "last_error": _error_text(trial)}}))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._w().put(_Op("tags", trial.trial_id, {"tags": {"error": _error_text(trial)}}))
        self._end(trial, "FAILED", "error")

    def _end(self, trial, status: str, outcome: str) -> None:
        self._ensure_started(trial)
        w = self._w()
        w.put(_Op("tags", trial.trial_id, {"tags": {"outcome": outcome,
                                                    "epochs_run": (trial.last_result or {}).get("epoch", 0)}}))
        w.put(_Op("status", trial.trial_id, {"status": status}))
        self.trial_status[trial.trial_id] = status

    def log(self, run_key: str, *, metrics: dict | None = None, tags: dict | None = None,
            artifact: tuple[str, str] | None = None, status: str | None = None) -> None:
        """Queue records for a trial's run (by trial id) or the parent run (by its run id)."""
        w = self._w()
        if metrics:
            ts = int(time.time() * 1000)
            w.put(_Op("metrics", run_key, {"metrics": [(k, float(v), ts, 0) for k, v in metrics.items()]}))
        if tags:
            w.put(_Op("tags", run_key, {"tags": tags}))
        if artifact:
            w.put(_Op("artifact", run_key, {"path": artifact[0], "dest": artifact[1]}))
        if status:
            w.put(_Op("status", run_key, {"status": status}))
        if run_key in self.trial_status and status:
            self.trial_status[run_key] = status

    # No on_experiment_end: run_search queues the summary and the closing records after
    # Ray's last event, then calls close() once, so an outage is waited out only once.

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _error_text(trial) -> str:
    path = getattr(trial, "error_file", None) or getattr(getattr(trial, "run_metadata", None), "error_filename",
                                                           None)
    if path and os.path.exists(path):
        with open(path) as fh:
            lines = [line for line in fh.read().strip().splitlines() if line.strip()]
        return lines[-1][:1000] if lines else "error"
    return "error (see the trial's error.txt under the results folder)"
