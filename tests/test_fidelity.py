"""The fidelity measurement's arithmetic (search/tools/fidelity.py) on curves whose answer is known.

Its real runs (Ray Tune trials of a space, never stopped) are exercised by make bench's
figure 6 (tests/test_bench.py runs its --quick version)."""

import json
import subprocess
import sys

import pytest

from search.tools import fidelity

ROOT = __file__.rsplit("/tests/", 1)[0]


def curves(final: dict[str, float], early: dict[str, float], noise: float = 0.0) -> dict:
    """3 epochs per run: epoch 1 ranks as ``early`` does, epochs 2-3 as the final values do."""
    out = {}
    for label, value in final.items():
        out[label] = {}
        for seed in (0, 1):
            top1 = [early[label], value - 1 + noise * seed, value + noise * seed]
            out[label][seed] = {"val_top1": top1, "val_loss": [10 - v / 10 for v in top1]}
    return out


def test_spearman_per_epoch_noise_floor_and_where_the_ranking_holds():
    final = {"a": 70.0, "b": 72.0, "c": 74.0, "d": 76.0}
    reversed_early = {"a": 40.0, "b": 30.0, "c": 20.0, "d": 10.0}
    analysis = fidelity.analyse(curves(final, reversed_early, noise=0.5))
    rows = {r["epoch"]: r for r in analysis["rows"]}
    assert rows[1]["val_top1"] == pytest.approx(-1.0) and rows[1]["val_loss"] == pytest.approx(-1.0)
    assert rows[2]["val_top1"] == pytest.approx(1.0) and rows[3]["val_loss"] == pytest.approx(1.0)
    assert analysis["first_rung"] == {"val_top1": 2, "val_loss": 2}
    assert analysis["holds_from"] == {"val_top1": 2, "val_loss": 2}
    # Each configuration's 2 seeds differ by 0.5: sample std 0.354; the means' spread is ~2.58.
    assert analysis["noise_std"] == pytest.approx(0.5 / 2 ** 0.5)
    assert analysis["config_spread_std"] == pytest.approx(2.582, abs=1e-3)


def test_a_rung_that_dips_below_the_goal_later_does_not_hold():
    final = {"a": 70.0, "b": 72.0, "c": 74.0, "d": 76.0}
    data = curves(final, dict(final))  # epoch 1 ranks right...
    for label, v in zip(final, (76.0, 74.0, 72.0, 70.0)):
        for seed in (0, 1):
            data[label][seed]["val_top1"][1] = v  # ...epoch 2 wrong, epoch 3 right again
    analysis = fidelity.analyse(data)
    assert analysis["first_rung"]["val_top1"] == 1 and analysis["holds_from"]["val_top1"] == 3


def test_saved_curves_are_analysed_again_from_the_command_line(tmp_path):
    final = {"a": 70.0, "b": 72.0, "c": 74.0}
    saved = tmp_path / "curves.json"
    saved.write_text(json.dumps({"curves": curves(final, {"a": 1.0, "b": 2.0, "c": 3.0})}))
    out = subprocess.run([sys.executable, "-m", "search.tools.fidelity", "mixup_alpha", "--from", str(saved)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "3 configurations x seeds ['0', '1'], 3 epochs" in out.stdout
    assert "every epoch from then on: val_top1 from epoch 1" in out.stdout


def test_too_few_seeds_or_configurations_fail_in_one_line():
    out = subprocess.run([sys.executable, "-m", "search.tools.fidelity", "mixup_alpha", "--seeds", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--seeds must be >= 2" in out.stderr
