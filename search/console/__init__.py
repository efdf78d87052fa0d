"""What a person sees while a search runs.

- ``view``: ``SearchConsole``, the Ray Tune callback that draws the live view (or one line
  per event), and its model and formatting (rows, bar, progress, tables);
- ``quiet``: ``quiet_libraries``, the one place that keeps Ray's, Optuna's and MLflow's
  noise off the screen, and ``quiet_worker``, its part inside each Ray worker;
- ``dashboard``: the Ray dashboard's address and how to sign in to it.
"""

from search.console.dashboard import dashboard_sign_in
from search.console.quiet import quiet_libraries, quiet_worker
from search.console.view import (
    Phase,
    SearchConsole,
    TrialRow,
    bar,
    best_line,
    duration,
    for_search,
    means_line,
    progress,
    trial_table,
)

__all__ = ["SearchConsole", "Phase", "TrialRow", "bar", "best_line", "means_line", "dashboard_sign_in", "duration",
           "for_search", "progress", "quiet_libraries", "quiet_worker", "trial_table"]
