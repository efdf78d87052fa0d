"""``python -m search.tools.fidelity SPACE [--recipe R] [--configs N] [--seeds S]``: do early rungs predict?

ASHA stops a trial on its metric at a rung; that is evidence only if the rung ranks the
configurations the way the end of training does. This measurement runs a sample of a
space's configurations (the baseline and random draws through the space's own Ray Tune
domains) to the end, never stopped, over >= 2 seeds -- real Ray Tune trials -- and prints
for every epoch, i.e. every place a rung could go:

* the Spearman rank correlation between a run's value at that epoch and its
  configuration's final metric (the mean over seeds: the ranking a search is after),
  averaged over seeds, for val_top1 and for val_loss (lower is better, so its ranks are
  turned round);
* the noise floor: the seed-to-seed std of the final metric, pooled over configurations,
  next to the spread of the configurations' final means. Where the configurations differ
  by no more than the noise there is no ranking to predict, at any rung.

The curves are saved as JSON (``--out``), and ``--from FILE`` re-analyses saved curves.
``make bench`` runs this on the default space (figure "fidelity").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile

from search import confirm
from search.domains import baseline_point, param_space
from search.labels import trial_label

GOAL = 0.7  # a first rung must rank configurations at Spearman >= 0.7 to be trusted with cuts
RUNG_METRICS = ("val_top1", "val_loss")


def sample_points(space, n: int, seed: int = 0) -> dict[str, dict]:
    """The baseline and ``n - 1`` distinct draws from the space's Ray Tune domains: {label: values}."""
    import numpy as np
    from ray.tune.search.variant_generator import generate_variants

    points = {confirm.BASELINE: baseline_point(space)}
    rng, domains = np.random.RandomState(seed), param_space(space)
    for _ in range(50 * n):  # a small choice/grid space may have fewer than n distinct points
        if len(points) >= n:
            break
        for _, values in generate_variants(domains, random_state=rng):
            label = trial_label(values)
            if len(points) < n and label not in points:
                points[label] = values
    return points


def run_curves(space, points: dict[str, dict], seeds: list[int], storage: str, verbose: int = 0) -> dict:
    """Every point x seed trained to max_epochs as Ray Tune trials; {label: {seed: {metric: [per epoch]}}}."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from search import tuners

    class Curves(tune.Callback):
        def __init__(self):
            self.seen: dict = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            c = trial.config
            run = self.seen.setdefault(c[confirm.CANDIDATE_KEY], {}).setdefault(c[confirm.SEED_KEY], {})
            for metric in RUNG_METRICS:
                run.setdefault(metric, {})[int(result["epoch"])] = float(result[metric])

    tuners.init_ray(dashboard=False)
    curves = Curves()
    candidates = [confirm.Candidate(label, values) for label, values in points.items()]
    tuner = tuners.new_tuner(os.path.join(storage, f"fidelity-{space.name}"), tuners.trainable(space, points),
                             confirm.param_space(candidates, seeds), space, BasicVariantGenerator(), FIFOScheduler(),
                             1, [curves], verbose, max_failures=1)
    tuner.fit()
    return {label: {seed: {m: [by_epoch[e] for e in sorted(by_epoch)] for m, by_epoch in run.items()}
                    for seed, run in by_seed.items()} for label, by_seed in curves.seen.items()}


def analyse(curves: dict, metric: str = "val_top1", mode: str = "max") -> dict:
    """Per epoch, the mean over seeds of Spearman(value at the epoch, final mean over seeds); and the noise."""
    from scipy import stats

    sign = 1 if mode == "max" else -1
    complete = {label: runs for label, runs in curves.items()
                if runs and len({len(r[metric]) for r in runs.values()}) == 1}
    epochs = min(len(r[metric]) for runs in complete.values() for r in runs.values())
    seeds = sorted(set.intersection(*(set(runs) for runs in complete.values())))
    labels = sorted(complete)
    final_mean = [statistics.fmean(complete[c][s][metric][epochs - 1] for s in seeds) for c in labels]
    rows = []
    for epoch in range(1, epochs + 1):
        row = {"epoch": epoch}
        for rung_metric in RUNG_METRICS:
            turn = -1 if rung_metric.endswith("loss") else 1  # a lower loss ranks higher
            rhos = [stats.spearmanr([turn * complete[c][s][rung_metric][epoch - 1] for c in labels],
                                    [sign * v for v in final_mean]).statistic for s in seeds]
            row[rung_metric] = statistics.fmean(r for r in rhos if not math.isnan(r)) if rhos else float("nan")
        rows.append(row)
    noise = math.sqrt(statistics.fmean(statistics.variance([complete[c][s][metric][epochs - 1] for s in seeds])
                                       for c in labels)) if len(seeds) > 1 else float("nan")
    return {"rows": rows, "configs": len(labels), "seeds": seeds, "epochs": epochs, "noise_std": noise,
            "config_spread_std": statistics.stdev(final_mean) if len(labels) > 1 else float("nan"),
            "first_rung": {m: next((r["epoch"] for r in rows if r[m] >= GOAL), None) for m in RUNG_METRICS},
            # The first epoch from which every later one ranks at >= GOAL: a rung placed there
            # does not depend on a lucky epoch.
            "holds_from": {m: next((r["epoch"] for r in rows if all(q[m] >= GOAL for q in rows[r["epoch"] - 1:])),
                                   None) for m in RUNG_METRICS}}


def report_lines(analysis: dict, metric: str) -> list[str]:
    lines = [f"{analysis['configs']} configurations x seeds {analysis['seeds']}, {analysis['epochs']} epochs, "
             f"never stopped. Spearman of each epoch's value with the final {metric} ranking (mean over seeds):",
             "  epoch   " + "  ".join(f"{m:>9}" for m in RUNG_METRICS)]
    for row in analysis["rows"]:
        lines.append(f"  {row['epoch']:>5}   " + "  ".join(f"{row[m]:>9.2f}" for m in RUNG_METRICS))
    first = ", ".join(f"{m} at epoch {e}" if e else f"{m} never" for m, e in analysis["first_rung"].items())
    holds = ", ".join(f"{m} from epoch {e}" if e else f"{m} never" for m, e in analysis["holds_from"].items())
    lines += [f"noise floor: seed-to-seed std of the final {metric} {analysis['noise_std']:.2f}; spread of the "
              f"configurations' final means (std) {analysis['config_spread_std']:.2f}",
              f"first epoch ranking at Spearman >= {GOAL}: {first}; every epoch from then on: {holds}"]
    return lines


def main(argv: list[str] | None = None) -> int:
    from search.runner import SearchOptions, prepare_space
    from trainable.config import ConfigError, parse_overrides

    parser = argparse.ArgumentParser(prog="python -m search.tools.fidelity", description=__doc__.splitlines()[0])
    parser.add_argument("space", help="a space name in spaces/ or a path to a .yaml file")
    parser.add_argument("--recipe", help="the recipe to layer the space on (default: the embedded one)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fix a training key")
    parser.add_argument("--configs", type=int, default=8, help="configurations, the baseline included (default 8)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per configuration (default 2; >= 2)")
    parser.add_argument("--storage", help="Ray results folder (default: a temporary one)")
    parser.add_argument("--out", help="write the curves and the analysis here (JSON)")
    parser.add_argument("--from", dest="source", help="analyse curves saved by --out instead of training")
    args = parser.parse_args(argv)
    try:
        if args.seeds < 2 or args.configs < 3:
            raise ConfigError("--seeds must be >= 2 (a noise floor needs two) and --configs >= 3 (a ranking)")
        space = prepare_space(SearchOptions(space=args.space, recipe=args.recipe,
                                            overrides=parse_overrides(p for s in args.set for p in s.split())))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.source:
        with open(args.source) as fh:
            curves = json.load(fh)["curves"]
    else:
        points = sample_points(space, args.configs, space.seed)
        storage = args.storage or tempfile.mkdtemp(prefix="tricktune-fidelity-")
        curves = run_curves(space, points, list(range(args.seeds)), storage)
    analysis = analyse(curves, space.metric, space.mode)
    print("\n".join(report_lines(analysis, space.metric)))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump({"space": space.name, "recipe": space.recipe, "curves": curves, "analysis": analysis}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
