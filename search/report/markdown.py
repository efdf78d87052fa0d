"""report.md and trials.csv: the tables people otherwise write by hand."""

from __future__ import annotations

import csv
import os

from search import confirm
from search.labels import short
from search.report.analysis import SeedComparison
from search.report.load import SearchRecord
from search.report.rows import Config, delta_unit, delta_vs_baseline, variant_text
from search.stats import mean_std
from search.tracking import experiment_name
from search.verdicts import confirmation_rows
from spaces import PROJECT_ROOT, SPACES_DIR, Space


def _mean_std(config: Config, metric: str) -> str:
    mean, std = config.mean(metric), config.std(metric)
    if mean is None:
        return "—"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def _outcomes(config: Config) -> str:
    counts: dict[str, int] = {}
    for t in config.trials:
        counts[t.outcome] = counts.get(t.outcome, 0) + 1
    if len(config.trials) == 1:
        return config.trials[0].outcome
    return ", ".join(f"{n} {outcome}" for outcome, n in counts.items())


def trials_table(record: SearchRecord, configs: list[Config]) -> list[str]:
    metrics = ["val_top1", "val_top5"] + ([record.metric] if record.metric not in ("val_top1", "val_top5") else [])
    names = {"val_top1": "val Top-1", "val_top5": "val Top-5"}
    header = (["rank"] + record.treatments + [names.get(m, m) for m in metrics]
              + [f"Δ {record.metric} vs baseline", "s/epoch", "epochs", "outcome", "n", "trials"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, config in enumerate(configs, 1):
        treatment = [short(variant_text(config) if key == "variant" else config.treatment.get(key))
                     for key in record.treatments]
        delta = None if config.is_baseline else delta_vs_baseline(record, config)
        seconds = [s for s in (t.mean_epoch_seconds() for t in config.trials) if s is not None]
        epochs = sorted({t.epochs for t in config.trials})
        row = ([f"**{rank} baseline**" if config.is_baseline else str(rank)] + treatment
               + [_mean_std(config, m) for m in metrics]
               + ["—" if config.is_baseline else _delta_cell(delta, epochs, record.max_epochs),
                  f"{mean_std(seconds)[0]:.2f}" if seconds else "—",
                  f"{epochs[0]}–{epochs[-1]}/{record.max_epochs}" if len(epochs) > 1
                  else f"{epochs[0]}/{record.max_epochs}",
                  _outcomes(config), str(len(config.trials)),
                  ", ".join(t.trial_id for t in config.trials)])
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _delta_cell(delta: float | None, epochs: list[int], max_epochs: int) -> str:
    if delta is None:
        return "n/a"
    # Stopped early: the comparison is with the baseline at that epoch; say so in the cell.
    return f"{delta:+.2f}" if epochs[-1] >= max_epochs else f"{delta:+.2f} (at epoch {epochs[-1]})"


def confirmation_markdown(confirmation: dict, metric: str) -> list[str]:
    lines = ["## Confirmed over seeds: the answer", "",
             f"The best configurations of the search phase and the baseline, again for seeds "
             f"{', '.join(map(str, confirmation['seeds']))} (fresh, the same for every configuration), each run "
             f"to the end. Δ: mean {metric} minus the baseline's, paired by seed, with its 95% CI (paired t).", "",
             f"| configuration | n | {metric} (mean ± std) | Δ vs baseline [95% CI] | p | verdict |",
             "|---|---|---|---|---|---|"]
    for row in confirmation_rows(confirmation):
        value = row.value if row.value is not None else "—"
        tail = f"{row.delta} | {row.p} | **{row.verdict}**" if row.verdict is not None else "— | — | —"
        lines.append(f"| {row.label} | {row.n} | {value} | {tail} |")
    winner = confirmation["winner"]
    lines += ["", f"Winner: **{winner}** (best confirmed mean)." if winner not in (None, confirm.BASELINE) else
              "Winner: the baseline; no confirmed configuration beat its mean." if winner else "", ""]
    if confirmation["note"]:
        lines += [confirmation["note"], ""]
    return lines


def _header(record: SearchRecord) -> list[str]:
    outcomes: dict[str, int] = {}
    for t in record.trials:
        outcomes[t.outcome] = outcomes.get(t.outcome, 0) + 1
    return [
        f"# {record.space.name}: report",
        "",
        f"**Question:** {record.question}",
        "",
        "| | |",
        "|---|---|",
        f"| space | `{record.space.name}` ({_space_file(record.space)}) |",
        f"| recipe | `{record.recipe}` (spaces/recipes/{record.recipe}.yaml) |",
        f"| search | {record.name}, {record.state}, started {record.started:%Y-%m-%d %H:%M} UTC |",
        f"| git commit | `{record.git_commit}` |",
        f"| metric | {record.metric} ({record.mode}), at most {record.max_epochs} epochs |",
        f"| trials | {len(record.trials)} ({', '.join(f'{n} {o}' for o, n in outcomes.items())}) |",
        f"| MLflow | experiment `{experiment_name(record.space.name)}`, parent run `{record.parent_id}` |",
        "",
    ]


def render_markdown(record: SearchRecord, configs: list[Config], seeds: list[SeedComparison] | None,
                    importances: dict | None, importance_note: str, files: dict[str, str],
                    confirmation: dict | None = None) -> str:
    points = delta_unit(record.metric)
    lines = [
        *_header(record),
        *(confirmation_markdown(confirmation, record.metric) if confirmation is not None else []),
        "## Trials, best first",
        "",
        f"One row per configuration (runs that differ only by seed are one row, mean ± std). Sorted by "
        f"epochs reached, then {record.metric}: a value after an early stop is not comparable with one "
        f"after {record.max_epochs} epochs. Top-1/Top-5: %, last epoch. Δ: {points} vs the baseline at the "
        "same epoch. s/epoch: mean epoch_seconds.",
        "",
        *trials_table(record, configs),
        "",
    ]
    if "curves" in files:
        lines += [f"![curves]({files['curves']})", ""]
    if "cost" in files:
        lines += ["## Cost and accuracy", "",
                  "Every completed configuration: val Top-1 after the last epoch against its mean seconds per "
                  "epoch. Blue: the Pareto front, the best accuracy for its cost (nothing else is both "
                  "cheaper and better).", "", f"![cost]({files['cost']})", ""]
    if seeds is not None:
        lines += seeds_markdown(seeds, record.metric, points)
    if "effect" in files:
        lines += ["## Effect against the baseline", "",
                  f"Δ {record.metric} vs the baseline per completed configuration, with its 95% confidence "
                  "interval where the configuration was repeated over seeds (the seed statistics above); "
                  "a configuration run once is a hollow point with no interval.", "",
                  f"![effect]({files['effect']})", ""]
    lines += _importances_markdown(importances, importance_note, files)
    lines += [f"Generated by `python -m search.report {_space_arg(record.space)} --search {record.parent_id}` "
              f"from {_safe_uri(record.tracking_uri)}.", ""]
    return "\n".join(lines)


def _importances_markdown(importances: dict | None, note: str, files: dict[str, str]) -> list[str]:
    lines = ["## Which searched parameters matter", "", note, ""]
    if importances:
        lines += ["| parameter | importance |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in sorted(importances.items(), key=lambda kv: -kv[1])]
        lines.append("")
        if "importances" in files:
            lines += [f"![importances]({files['importances']})", ""]
    return lines


def seeds_markdown(seeds: list[SeedComparison], metric: str, points: str) -> list[str]:
    lines = ["## Over seeds: does each change beat the baseline?", ""]
    if not seeds:
        return lines + ["The baseline has fewer than 2 completed runs: no spread to compare against.", ""]
    lines += [f"Completed runs only. Δ = mean {metric} minus the baseline's, in {points}, with its 95% "
              "confidence interval; paired by seed when both sides ran the same seeds. The verdict follows the "
              "interval: entirely above 0 (better) \"helps\", entirely below \"hurts\", else no measurable "
              "difference at this budget.", "",
              f"| change | n | {metric} | baseline | Δ [95% CI] | test | p | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    for s in seeds:
        p = f"{s.p_value:.3g}" if s.p_value is not None else "n/a"
        lines.append(f"| {s.label} | {s.n} | {s.mean:.2f} ± {s.std:.2f} | {s.baseline_mean:.2f} ± "
                     f"{s.baseline_std:.2f} (n={s.n_baseline}) | {s.delta:+.2f} [{s.ci_low:+.2f}, "
                     f"{s.ci_high:+.2f}] | {s.test} | {p} | **{s.verdict}** |")
    return lines + [""]


def _space_file(space: Space) -> str:
    inside = os.path.abspath(space.path).startswith(str(PROJECT_ROOT) + os.sep)
    return os.path.relpath(space.path, PROJECT_ROOT) if inside else space.path


def _space_arg(space: Space) -> str:
    """How to name the space on the command line: its name if it lives in spaces/."""
    return space.name if os.path.dirname(os.path.abspath(space.path)) == str(SPACES_DIR) else space.path


def _safe_uri(uri: str) -> str:
    """The tracking URI without user:password@, so a report can be shared."""
    if "://" in uri and "@" in uri.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return uri


def write_csv(record: SearchRecord, path: str) -> None:
    """Every trial at full precision, for pandas or a spreadsheet."""
    columns = ["trial_id", "run_id", "is_baseline", "outcome", "epochs", *record.treatments, "seed",
               "val_top1", "val_top5", "val_loss", "train_loss", "mean_epoch_seconds"]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for t in record.trials:
            writer.writerow([t.trial_id, t.run_id, t.is_baseline, t.outcome, t.epochs,
                             *(t.treatment.get(k) for k in record.treatments), t.seed,
                             t.final("val_top1"), t.final("val_top5"), t.final("val_loss"), t.final("train_loss"),
                             t.mean_epoch_seconds()])


__all__ = ["trials_table", "confirmation_markdown", "render_markdown", "seeds_markdown", "write_csv"]
