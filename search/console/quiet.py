"""What Ray, Optuna and MLflow print that says nothing about a search, kept off the screen.

One function for every entry point that starts Ray (a search, the bench); ``quiet_worker``
runs in each Ray worker. ``--verbose`` shows all of it again.
"""

from __future__ import annotations

import logging
import os


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_libraries(verbose: int = 1) -> None:
    """Hide what Ray, Optuna and MLflow print that says nothing about a search; safe to call again.

    ``verbose``: 0 the bench, which prints only its own lines (so all of MLflow's INFO goes);
    1 a search's console (the lines below, each printed once per search); 2 ``--verbose``:
    everything but the checkpoint-sync warning, whose advice does not apply here."""
    # A checkpoint per epoch makes Ray snapshot its state often on short epochs; that is
    # intended here, so don't warn about it (every few seconds).
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if verbose >= 2:
        return
    # Tune's new console engine prints a box per experiment and a results path even at
    # verbose=0; the legacy engine prints nothing at 0. tricktune's console says it all.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory"
    # "Creating initial MLflow database tables"
    logging.getLogger("mlflow" if verbose == 0 else "mlflow.store.db.utils").setLevel(logging.WARNING)
    # ray.init's "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled
    # to opt out": tricktune keeps authentication on, and prints how to sign in with --dashboard.
    auth = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _DropMessage) for f in auth.filters):  # once, if main() runs again in-process
        auth.addFilter(_DropMessage("Token authentication is enabled for this Ray cluster"))


def quiet_worker() -> None:
    """Run in each Ray worker as it starts (the runtime_env's worker_process_setup_hook that
    search/tuners.py's init_ray sets): Ray Train's INFO lines, one "Checkpoint successfully
    created at: ..." per epoch per trial, stay out of the forwarded output; warnings and
    errors still come through."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
