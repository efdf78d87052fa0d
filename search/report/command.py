"""``python -m search.report SPACE [--out DIR] [--search RUN_ID]`` (``make report SPACE=...``).

Turns one search, as MLflow recorded it, into the table people otherwise write by hand:
``reports/<space>/report.md`` (one row per configuration, best first, the baseline marked,
delta vs baseline, mean +- std and a paired test over seeds), ``curves.png`` (train loss,
val Top-1/Top-5 and LR per epoch for the baseline and the best few), ``cost.png`` (val Top-1
against seconds per epoch, the Pareto front marked), ``effect.png`` (each configuration's
delta vs the baseline with its 95 % CI over seeds), ``importances.png`` (fANOVA over the
finished trials) and ``trials.csv``; all of them are also logged to the search's parent run
under ``report/``.
"""

from __future__ import annotations

import argparse
import os
import sys

from search.report.analysis import confirmation_of, cost_points, effects, param_importances, seed_statistics
from search.report.load import ReportError, SearchRecord, find_search, load_search, open_store
from search.report.markdown import render_markdown, write_csv
from search.report.plots import plot_cost_accuracy, plot_curves, plot_effects, plot_importances
from search.report.rows import Config, group_configs
from search.tracking import default_tracking_uri
from spaces import PROJECT_ROOT, SpaceError, load_space


def build_report(space_name: str, out_dir: str | None = None, run_id: str | None = None,
                 tracking_uri: str | None = None) -> str:
    """Write the report files for one search and log them to its parent run; returns report.md's path."""
    space = load_space(space_name)
    tracking_uri = tracking_uri or default_tracking_uri()
    client = open_store(space, tracking_uri)
    parent = find_search(client, space, tracking_uri, run_id)
    record = load_search(client, parent, space, tracking_uri)
    if not any(t.epochs > 0 for t in record.trials):
        raise ReportError(f"search {parent.info.run_id} of space {space.name!r} has no trial that finished an "
                          f"epoch yet ({len(record.trials)} trial runs); wait for it, or pick an earlier search "
                          "with --search RUN_ID")
    out_dir = os.path.abspath(out_dir or str(PROJECT_ROOT / "reports" / space.name))
    os.makedirs(out_dir, exist_ok=True)

    configs = group_configs(record)
    seeds = seed_statistics(record, configs)
    confirmation = confirmation_of(record)
    files = _draw(record, configs, seeds, confirmation, out_dir)
    importances, note = param_importances(record)
    stale = os.path.join(out_dir, "importances.png")
    if importances:
        files["importances"] = "importances.png"
        plot_importances(importances, record.metric, stale)
    elif os.path.exists(stale):
        os.remove(stale)  # from an earlier report; it would contradict this one's note
    files["csv"] = "trials.csv"
    write_csv(record, os.path.join(out_dir, files["csv"]))
    report_path = os.path.join(out_dir, "report.md")
    with open(report_path, "w", encoding="utf-8") as fh:
        fh.write(render_markdown(record, configs, seeds, importances, note, files, confirmation))

    try:
        for name in ["report.md", *files.values()]:
            client.log_artifact(parent.info.run_id, os.path.join(out_dir, name), "report")
    except Exception as err:  # noqa: BLE001 - the files are written; the UI copy is a convenience
        print(f"[tricktune] report written, but not logged to MLflow run {parent.info.run_id}: "
              f"{type(err).__name__}: {str(err)[:200]}", file=sys.stderr)
    return report_path


def _draw(record: SearchRecord, configs: list[Config], seeds, confirmation: dict | None,
          out_dir: str) -> dict[str, str]:
    """curves.png, and cost.png and effect.png where they have points; {figure: file name}."""
    files = {"curves": "curves.png"}
    plot_curves(record, configs, os.path.join(out_dir, files["curves"]))
    points, changes = cost_points(record, configs), effects(record, configs, seeds, confirmation)
    for key, name, items in (("cost", "cost.png", points), ("effect", "effect.png", changes)):
        if items:
            files[key] = name
        elif os.path.exists(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))  # from an earlier report of other runs
    if points:
        plot_cost_accuracy(record, points, os.path.join(out_dir, files["cost"]))
    if changes:
        plot_effects(changes, record, os.path.join(out_dir, files["effect"]))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search.report", description=__doc__.splitlines()[0])
    parser.add_argument("space", help="a space name in spaces/ (e.g. mixup_alpha) or a path to a .yaml file")
    parser.add_argument("--out", help="output folder (default reports/<space>)")
    parser.add_argument("--search", metavar="RUN_ID", help="the search's MLflow parent run (default: the latest)")
    args = parser.parse_args(argv)
    try:
        path = build_report(args.space, args.out, args.search)
    except (SpaceError, ReportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


__all__ = ["build_report", "main"]
