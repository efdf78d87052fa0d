"""The seed statistics behind every verdict (search/stats.py), on known numbers."""

import pytest
from scipy import stats

from search.stats import NO_DIFFERENCE, compare_over_seeds, mean_std


def test_verdict_follows_the_confidence_interval():
    base = {0: 80.0, 1: 81.0, 2: 79.0, 3: 80.5}
    helps = compare_over_seeds({s: v + 2 + 0.1 * s for s, v in base.items()}, base)
    assert helps["verdict"] == "helps" and helps["ci_low"] > 0 and helps["test"] == "paired t-test over 4 seeds"
    hurts = compare_over_seeds({s: v - 2 - 0.1 * s for s, v in base.items()}, base)
    assert hurts["verdict"] == "hurts" and hurts["ci_high"] < 0
    noise = compare_over_seeds({0: 81.0, 1: 79.0, 2: 80.5, 3: 79.5}, base)
    assert noise["verdict"] == NO_DIFFERENCE and noise["ci_low"] < 0 < noise["ci_high"]
    # A lower loss is better: the same negative delta "helps" with mode min.
    assert compare_over_seeds({s: v - 2 - 0.1 * s for s, v in base.items()}, base, "min")["verdict"] == "helps"


def test_paired_by_seed_when_possible_else_welch():
    base = {0: 80.0, 1: 82.0, 2: 78.0}
    trick = {0: 81.0, 1: 83.2, 2: 78.9}  # the seed moves both sides; the pairs see the +1
    paired = compare_over_seeds(trick, base)
    assert paired["verdict"] == "helps"
    assert paired["p_value"] == pytest.approx(stats.ttest_rel(list(trick.values()), list(base.values())).pvalue)
    # Different seeds on each side: nothing to pair, Welch's test, and the seed spread hides the +1.
    unpaired = compare_over_seeds({5: 81.0, 6: 83.2, 7: 78.9}, base)
    assert unpaired["test"].startswith("Welch") and unpaired["verdict"] == NO_DIFFERENCE
    assert unpaired["p_value"] == pytest.approx(
        stats.ttest_ind([81.0, 83.2, 78.9], list(base.values()), equal_var=False).pvalue)


def test_identical_results_on_every_seed_give_a_verdict_not_nan():
    base = {0: 80.0, 1: 81.0, 2: 79.0}
    same = compare_over_seeds(dict(base), base)
    assert same["verdict"] == NO_DIFFERENCE and same["delta"] == 0 and same["p_value"] == 1.0
    assert (same["ci_low"], same["ci_high"]) == (0, 0)
    shifted = compare_over_seeds({s: v + 0.5 for s, v in base.items()}, base)  # exactly +0.5 on every seed
    assert shifted["verdict"] == "helps" and shifted["ci_low"] == pytest.approx(0.5)
    flat = compare_over_seeds({5: 80.0, 6: 80.0}, {0: 80.0, 1: 80.0})  # unpaired, no spread either side
    assert flat["verdict"] == NO_DIFFERENCE and flat["p_value"] == 1.0


def test_mean_std_of_few_values():
    assert mean_std([]) == (None, None) and mean_std([2.0]) == (2.0, None)
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5))
