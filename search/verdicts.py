"""The confirmation table's cells, once, for both places that show it.

The console summary (search/summary.py) prints them as aligned text at the end of a search;
the report (search/report/markdown.py) writes them as a markdown table. Both read the same
confirmation dict (search/confirm.py's ``evaluate`` plus its seeds), so the figures agree to
the last digit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfirmationRow:
    """One configuration's confirmed figures, formatted; None: nothing to show in that cell."""

    label: str
    n: int
    value: str | None  # "mean ± std" of the final metric; None: no run finished
    delta: str | None  # "+1.75 [+1.13, +2.37]": paired Δ vs the baseline and its 95 % CI
    p: str | None  # "0.00673", or "n/a" when the test gives none
    verdict: str | None  # None: not compared (the baseline itself, or fewer than 2 runs a side)


def confirmation_rows(confirmation: dict) -> list[ConfirmationRow]:
    """The rows of ``confirmation`` in its order (the baseline first)."""
    return [_row(row) for row in confirmation["rows"]]


def _row(row: dict) -> ConfirmationRow:
    value = None
    if row["mean"] is not None:
        value = f"{row['mean']:.2f}" + (f" ± {row['std']:.2f}" if row.get("std") is not None else "")
    if "verdict" not in row:
        return ConfirmationRow(row["label"], row["n"], value, None, None, None)
    p = f"{row['p_value']:.3g}" if row.get("p_value") is not None else "n/a"
    delta = f"{row['delta']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"
    return ConfirmationRow(row["label"], row["n"], value, delta, p, row["verdict"])


__all__ = ["ConfirmationRow", "confirmation_rows"]
