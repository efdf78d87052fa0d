"""MLflow records of a search: one parent run per search, one nested run per trial.

A Ray Tune ``Callback`` in the driver turns trial events into MLflow calls. The
calls go through one background thread with a queue, so neither training nor the
ASHA decision ever waits on the tracking server; per-epoch metrics are batched
(one ``log_batch`` per run per flush). If the server is unreachable the calls stay
queued and are retried; whatever is still unsent at the end is written to
``mlflow_pending.jsonl`` in the search's results folder, and
``python -m search.tracking import FILE`` sends it later.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from urllib.parse import quote

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from ray import tune

from search import confirm
from search.domains import is_baseline
from search.labels import trial_label
from trainable.config import REPORTED_METRICS, to_dict

# MLflow caps one log_batch at 1000 metrics / 100 params.
_MAX_METRICS, _MAX_PARAMS = 1000, 100
PENDING_FILE = "mlflow_pending.jsonl"


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
    """A saved view of one search's runs: flat (no collapsed parent), best first, with the metric,
    Top-1/Top-5, seconds per epoch, the searched values and the outcome as columns. Returns its key."""
    metrics = dict.fromkeys([metric, "val_top1", "val_top5", "epoch_seconds"])
    columns = ([f"metrics.`{m}`" for m in metrics] + [f"params.`{p}`" for p in searched]
               + ["tags.`outcome`", "tags.`trial_id`"])
    state = {"searchFilter": f"tags.search = '{search}'",
             # Sorting by a metric lists nested runs flat; the parent (no such metric) comes last.
             "orderByKey": f"metrics.`{metric}`", "orderByAsc": mode == "min",
             "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [],
             "modelVersionFilter": "All Runs", "selectedColumns": columns,
             # The run name says what the trial is: wide enough for it (the UI's default cuts at ~18 chars).
             "columnOrder": [RUN_NAME_COLUMN, "runDateAndNestInfo", "duration", *columns],
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


@dataclass
class _Op:
    kind: str  # "create" | "metrics" | "params" | "tags" | "status"
    run_key: str  # parent or trial id; resolved to an MLflow run id by the writer
    payload: dict = field(default_factory=dict)


class MlflowWriter:
    """Owns the MlflowClient; applies queued operations in order, batching metrics."""

    def __init__(self, tracking_uri: str, experiment_id: str, pending_path: str | None):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.pending_path = pending_path
        self.run_ids: dict[str, str] = {}
        # Per run, the (metric, step) pairs it holds: a value is logged once per epoch (below).
        self.logged: dict[str, set[tuple[str, int]]] = {}
        self._queue: queue.Queue[_Op | None] = queue.Queue()
        self._backlog: list[_Op] = []
        self._thread: threading.Thread | None = None
        self._client = MlflowClient(tracking_uri)
        self.last_error: str | None = None
        self._close_timeout = 30.0

    # -- producer side (driver thread) ------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="mlflow-writer", daemon=True)
            self._thread.start()

    def put(self, op: _Op) -> None:
        self._queue.put(op)

    def close(self, timeout: float = 30.0) -> None:
        """Send what is queued (retrying for up to ``timeout`` s), spool the rest to disk.

        The writer thread does the final flush itself, so two threads never apply the same
        backlog; the sentinel wakes it at once (no waiting for its 1-s tick)."""
        self._close_timeout = timeout
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout + 30)  # + one slow request in flight (an artifact upload)
            if self._thread.is_alive():
                print("[tricktune] the MLflow writer did not finish in time; records still queued may be "
                      f"missing: check the runs or {self.pending_path or PENDING_FILE}", file=sys.stderr)
            self._thread = None
            return
        self._finish()

    def _finish(self) -> None:
        self._drain_queue()
        self._flush(deadline=time.monotonic() + (self._close_timeout if self._backlog else 0))
        if self._backlog:
            self._spool()

    # -- consumer side ------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            try:
                op = self._queue.get(timeout=1.0)
            except queue.Empty:
                op = _Op("tick", "")  # wake up to retry a backlog left by an outage
            if op is not None and op.kind != "tick":
                self._backlog.append(op)
            if op is None or self._drain_queue():  # close(): send everything, then stop
                self._finish()
                return
            self._flush(deadline=0)

    def _drain_queue(self) -> bool:
        """Move queued ops to the backlog; True when close()'s sentinel was among them."""
        closing = False
        while True:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                return closing
            if op is None:
                closing = True
            else:
                self._backlog.append(op)

    def _flush(self, deadline: float) -> None:
        """Apply the backlog in order; on a connection error keep it (retried next tick)."""
        while self._backlog:
            try:
                self._apply_prefix()
                self.last_error = None
            except MlflowException as err:
                if err.get_http_status_code() < 500:
                    # The server answered and refused this record (a bad value, say): retrying
                    # cannot help, and it must not hold back every record queued behind it.
                    print(f"[tricktune] MLflow refused a {self._backlog[0].kind} record: {str(err)[:200]}",
                          file=sys.stderr)
                    self._backlog.pop(0)
                    continue
                if not self._wait(err, deadline):
                    return
            except Exception as err:  # noqa: BLE001 - any tracking failure must not stop the search
                if not self._wait(err, deadline):
                    return

    def _wait(self, err: Exception, deadline: float) -> bool:
        """Note an outage once; sleep before the next try unless the deadline has passed."""
        if self.last_error is None:
            print(f"[tricktune] MLflow unreachable ({type(err).__name__}: {str(err)[:120]}); "
                  "results are kept and will be sent when it answers", file=sys.stderr)
        self.last_error = str(err)
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)
        return True

    def _apply_prefix(self) -> None:
        op = self._backlog[0]
        if op.kind == "metrics":
            # Batch every consecutive metrics op of the same run into one request.
            batch, n = [], 0
            while n < len(self._backlog) and self._backlog[n].kind == "metrics" \
                    and self._backlog[n].run_key == op.run_key and len(batch) < _MAX_METRICS - 20:
                batch.extend(self._backlog[n].payload["metrics"])
                n += 1
            self._log_new_metrics(op.run_key, batch)
            del self._backlog[:n]
            return
        if op.kind == "create":
            self._create(op)
        elif op.kind == "params":
            items = list(op.payload["params"].items())
            for i in range(0, len(items), _MAX_PARAMS):
                self._client.log_batch(self._run_id(op.run_key),
                                       params=[Param(k, str(v)[:6000]) for k, v in items[i:i + _MAX_PARAMS]])
        elif op.kind == "tags":
            self._client.log_batch(self._run_id(op.run_key),
                                   tags=[RunTag(k, str(v)[:5000]) for k, v in op.payload["tags"].items()])
        elif op.kind == "status":
            self._client.set_terminated(self._run_id(op.run_key), status=op.payload["status"])
        elif op.kind == "reopen":
            self._client.update_run(self._run_id(op.run_key), status="RUNNING")
        elif op.kind == "artifact":
            self._client.log_artifacts(self._run_id(op.run_key), op.payload["path"], op.payload.get("dest"))
        self._backlog.pop(0)

    def _log_new_metrics(self, run_key: str, batch: list) -> None:
        """Log each (metric, epoch) a run does not hold yet. A retried or resumed trial replays
        the epochs after the last checkpoint Ray had registered (a worker that died between
        saving a checkpoint and Ray recording it, a search stopped mid-epoch and resumed); the
        replay is the same training (every epoch is seeded by (seed, epoch)), so keep the first."""
        run_id, held = self._run_id(run_key), self.logged.setdefault(run_key, set())
        fresh = {}
        for k, v, ts, step in batch:
            if (k, step) not in held:
                fresh.setdefault((k, step), Metric(k, float(v), ts, step))
        if fresh:
            self._client.log_batch(run_id, metrics=list(fresh.values()))
            held.update(fresh)

    def _held_metrics(self, run) -> set[tuple[str, int]]:
        """The (metric, step) pairs an existing run holds (a resumed search writes into it again)."""
        return {(k, m.step) for k in run.data.metrics
                for m in self._client.get_metric_history(run.info.run_id, k)}

    def _create(self, op: _Op) -> None:
        if op.run_key in self.run_ids:
            return
        existing = op.payload.get("run_id")
        if existing:
            self.run_ids[op.run_key] = existing
            return
        tags = dict(op.payload.get("tags", {}))
        found = self._client.search_runs(
            [self.experiment_id], filter_string=f"tags.tricktune_run_key = '{op.run_key}'", max_results=1)
        if found:  # a resumed search: keep writing into the trial's run, never a second one
            self.logged[op.run_key] = self._held_metrics(found[0])
            self.run_ids[op.run_key] = found[0].info.run_id
            return
        tags["tricktune_run_key"] = op.run_key
        run = self._client.create_run(self.experiment_id, tags=tags, run_name=tags.get(MLFLOW_RUN_NAME))
        self.run_ids[op.run_key] = run.info.run_id

    def _run_id(self, run_key: str) -> str:
        if run_key not in self.run_ids:
            self._create(_Op("create", run_key, {"tags": {MLFLOW_RUN_NAME: run_key}}))
        return self.run_ids[run_key]

    def _spool(self) -> None:
        path = self.pending_path or PENDING_FILE
        with open(path, "a") as fh:
            for op in self._backlog:
                fh.write(json.dumps({"kind": op.kind, "run_key": op.run_key, "payload": op.payload,
                                     "experiment_id": self.experiment_id, "run_ids": self.run_ids,
                                     "tracking_uri": self.tracking_uri}) + "\n")
        print(f"[tricktune] MLflow stayed unreachable: {len(self._backlog)} records written to {path}; "
              f"send them later with: python -m search.tracking import {path}", file=sys.stderr)
        self._backlog.clear()


def trial_outcome(result: dict | None, max_epochs: int) -> tuple[str, str]:
    """(MLflow status, outcome tag) of a trial that ended without raising."""
    if result and result.get("nonfinite_loss"):
        return "FAILED", "nonfinite_loss"
    if result and int(result.get("epoch", 0)) < max_epochs:
        return "KILLED", "stopped_early"  # ASHA stopped it: its curve is real but short
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


# Per-epoch values logged as MLflow metrics (the epoch is their step), plus the diverged flag.
_METRIC_KEYS = {*REPORTED_METRICS, "nonfinite_loss"} - {"epoch"}


def _error_text(trial) -> str:
    path = getattr(trial, "error_file", None) or getattr(getattr(trial, "run_metadata", None), "error_filename",
                                                           None)
    if path and os.path.exists(path):
        with open(path) as fh:
            lines = [line for line in fh.read().strip().splitlines() if line.strip()]
        return lines[-1][:1000] if lines else "error"
    return "error (see the trial's error.txt under the results folder)"


def import_pending(path: str, tracking_uri: str | None = None) -> int:
    """Send records spooled while MLflow was unreachable; returns how many were sent."""
    with open(path) as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    if not records:
        return 0
    # The store the search wrote to, unless told otherwise (not ./mlflow.db of whatever folder this runs in).
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or records[0].get("tracking_uri") \
        or default_tracking_uri()
    writer = MlflowWriter(tracking_uri, records[0]["experiment_id"], pending_path=path + ".retry")
    for rec in records:
        writer.run_ids.update(rec["run_ids"])
        writer._backlog.append(_Op(rec["kind"], rec["run_key"], rec["payload"]))
    writer._flush(deadline=time.monotonic() + 30)
    sent = len(records) - len(writer._backlog)
    if writer._backlog:
        writer._spool()
    else:
        os.replace(path, path + ".sent")
    return sent
