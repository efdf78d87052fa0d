"""Every private Ray Tune attribute tricktune reads, behind one small adapter.

Ray 2.x offers no public accessor for these three facts; each function below names the
attribute it reads, and ``tests/test_ray_private.py`` builds the real Ray objects and
fails loudly when an upgrade moves one, instead of a search breaking in the field.
"""

from __future__ import annotations


def asha_time_attr_and_max_t(scheduler) -> tuple[str, int]:
    """What an ``ASHAScheduler`` counts rungs in and where it stops (``_time_attr``, ``_max_t``)."""
    return scheduler._time_attr, scheduler._max_t


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


__all__ = ["asha_time_attr_and_max_t", "run_config_callbacks", "trial_states"]
