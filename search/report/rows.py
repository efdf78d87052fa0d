"""Table rows: a search's trials grouped into configurations, and what each is called.

A configuration is every trial with the same treatment values (the seed repeats of one
config); its delta is taken against the baseline at the same epoch, since ASHA stops trials
at different epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from search.labels import trial_label
from search.report.load import SEED_KEY, SearchRecord, TrialRun, parse
from search.stats import mean_std


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
    return {k: parse(k, v) for k, v in sorted(trial.params.items())
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


def variant_text(config: Config) -> str | None:
    """An ablation variant with what it changes (``cutmix (cutmix_alpha=1 mixup_alpha=0)``), the
    changes in search/labels.py's form; the variant's bare value when it changes nothing."""
    variant = config.treatment.get("variant")
    return f"{variant} ({trial_label(config.changes)})" if config.changes else variant


def config_label(config: Config) -> str:
    """What a configuration is called in the report: search/labels.py's trial label (the name the
    console and MLflow give its runs), with a variant's changes spelled out."""
    treatment = dict(config.treatment)
    if "variant" in treatment:
        treatment["variant"] = variant_text(config)
    return trial_label(treatment, config.is_baseline)


def delta_unit(metric: str) -> str:
    """What a delta of ``metric`` is measured in: accuracies are %, so their deltas are points."""
    return "points" if metric in ("val_top1", "val_top5") else metric


__all__ = ["Config", "group_configs", "baseline_at", "delta_vs_baseline", "variant_text", "config_label",
           "delta_unit"]
