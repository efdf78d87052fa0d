"""Build and run one search: Tuner(OptunaSearch TPE + ASHA) with every trial in MLflow.

Layout of one search on disk (``storage`` defaults to ``./ray_results``)::

    ray_results/<space>-<timestamp>/      Ray's experiment (trials, checkpoints, searcher state)
        tricktune.json                    how to rebuild this search on --resume + its MLflow ids
        mlflow_pending.jsonl              only if MLflow was unreachable at the end
"""

from __future__ import annotations

import datetime as _dt
import glob
import json
import os
import platform
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass

import mlflow
from mlflow.tracking import MlflowClient
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from search.domains import baseline_key, baseline_point, is_baseline, param_space
from search.ray_private import asha_time_attr_and_max_t, run_config_callbacks, trial_states
from search.tracking import MlflowTracker, experiment_for_space, experiment_name, runs_url, save_runs_view
from spaces import PROJECT_ROOT, Space, load_space

STATE_FILE = "tricktune.json"

# --smoke: the whole path (Ray, Optuna, ASHA, MLflow) on a sliver of the data.
SMOKE_FIXED = {"train_subset": 512, "val_subset": 256, "batch_size": 64}
SMOKE_BUDGET = {"num_samples": 3, "max_epochs": 2, "grace_period": 1}


class SearchError(Exception):
    """A problem found before any training starts; one line with the fix."""


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def default_storage() -> str:
    return os.environ.get("TRICKTUNE_STORAGE") or str(PROJECT_ROOT / "ray_results")


@dataclass
class SearchOptions:
    space: str
    overrides: dict
    samples: int | None = None
    smoke: bool = False
    resume: bool = False
    storage: str | None = None
    tracking_uri: str | None = None
    dashboard: bool = False
    max_failures: int = 2
    verbose: int = 1  # 0 nothing (make bench), 1 tricktune's console, 2 also Ray's boxes and worker INFO logs


def prepare_space(opts: SearchOptions) -> Space:
    space = load_space(opts.space)
    fixed = dict(opts.overrides)
    budget = {}
    if opts.smoke:
        fixed = {**SMOKE_FIXED, **fixed}
        budget = {k: min(v, getattr(space, k)) for k, v in SMOKE_BUDGET.items()}
        budget["grace_period"] = min(budget["grace_period"], budget["max_epochs"])
    if opts.samples is not None:
        budget["num_samples"] = opts.samples
    if fixed or budget:
        space = space.override(fixed=fixed, **budget)
    return space


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
    except Exception as err:  # noqa: BLE001 - any failure here means "cannot record results"
        raise SearchError(f"MLflow tracking store {tracking_uri!r} is unreachable ({type(err).__name__}); "
                          "start the server or set MLFLOW_TRACKING_URI=sqlite:///mlflow.db") from None
    return client


def latest_experiment(storage: str, space_name: str) -> str | None:
    found = sorted(p for p in glob.glob(os.path.join(storage, f"{space_name}-*"))
                   if os.path.isfile(os.path.join(p, STATE_FILE)))
    return found[-1] if found else None


def _searcher(space: Space, base_point: dict):
    if space.searcher == "grid":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # Variants already contain the baseline; otherwise run it first explicitly.
        points = [] if space.variants else [base_point]
        return BasicVariantGenerator(points_to_evaluate=points or None, random_state=space.seed)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    # TPE, seeded. constant_liar: a running trial counts as a bad result, so parallel
    # trials spread out instead of all sampling the same promising point; multivariate
    # models interactions between tricks (e.g. mixup_alpha x lr).
    sampler = optuna.samplers.TPESampler(seed=space.seed, multivariate=True, constant_liar=True,
                                         n_startup_trials=max(2, min(5, space.num_samples // 3)))
    return OptunaSearch(sampler=sampler, points_to_evaluate=[base_point])


def _scheduler(space: Space):
    from ray.tune.schedulers import FIFOScheduler

    if space.scheduler == "none":
        return FIFOScheduler()
    return KeepBaselineASHA(baseline=baseline_key(space), time_attr="training_iteration", max_t=space.max_epochs,
                            grace_period=space.grace_period, reduction_factor=space.reduction_factor)


class KeepBaselineASHA(ASHAScheduler):
    """ASHAScheduler that never stops the baseline trial.

    Every delta is measured against the baseline, so it must reach max_epochs: a
    baseline ASHA cut after one epoch (seen: lr 0.1 without warmup scores 20 % after
    epoch 1, 77 % after 6) would compare a 6-epoch trial with a 1-epoch reference.
    Its results still count in ASHA's rungs.
    """

    def __init__(self, baseline: dict, **kwargs):
        super().__init__(**kwargs)
        self.baseline = baseline

    def on_trial_result(self, tune_controller, trial, result):
        action = super().on_trial_result(tune_controller, trial, result)
        time_attr, max_t = asha_time_attr_and_max_t(self)
        if action == TrialScheduler.STOP and is_baseline(trial.config, self.baseline) \
                and result.get(time_attr, 0) < max_t:
            return TrialScheduler.CONTINUE
        return action


def _trainable(space: Space):
    from ray import tune

    from search.trial import run_trial

    threads = max(1, int(space.cpus_per_trial))
    fn = tune.with_parameters(run_trial, space=space, threads=threads)
    return tune.with_resources(fn, {"cpu": space.cpus_per_trial, "gpu": space.gpus_per_trial})


def init_ray(dashboard: bool, verbose: int = 1) -> str | None:
    """Start (or join) Ray; returns the dashboard's address when one was started."""
    import ray

    if ray.is_initialized():
        return None
    kwargs = dict(include_dashboard=dashboard, log_to_driver=True, configure_logging=True, logging_level="WARNING")
    if verbose < 2:
        # Worker output still reaches this terminal (log_to_driver), so a trial's traceback or
        # warning is seen; only Ray Train's INFO lines ("Checkpoint successfully created at: ...",
        # one per epoch per trial) stay in the workers' log files. ray.init(logging_config=...)
        # would do it for the whole job, but also reformats the driver's own warnings.
        kwargs["runtime_env"] = {"worker_process_setup_hook": "search.console.quiet_worker"}
    if dashboard:
        # 127.0.0.1 only: the dashboard and its job API run code for whoever can reach them.
        kwargs.update(dashboard_host=os.environ.get("TRICKTUNE_DASHBOARD_HOST", "127.0.0.1"),
                      dashboard_port=int(os.environ.get("TRICKTUNE_DASHBOARD_PORT", "8265")))
    # ray.init replaces the caller's SIGTERM handler with its own sys.exit (and Ray's C++ core
    # logs and dies on SIGTERM): a SIGTERM then killed the search with no summary and runs left
    # open. Put back the handler the command line set (SIGTERM = Ctrl-C, a graceful stop).
    sigterm = signal.getsignal(signal.SIGTERM)
    address = os.environ.get("RAY_ADDRESS")
    if address:
        context = ray.init(address=address, **{k: v for k, v in kwargs.items() if not k.startswith("dashboard")
                                                and k != "include_dashboard"})
    else:
        context = ray.init(**kwargs)
    if callable(sigterm) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, sigterm)
    return context.dashboard_url if dashboard and not address else None


def run_search(opts: SearchOptions):
    """Run (or resume) a search; returns a summary dict. Everything is validated first."""
    storage = os.path.abspath(opts.storage or default_storage()) if "://" not in (opts.storage or "") \
        else opts.storage
    tracking_uri = opts.tracking_uri or default_tracking_uri()

    state = None
    if opts.resume:
        if os.path.isdir(opts.space):  # a results folder of one search
            exp_path = opts.space
            if not os.path.isfile(os.path.join(exp_path, STATE_FILE)):
                raise SearchError(f"nothing to resume in {exp_path!r}: it has no {STATE_FILE}, so it is not the "
                                  "results folder of a search; give the space name or a ray_results/<space>-* "
                                  "folder")
        else:
            exp_path = latest_experiment(storage, load_space(opts.space).name)
        if exp_path is None:
            raise SearchError(f"nothing to resume: no search of space {opts.space!r} under {storage}; "
                              f"start one with `make search SPACE={opts.space}`")
        with open(os.path.join(exp_path, STATE_FILE)) as fh:
            state = json.load(fh)
        opts = SearchOptions(**{**opts.__dict__, "space": state["space"], "overrides": state["overrides"],
                                "samples": state["samples"], "smoke": state["smoke"]})
    from trainable.loop import preflight

    space = prepare_space(opts)  # validates the whole space file before Ray starts
    base_point = baseline_point(space)
    preflight(space.trial_config(base_point))  # data, model, teacher: found bad before anything is recorded
    client = check_tracking(tracking_uri)
    if state is None:
        name = f"{space.name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        exp_path = os.path.join(storage, name)
        os.makedirs(exp_path, exist_ok=True)
        exp_id = experiment_for_space(client, space.name)
        tags = {"space": space.name, "search": name, "git_commit": git_commit(), "ray_results": exp_path,
                "question": space.question, "command": space.command,
                **{f"version.{k}": v for k, v in package_versions().items()}}
        parent = client.create_run(exp_id, run_name=name, tags={**tags, "tricktune_role": "search"})
        client.log_batch(parent.info.run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in {
            "space": space.name, "metric": space.metric, "mode": space.mode, "num_samples": space.num_samples,
            "max_epochs": space.max_epochs, "grace_period": space.grace_period,
            "reduction_factor": space.reduction_factor, "scheduler": space.scheduler, "searcher": space.searcher,
            "searched": ",".join(space.params) + (",variant" if space.variants else ""),
            "overrides": json.dumps(opts.overrides), "smoke": opts.smoke}.items()])
        client.log_artifact(parent.info.run_id, space.path, "space")
        view = save_runs_view(client, exp_id, name, space.metric, space.mode,
                              list(space.params) + (["variant"] if space.variants else []))
        state = {"space": opts.space, "overrides": opts.overrides, "samples": opts.samples, "smoke": opts.smoke,
                 "experiment_id": exp_id, "parent_run_id": parent.info.run_id, "tags": tags, "name": name,
                 "view": view}
        with open(os.path.join(exp_path, STATE_FILE), "w") as fh:
            json.dump(state, fh, indent=2)
    else:
        client.update_run(state["parent_run_id"], status="RUNNING")

    # Two checkpoints kept per trial (best + latest) makes Ray snapshot its state often
    # on short epochs; that is intended here, so don't warn about it.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if opts.verbose < 2:
        # Tune's new console engine prints a box per experiment and a results path even at
        # verbose=0; the legacy engine prints nothing at 0. tricktune's console says it all.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    dashboard_url = init_ray(opts.dashboard, opts.verbose)
    from ray import tune

    from search.console import SearchConsole, dashboard_sign_in, for_search

    shared = {k: v for k, v in state["tags"].items() if k in ("space", "search", "git_commit")}  # parent's = trials'
    tracker = MlflowTracker(tracking_uri, state["experiment_id"], state["parent_run_id"], space, exp_path,
                            base_tags=shared, baseline_key=baseline_key(space))
    console = for_search(space, baseline_key(space), space.num_samples * _grid_size(space), opts.verbose)
    if dashboard_url and opts.verbose:
        console.note("\n".join(dashboard_sign_in(dashboard_url, tty=sys.stdout.isatty())))
    trainable = _trainable(space)
    if opts.resume and tune.Tuner.can_restore(exp_path):
        tuner = tune.Tuner.restore(exp_path, trainable, resume_unfinished=True, resume_errored=True,
                                   param_space=param_space(space))
        # The restored run config carries a pickled tracker; point it at this process's writer.
        callbacks = run_config_callbacks(tuner)
        for i, cb in enumerate(callbacks):
            if isinstance(cb, MlflowTracker):
                callbacks[i] = tracker
        callbacks[:] = [cb for cb in callbacks if not isinstance(cb, SearchConsole)] + [console]
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(space),
            tune_config=tune.TuneConfig(
                metric=space.metric, mode=space.mode,  # the one place metric/mode are set
                search_alg=_searcher(space, base_point), scheduler=_scheduler(space),
                num_samples=space.num_samples, max_concurrent_trials=space.max_concurrent),
            run_config=tune.RunConfig(
                name=os.path.basename(exp_path), storage_path=os.path.dirname(exp_path),
                callbacks=[tracker, console], verbose=1 if opts.verbose >= 2 else 0,
                failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=space.metric,
                                                        checkpoint_score_order=space.mode)),
        )
    interrupted = True
    try:
        results = tuner.fit()
        interrupted = _unfinished(results, space, tracker)
        summary = summarize(results, space, tracker, state, exp_path, tracking_uri)
    finally:
        # The closing records go through the tracker's queue like every trial record: if
        # MLflow is down at the end they are spooled to mlflow_pending.jsonl with the rest
        # instead of failing the finished search with a traceback.
        _close_open_runs(tracker, state, interrupted)
        tracker.close()
    summary["interrupted"] = interrupted
    summary["resume_command"] = f"make search SPACE={opts.space} RESUME=1"
    summary["runs_url"] = runs_url(tracking_uri, state["experiment_id"], state.get("view"))
    return summary


def _unfinished(results, space, tracker: MlflowTracker) -> bool:
    """True when the budget is not spent: fewer trials than planned, or some not ended."""
    expected = space.num_samples * _grid_size(space)
    trials = trial_states(results)
    if len(trials) < expected:
        return True
    for t in trials:
        if t.status == "ERROR":
            continue
        if t.status != "TERMINATED":
            return True
        # On Ctrl-C, Ray's clean-up marks every live trial TERMINATED too (one whose worker
        # was still starting included), without on_trial_complete. Those are the trials this
        # process saw start but never saw end, and those that never reported an epoch.
        if tracker.trial_status.get(t.trial_id) == "RUNNING" or not (t.last_result or {}).get("epoch"):
            return True
    return False


def _grid_size(space) -> int:
    size = 1
    for p in space.params.values():
        if p.type == "grid":
            size *= len(p.values)
    return size * (len(space.variants) if space.variants else 1)


def _close_open_runs(tracker: MlflowTracker, state: dict, interrupted: bool) -> None:
    """No run is left RUNNING: trial runs still open were interrupted (resume reopens them)."""
    for trial_id, status in list(tracker.trial_status.items()):
        if status == "RUNNING":
            tracker.log(trial_id, tags={"outcome": "interrupted"}, status="KILLED")
    tracker.log(state["parent_run_id"], tags={"state": "interrupted" if interrupted else "finished"},
                status="KILLED" if interrupted else "FINISHED")


def summarize(results, space: Space, tracker: MlflowTracker, state: dict, exp_path: str, tracking_uri: str) -> dict:
    """Best trial vs the baseline; logged to the parent run and returned for printing."""
    sign = 1 if space.mode == "max" else -1
    rows = []
    for r in results:
        if r.metrics and space.metric in r.metrics and not r.metrics.get("nonfinite_loss"):
            rows.append(r)
    summary = {"space": space.name, "metric": space.metric, "results": exp_path, "tracking_uri": tracking_uri,
               "experiment": experiment_name(space.name), "parent_run_id": state["parent_run_id"],
               "trials": len(results), "errors": sum(r.error is not None for r in results)}
    if not rows:
        return summary
    finished = [r for r in rows if int(r.metrics.get("epoch", 0)) >= space.max_epochs] or rows
    best = max(finished, key=lambda r: sign * r.metrics[space.metric])
    baselines = [r for r in rows if is_baseline(r.config, baseline_key(space))]
    summary.update(best_trial=best.metrics.get("trial_id"), best_config={k: best.config.get(k) for k in
                                                                          best.config},
                   best_value=best.metrics[space.metric], best_val_top5=best.metrics.get("val_top5"))
    metrics = {"best_" + space.metric: best.metrics[space.metric], "trials": len(results)}
    if baselines:
        base_val = sum(r.metrics[space.metric] for r in baselines) / len(baselines)
        summary.update(baseline_value=base_val, delta=best.metrics[space.metric] - base_val)
        metrics.update({"baseline_" + space.metric: base_val, "delta_vs_baseline": summary["delta"]})
    checkpoint, path = best.checkpoint, None
    if checkpoint is not None:
        # A local checkpoint stays where it is until the writer (or a later import) sends it;
        # one in remote storage is downloaded to a folder that is kept for the same reason.
        try:
            path = checkpoint.path if checkpoint.filesystem.type_name == "local" else checkpoint.to_directory()
        except Exception as err:  # noqa: BLE001 - the summary still prints and is still logged
            print(f"[tricktune] the best checkpoint is not logged to MLflow: {err}", file=sys.stderr)
    tracker.log(state["parent_run_id"], metrics=metrics,
                tags={"best_trial": summary["best_trial"],
                      "best_config": json.dumps(summary["best_config"], default=str)},
                artifact=(path, "best_checkpoint") if path else None)
    return summary
