"""Every private Ray Tune attribute tricktune reads, behind one small adapter.

Ray 2.x offers no public accessor for these facts; each function below names the
attribute it reads, and ``tests/test_ray_private.py`` builds the real Ray objects and
fails loudly when an upgrade moves one, instead of a search breaking in the field.
"""

from __future__ import annotations


def asha_time_attr_and_max_t(scheduler) -> tuple[str, int]:
    """What an ``ASHAScheduler`` counts rungs in and where it stops (``_time_attr``, ``_max_t``)."""
    return scheduler._time_attr, scheduler._max_t


def asha_rungs(scheduler) -> list[list]:
    """An ``ASHAScheduler``'s rungs as JSON-able data: per bracket (``_brackets``), per rung
    (``_rungs``: (milestone, {trial_id: signed metric})), ``[milestone, {trial_id: value}]``."""
    return [[[milestone, dict(recorded)] for milestone, recorded in bracket._rungs]
            for bracket in scheduler._brackets]


def set_asha_rungs(scheduler, rungs: list[list]) -> None:
    """Put back what :func:`asha_rungs` returned, rung by rung (same milestones)."""
    for bracket, saved in zip(scheduler._brackets, rungs):
        by_milestone = {float(milestone): recorded for milestone, recorded in saved}
        for milestone, recorded in bracket._rungs:
            recorded.update(by_milestone.get(float(milestone), {}))


def run_config_callbacks(tuner) -> list:
    """The callbacks of a (restored) ``Tuner``'s run config, as a list that can be edited in place.

    ``Tuner.restore`` unpickles the run config of the first run, our MLflow callback with it;
    the resumed process replaces that copy with its own (``_local_tuner._run_config``)."""
    run_config = tuner._local_tuner._run_config
    if run_config.callbacks is None:
        run_config.callbacks = []
    return run_config.callbacks


def trial_states(results) -> list:
    """Ray's own ``Trial`` objects (status, last_result) behind a ``ResultGrid``
    (``_experiment_analysis.trials``): a ``Result`` carries no status."""
    return list(results._experiment_analysis.trials)


__all__ = ["asha_rungs", "set_asha_rungs", "asha_time_attr_and_max_t", "run_config_callbacks", "trial_states"]
