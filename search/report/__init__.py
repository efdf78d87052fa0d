"""A search's report (``python -m search.report SPACE``; command.py says what it writes).

One step per module, each importing only the ones above it: load (MLflow runs -> a
SearchRecord), rows (trials -> configurations and their labels), analysis (seed statistics,
importances, cost and effects), plots (the PNGs), markdown (report.md, trials.csv) and
command (build_report, main).
"""

from search.report.analysis import (
    Effect,
    SeedComparison,
    confirmation_of,
    cost_points,
    effects,
    param_importances,
    pareto_front,
    seed_statistics,
)
from search.report.command import build_report, main
from search.report.load import ReportError, SearchRecord, TrialRun, find_search, load_search, open_store
from search.report.markdown import confirmation_markdown, render_markdown, seeds_markdown, trials_table, write_csv
from search.report.plots import plot_cost_accuracy, plot_curves, plot_effects, plot_importances
from search.report.rows import Config, baseline_at, config_label, delta_vs_baseline, group_configs

__all__ = ["ReportError", "TrialRun", "SearchRecord", "open_store", "find_search", "load_search", "Config",
           "group_configs", "baseline_at", "delta_vs_baseline", "config_label", "SeedComparison", "Effect",
           "seed_statistics", "param_importances", "effects", "pareto_front", "cost_points", "confirmation_of",
           "plot_curves", "plot_cost_accuracy", "plot_effects", "plot_importances", "trials_table",
           "confirmation_markdown", "render_markdown", "seeds_markdown", "write_csv", "build_report", "main"]
