"""``make bench`` figures on early stopping: do rungs predict, and what does ASHA save?

fidelity  the default space on the default recipe: a sample of configurations, each over 2
          seeds, trained to the end (search/tools/fidelity.py); the Spearman of the first rung's
          metric with the final ranking, and the noise floor. Goal: >= 0.7.
search    ASHA + TPE vs random search run to the end, real Ray Tune searches over a wide
          lr x weight-decay space, both with the default recipe's rung design (precise BN,
          the first rung at the same fraction of training): trial-epochs until a trial
          finishes within 0.5 points of the best final val_top1, mean over 3 seeds; goal
          >= 3x fewer. Counts epochs, not seconds, so load cannot move it.
"""

from __future__ import annotations

import math
import shutil
import statistics
import tempfile

from search.bench.common import Figure, say, space_file, start_ray
from spaces import load_space

TOLERANCE = 0.5  # points of val_top1: "near-best"


# --- the fidelity of the default space's first rung -------------------------------------------

def bench_fidelity(quick: bool) -> list[Figure]:
    from search.runner import SearchOptions, prepare_space
    from search.tools import fidelity

    overrides = {"train_subset": 64, "val_subset": 64, "epochs": 3} if quick else {}
    space = prepare_space(SearchOptions(space="mixup_alpha", overrides=overrides))
    configs, seeds = (3, 2) if quick else (8, 2)
    say(f"[fidelity] {space.name} on {space.recipe}: {configs} configurations x {seeds} seeds, "
        f"{space.max_epochs} epochs each, never stopped (real Ray Tune trials); ASHA's first rung is epoch "
        f"{space.grace_period}, ranking on {space.rung_metric or space.metric}")
    start_ray()
    tmp = tempfile.mkdtemp(prefix="tricktune-bench-")
    try:
        curves = fidelity.run_curves(space, fidelity.sample_points(space, configs, space.seed), list(range(seeds)),
                                     tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    analysis = fidelity.analyse(curves, space.metric, space.mode)
    lines = fidelity.report_lines(analysis, space.metric)
    for line in lines:
        say("  " + line)
    rung = space.rung_metric or space.metric
    rho = analysis["rows"][space.grace_period - 1][rung]
    return [Figure(f"6. first rung ({rung} at epoch {space.grace_period} of {space.max_epochs}) vs final ranking, "
                   f"default space, Spearman", f"{rho:.2f} (noise floor {analysis['noise_std']:.2f} pts)",
                   f">= {fidelity.GOAL}", rho >= fidelity.GOAL, lines)]


# --- ASHA + TPE against random search ------------------------------------------------------------

def epochs_to_find(results: list[tuple[str, int, float]], max_epochs: int, target: float) -> tuple[int, bool]:
    """Trial-epochs spent when the first trial that finished all ``max_epochs`` with val_top1 >=
    ``target`` reported it. ``results`` = (trial, epoch, val_top1) in the order the driver got
    them, so every epoch any trial trained before that moment counts, stopped trials included.
    Not found: (all epochs spent, False) -- a lower bound on the true cost."""
    for spent, (_trial, epoch, value) in enumerate(results, 1):
        if epoch >= max_epochs and value >= target:
            return spent, True
    return len(results), False


def best_final(results: list[tuple[str, int, float]], max_epochs: int) -> float:
    return max((v for _t, e, v in results if e >= max_epochs), default=float("nan"))


def _run_tune(space, method: str, seed: int, storage: str) -> list[tuple[str, int, float]]:
    """One real Ray Tune search; returns every result as (trial, epoch, val_top1) in arrival order."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    from search import tuners
    from search.domains import param_space

    class ResultLog(tune.Callback):
        def __init__(self):
            self.results = []

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.results.append((trial.trial_id, int(result["epoch"]), float(result["val_top1"])))

    if method == "asha_tpe":
        # search/tuners.py's TPE, minus its baseline point: tricktune evaluates the recipe
        # first, which would measure how good the default is, not the search.
        searcher = OptunaSearch(sampler=tuners.tpe_sampler(seed=seed, num_samples=space.num_samples),
                                metric=space.metric, mode=space.mode)
        scheduler = tuners.scheduler(space)
    else:
        # Tune ignores max_concurrent_trials for a variant generator; the 2 CPUs at 1 per
        # trial still cap it at 2 at a time, as for ASHA.
        searcher, scheduler = BasicVariantGenerator(random_state=seed), FIFOScheduler()
    log = ResultLog()
    tuner = tune.Tuner(
        tuners.trainable(space), param_space=param_space(space),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,  # metric/mode: as search/tuners.py
                                    num_samples=space.num_samples, max_concurrent_trials=space.max_concurrent,
                                    # Saves a worker start-up per trial; trial-epochs, the measure, are unchanged.
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=f"{method}-{seed}", storage_path=storage, callbacks=[log], verbose=0))
    tuner.fit()
    return log.results


def _search_space(quick: bool, folder: str):
    """A first search over an LR whose order of magnitude is unknown, the situation early
    stopping is for: three decades of lr (SGD + cosine) and weight decay, at 12 px (a fifth of
    28 px's cost, ~72 % here), with the default recipe's rung design: precise BN and the first
    rung at the same fraction of training."""
    default = load_space("mixup_alpha")
    if quick:
        fixed = {"train_subset": 128, "val_subset": 64, "batch_size": 32, "image_size": 12}
        samples, max_epochs, seeds = 2, 2, [0]
    else:
        # 1,024 images at batch 64 are 16 steps per epoch; 1,000 validation images put val_top1
        # on a 0.1-point grid, finer than the 0.5-point target.
        fixed = {"train_subset": 1024, "val_subset": 1000, "batch_size": 64, "image_size": 12}
        samples, max_epochs, seeds = 9, 18, [0, 1, 2]
    fixed["precise_bn"] = fixed["train_subset"] if default.fixed.get("precise_bn") else 0
    grace = max(1, min(max_epochs, round(default.grace_period / default.max_epochs * max_epochs)))
    space = load_space(space_file(
        folder, "search", "how many trial-epochs does ASHA + TPE save over random search (bench figure 3)?",
        fixed=fixed, params={"lr": {"type": "loguniform", "low": 0.001, "high": 3.0},
                             "weight_decay": {"type": "loguniform", "low": 1.0e-6, "high": 1.0e-2}},
        budget={"num_samples": samples, "max_epochs": max_epochs, "grace_period": grace,
                "reduction_factor": default.reduction_factor, "max_concurrent": 2,
                "rung_metric": default.rung_metric}, scheduler="asha"))
    return space, seeds


def _one_seed(space, seed: int, folder: str) -> tuple[tuple, tuple, list, str]:
    asha, rand = _run_tune(space, "asha_tpe", seed, folder), _run_tune(space, "random", seed, folder)
    top = space.max_epochs
    best = max(best_final(asha, top), best_final(rand, top))
    (a_cost, a_found), (r_cost, r_found) = (epochs_to_find(r, top, best - TOLERANCE) for r in (asha, rand))
    finished = sum(e >= top for _t, e, _v in asha)
    # A method that never got there spent at least everything it ran: its count is a lower bound.
    bound = "" if a_found == r_found else "<=" if not a_found else ">="
    line = (f"seed {seed}: best final val_top1 {best:.1f}; trial-epochs until a trial finished within "
            f"{TOLERANCE} of it: ASHA+TPE {'' if a_found else 'never, >='}{a_cost} (spent {len(asha)}, {finished} "
            f"of {space.num_samples} trials finished), random {'' if r_found else 'never, >='}{r_cost} (spent "
            f"{len(rand)}): {bound}{r_cost / a_cost:.2f}x fewer")
    whole = (len(asha), best_final(asha, top), len(rand), best_final(rand, top))
    return (a_cost, a_found, r_cost, r_found), whole, _rung_and_final(rand, space.grace_period, top), line


def _rung_and_final(results, rung: int, max_epochs: int) -> list[tuple[float, float]]:
    """(val_top1 at the first rung, final val_top1) of every trial that finished."""
    first = {t: v for t, e, v in results if e == rung}
    return [(first[t], v) for t, e, v in results if e >= max_epochs and t in first]


def bench_search(quick: bool) -> list[Figure]:
    from scipy import stats

    tmp = tempfile.mkdtemp(prefix="tricktune-bench-")
    space, seeds = _search_space(quick, tmp)
    say(f"[3 search] lr 1e-3..3 x weight_decay 1e-6..1e-2, {space.fixed['train_subset']} images at "
        f"{space.fixed['image_size']} px, {space.num_samples} trials x {space.max_epochs} epochs, 2 at a time; "
        f"ASHA (first rung {space.grace_period} on {space.rung_metric or space.metric}, factor "
        f"{space.reduction_factor}, precise_bn "
        f"{space.fixed['precise_bn']}) + TPE vs random search run to the end, real Ray Tune searches; seeds {seeds}")
    start_ray()
    try:
        measured = [_one_seed(space, seed, tmp) for seed in seeds]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [m[3] for m in measured]
    per_seed, whole = [m[0] for m in measured], [m[1] for m in measured]
    pairs = [p for m in measured for p in m[2]]
    ratio = statistics.mean(p[2] for p in per_seed) / statistics.mean(p[0] for p in per_seed)
    # Where ASHA+TPE never got there its count is a lower bound, so the ratio is an upper bound.
    bound = "<=" if not all(p[1] for p in per_seed) else ""
    rho = float(stats.spearmanr(*zip(*pairs)).statistic) if len(pairs) > 2 else math.nan
    mean = statistics.mean
    lines += [f"mean over {len(seeds)} seeds: ASHA+TPE {mean(p[0] for p in per_seed):.1f} vs random "
              f"{mean(p[2] for p in per_seed):.1f} trial-epochs: {bound}{ratio:.2f}x fewer",
              f"how well epoch {space.grace_period} (ASHA's first rung) predicts the final val_top1, over random "
              f"search's {len(pairs)} full trials: Spearman {rho:.2f}",
              # Not the figure, but what a user pays for the whole search and what it ends with.
              f"whole searches of {space.num_samples} trials (info): ASHA+TPE spent {mean(w[0] for w in whole):.0f} "
              f"trial-epochs, random {mean(w[2] for w in whole):.0f} "
              f"({mean(w[2] for w in whole) / mean(w[0] for w in whole):.2f}x fewer); best final val_top1 "
              f"{mean(w[1] for w in whole):.1f} vs {mean(w[3] for w in whole):.1f} (means over seeds)"]
    for line in lines:
        say("  " + line)
    return [Figure("3. ASHA+TPE vs random, trial-epochs to a near-best config", f"{bound}{ratio:.2f}x fewer",
                   ">= 3x fewer", ratio >= 3.0 and not bound, lines)]


__all__ = ["bench_fidelity", "bench_search", "epochs_to_find", "best_final"]
