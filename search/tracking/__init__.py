"""MLflow records of a search: one parent run per search, one nested run per trial.

- ``callback``: ``MlflowTracker``, the Ray Tune callback in the driver that turns trial
  events into records, and ``trial_outcome``;
- ``writer``: ``MlflowWriter``, the one thread that sends them (batched, retried, spooled to
  ``mlflow_pending.jsonl`` during an outage), and ``import_pending``, which sends a spool
  later (``python -m search.tracking import FILE``);
- ``ui``: the store (``default_tracking_uri``), the space's experiment, the saved runs view
  and the link that opens a search in the MLflow UI.
"""

from search.tracking.ui import (
    DEFAULT_UI,
    EXPERIMENT_KIND_TAG,
    TRAINING_KIND,
    default_tracking_uri,
    experiment_for_space,
    experiment_name,
    runs_url,
    save_runs_view,
)
from search.tracking.writer import PENDING_FILE, MlflowWriter, _Op, import_pending

__all__ = ["DEFAULT_UI", "EXPERIMENT_KIND_TAG", "PENDING_FILE", "TRAINING_KIND", "MlflowTracker", "MlflowWriter",
           "_Op", "default_tracking_uri", "experiment_for_space", "experiment_name", "import_pending", "runs_url",
           "save_runs_view", "trial_outcome"]


def __getattr__(name: str):
    # The callback subclasses Ray Tune's: imported on first use, so what only reads the
    # store (make report, python -m search.tracking import) never imports Ray Tune.
    if name in ("MlflowTracker", "trial_outcome"):
        from search.tracking import callback

        return getattr(callback, name)
    raise AttributeError(f"module 'search.tracking' has no attribute {name!r}")
