"""Does a configuration beat the baseline over seeds? Delta, 95 % CI, p and a verdict.

Used by the report (repeated seeds of an ablation) and by the confirmation stage of a
search. The arithmetic is scipy's (``ttest_rel`` / ``ttest_ind`` and their
``confidence_interval``) and the standard library's ``statistics``; what is written
here is only the rule that turns an interval into words.
"""

from __future__ import annotations

import math
import statistics

NO_DIFFERENCE = "no measurable difference at this budget"


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None where there are too few values)."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def verdict(ci_low: float, ci_high: float, mode: str = "max") -> str:
    """"helps" when the whole interval is on the better side of 0, "hurts" when it is on the
    worse side, else no measurable difference."""
    sign = 1 if mode == "max" else -1
    if sign * ci_low > 0 and sign * ci_high > 0:
        return "helps"
    if sign * ci_low < 0 and sign * ci_high < 0:
        return "hurts"
    return NO_DIFFERENCE


def compare_over_seeds(values: dict, baseline: dict, mode: str = "max") -> dict:
    """Delta, 95 % CI, test and verdict for ``values`` vs ``baseline`` ({seed: metric} each).

    Paired by seed (same seed = same init and data order, so a pair differs only by the
    change) when at least 2 seeds are in both: scipy's ``ttest_rel``. Otherwise Welch's
    t-test (unequal variances, ``ttest_ind(equal_var=False)``). With no spread at all
    (identical results on every seed, e.g. a key that cannot change the result) the
    interval is the delta itself: a verdict, never NaN.
    """
    from scipy import stats

    common = sorted(set(values) & set(baseline), key=str)
    if len(common) >= 2:
        a, b = [values[s] for s in common], [baseline[s] for s in common]
        diffs = [x - y for x, y in zip(a, b)]
        n, delta, spread = len(diffs), statistics.fmean(diffs), statistics.pstdev(diffs)
        test = f"paired t-test over {n} seeds"
        result = stats.ttest_rel(a, b) if spread > 0 else None
    else:
        a, b = list(values.values()), list(baseline.values())
        if len(a) < 2 or len(b) < 2:
            raise ValueError("need >= 2 runs on each side for a spread")
        n, delta = len(a), statistics.fmean(a) - statistics.fmean(b)
        spread = statistics.pstdev(a) + statistics.pstdev(b)
        test = f"Welch's t-test ({len(a)} vs {len(b)} runs, unpaired)"
        result = stats.ttest_ind(a, b, equal_var=False) if spread > 0 else None
    if result is None:  # zero variance: scipy would give NaN (or inf); the delta is exact
        low = high = delta
        p = 1.0 if delta == 0 else 0.0
    else:
        interval = result.confidence_interval(0.95)
        low, high, p = float(interval.low), float(interval.high), float(result.pvalue)
        p = None if math.isnan(p) else p
    return {"n": n, "delta": delta, "ci_low": low, "ci_high": high, "test": test, "p_value": p,
            "verdict": verdict(low, high, mode)}


__all__ = ["NO_DIFFERENCE", "mean_std", "verdict", "compare_over_seeds"]
