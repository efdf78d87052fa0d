"""The Ray Tune side of a search: starting Ray, and the Tuner of each phase.

Phase 1 (search): Optuna's TPE proposes (or Ray's variant generator walks a grid), ASHA
stops poor trials early but never the baseline. Phase 2 (confirm, search/confirm.py): a
grid of candidates x seeds, every trial to the end. Both run ``search.trial.run_trial``.
"""

from __future__ import annotations

import json
import os
import signal
import threading

from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from search.domains import baseline_apart, baseline_key, is_baseline
from search.ray_private import asha_rungs, asha_time_attr_and_max_t, run_config_callbacks, set_asha_rungs
from spaces import Space
from trainable.config import METRICS
from trainable.files import write_text_atomically


def init_ray(dashboard: bool, verbose: int = 1) -> str | None:
    """Start (or join) Ray; returns the dashboard's address when one was started."""
    import ray

    from search.console.quiet import quiet_libraries

    quiet_libraries(verbose)  # before Ray and Tune read their settings from the environment
    if ray.is_initialized():
        return None
    kwargs = dict(include_dashboard=dashboard, log_to_driver=True, configure_logging=True, logging_level="WARNING")
    if verbose < 2:
        # Worker output still reaches this terminal (log_to_driver), so a trial's traceback or
        # warning is seen; only Ray Train's INFO lines ("Checkpoint successfully created at: ...",
        # one per epoch per trial) stay in the workers' log files. ray.init(logging_config=...)
        # would do it for the whole job, but also reformats the driver's own warnings.
        kwargs["runtime_env"] = {"worker_process_setup_hook": "search.console.quiet.quiet_worker"}
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


def searcher(space: Space, base_point: dict):
    """TPE with the baseline as its first trial, or Ray's variant generator walking the grid:
    the baseline is then a point of the grid, or evaluated first on its own (``baseline_apart``)."""
    if space.searcher == "grid":
        points = [base_point] if baseline_apart(space) else None
        return BasicVariantGenerator(points_to_evaluate=points, random_state=space.seed)
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(sampler=tpe_sampler(seed=space.seed, num_samples=space.num_samples),
                        points_to_evaluate=[base_point], metric=space.metric, mode=space.mode)


def search_samples(space: Space) -> int:
    """The Tuner's num_samples for the search phase, so that it runs ``search_trials(space)``.

    Ray's variant generator counts a point to evaluate as one of num_samples, and a sample
    of a grid space is a whole walk of the grid: the baseline run apart would cost a walk,
    so it gets one sample more. TPE's baseline is one of its num_samples trials."""
    return space.num_samples + (1 if baseline_apart(space) else 0)


def tpe_sampler(seed: int, num_samples: int):
    """Optuna's TPE as every tricktune search (and make bench) runs it.

    Seeded. constant_liar: a running trial counts as a bad result, so parallel trials spread
    out instead of all sampling the same promising point; multivariate models interactions
    between tricks (e.g. mixup_alpha x lr)."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                      n_startup_trials=max(2, min(5, num_samples // 3)))


def scheduler(space: Space, results_dir: str | None = None):
    """ASHA on the space's rung metric (the recipe's measured choice, e.g. val_loss), or none.

    The searcher and the winner keep the space's own metric; only the early-stop decision
    ranks on the rung metric, so metric/mode go to each of them, not to TuneConfig. With
    ``results_dir`` ASHA keeps its rungs there (``asha_rungs.json``) for a resumed search."""
    from ray.tune.schedulers import FIFOScheduler

    if space.scheduler == "none":
        return FIFOScheduler()
    rung = space.rung_metric or space.metric
    return KeepBaselineASHA(baseline=baseline_key(space), time_attr="training_iteration", max_t=space.max_epochs,
                            grace_period=space.grace_period, reduction_factor=space.reduction_factor,
                            metric=rung, mode=METRICS[rung],
                            rungs_file=os.path.join(results_dir, RUNGS_FILE) if results_dir else None)


RUNGS_FILE = "asha_rungs.json"


class KeepBaselineASHA(ASHAScheduler):
    """ASHAScheduler that never stops the baseline trial, and whose rungs survive a resume.

    Every delta is measured against the baseline, so it must reach max_epochs: a
    baseline ASHA cut after one epoch (seen: lr 0.1 without warmup scores 20 % after
    epoch 1, 77 % after 6) would compare a 6-epoch trial with a 1-epoch reference.
    Its results still count in ASHA's rungs.

    ``Tuner.restore`` gives back the scheduler as it was created, with empty rungs: a
    resumed search then judged its next trials against nothing and let weak ones run to
    the end (measured: a trial the uninterrupted search cut at its first rung ran to the
    end). So every recorded rung value is also written to ``rungs_file``, and read back
    when the restored scheduler sees its first trial.
    """

    def __init__(self, baseline: dict, rungs_file: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.baseline = baseline
        self.rungs_file = rungs_file
        self._rungs_read = False

    def on_trial_add(self, tune_controller, trial):
        if not self._rungs_read:
            self._rungs_read = True
            if self.rungs_file and os.path.exists(self.rungs_file):
                with open(self.rungs_file) as fh:
                    set_asha_rungs(self, json.load(fh))
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        action = super().on_trial_result(tune_controller, trial, result)
        self._write_rungs()
        time_attr, max_t = asha_time_attr_and_max_t(self)
        if action == TrialScheduler.STOP and is_baseline(trial.config, self.baseline) \
                and result.get(time_attr, 0) < max_t:
            return TrialScheduler.CONTINUE
        return action

    def on_trial_complete(self, tune_controller, trial, result):
        super().on_trial_complete(tune_controller, trial, result)
        self._write_rungs()

    def _write_rungs(self) -> None:
        if not self.rungs_file:
            return
        write_text_atomically(self.rungs_file, json.dumps(asha_rungs(self)))  # a kill keeps the previous rungs


def trainable(space: Space, candidates: dict | None = None):
    """``run_trial`` with its resources; ``candidates`` ({label: values}) for confirmation trials."""
    from ray import tune

    from search.trial import run_trial

    threads = max(1, int(space.cpus_per_trial))
    fn = tune.with_parameters(run_trial, space=space, threads=threads, candidates=candidates)
    return tune.with_resources(fn, {"cpu": space.cpus_per_trial, "gpu": space.gpus_per_trial})


def restore(path: str, fn, param_space: dict, callbacks: list):
    """A Tuner restored from ``path``; the callbacks it unpickles (the MLflow tracker, the
    console) are replaced by this process's ``callbacks`` of the same types."""
    from ray import tune

    tuner = tune.Tuner.restore(path, fn, resume_unfinished=True, resume_errored=True, param_space=param_space)
    restored = run_config_callbacks(tuner)
    restored[:] = [cb for cb in restored if not any(type(cb) is type(ours) for ours in callbacks)] + list(callbacks)
    return tuner


def new_tuner(path: str, fn, param_space: dict, space: Space, search_alg, trial_scheduler, num_samples: int,
              callbacks: list, verbose: int, max_failures: int, keep_best: bool = True):
    """A Tuner writing its experiment to ``path`` (a folder: storage/name). ``keep_best``: keep
    each trial's best checkpoint besides its latest (the search phase's winner is logged);
    otherwise the latest only (a confirmation run validates only some epochs)."""
    from ray import tune

    checkpoints = (tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=space.metric,
                                         checkpoint_score_order=space.mode) if keep_best else
                   tune.CheckpointConfig(num_to_keep=1))

    return tune.Tuner(
        fn, param_space=param_space,
        tune_config=tune.TuneConfig(
            # No metric/mode here: the searcher ranks on the space's metric, ASHA on its rung
            # metric (scheduler()), and Ray refuses one given both here and there.
            search_alg=search_alg, scheduler=trial_scheduler, num_samples=num_samples,
            # Ray ignores (and warns about) a limit on its variant generator: the trials' CPUs
            # and GPUs bound a grid's concurrency there.
            max_concurrent_trials=None if isinstance(search_alg, BasicVariantGenerator) else space.max_concurrent,
            # A finished trial's worker runs the next one: no new process, no second torch import
            # (seconds per trial on a small machine; 21 trials in a default search).
            reuse_actors=True),
        run_config=tune.RunConfig(
            # verbose 2 (--verbose): Ray's own boxes too; else tricktune's console says it all.
            name=os.path.basename(path), storage_path=os.path.dirname(path), callbacks=callbacks,
            verbose=1 if verbose >= 2 else 0,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=checkpoints))


__all__ = ["init_ray", "searcher", "search_samples", "scheduler", "RUNGS_FILE", "KeepBaselineASHA", "trainable",
           "restore", "new_tuner"]
