"""What a search's configurations show: seed statistics, fANOVA importances, the cost/accuracy
front, each configuration's effect against the baseline, and the confirmation phase recomputed.

Numbers only; plots.py draws them and markdown.py writes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from search import confirm
from search.report.load import SEED_KEY, SearchRecord, TrialRun
from search.report.rows import Config, config_label, delta_vs_baseline
from search.stats import compare_over_seeds, mean_std
from spaces import Space


@dataclass
class SeedComparison:
    """A configuration against the baseline over repeated runs (seeds)."""

    label: str
    n: int  # pairs for the paired test, else the config's runs
    n_baseline: int
    mean: float
    std: float | None
    baseline_mean: float
    baseline_std: float | None
    delta: float
    ci_low: float
    ci_high: float
    test: str
    p_value: float | None
    verdict: str


def seed_statistics(record: SearchRecord, configs: list[Config]) -> list[SeedComparison] | None:
    """Each repeated configuration vs the repeated baseline; None when nothing is repeated.

    Only completed trials count: a run ASHA stopped at epoch 2 would pull a 6-epoch mean down.
    """
    def finished(config: Config) -> list[TrialRun]:
        return [t for t in config.trials if t.outcome == "completed" and t.epochs > 0]

    if not any(len(finished(c)) >= 2 for c in configs):
        return None
    base = next((c for c in configs if c.is_baseline), None)
    if base is None or len(finished(base)) < 2:
        return []
    base_runs = finished(base)
    base_values = _by_seed(base_runs, record.metric)
    out = []
    for config in configs:
        runs = finished(config)
        if config.is_baseline or len(runs) < 2:
            continue
        values = _by_seed(runs, record.metric)
        result = compare_over_seeds(values, base_values, record.mode)
        mean, std = mean_std([t.final(record.metric) for t in runs])
        base_mean, base_std = mean_std([t.final(record.metric) for t in base_runs])
        out.append(SeedComparison(
            label=config_label(config), n_baseline=len(base_runs), mean=mean, std=std, baseline_mean=base_mean,
            baseline_std=base_std, **result))
    return out


def _by_seed(runs: list[TrialRun], metric: str) -> dict:
    """{seed: value}; runs that repeat a seed get distinct keys, which leaves them unpaired."""
    seeds = [t.seed for t in runs]
    if len(set(seeds)) == len(seeds):
        return {t.seed: t.final(metric) for t in runs}
    return {(t.run_id,): t.final(metric) for t in runs}


def param_importances(record: SearchRecord) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances over the completed trials, or (None, why they were skipped).

    Completed trials only: all of them trained for max_epochs, so their values are
    comparable; a trial ASHA stopped at epoch 1 is not "bad", only unfinished.
    The seed is included when it was searched: its share is the noise floor a trick's
    importance has to beat.
    """
    trials = [t for t in record.trials if t.outcome == "completed" and t.epochs > 0
              and t.final(record.metric) is not None and math.isfinite(t.final(record.metric))]
    keys = record.treatments + ([SEED_KEY] if record.seed_searched else [])
    varying = [k for k in keys if len({repr(_point(t, k)) for t in trials}) > 1]
    if len(trials) < 3:
        return None, (f"Skipped: {len(trials)} completed trial(s); fANOVA needs at least 3 "
                      f"(run more samples, or let ASHA finish more trials).")
    if not varying:
        return None, "Skipped: no searched parameter varies across the completed trials."
    if len({t.final(record.metric) for t in trials}) == 1:
        return None, f"Skipped: every completed trial has the same {record.metric}; nothing to explain."
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {k: _distribution(record.space, k, [_point(t, k) for t in trials]) for k in varying}
    study = optuna.create_study(direction="maximize" if record.mode == "max" else "minimize")
    for t in trials:
        study.add_trial(optuna.trial.create_trial(params={k: _point(t, k) for k in varying},
                                                  distributions=distributions, value=t.final(record.metric)))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # seeded: same runs, same report
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator, params=varying)
    note = (f"fANOVA (optuna FanovaImportanceEvaluator) over the {len(trials)} completed trials' final "
            f"{record.metric}: the share of its variance each parameter explains (sums to 1).")
    if len(varying) == 1:
        note += f" Only {varying[0]} varies, so it explains everything by construction."
    if SEED_KEY in varying:
        note += " The seed's share is the noise floor: a trick below it is indistinguishable from noise here."
    return dict(importances), note


def _point(trial: TrialRun, key: str):
    return trial.seed if key == SEED_KEY else trial.treatment.get(key)


def _distribution(space: Space, key: str, observed: list):
    """The search distribution of ``key`` from the space file, widened to what was observed."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    param = space.params.get(key)
    if param is not None and param.type in ("uniform", "loguniform"):
        return FloatDistribution(min(param.low, *observed), max(param.high, *observed),
                                 log=param.type == "loguniform")
    if param is not None and param.type == "int":
        return IntDistribution(min(param.low, *observed), max(param.high, *observed))
    choices = list(param.values) if param is not None and param.values is not None else []
    if key == "variant":
        choices = list(space.variants)
    for value in observed:  # a value the file no longer lists (edited after the search)
        if value not in choices:
            choices.append(value)
    return CategoricalDistribution(choices)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, value) points no other point beats, cheapest first.

    A point is beaten when another costs at most as much, is worth at least as much, and is
    strictly better in one of the two: the front is the best value for its cost. Identical
    points do not beat each other, so both stay on it.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best, best_cost = -math.inf, None
    for i in order:
        cost, value = points[i]
        if value > best:
            front.append(i)
            best, best_cost = value, cost
        elif value == best and cost == best_cost:
            front.append(i)
    return front


def cost_points(record: SearchRecord, configs: list[Config]) -> list[tuple[Config, float, float]]:
    """(config, mean seconds per epoch, mean final val Top-1) of every completed configuration."""
    out = []
    for config in configs:
        done = [t for t in config.trials if t.outcome == "completed" and t.epochs > 0]
        seconds = [s for s in (t.mean_epoch_seconds() for t in done) if s is not None]
        top1 = [v for v in (t.final("val_top1") for t in done) if v is not None and math.isfinite(v)]
        if seconds and top1:
            out.append((config, mean_std(seconds)[0], mean_std(top1)[0]))
    return out


@dataclass
class Effect:
    """A configuration's change of the metric vs the baseline; the interval only over repeats."""

    label: str
    n: int
    delta: float
    ci_low: float | None = None
    ci_high: float | None = None
    verdict: str | None = None


def effects(record: SearchRecord, configs: list[Config], seeds: list[SeedComparison] | None,
            confirmation: dict | None = None) -> list[Effect]:
    """Confirmed configurations (the confirmation stage) and repeated ones (seeds of an
    ablation): delta and 95 % CI, paired by seed. Configurations of the search phase that
    completed once and were not confirmed: their delta alone (one run draws no interval)."""
    out = [Effect(s.label, s.n, s.delta, s.ci_low, s.ci_high, s.verdict) for s in seeds or []]
    out += [Effect(f"{row['label']} (confirmed)", row["n"], row["delta"], row["ci_low"], row["ci_high"],
                   row["verdict"]) for row in (confirmation or {}).get("rows", []) if "verdict" in row]
    repeated = {e.label for e in out}
    for config in configs:
        done = [t for t in config.trials if t.outcome == "completed" and t.epochs > 0]
        if config.is_baseline or not done or config_label(config) in repeated:
            continue
        delta = delta_vs_baseline(record, Config(config.treatment, done, False, config.changes))
        if delta is not None:
            out.append(Effect(config_label(config), len(done), delta))
    sign = 1 if record.mode == "max" else -1
    return sorted(out, key=lambda e: sign * e.delta)


def confirmation_of(record: SearchRecord) -> dict | None:
    """The confirmation phase recomputed from its MLflow runs (search/confirm.py's rule): each
    configuration's final metric by seed, only runs that completed."""
    if not record.confirm_runs:
        return None
    finals: dict[str, dict] = {confirm.BASELINE: {}}
    for run in record.confirm_runs:
        if run.outcome == "completed" and run.epochs >= record.max_epochs:
            finals.setdefault(run.candidate, {})[run.seed] = run.final(record.metric)
    seeds = sorted({run.seed for run in record.confirm_runs})
    return {"seeds": seeds, **confirm.evaluate(finals, record.mode)}


__all__ = ["SeedComparison", "seed_statistics", "param_importances", "pareto_front", "cost_points", "Effect",
           "effects", "confirmation_of"]
