"""What every ``make bench`` figure shares: the result type and its table, printing, Ray, paired
rounds, space files, the default recipe, the load average and background CPU time."""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from trainable.config import TrainConfig

CORES = os.cpu_count() or 1
# Ray's worker processes (their process titles): they run the trial, so they are not background.
RAY_WORKERS = ("ray::ImplicitFunc", "ray::IDLE", "ray::run_trial")


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


def table(figures: list[Figure]) -> str:
    rows = ["| figure | measured | goal | result |", "|---|---|---|---|"]
    rows += [f"| {f.name} | {f.measured} | {f.goal} | {f.verdict} |" for f in sorted(figures, key=lambda f: f.name)]
    return "\n".join(rows)


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
    import ray

    from search.console.quiet import quiet_libraries

    quiet_libraries(verbose=0)
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


def recipe(**overrides) -> TrainConfig:
    """The default recipe's training config (spaces/recipes/) with ``overrides``, on the CPU."""
    from spaces import load_space, override

    space = override(load_space("baseline"), fixed={"device": "cpu", **overrides})
    return space.trial_config({})


def load() -> str:
    # Other jobs on the machine slow every figure; the load average says how busy it was.
    return f"{os.getloadavg()[0]:.1f} on {CORES} cores" if hasattr(os, "getloadavg") else "unknown"


def warm_worker() -> None:
    """A pool process's initializer: pays the torch import before the clock starts."""
    import trainable.loop  # noqa: F401


def background_cpu_seconds(exclude: set[int]) -> dict[int, float]:
    """CPU seconds (user + system) so far of this process and its descendants (Ray's GCS,
    raylet, agents, dashboard, monitors; DataLoader workers), by pid, leaving out Ray's
    worker processes, which run the trial, and the processes in ``exclude`` with theirs."""
    children: dict[int, list[psutil.Process]] = {}
    for process in psutil.process_iter(["ppid"]):
        children.setdefault(process.info["ppid"], []).append(process)
    ours, frontier = [psutil.Process()], [os.getpid()]
    while frontier:
        found = [child for child in children.get(frontier.pop(), []) if child.pid not in exclude]
        ours += found
        frontier += [child.pid for child in found]
    seconds = {}
    for process in ours:
        try:
            with process.oneshot():
                if " ".join(process.cmdline()).startswith(RAY_WORKERS):
                    continue
                times = process.cpu_times()
                seconds[process.pid] = times.user + times.system
        except psutil.Error:  # the process ended while we looked
            continue
    return seconds


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    # Processes alive at both ends: the daemons and the driver (a worker that became the
    # trial between the two looks would otherwise count as background).
    return sum(after[pid] - before[pid] for pid in before if pid in after)


__all__ = ["CORES", "RAY_WORKERS", "Figure", "table", "say", "said", "paired_ratio", "spread", "start_ray",
           "stop_ray", "rounds", "space_file", "recipe", "load", "warm_worker", "background_cpu_seconds",
           "cpu_delta"]
