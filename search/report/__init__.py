"""``python -m search.report SPACE [--out DIR] [--search RUN_ID]`` (``make report SPACE=...``).

Turns one search, as MLflow recorded it, into the table people otherwise write by hand:
``reports/<space>/report.md`` (one row per configuration, best first, the baseline marked,
delta vs baseline, mean +- std and a paired test over seeds), ``curves.png`` (train loss,
val Top-1/Top-5 and LR per epoch for the baseline and the best few), ``cost.png`` (val Top-1
against seconds per epoch, the Pareto front marked), ``effect.png`` (each configuration's
delta vs the baseline with its 95 % CI over seeds), ``importances.png`` (fANOVA over the
finished trials) and ``trials.csv``; all of them are also logged to the search's parent run
under ``report/``.

Only MLflow is read (never Ray's result files), so a report works for a finished or an
interrupted search, and for one that ran on a cluster against a tracking server.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import math
import os
import sys
from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient

from search import confirm
from search.stats import compare_over_seeds, mean_std
from search.tracking import default_tracking_uri, experiment_name
from spaces import PROJECT_ROOT, Space, SpaceError, load_space
from trainable.config import REPORTED_METRICS, ConfigError, coerce_value

# Per-epoch curves the report reads back (step = epoch in MLflow): every reported metric but
# the epoch itself and the throughput (epoch_seconds already says what it costs).
CURVES = tuple(m for m in REPORTED_METRICS if m not in ("epoch", "images_per_second"))
# Baseline + this many of the best configurations in the curves figure: more lines than
# that make the 4 small panels unreadable.
PLOTTED_CONFIGS = 5
SEED_KEY = "seed"  # a repetition, not a treatment: its runs are grouped, not compared


class ReportError(Exception):
    """Nothing to report; one line that says why and what to run."""


# --- loading: MLflow runs -> TrialRun ------------------------------------------------------

@dataclass
class TrialRun:
    """One trial's MLflow run, with the values the report needs already parsed."""

    run_id: str
    trial_id: str
    is_baseline: bool
    outcome: str
    treatment: dict  # searched key (seed excluded) -> value; "variant" -> its name
    seed: int | None
    params: dict  # the full resolved TrainConfig, as MLflow stores it (strings)
    candidate: str | None = None  # a confirmation run's configuration label (stage=confirm)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        """The last epoch this trial reported (0: it never finished one); any metric counts, as
        a run with eval_every > 1 (a confirmation run) logs val_* only after some epochs."""
        return max((step for points in self.curves.values() for step, _ in points), default=0)

    def final(self, metric: str) -> float | None:
        points = self.curves.get(metric)  # sorted by epoch
        return points[-1][1] if points else None

    def at(self, metric: str, epoch: int) -> float | None:
        return next((value for step, value in self.curves.get(metric, []) if step == epoch), None)

    def mean_epoch_seconds(self) -> float | None:
        seconds = [value for _, value in self.curves.get("epoch_seconds", [])]
        return mean_std(seconds)[0]


@dataclass
class SearchRecord:
    """A search's parent run and its trials, plus what the search was run with."""

    space: Space
    tracking_uri: str
    parent_id: str
    name: str
    started: _dt.datetime
    state: str
    git_commit: str
    recipe: str  # the recipe the search ran on (spaces/recipes/)
    question: str
    metric: str
    mode: str
    max_epochs: int
    treatments: list[str]  # searched keys that change the recipe (variant included, seed not)
    seed_searched: bool
    trials: list[TrialRun]  # the search phase
    confirm_runs: list[TrialRun] = field(default_factory=list)  # the confirmation phase (stage=confirm)


def _no_search(space: Space, tracking_uri: str) -> ReportError:
    return ReportError(f"no search of space {space.name!r} in {tracking_uri}; "
                       f"run `make search SPACE={space.name}` first")


def open_store(space: Space, tracking_uri: str) -> MlflowClient:
    # MlflowClient on a SQLite file that is not there creates an empty store (and logs
    # two lines about creating tables); a report only reads, so say "no search" instead.
    if tracking_uri.startswith("sqlite:///") and not os.path.isfile(tracking_uri[len("sqlite:///"):]):
        raise _no_search(space, tracking_uri)
    return MlflowClient(tracking_uri)


def find_search(client: MlflowClient, space: Space, tracking_uri: str, run_id: str | None = None):
    """The parent run to report on: ``run_id``, else the latest search of the space."""
    if run_id:
        try:
            run = client.get_run(run_id)
        except Exception:  # noqa: BLE001 - MLflow raises its own types per store; all mean "not there"
            raise ReportError(f"no run {run_id!r} in {tracking_uri}; give the parent run id of a search "
                              "(MLflow UI, or the last lines a search prints)") from None
        if run.data.tags.get("tricktune_role") != "search":
            raise ReportError(f"run {run_id} is not a search's parent run (it is a trial or another run); "
                              "give the id `python -m search` printed as 'parent run'")
        if run.data.tags.get("space") != space.name:
            raise ReportError(f"run {run_id} is a search of space {run.data.tags.get('space')!r}, not "
                              f"{space.name!r}; use `make report SPACE={run.data.tags.get('space')}`")
        return run
    try:
        experiment = client.get_experiment_by_name(experiment_name(space.name))
    except Exception as err:  # noqa: BLE001 - an unreachable server or a broken store
        raise ReportError(f"MLflow tracking store {tracking_uri!r} is unreachable ({type(err).__name__}); "
                          "start the server or set MLFLOW_TRACKING_URI") from None
    if experiment is None or experiment.lifecycle_stage == "deleted":
        raise _no_search(space, tracking_uri)
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.tricktune_role = 'search'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise _no_search(space, tracking_uri)
    return runs[0]


def load_search(client: MlflowClient, parent, space: Space, tracking_uri: str) -> SearchRecord:
    params, tags = parent.data.params, parent.data.tags
    # What the search actually ran with (a --set or an edited space file may differ
    # from today's file); the space file fills in what an older parent run lacks.
    searched = [k for k in params.get("searched", ",".join(space.params)).split(",") if k]
    record = SearchRecord(
        space=space, tracking_uri=tracking_uri, parent_id=parent.info.run_id,
        name=parent.info.run_name or parent.info.run_id,
        started=_dt.datetime.fromtimestamp(parent.info.start_time / 1000, _dt.UTC),
        state=tags.get("state", "running" if parent.info.status == "RUNNING" else parent.info.status.lower()),
        git_commit=tags.get("git_commit", "unknown"), recipe=params.get("recipe", "fashion_mnist_resnet20"),
        question=tags.get("question", space.question),
        metric=params.get("metric", space.metric), mode=params.get("mode", space.mode),
        max_epochs=int(params.get("max_epochs", space.max_epochs)),
        treatments=[k for k in searched if k != SEED_KEY], seed_searched=SEED_KEY in searched, trials=[])
    metrics = CURVES + ((record.metric,) if record.metric not in CURVES else ())
    for run in _child_runs(client, parent):
        confirming = run.data.tags.get("stage") == "confirm"
        (record.confirm_runs if confirming else record.trials).append(_trial(client, run, record.treatments, metrics))
    return record


def _child_runs(client: MlflowClient, parent) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _trial(client: MlflowClient, run, treatments: list[str], metrics: tuple) -> TrialRun:
    params, tags = run.data.params, run.data.tags
    treatment = {}
    for key in treatments:
        raw = params.get(key, tags.get(key))
        treatment[key] = raw if key == "variant" else _parse(key, raw)
    seed = _parse(SEED_KEY, params[SEED_KEY]) if SEED_KEY in params else None
    curves = {}
    for metric in metrics:
        history = client.get_metric_history(run.info.run_id, metric)
        # A retried trial logs an epoch twice; the later value is the one it went on from.
        by_step = {m.step: m.value for m in sorted(history, key=lambda m: m.timestamp)}
        curves[metric] = sorted(by_step.items())
    outcome = tags.get("outcome") or ("running" if run.info.status == "RUNNING" else run.info.status.lower())
    return TrialRun(run_id=run.info.run_id, trial_id=tags.get("trial_id", run.info.run_id[:8]),
                    is_baseline=tags.get("is_baseline") == "true", outcome=outcome, treatment=treatment,
                    seed=seed, params=dict(params), curves=curves, candidate=tags.get("candidate"))


def _parse(key: str, text):
    """An MLflow param string back to the TrainConfig value (so 0.1 sorts as a number)."""
    if text is None or text == "None":
        return None
    try:
        return coerce_value(key, text)
    except (ConfigError, TypeError):
        return text


# --- table rows: trials -> configurations ---------------------------------------------------

@dataclass
class Config:
    """One row: every trial with the same treatment values (seed repeats of one config)."""

    treatment: dict
    trials: list[TrialRun]
    is_baseline: bool
    changes: dict = field(default_factory=dict)  # a variant's training keys that differ from the baseline

    @property
    def reported(self) -> list[TrialRun]:
        return [t for t in self.trials if t.epochs > 0]

    def values(self, metric: str) -> list[float]:
        return [t.final(metric) for t in self.reported]

    def mean(self, metric: str) -> float | None:
        return mean_std(self.values(metric))[0]

    def std(self, metric: str) -> float | None:
        return mean_std(self.values(metric))[1]


def group_configs(record: SearchRecord) -> list[Config]:
    """Trials grouped by their treatment values, sorted best first (the baseline where it ranks).

    Sorted by epochs reached, then the metric: ASHA stops trials at different epochs, and an
    accuracy after 1 epoch says nothing about one after 6, so deeper trials rank first.
    """
    groups: dict[tuple, Config] = {}
    for trial in record.trials:
        key = tuple((k, repr(v)) for k, v in trial.treatment.items())
        if key not in groups:
            groups[key] = Config(treatment=trial.treatment, trials=[], is_baseline=False)
        groups[key].trials.append(trial)
        # A sampler may propose the baseline's values again (choice params): same row.
        groups[key].is_baseline |= trial.is_baseline
    configs = list(groups.values())
    for config in configs:
        config.trials.sort(key=lambda t: (str(t.seed), t.trial_id))
    base = next((c for c in configs if c.is_baseline), None)
    for config in configs:
        if base is not None and "variant" in record.treatments and not config.is_baseline:
            config.changes = _changes(config.trials[0], base.trials[0], record)
    sign = 1 if record.mode == "max" else -1

    def rank(config: Config):
        mean = config.mean(record.metric)
        return (-max((t.epochs for t in config.trials), default=0),
                -sign * mean if mean is not None else math.inf)

    return sorted(configs, key=rank)


def _changes(trial: TrialRun, base: TrialRun, record: SearchRecord) -> dict:
    """A variant's overrides, read back from the runs' params (the space file may have changed)."""
    skip = {SEED_KEY, "variant", *record.treatments}
    return {k: _parse(k, v) for k, v in sorted(trial.params.items())
            if k not in skip and base.params.get(k) != v}


def baseline_at(record: SearchRecord, epoch: int) -> float | None:
    """The baseline's metric at ``epoch``, averaged over its seeds/repeats that got that far."""
    values = [t.at(record.metric, epoch) for t in record.trials if t.is_baseline]
    values = [v for v in values if v is not None]
    return mean_std(values)[0]


def delta_vs_baseline(record: SearchRecord, config: Config) -> float | None:
    """Mean over the config's trials of (its final metric - the baseline's at the same epoch)."""
    deltas = []
    for trial in config.reported:
        base = baseline_at(record, trial.epochs)
        if base is not None:
            deltas.append(trial.final(record.metric) - base)
    return mean_std(deltas)[0]


def config_label(config: Config) -> str:
    """What distinguishes a configuration, in the config keys' own names."""
    parts = []
    for key, value in config.treatment.items():
        if key == "variant":
            changes = ", ".join(f"{k}={_fmt(v)}" for k, v in config.changes.items())
            parts.append(f"{value} ({changes})" if changes else str(value))
        else:
            parts.append(f"{key}={_fmt(value)}")
    if config.is_baseline:
        values = [p for p in parts if p != "baseline"]
        return f"baseline ({', '.join(values)})" if values else "baseline"
    return ", ".join(parts) or "recipe"


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --- seed statistics --------------------------------------------------------------------

@dataclass
class SeedComparison:
    """A configuration against the baseline over repeated runs (seeds)."""

    label: str
    n: int  # pairs for the paired test, else the config's runs
    n_baseline: int
    mean: float
    std: float | None
    baseline_mean: float
    baseline_std: float | None
    delta: float
    ci_low: float
    ci_high: float
    test: str
    p_value: float | None
    verdict: str


def seed_statistics(record: SearchRecord, configs: list[Config]) -> list[SeedComparison] | None:
    """Each repeated configuration vs the repeated baseline; None when nothing is repeated.

    Only completed trials count: a run ASHA stopped at epoch 2 would pull a 6-epoch mean down.
    """
    def finished(config: Config) -> list[TrialRun]:
        return [t for t in config.trials if t.outcome == "completed" and t.epochs > 0]

    if not any(len(finished(c)) >= 2 for c in configs):
        return None
    base = next((c for c in configs if c.is_baseline), None)
    if base is None or len(finished(base)) < 2:
        return []
    base_runs = finished(base)
    base_values = _by_seed(base_runs, record.metric)
    out = []
    for config in configs:
        runs = finished(config)
        if config.is_baseline or len(runs) < 2:
            continue
        values = _by_seed(runs, record.metric)
        result = compare_over_seeds(values, base_values, record.mode)
        mean, std = mean_std([t.final(record.metric) for t in runs])
        base_mean, base_std = mean_std([t.final(record.metric) for t in base_runs])
        out.append(SeedComparison(
            label=config_label(config), n_baseline=len(base_runs), mean=mean, std=std, baseline_mean=base_mean,
            baseline_std=base_std, **result))
    return out


def _by_seed(runs: list[TrialRun], metric: str) -> dict:
    """{seed: value}; runs that repeat a seed get distinct keys, which leaves them unpaired."""
    seeds = [t.seed for t in runs]
    if len(set(seeds)) == len(seeds):
        return {t.seed: t.final(metric) for t in runs}
    return {(t.run_id,): t.final(metric) for t in runs}


# --- parameter importances (fANOVA) ---------------------------------------------------------

def param_importances(record: SearchRecord) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances over the completed trials, or (None, why they were skipped).

    Completed trials only: all of them trained for max_epochs, so their values are
    comparable; a trial ASHA stopped at epoch 1 is not "bad", only unfinished.
    The seed is included when it was searched: its share is the noise floor a trick's
    importance has to beat.
    """
    trials = [t for t in record.trials if t.outcome == "completed" and t.epochs > 0
              and t.final(record.metric) is not None and math.isfinite(t.final(record.metric))]
    keys = record.treatments + ([SEED_KEY] if record.seed_searched else [])
    varying = [k for k in keys if len({repr(_point(t, k)) for t in trials}) > 1]
    if len(trials) < 3:
        return None, (f"Skipped: {len(trials)} completed trial(s); fANOVA needs at least 3 "
                      f"(run more samples, or let ASHA finish more trials).")
    if not varying:
        return None, "Skipped: no searched parameter varies across the completed trials."
    if len({t.final(record.metric) for t in trials}) == 1:
        return None, f"Skipped: every completed trial has the same {record.metric}; nothing to explain."
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {k: _distribution(record.space, k, [_point(t, k) for t in trials]) for k in varying}
    study = optuna.create_study(direction="maximize" if record.mode == "max" else "minimize")
    for t in trials:
        study.add_trial(optuna.trial.create_trial(params={k: _point(t, k) for k in varying},
                                                  distributions=distributions, value=t.final(record.metric)))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # seeded: same runs, same report
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator, params=varying)
    note = (f"fANOVA (optuna FanovaImportanceEvaluator) over the {len(trials)} completed trials' final "
            f"{record.metric}: the share of its variance each parameter explains (sums to 1).")
    if len(varying) == 1:
        note += f" Only {varying[0]} varies, so it explains everything by construction."
    if SEED_KEY in varying:
        note += " The seed's share is the noise floor: a trick below it is indistinguishable from noise here."
    return dict(importances), note


def _point(trial: TrialRun, key: str):
    return trial.seed if key == SEED_KEY else trial.treatment.get(key)


def _distribution(space: Space, key: str, observed: list):
    """The search distribution of ``key`` from the space file, widened to what was observed."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    param = space.params.get(key)
    if param is not None and param.type in ("uniform", "loguniform"):
        return FloatDistribution(min(param.low, *observed), max(param.high, *observed),
                                 log=param.type == "loguniform")
    if param is not None and param.type == "int":
        return IntDistribution(min(param.low, *observed), max(param.high, *observed))
    choices = list(param.values) if param is not None and param.values is not None else []
    if key == "variant":
        choices = list(space.variants)
    for value in observed:  # a value the file no longer lists (edited after the search)
        if value not in choices:
            choices.append(value)
    return CategoricalDistribution(choices)


# --- plots -----------------------------------------------------------------------------------

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


# --- cost and effect -----------------------------------------------------------------------------

def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, value) points no other point beats, cheapest first.

    A point is beaten when another costs at most as much, is worth at least as much, and is
    strictly better in one of the two: the front is the best value for its cost. Identical
    points do not beat each other, so both stay on it.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best, best_cost = -math.inf, None
    for i in order:
        cost, value = points[i]
        if value > best:
            front.append(i)
            best, best_cost = value, cost
        elif value == best and cost == best_cost:
            front.append(i)
    return front


def cost_points(record: SearchRecord, configs: list[Config]) -> list[tuple[Config, float, float]]:
    """(config, mean seconds per epoch, mean final val Top-1) of every completed configuration."""
    out = []
    for config in configs:
        done = [t for t in config.trials if t.outcome == "completed" and t.epochs > 0]
        seconds = [s for s in (t.mean_epoch_seconds() for t in done) if s is not None]
        top1 = [v for v in (t.final("val_top1") for t in done) if v is not None and math.isfinite(v)]
        if seconds and top1:
            out.append((config, mean_std(seconds)[0], mean_std(top1)[0]))
    return out


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


@dataclass
class Effect:
    """A configuration's change of the metric vs the baseline; the interval only over repeats."""

    label: str
    n: int
    delta: float
    ci_low: float | None = None
    ci_high: float | None = None
    verdict: str | None = None


def effects(record: SearchRecord, configs: list[Config], seeds: list[SeedComparison] | None,
            confirmation: dict | None = None) -> list[Effect]:
    """Confirmed configurations (the confirmation stage) and repeated ones (seeds of an
    ablation): delta and 95 % CI, paired by seed. Configurations of the search phase that
    completed once and were not confirmed: their delta alone (one run draws no interval)."""
    out = [Effect(s.label, s.n, s.delta, s.ci_low, s.ci_high, s.verdict) for s in seeds or []]
    out += [Effect(f"{row['label']} (confirmed)", row["n"], row["delta"], row["ci_low"], row["ci_high"],
                   row["verdict"]) for row in (confirmation or {}).get("rows", []) if "verdict" in row]
    repeated = {e.label for e in out}
    for config in configs:
        done = [t for t in config.trials if t.outcome == "completed" and t.epochs > 0]
        if config.is_baseline or not done or config_label(config) in repeated:
            continue
        delta = delta_vs_baseline(record, Config(config.treatment, done, False, config.changes))
        if delta is not None:
            out.append(Effect(config_label(config), len(done), delta))
    sign = 1 if record.mode == "max" else -1
    return sorted(out, key=lambda e: sign * e.delta)


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
    ax.set_xlabel(f"Δ {metric} vs the baseline ({_points(metric)}; better to the {better})")
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


# --- markdown -------------------------------------------------------------------------------

def _points(metric: str) -> str:
    return "points" if metric in ("val_top1", "val_top5") else metric


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
        treatment = []
        for key in record.treatments:
            value = config.treatment.get(key)
            if key == "variant" and config.changes:
                value = f"{value} ({', '.join(f'{k}={_fmt(v)}' for k, v in config.changes.items())})"
            treatment.append(_fmt(value))
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


def confirmation_of(record: SearchRecord) -> dict | None:
    """The confirmation phase recomputed from its MLflow runs (search/confirm.py's rule): each
    configuration's final metric by seed, only runs that completed."""
    if not record.confirm_runs:
        return None
    finals: dict[str, dict] = {confirm.BASELINE: {}}
    for run in record.confirm_runs:
        if run.outcome == "completed" and run.epochs >= record.max_epochs:
            finals.setdefault(run.candidate, {})[run.seed] = run.final(record.metric)
    seeds = sorted({run.seed for run in record.confirm_runs})
    return {"seeds": seeds, **confirm.evaluate(finals, record.mode)}


def confirmation_markdown(confirmation: dict, metric: str) -> list[str]:
    lines = ["## Confirmed over seeds: the answer", "",
             f"The best configurations of the search phase and the baseline, again for seeds "
             f"{', '.join(map(str, confirmation['seeds']))} (fresh, the same for every configuration), each run "
             f"to the end. Δ: mean {metric} minus the baseline's, paired by seed, with its 95% CI (paired t).", "",
             f"| configuration | n | {metric} (mean ± std) | Δ vs baseline [95% CI] | p | verdict |",
             "|---|---|---|---|---|---|"]
    for row in confirmation["rows"]:
        value = "—" if row["mean"] is None else f"{row['mean']:.2f}" + (
            f" ± {row['std']:.2f}" if row.get("std") is not None else "")
        if "verdict" in row:
            p = f"{row['p_value']:.3g}" if row.get("p_value") is not None else "n/a"
            tail = f"{row['delta']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}] | {p} | **{row['verdict']}**"
        else:
            tail = "— | — | —"
        lines.append(f"| {row['label']} | {row['n']} | {value} | {tail} |")
    winner = confirmation["winner"]
    lines += ["", f"Winner: **{winner}** (best confirmed mean)." if winner not in (None, confirm.BASELINE) else
              "Winner: the baseline; no confirmed configuration beat its mean." if winner else "", ""]
    if confirmation["note"]:
        lines += [confirmation["note"], ""]
    return lines


def render_markdown(record: SearchRecord, configs: list[Config], seeds: list[SeedComparison] | None,
                    importances: dict | None, importance_note: str, files: dict[str, str],
                    confirmation: dict | None = None) -> str:
    outcomes: dict[str, int] = {}
    for t in record.trials:
        outcomes[t.outcome] = outcomes.get(t.outcome, 0) + 1
    points = _points(record.metric)
    lines = [
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
    lines += ["## Which searched parameters matter", "", importance_note, ""]
    if importances:
        lines += ["| parameter | importance |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in sorted(importances.items(), key=lambda kv: -kv[1])]
        lines.append("")
        if "importances" in files:
            lines += [f"![importances]({files['importances']})", ""]
    lines += [f"Generated by `python -m search.report {_space_arg(record.space)} --search {record.parent_id}` "
              f"from {_safe_uri(record.tracking_uri)}.", ""]
    return "\n".join(lines)


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
    from spaces import SPACES_DIR

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


# --- the command ------------------------------------------------------------------------------

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
    files = {"curves": "curves.png"}
    plot_curves(record, configs, os.path.join(out_dir, files["curves"]))
    seeds = seed_statistics(record, configs)
    confirmation = confirmation_of(record)
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
