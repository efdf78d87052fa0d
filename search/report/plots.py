"""The report's figures (matplotlib, files only): curves.png, cost.png, effect.png, importances.png."""

from __future__ import annotations

import math

from search.report.analysis import Effect, pareto_front
from search.report.load import SearchRecord
from search.report.rows import Config, config_label, delta_unit
from search.stats import mean_std

# Baseline + this many of the best configurations in the curves figure: more lines than
# that make the 4 small panels unreadable.
PLOTTED_CONFIGS = 5


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    return plt


def plot_curves(record: SearchRecord, configs: list[Config], path: str) -> list[Config]:
    """Train loss, val Top-1, val Top-5 and LR per epoch: the baseline and the best few configs.

    Repeated seeds are drawn as their mean with a +- std band. Returns the configs drawn.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    best = [c for c in configs if not c.is_baseline and c.reported][:PLOTTED_CONFIGS]
    drawn = [c for c in configs if c.is_baseline and c.reported] + best
    panels = (("train_loss", "train loss"), ("val_top1", "val Top-1 (%)"), ("val_top5", "val Top-5 (%)"),
              ("lr", "learning rate (end of epoch)"))
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    colors = plt.get_cmap("tab10").colors
    for i, config in enumerate(drawn):
        style = dict(color="black", linewidth=2.2, zorder=3) if config.is_baseline else \
            dict(color=colors[i % len(colors)], linewidth=1.4)
        n = len(config.reported)
        last = max(t.epochs for t in config.reported)
        label = (config_label(config) + (f" (mean ± std of {n})" if n > 1 else "")
                 + (f" [stopped at epoch {last}]" if last < record.max_epochs else ""))
        for ax, (metric, _) in zip(axes.flat, panels):
            epochs, mean, std = _mean_curve(config, metric)
            if not epochs:
                continue
            ax.plot(epochs, mean, marker="o", markersize=3, label=label if metric == "train_loss" else None,
                    **style)
            if n > 1:
                ax.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                color=style["color"], alpha=0.12, linewidth=0)
    for ax, (_, title) in zip(axes.flat, panels):
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    fig.suptitle(f"{record.space.name}: baseline and the {len(best)} best by {record.metric}")
    fig.legend(loc="lower center", ncol=2 if len(drawn) > 3 else 1, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04 + 0.025 * math.ceil(len(drawn) / 2), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def _mean_curve(config: Config, metric: str):
    by_epoch: dict[int, list[float]] = {}
    for trial in config.reported:
        for step, value in trial.curves.get(metric, []):
            by_epoch.setdefault(step, []).append(value)
    epochs = sorted(by_epoch)
    mean = [mean_std(by_epoch[e])[0] for e in epochs]
    std = [mean_std(by_epoch[e])[1] or 0.0 for e in epochs]
    return epochs, mean, std


def plot_cost_accuracy(record: SearchRecord, points: list[tuple[Config, float, float]], path: str) -> None:
    plt = _pyplot()
    front = pareto_front([(cost, top1) for _, cost, top1 in points])
    fig, ax = plt.subplots(figsize=(8, 5.5))
    others = [p for i, p in enumerate(points) if i not in front]
    ax.scatter([c for _, c, _ in others], [v for _, _, v in others], color="tab:gray", alpha=0.7, zorder=2,
               label="completed configuration")
    on_front = [points[i] for i in front]
    ax.step([c for _, c, _ in on_front], [v for _, _, v in on_front], where="post", color="tab:blue",
            linewidth=1.2, alpha=0.6, zorder=1)
    ax.scatter([c for _, c, _ in on_front], [v for _, _, v in on_front], color="tab:blue", s=60, zorder=3,
               label="Pareto front: best val Top-1 for its cost")
    middle = (min(c for _, c, _ in points) + max(c for _, c, _ in points)) / 2
    for config, cost, top1 in points:
        if config.is_baseline:
            ax.scatter([cost], [top1], marker="*", s=260, color="black", zorder=4, label="baseline")
        if config.is_baseline or any(config is points[i][0] for i in front):
            n = len([t for t in config.trials if t.outcome == "completed"])
            left = cost > middle  # labels of the costlier half point left, so they stay inside the plot
            ax.annotate(config_label(config) + (f" (mean of {n})" if n > 1 else ""), (cost, top1),
                        textcoords="offset points", xytext=(-8 if left else 8, 5), ha="right" if left else "left",
                        fontsize=8)
    ax.margins(x=0.1, y=0.12)
    ax.set_xlabel("seconds per epoch (mean over the configuration's epochs)")
    ax.set_ylabel(f"val Top-1 (%) after {record.max_epochs} epochs")
    ax.set_title(f"{record.space.name}: accuracy against cost, {len(points)} completed configurations")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


VERDICT_COLORS = {"helps": "tab:green", "hurts": "tab:red"}


def plot_effects(effects_: list[Effect], record: SearchRecord, path: str) -> None:
    plt = _pyplot()
    metric, mode = record.metric, record.mode
    fig, ax = plt.subplots(figsize=(8, 1.9 + 0.45 * len(effects_)))
    for y, e in enumerate(effects_):
        if e.ci_low is None:
            ax.scatter([e.delta], [y], facecolors="none", edgecolors="tab:gray", s=50, zorder=3)
            ax.annotate(f"{e.delta:+.2f}", (e.delta, y), textcoords="offset points", xytext=(0, 7), ha="center",
                        fontsize=7)
            continue
        color = VERDICT_COLORS.get(e.verdict, "tab:gray")
        ax.errorbar([e.delta], [y], xerr=[[e.delta - e.ci_low], [e.ci_high - e.delta]], fmt="o", color=color,
                    capsize=4, zorder=3)
        ax.annotate(f"{e.delta:+.2f} [{e.ci_low:+.2f}, {e.ci_high:+.2f}]", (e.delta, y), textcoords="offset points",
                    xytext=(0, 7), ha="center", fontsize=7)
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(range(len(effects_)))
    ax.set_yticklabels([f"{e.label}  (n={e.n})" for e in effects_], fontsize=8)
    better = "right" if mode == "max" else "left"
    ax.set_xlabel(f"Δ {metric} vs the baseline ({delta_unit(metric)}; better to the {better})")
    has_ci = any(e.ci_low is not None for e in effects_)
    single = any(e.ci_low is None for e in effects_)
    fig.suptitle(f"{record.space.name}: effect of each configuration against the baseline", fontsize=11)
    ax.set_title("95 % CI over seeds: green helps, red hurts, gray no measurable difference" if has_ci else
                 "one run per configuration: no interval (repeat over seeds, e.g. SPACE=ablation)", fontsize=9)
    ax.margins(y=0.25 if len(effects_) < 3 else 0.1)
    if has_ci and single:
        ax.text(0.99, 0.01, "hollow: one run, no interval", transform=ax.transAxes, ha="right", fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_importances(importances: dict[str, float], metric: str, path: str) -> None:
    plt = _pyplot()
    names = sorted(importances, key=importances.get)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.45 * len(names)))
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    for i, name in enumerate(names):
        ax.text(importances[name], i, f" {importances[name]:.2f}", va="center", fontsize=9)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel(f"fANOVA importance for {metric} (sums to 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["PLOTTED_CONFIGS", "plot_curves", "plot_cost_accuracy", "plot_effects", "plot_importances"]
