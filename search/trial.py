"""What one Ray Tune trial runs: ``trainable.fit`` with ``report`` adapted to Ray.

Uses only ``ray.tune.*`` (Ray 2.x's public function-trainable API): ``report``
persists each epoch's checkpoint to the run's storage, ``get_checkpoint`` hands it
back when Ray restores or retries the trial.
"""

from __future__ import annotations

import dataclasses

from ray import tune

from search import confirm
from trainable.config import REPORTED_METRICS
from trainable.loop import NonFiniteLossError, fit

# A trial that diverged still reports once, so the scheduler, the searcher and MLflow
# all learn the config is bad: accuracies 0 rank it last for `mode: max`, losses NaN.
DIVERGED = {name: float("nan") if name.endswith("loss") else 0.0 for name in REPORTED_METRICS if name != "epoch"}


def run_trial(config: dict, space, threads: int = 0, candidates: dict | None = None) -> None:
    """One trial: ``config`` is what Ray sampled (or, for a confirmation trial, a candidate's
    label and a seed, resolved through ``candidates``)."""
    cfg = space.trial_config(confirm.sampled(config, candidates) if candidates else config)
    if threads and cfg.threads == 0:
        # One torch thread per CPU Ray gave the trial, so packed trials don't oversubscribe the cores.
        cfg = dataclasses.replace(cfg, threads=threads)

    def report(metrics: dict, checkpoint_dir: str) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))

    checkpoint = tune.get_checkpoint()
    try:
        if checkpoint is None:
            fit(cfg, report)
        else:
            with checkpoint.as_directory() as resume_dir:
                fit(cfg, report, resume_from=resume_dir)
    except NonFiniteLossError as err:
        # Retrying a diverged config reproduces the NaN: end the trial with a result
        # instead of raising (which Ray would retry), and say why.
        tune.report({**DIVERGED, "epoch": err.epoch, "nonfinite_loss": 1.0, "failure": str(err)})
