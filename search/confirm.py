"""Phase 2 of every search: the top k configurations and the baseline again, over n paired seeds.

The search phase ranks configurations by one run each, and the best of many single runs
is partly the luckiest (the winner's curse): a trick it calls helpful may not help with
another seed. So every search ends by re-running the ``k`` best completed configurations
(``--confirm-top``, default 2) and the baseline for ``n`` fresh seeds (``--confirm-seeds``,
default 3; 0 = off), the same seeds for every configuration, never stopped early. A pair
of runs with one seed then differs only by the configuration, and the answer is:

* the winner: the best confirmed *mean*, not the best single run;
* for each confirmed configuration: mean +- std, the delta against the baseline with its
  95 % CI paired by seed and p (search/stats.py, scipy's paired t-test), and a verdict:
  "helps", "hurts" or "no measurable difference at this budget".

The runs are trials of the same search (a second Ray Tune experiment in the search's
results folder, ``confirm/``; MLflow runs under the same parent, tagged ``stage=confirm``).
"""

from __future__ import annotations

from dataclasses import dataclass

from search.domains import baseline_key, baseline_point, is_baseline
from search.labels import trial_label
from search.stats import compare_over_seeds, mean_std

# Fresh seeds for the confirmation runs. The search phase trained every trial with the
# recipe's seed (0 unless set); re-using it would count again the very run that made a
# configuration look best, and bias its delta upwards.
SEED_BASE = 1000
BASELINE = "baseline"
# Trial config keys of a confirmation trial (Ray shows them in its tables).
CANDIDATE_KEY, SEED_KEY = "candidate", "seed"
# A confirmation run is never stopped early and only its final value counts, so it validates
# every 5th epoch (a coarse curve in MLflow) and the last, not after each: with validation
# and precise BN a default-recipe epoch took 3.3 s median on the CPU, without 1.5 s (docs/evidence.md).
EVAL_EVERY = 5


@dataclass(frozen=True)
class Candidate:
    label: str  # "baseline" or the searched values, e.g. "mixup_alpha=0.6028 lr=0.1052"
    values: dict  # the searched values (and variant) that space.trial_config takes
    search_value: float | None = None  # its one search-phase run's metric
    search_trial: str | None = None


def seeds(n: int) -> list[int]:
    return [SEED_BASE + i for i in range(n)]


def pick(results, space, top: int) -> list[Candidate]:
    """The baseline, then the ``top`` best distinct configurations that completed the search
    phase (a config ASHA stopped early has no comparable final value)."""
    sign = 1 if space.mode == "max" else -1
    finished = [r for r in results if r.metrics and space.metric in r.metrics
                and not r.metrics.get("nonfinite_loss") and int(r.metrics.get("epoch", 0)) >= space.max_epochs
                and not is_baseline(r.config, baseline_key(space))]
    finished.sort(key=lambda r: -sign * r.metrics[space.metric])
    chosen = [Candidate(BASELINE, baseline_point(space))]
    for r in finished:
        values = {k: r.config[k] for k in space.searched if k in r.config}
        label = trial_label(values)
        if len(chosen) <= top and label not in {c.label for c in chosen}:
            chosen.append(Candidate(label, values, r.metrics[space.metric], r.metrics.get("trial_id")))
    return chosen


def param_space(candidates: list[Candidate], seed_list: list[int]) -> dict:
    """Every candidate x every seed: a grid Ray's variant generator walks once."""
    from ray import tune

    return {CANDIDATE_KEY: tune.grid_search([c.label for c in candidates]), SEED_KEY: tune.grid_search(seed_list)}


def sampled(config: dict, candidates: dict[str, dict]) -> dict:
    """A confirmation trial's config -> what ``space.trial_config`` takes (values + seed)."""
    return {**candidates[config[CANDIDATE_KEY]], SEED_KEY: config[SEED_KEY]}


def evaluate(finals: dict[str, dict[int, float]], mode: str) -> dict:
    """``finals``: {candidate label: {seed: final metric}} -> rows, winner and a note.

    One row per candidate (the baseline first): n, mean, std and, for the others, the
    paired comparison with the baseline. The winner is the best mean; with fewer than 2
    baseline runs nothing can be compared, and the note says so.
    """
    sign = 1 if mode == "max" else -1
    base = finals.get(BASELINE, {})
    rows = []
    for label, by_seed in finals.items():
        mean, std = mean_std(list(by_seed.values()))
        row = {"label": label, "n": len(by_seed), "mean": mean, "std": std, "seeds": sorted(by_seed)}
        if label != BASELINE and len(by_seed) >= 2 and len(base) >= 2:
            row.update({k: v for k, v in compare_over_seeds(by_seed, base, mode).items() if k != "n"})
        rows.append(row)
    scored = [r for r in rows if r["mean"] is not None]
    winner = max(scored, key=lambda r: sign * r["mean"])["label"] if scored else None
    if len(base) < 2:
        note = "fewer than 2 baseline runs finished: no comparison over seeds"
    elif len(rows) == 1:
        note = "nothing to confirm: no configuration but the baseline finished the search phase"
    else:
        note = ""
    return {"rows": rows, "winner": winner, "note": note}


__all__ = ["Candidate", "SEED_BASE", "EVAL_EVERY", "BASELINE", "seeds", "pick", "param_space", "sampled", "evaluate"]
