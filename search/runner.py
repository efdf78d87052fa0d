"""Run one search: phase 1 searches (TPE + ASHA), phase 2 confirms over seeds; MLflow records both.

Layout of one search on disk (``storage`` defaults to ``./ray_results``)::

    ray_results/<space>-<timestamp>/      Ray's experiment of the search phase (trials, checkpoints,
                                          searcher state)
        confirm/                          Ray's experiment of the confirmation phase
        tricktune.json                    how to rebuild this search on --resume, its MLflow ids, its phase
        asha_rungs.json                   ASHA's rungs, read back on --resume (Ray restores them empty)
        mlflow_pending.jsonl              only if MLflow was unreachable at the end
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass

from search import confirm, records, tuners
from search.domains import baseline_key, baseline_point, param_space, search_trials
from search.ray_private import trial_states
from search.records import STATE_FILE, SearchError, latest_experiment  # noqa: F401 - the runner's public names
from search.summary import summarize
from search.tracking import MlflowTracker, default_tracking_uri, runs_url
from spaces import PROJECT_ROOT, Recipe, Space, load_recipe, load_space, override

# --smoke: the whole path (Ray, Optuna, ASHA, confirmation, MLflow) on a sliver of the data.
SMOKE_FIXED = {"train_subset": 512, "val_subset": 256, "batch_size": 64}
SMOKE_BUDGET = {"num_samples": 3, "max_epochs": 2, "grace_period": 1, "confirm_top": 1, "confirm_seeds": 2}


def default_storage() -> str:
    return os.environ.get("TRICKTUNE_STORAGE") or str(PROJECT_ROOT / "ray_results")


@dataclass
class SearchOptions:
    space: str
    overrides: dict
    recipe: str | None = None  # a name in spaces/recipes/ or a path; None = the embedded default
    samples: int | None = None
    confirm_top: int | None = None  # None: the space's budget (default 2)
    confirm_seeds: int | None = None  # None: the space's budget (default 3); 0 = no confirmation
    smoke: bool = False
    resume: bool = False
    storage: str | None = None
    tracking_uri: str | None = None
    dashboard: bool = False
    max_failures: int = 2
    verbose: int = 1  # 0 nothing (make bench), 1 tricktune's console, 2 also Ray's boxes and worker INFO logs


def prepare_space(opts: SearchOptions) -> Space:
    fixed = dict(opts.overrides)
    space = load_space(opts.space, recipe=_recipe(opts.recipe, fixed.pop("data_dir", None)))
    budget = {}
    if opts.smoke:
        fixed, budget = _smoke(space, fixed)
    for key in ("samples", "confirm_top", "confirm_seeds"):
        if getattr(opts, key) is not None:
            budget["num_samples" if key == "samples" else key] = getattr(opts, key)
    if fixed.get("device", space.fixed.get("device")) == "cpu":
        budget["gpus_per_trial"] = 0  # a trial told to train on the CPU needs no GPU from Ray
    cores = os.cpu_count() or 1
    if not os.environ.get("RAY_ADDRESS") and space.cpus_per_trial > cores:
        # More CPUs per trial than the machine has: Ray would keep every trial pending forever.
        print(f"[tricktune] recipe {space.recipe} asks {space.cpus_per_trial:g} CPUs per trial; this machine has "
              f"{cores}: using {cores}", file=sys.stderr)
        budget["cpus_per_trial"] = cores
    if fixed or budget:
        space = override(space, fixed=fixed, **budget)
    return _smoke_fits_the_data(space, opts.overrides) if opts.smoke else space


def _smoke(space: Space, fixed: dict) -> tuple[dict, dict]:
    """(fixed, budget) of --smoke: a slice of the data, 2 epochs, 3 trials; ``fixed`` (the
    user's --set values) wins over the smoke's."""
    # The smoke's slice, never more than the recipe itself trains on (the default: 300 images).
    shrunk = {k: min(v, space.fixed.get(k) or v) for k, v in SMOKE_FIXED.items()}
    # A GPU recipe's smoke run on a machine without one checks the path on the CPU.
    fixed = {**shrunk, **({"device": "cpu"} if space.gpus_per_trial and not _has_gpu() else {}), **fixed}
    budget = {k: min(v, getattr(space, k)) for k, v in SMOKE_BUDGET.items()}
    if space.baseline.get("warmup_epochs") and "warmup_epochs" not in space.params:
        # The recipe's warmup, shrunk with the epochs (cifar100's 5 of 200 would outlast 2).
        fixed.setdefault("warmup_epochs", space.baseline["warmup_epochs"] * budget["max_epochs"] / space.max_epochs)
    return fixed, budget


def _smoke_fits_the_data(space: Space, user: dict) -> Space:
    """The smoke's slice cut to the data set's own splits: a 439-image folder has no 512-image
    prefix. Only the split sizes are read here (a folder's files listed, none decoded); a
    subset the user set with --set is left to fail as it would without --smoke."""
    from trainable.data import split_sizes

    sizes = dict(zip(("train_subset", "val_subset"), split_sizes(space.trial_config(baseline_point(space)))))
    cut = {key: n for key, n in sizes.items() if key not in user and space.fixed[key] > n}
    return override(space, fixed=cut) if cut else space


def _recipe(name: str | None, data_dir: str | None) -> Recipe:
    """The recipe, with the user's data folder in it: a recipe for a data set that has no
    default place (CUB, an image folder) cannot even be validated without it."""
    recipe = load_recipe(name)
    if data_dir:
        return dataclasses.replace(recipe, fixed={**recipe.fixed, "data_dir": os.path.abspath(data_dir)})
    dataset = recipe.fixed.get("dataset")
    if dataset in ("cub200", "imagefolder") and not recipe.fixed.get("data_dir"):
        raise SearchError(f"recipe {recipe.name} trains on {dataset} images: give their folder with "
                          "DATA_DIR=/path/to/it (make) or --data-dir (python -m search)")
    return recipe


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def check_gpus(space: Space) -> None:
    """A recipe that gives each trial a GPU on a machine with none would wait forever in Ray's
    queue: say so before anything starts (a cluster's GPUs are on its nodes: not checked)."""
    if space.gpus_per_trial > 0 and not os.environ.get("RAY_ADDRESS") and not _has_gpu():
        raise SearchError(f"recipe {space.recipe} gives each trial {space.gpus_per_trial:g} GPU but this machine "
                          "has none; run it on a GPU machine (or a Ray cluster: RAY_ADDRESS=...), try the path "
                          "with SMOKE=1, or train on the CPU with SET=\"device=cpu\" (slow)")


def run_search(opts: SearchOptions) -> dict:
    """Run (or resume) a search; returns a summary dict. Everything is validated first."""
    storage = opts.storage if "://" in (opts.storage or "") else os.path.abspath(opts.storage or default_storage())
    tracking_uri = opts.tracking_uri or default_tracking_uri()
    state = None
    if opts.resume:
        exp_path, state = records.resume_state(opts.space, storage,
                                               lambda: load_space(opts.space, recipe=opts.recipe).name)
        opts = dataclasses.replace(opts, **{k: state.get(k) for k in ("space", "recipe", "overrides", "samples",
                                                                      "smoke", "confirm_top", "confirm_seeds")})
    from trainable.loop import preflight

    space = prepare_space(opts)  # validates the whole space file before Ray starts
    check_gpus(space)
    preflight(space.trial_config(baseline_point(space)))  # data, model, teacher: bad ones fail before any record
    client = records.check_tracking(tracking_uri)
    if state is None:
        exp_path, state = records.start(client, space, opts, storage)
    else:
        records.close_runs_left_open(client, state["experiment_id"], state["parent_run_id"])
        client.update_run(state["parent_run_id"], status="RUNNING")
    dashboard_url = tuners.init_ray(opts.dashboard, opts.verbose)
    from search.console import dashboard_sign_in, for_search

    shared = {k: v for k, v in state["tags"].items() if k in ("space", "recipe", "search", "git_commit")}
    tracker = MlflowTracker(tracking_uri, state["experiment_id"], state["parent_run_id"], space, exp_path,
                            base_tags=shared, baseline_key=baseline_key(space))
    console = for_search(space, baseline_key(space), search_trials(space), opts.verbose)
    if dashboard_url and opts.verbose:
        console.note("\n".join(dashboard_sign_in(dashboard_url, tty=sys.stdout.isatty())))
    interrupted, confirmation = True, None
    try:
        results, interrupted = search_phase(space, opts, state, exp_path, [tracker, console])
        if not interrupted and space.confirm_seeds:
            confirmation, interrupted = confirm_phase(space, opts, state, exp_path, [tracker, console], results)
        summary = summarize(results, confirmation, space, tracker, state, exp_path, tracking_uri)
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


def search_phase(space: Space, opts: SearchOptions, state: dict, exp_path: str, callbacks: list):
    """Phase 1: (results, interrupted). A search resumed in its confirmation phase only reads
    the finished search phase back. ``callbacks``: the MLflow tracker, then the console."""
    from ray import tune

    tracker = callbacks[0]
    fn, domains = tuners.trainable(space), param_space(space)
    if state.get("phase", "search") != "search":
        return tune.Tuner.restore(exp_path, fn, param_space=domains).get_results(), False
    tracker.start_stage("search")
    if opts.resume and tune.Tuner.can_restore(exp_path):
        tuner = tuners.restore(exp_path, fn, domains, callbacks)
    else:
        tuner = tuners.new_tuner(exp_path, fn, domains, space, tuners.searcher(space, baseline_point(space)),
                                 tuners.scheduler(space, exp_path), tuners.search_samples(space), callbacks,
                                 opts.verbose, opts.max_failures)
    results = tuner.fit()
    return results, _unfinished(results, search_trials(space), tracker)


def confirm_phase(space: Space, opts: SearchOptions, state: dict, exp_path: str, callbacks: list, results):
    """Phase 2: the candidates x seeds, each run to the end; (confirmation, interrupted)."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if state.get("phase", "search") == "search":  # chosen once, kept for a resume
        candidates = confirm.pick(results, space, space.confirm_top)
        state.update(phase="confirm", candidates=[dataclasses.asdict(c) for c in candidates],
                     confirm_seed_list=confirm.seeds(space.confirm_seeds))
        records.save_state(exp_path, state)
    candidates = [confirm.Candidate(**c) for c in state["candidates"]]
    seed_list = state["confirm_seed_list"]
    by_label = {c.label: {**c.values, "eval_every": confirm.EVAL_EVERY} for c in candidates}
    tracker, console = callbacks
    tracker.start_stage("confirm", by_label)
    console.baseline_key = {confirm.CANDIDATE_KEY: confirm.BASELINE}
    best = (f"{len(candidates) - 1} best + the baseline" if len(candidates) > 1 else
            "the baseline alone (no other configuration finished the search phase)")
    console.start_phase("confirm", len(candidates) * len(seed_list) * space.max_epochs,
                        detail=f"{best} x seeds {seed_list}, every run to the end (validated every "
                               f"{confirm.EVAL_EVERY}th epoch and the last)")
    path = os.path.join(exp_path, "confirm")
    fn, domains = tuners.trainable(space, by_label), confirm.param_space(candidates, seed_list)
    if tune.Tuner.can_restore(path):
        tuner = tuners.restore(path, fn, domains, callbacks)
    else:
        tuner = tuners.new_tuner(path, fn, domains, space, BasicVariantGenerator(), FIFOScheduler(), 1, callbacks,
                                 opts.verbose, opts.max_failures, keep_best=False)
    confirm_results = tuner.fit()
    interrupted = _unfinished(confirm_results, len(candidates) * len(seed_list), tracker)
    finals: dict[str, dict[int, float]] = {c.label: {} for c in candidates}
    for r in confirm_results:
        m = r.metrics or {}
        if space.metric in m and not m.get("nonfinite_loss") and int(m.get("epoch", 0)) >= space.max_epochs:
            finals[r.config[confirm.CANDIDATE_KEY]][r.config[confirm.SEED_KEY]] = m[space.metric]
    return {"candidates": candidates, "seeds": seed_list, **confirm.evaluate(finals, space.mode)}, interrupted


def _unfinished(results, expected: int, tracker: MlflowTracker) -> bool:
    """True when the budget is not spent: fewer trials than planned, or some not ended."""
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


def _close_open_runs(tracker: MlflowTracker, state: dict, interrupted: bool) -> None:
    """No run is left RUNNING: trial runs still open were interrupted (resume reopens them)."""
    for trial_id, status in list(tracker.trial_status.items()):
        if status == "RUNNING":
            tracker.log(trial_id, tags={"outcome": "interrupted"}, status="KILLED")
    tracker.log(state["parent_run_id"], tags={"state": "interrupted" if interrupted else "finished"},
                status="KILLED" if interrupted else "FINISHED")
