"""What a finished (or interrupted) search answers: the summary dict printed and logged.

Phase 1 gives the best single run and its delta against the baseline (one seed: a hint).
Phase 2 gives the answer: the best confirmed mean, and for each confirmed configuration
its mean +- std over the paired seeds, its delta against the baseline with a 95 % CI and
p, and a verdict. Both are logged to the search's MLflow parent run.
"""

from __future__ import annotations

import json
import sys

from search.domains import baseline_key, is_baseline
from search.stats import mean_std
from search.tracking import MlflowTracker, experiment_name
from search.verdicts import confirmation_rows
from spaces import Space


def summarize(results, confirmation: dict | None, space: Space, tracker: MlflowTracker, state: dict,
              exp_path: str, tracking_uri: str) -> dict:
    summary = {"space": space.name, "recipe": space.recipe, "metric": space.metric, "mode": space.mode,
               "results": exp_path, "tracking_uri": tracking_uri, "experiment": experiment_name(space.name),
               "parent_run_id": state["parent_run_id"], "trials": len(results),
               "errors": sum(r.error is not None for r in results), "max_epochs": space.max_epochs}
    metrics, tags = _search_phase(results, space, summary)
    if confirmation is not None:
        summary["confirm"] = confirmation
        more_metrics, more_tags = _confirmation_records(confirmation)
        metrics.update(more_metrics)
        tags.update(more_tags)
    tracker.log(state["parent_run_id"], metrics=metrics, tags=tags,
                artifact=_best_checkpoint(summary.pop("_best", None)))
    return summary


def _search_phase(results, space: Space, summary: dict) -> tuple[dict, dict]:
    """Best single run (among those that finished, when any did) vs the baseline's run(s)."""
    sign = 1 if space.mode == "max" else -1
    rows = [r for r in results if r.metrics and space.metric in r.metrics and not r.metrics.get("nonfinite_loss")]
    if not rows:
        return {"trials": len(results)}, {}
    finished = [r for r in rows if int(r.metrics.get("epoch", 0)) >= space.max_epochs] or rows
    best = max(finished, key=lambda r: sign * r.metrics[space.metric])
    baselines = [r.metrics[space.metric] for r in rows if is_baseline(r.config, baseline_key(space))]
    summary.update(best_trial=best.metrics.get("trial_id"), best_config=dict(best.config),
                   best_value=best.metrics[space.metric], best_val_top5=best.metrics.get("val_top5"), _best=best)
    metrics = {"best_" + space.metric: best.metrics[space.metric], "trials": len(results)}
    tags = {"best_trial": summary["best_trial"], "best_config": json.dumps(summary["best_config"], default=str)}
    if baselines:
        base = mean_std(baselines)[0]
        summary.update(baseline_value=base, delta=best.metrics[space.metric] - base)
        metrics.update({"baseline_" + space.metric: base, "delta_vs_baseline": summary["delta"]})
    return metrics, tags


def _confirmation_records(confirmation: dict) -> tuple[dict, dict]:
    """The confirmed figures as MLflow metrics/tags of the parent run: ``confirm_<rank>_*``,
    rank 0 the baseline, then the candidates in the order they were picked."""
    metrics, tags = {}, {"confirm_seeds": ",".join(map(str, confirmation["seeds"])),
                         "confirm_winner": confirmation["winner"] or "none", "confirm_note": confirmation["note"]}
    for rank, row in enumerate(confirmation["rows"]):
        tags[f"confirm_{rank}_label"] = row["label"]
        for key in ("mean", "std", "delta", "ci_low", "ci_high", "p_value"):
            if row.get(key) is not None:
                metrics[f"confirm_{rank}_{key}"] = row[key]
        if "verdict" in row:
            tags[f"confirm_{rank}_verdict"] = row["verdict"]
    tags["confirmation"] = json.dumps({k: v for k, v in confirmation.items() if k != "candidates"}, default=str)
    return metrics, tags


def _best_checkpoint(best) -> tuple[str, str] | None:
    if best is None or best.checkpoint is None:
        return None
    try:
        # A local checkpoint stays where it is until the writer (or a later import) sends it;
        # one in remote storage is downloaded to a folder that is kept for the same reason.
        checkpoint = best.checkpoint
        path = checkpoint.path if checkpoint.filesystem.type_name == "local" else checkpoint.to_directory()
    except Exception as err:  # noqa: BLE001 - the summary still prints and is still logged
        print(f"[tricktune] the best checkpoint is not logged to MLflow: {err}", file=sys.stderr)
        return None
    return path, "best_checkpoint"


def confirmation_lines(confirm_summary: dict, metric: str) -> list[str]:
    """The confirmation table as printed at the end of a search."""
    rows = confirmation_rows(confirm_summary)
    width = max(len(r.label) for r in rows)
    seeds = ", ".join(map(str, confirm_summary["seeds"]))
    lines = [f"confirmed over seeds {seeds} ({metric}: mean ± std; Δ vs baseline paired by seed, 95% CI):"]
    for row in rows:
        value = row.value if row.value is not None else "no finished run"
        text = f"  {row.label:<{width}}  {value:<14} n={row.n}"
        if row.verdict is not None:
            text += f"  Δ {row.delta} p={row.p}  {row.verdict}"
        lines.append(text)
    winner = confirm_summary["winner"]
    if confirm_summary["note"]:
        lines.append(f"  {confirm_summary['note']}")
    if winner is not None:
        lines.append(f"winner       {winner} (best confirmed mean)" if winner != "baseline" else
                     "winner       the baseline: no confirmed configuration beat its mean")
    return lines


__all__ = ["summarize", "confirmation_lines"]
