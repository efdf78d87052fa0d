"""What every ``make bench`` figure shares: the result type, printing, Ray, paired rounds, space files."""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass

CORES = os.cpu_count() or 1


@dataclass
class Figure:
    """One line of the final table. ``passed`` None = not judged (skipped or information only)."""

    name: str
    measured: str
    goal: str
    passed: bool | None
    details: list[str] = dataclasses.field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "skipped" if self.measured.startswith("skipped") else "info"
        return "PASS" if self.passed else "FALL SHORT"


def say(line: str) -> None:
    print(line, flush=True)


def said(lines: list[str], *figures: Figure) -> list[Figure]:
    """Print a figure's detail lines (indented) and return its table rows."""
    for line in lines:
        say("  " + line)
    return list(figures)


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a/b: each round's two arms ran minutes apart at most, so their
    ratio is far steadier than either absolute number on a machine other jobs share."""
    return statistics.median(x / y for x, y in zip(a, b))


def spread(a: list[float], b: list[float]) -> str:
    ratios = [x / y for x, y in zip(a, b)]
    return f"per round {min(ratios):.2f}-{max(ratios):.2f}x" if len(ratios) > 1 else "one round"


def start_ray() -> None:
    """Ray for the figures that run searches, quiet: the bench prints its own lines."""
    import logging

    import optuna
    import ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created" per search
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # "Creating initial MLflow database tables"

    # Tune's new console output prints a box per experiment even at verbose=0; the legacy
    # one is silent. The snapshot warning fires for every checkpoint of a seconds-long epoch.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="ERROR")


def stop_ray() -> None:
    if "ray" in sys.modules:
        import ray

        ray.shutdown()


def rounds(arms: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run every arm once per round, reversing the order every other round so a slow drift
    of the machine's load does not always land on the same arm; prints each round."""
    measured: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(rounds):
        for name in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
            measured[name].append(arms[name]())
        say(f"  round {r + 1}: " + ", ".join(f"{name} {values[-1]:.1f}" for name, values in measured.items()))
    return measured


def space_file(folder: str, figure: str, question: str, *, fixed: dict, params: dict, budget: dict,
                scheduler: str, **sections) -> str:
    """Write the search space one figure runs (a real space file, loaded as users' are)."""
    import yaml

    # No confirmation stage: a figure measures one phase at a time.
    doc = {"metric": "val_top1", "mode": "max", "fixed": {**fixed, "device": "cpu"}, "params": params, **sections,
           "budget": {"cpus_per_trial": 1, "gpus_per_trial": 0, "confirm_seeds": 0, **budget},
           "scheduler": scheduler, "seed": 0}
    path = os.path.join(folder, f"bench_{figure}.yaml")
    with open(path, "w") as fh:
        fh.write(f"# Question: {question}\n# Run: python -m search.bench --only {figure}\n")
        yaml.safe_dump(doc, fh, sort_keys=False)
    return path




__all__ = ["CORES", "Figure", "say", "said", "paired_ratio", "spread", "start_ray", "stop_ray", "rounds", "space_file"]
