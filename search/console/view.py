"""What a person sees while a search runs: one compact view instead of Ray's log.

``SearchConsole`` is a Ray Tune ``Callback`` in the driver. It keeps, per phase, a small
model of the trials (searched values, epoch, metric by epoch, outcome) and shows:

- a progress bar over the phase's budget in trial-epochs, with elapsed time and ETA.
  The budget is trials x max_epochs; when ASHA stops a trial (or one fails) its unrun
  epochs leave the budget, so the bar ends at 100 % and the ETA shrinks with it;
- the running and finished trials: searched values, epoch, metric, outcome
  (completed / stopped early / failed);
- the best completed trial against the baseline at the same epoch.

Two renderings of the same model:

- stdout is a terminal: a block redrawn in place (at most once a second, and on every
  trial event), cut to the terminal's size;
- anything else (a CI log, ``| tee``, a file): one line per event (a trial starts, reports
  an epoch, ends), nothing redrawn. ``--verbose`` uses this form too, since Ray's own
  boxes are printed between the lines then.

Phases. A search is one phase, started by the runner::

    console = SearchConsole(metric="val_top1", mode="max", baseline_key=..., max_epochs=6)
    console.start_phase("search", budget_trial_epochs=12 * 6, detail="12 trials x up to 6 epochs")
    Tuner(..., run_config=RunConfig(callbacks=[tracker, console])).fit()

A later stage with a Tuner of its own (e.g. a confirmation that re-runs the top
configurations over seeds) calls ``start_phase`` again before its ``fit()``, with its own
budget, and passes the same console. Results from then on count towards the new phase;
each earlier phase stays on screen as one line ("search  done  32/72 trial-epochs in 5m41s").
``note(text)`` prints a line above the live block (the dashboard address, say).
"""

from __future__ import annotations

import io
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field

from ray import tune

from search import confirm
from search.domains import is_baseline
from search.labels import trial_label
from search.tracking.callback import trial_outcome

# trial_outcome's tags -> the words shown; "retrying" while Ray restarts a raising trial.
OUTCOME_WORDS = {"completed": "completed", "stopped_early": "stopped early", "nonfinite_loss": "failed (NaN loss)",
                 "error": "failed"}
ENDED_EARLY = ("stopped early", "failed (NaN loss)", "failed")
REDRAW_SECONDS = 1.0  # elapsed time and ETA move; more often than once a second only flickers


@dataclass
class TrialRow:
    trial_id: str
    label: str
    baseline: bool
    status: str = "pending"  # pending | running | retrying | one of OUTCOME_WORDS' values
    values: dict[int, float] = field(default_factory=dict)  # the metric by (validated) epoch
    epoch: int = 0  # epochs trained (a confirmation run validates only some: eval_every)
    configuration: str = ""  # a confirmation run's candidate (its label without the seed)

    @property
    def validated(self) -> int:
        """The last epoch with a metric value (0: none yet)."""
        return max(self.values, default=0)

    @property
    def last(self) -> float | None:
        return self.values.get(self.validated)


@dataclass
class Phase:
    name: str
    budget: int  # trial-epochs if every trial ran to max_epochs
    max_epochs: int
    started: float  # time.monotonic()
    detail: str = ""
    rows: dict[str, TrialRow] = field(default_factory=dict)
    epochs_before: int = 0  # done before this process started (a resumed search): not in the ETA's rate
    ended: float | None = None

    def done(self) -> int:
        return sum(r.epoch for r in self.rows.values())

    def total(self) -> int:
        """The budget less the epochs trials that ended early will never run."""
        released = sum(self.max_epochs - r.epoch for r in self.rows.values() if r.status in ENDED_EARLY)
        return max(self.done(), self.budget - released, 1)

    def eta(self, now: float) -> float | None:
        ran = self.done() - self.epochs_before
        if ran <= 0:
            return None
        return (now - self.started) / ran * (self.total() - self.done())

    def best(self, mode: str) -> TrialRow | None:
        sign = 1 if mode == "max" else -1
        done = [r for r in self.rows.values() if r.status == "completed" and r.last is not None]
        return max(done, key=lambda r: sign * r.last, default=None)

    def baseline(self) -> TrialRow | None:
        return next((r for r in self.rows.values() if r.baseline), None)


# --- pure formatting -----------------------------------------------------------------------

def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def bar(done: int, total: int, width: int = 20) -> str:
    filled = min(width, round(width * done / total)) if total else 0
    return "█" * filled + "░" * (width - filled)


def progress(phase: Phase, now: float) -> str:
    done, total = phase.done(), phase.total()
    if phase.ended is not None:
        return f"{done}/{total} trial-epochs in {duration(phase.ended - phase.started)}"
    return (f"{done}/{total} trial-epochs ({100 * done // total}%), {duration(now - phase.started)} elapsed, "
            f"ETA {duration(phase.eta(now))}")


def best_line(phase: Phase, metric: str, mode: str) -> str:
    best, base = phase.best(mode), phase.baseline()
    if best is None:
        if base is not None and base.last is not None:
            return (f"best      none completed yet; baseline {metric} {base.last:.2f} "
                    f"at epoch {base.validated}/{phase.max_epochs}")
        return "best      none completed yet"
    text = f"best      {best.label}: {metric} {best.last:.2f}"
    if best.baseline:
        return text + " (the baseline)"
    ref = base.values.get(best.validated) if base is not None else None
    if ref is None:
        return text + " (baseline still running)"
    return text + f", baseline {ref:.2f}, delta {best.last - ref:+.2f}"


def means_line(phase: Phase, metric: str, mode: str) -> str:
    """The confirmation's running answer: each configuration's mean over its completed seeds
    (one seed's best run is not the answer; the summary adds the CI and the verdict)."""
    done: dict[str, list[float]] = {}
    for row in phase.rows.values():
        if row.status == "completed" and row.last is not None:
            done.setdefault(row.configuration or row.label, []).append(row.last)
    if not done:
        return "means     none completed yet"
    sign = 1 if mode == "max" else -1
    ranked = sorted(done.items(), key=lambda kv: -sign * statistics.fmean(kv[1]))
    return f"means     {metric}: " + ", ".join(f"{k} {statistics.fmean(v):.2f} (n={len(v)})" for k, v in ranked)


def trial_table(phase: Phase, metric: str, mode: str, max_rows: int) -> list[str]:
    """One line per trial; when they do not fit, the running ones and the best finished."""
    rows = list(phase.rows.values())
    hidden = 0
    if len(rows) > max_rows:
        sign = 1 if mode == "max" else -1
        live = [r for r in rows if r.status in ("running", "retrying", "pending")]
        ended = sorted((r for r in rows if r not in live), key=lambda r: -sign * (r.last or 0))
        keep = set(map(id, (live + ended)[:max(0, max_rows - 1)]))
        hidden = len(rows) - len(keep)
        rows = [r for r in rows if id(r) in keep]
    width = min(48, max((len(r.label) for r in rows), default=6))
    lines = [f"  {'trial':<8}  {'config':<{width}}  {'epoch':>5}  {metric:>9}  outcome"]
    for r in rows:
        value = f"{r.last:.2f}" if r.last is not None else "—"
        label = r.label if len(r.label) <= width else r.label[:width - 1] + "…"
        lines.append(f"  {r.trial_id:<8}  {label:<{width}}  {r.epoch:>2}/{phase.max_epochs:<2}  {value:>9}  {r.status}")
    if hidden:
        lines.append(f"  … {hidden} more finished trials (the whole table: make report)")
    return lines


# --- the callback ------------------------------------------------------------------------------

class SearchConsole(tune.Callback):
    """Progress of a search (and of any later phase) on stdout; see the module docstring."""

    def __init__(self, metric: str, mode: str, baseline_key: dict, max_epochs: int, stream=None,
                 live: bool | None = None):
        self.metric, self.mode, self.baseline_key, self.max_epochs = metric, mode, baseline_key, max_epochs
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.phases: list[Phase] = []
        self._drawn = 0  # lines of the live block now on screen
        self._last_draw = 0.0

    def __getstate__(self):  # Ray pickles callbacks with the experiment state; a stream does not pickle
        return {**self.__dict__, "stream": None}

    # -- the API a stage uses ---------------------------------------------------------------
    def start_phase(self, name: str, budget_trial_epochs: int, detail: str = "", max_epochs: int | None = None):
        now = time.monotonic()
        if self.phases and self.phases[-1].ended is None:
            self.phases[-1].ended = now
        phase = Phase(name, budget_trial_epochs, max_epochs or self.max_epochs, now, detail)
        self.phases.append(phase)
        if self.live:
            self._redraw()
        else:
            self._line(f"{name}: {detail + ', ' if detail else ''}at most {budget_trial_epochs} trial-epochs; "
                       f"{self.metric} ({self.mode})", stamp=False)
        return phase

    def note(self, text: str) -> None:
        """A line that stays, printed above the live block."""
        if self.live:
            self._clear()
            self._write(text + "\n")
            self._redraw()
        else:
            self._line(text, stamp=False)

    # -- Ray Tune events ------------------------------------------------------------------------
    def on_step_begin(self, iteration, trials, **info):
        self._sync(trials)

    def on_step_end(self, iteration, trials, **info):
        if self.live and time.monotonic() - self._last_draw >= REDRAW_SECONDS:
            self._redraw()

    def on_trial_start(self, iteration, trials, trial, **info):
        row = self._row(trial)
        row.status = "running"
        self._event(f"{self._kind('start')} {row.trial_id}  {row.label}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = self._row(trial)
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        value = result.get(self.metric)
        if not epoch or epoch <= row.epoch:
            return  # no epoch, or a retried trial replaying one it reported already
        row.epoch, row.status = epoch, "running"
        if not isinstance(value, (int, float)):
            return  # an epoch not validated (eval_every): progress only
        row.values[epoch] = float(value)
        phase = self._phase()
        if epoch >= phase.max_epochs and not self.live:
            return  # its "completed" line follows at once, with the value and the progress
        self._event(f"{self._kind(f'epoch {epoch}/{phase.max_epochs}')} {row.trial_id}  {self.metric} {value:.2f}   "
                    f"[{bar(phase.done(), phase.total(), 10)}] {progress(phase, time.monotonic())}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, OUTCOME_WORDS[trial_outcome(trial.last_result, self._phase().max_epochs)[1]])

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "failed")

    def on_trial_recover(self, iteration, trials, trial, **info):
        row = self._row(trial)
        row.status = "retrying"
        self._event(f"{self._kind('retrying')} {row.trial_id}  failure {trial.num_failures}, from its last checkpoint")

    def on_experiment_end(self, trials, **info):
        phase = self._phase()
        phase.ended = time.monotonic()
        if self.live:
            self._redraw()
        else:
            self._line(f"{phase.name} done: {progress(phase, phase.ended)}")

    # -- model ------------------------------------------------------------------------------------
    def _phase(self) -> Phase:
        if not self.phases:  # a Tuner run without start_phase: a phase with an unknown budget
            self.start_phase("search", 0)
        return self.phases[-1]

    def _row(self, trial) -> TrialRow:
        rows = self._phase().rows
        if trial.trial_id not in rows:
            rows[trial.trial_id] = TrialRow(trial.trial_id, trial_label(trial.config, self._is_baseline(trial)),
                                            self._is_baseline(trial),
                                            configuration=trial.config.get(confirm.CANDIDATE_KEY, ""))
        return rows[trial.trial_id]

    def _is_baseline(self, trial) -> bool:
        return is_baseline(trial.config, self.baseline_key)

    def _sync(self, trials) -> None:
        """Trials this process never saw start: restored by a resumed search (with their epochs)."""
        phase = self._phase()
        for trial in trials:
            if trial.trial_id in phase.rows:
                continue
            row = self._row(trial)
            result = trial.last_result or {}
            if result.get("epoch"):
                row.epoch = int(result["epoch"])
                phase.epochs_before += row.epoch
                if isinstance(result.get(self.metric), (int, float)):
                    row.values[row.epoch] = float(result[self.metric])
            if trial.status == "TERMINATED" and row.epoch:
                row.status = OUTCOME_WORDS[trial_outcome(result, phase.max_epochs)[1]]
            elif trial.status == "ERROR":
                row.status = "failed"

    def _end(self, trial, status: str) -> None:
        phase = self._phase()
        before = phase.best(self.mode)
        row = self._row(trial)
        row.status = status
        value = f"{self.metric} {row.last:.2f} at epoch {row.validated}/{phase.max_epochs}" if row.last is not None \
            else "no epoch reported"
        text = f"{self._kind(status)} {row.trial_id}  {value}   [{bar(phase.done(), phase.total(), 10)}] " \
               f"{progress(phase, time.monotonic())}"
        best = phase.best(self.mode)
        # The best so far matters while searching; a confirmation's answer is the summary's verdict.
        if best is row and best is not before and phase.name == "search":
            text += f"\n{'':>8}{best_line(phase, self.metric, self.mode)}"
        self._event(text)

    # -- output -----------------------------------------------------------------------------------
    def _kind(self, word: str) -> str:
        """The event column, as wide as "stopped early" or "epoch 12/12", so trial ids line up."""
        m = self._phase().max_epochs
        return f"{word:<{max(13, len(f'epoch {m}/{m}'))}}"

    def _event(self, text: str) -> None:
        if self.live:
            self._redraw()
        else:
            self._line(text)

    def _line(self, text: str, stamp: bool = True) -> None:
        if stamp and self.phases:
            text = f"{duration(time.monotonic() - self.phases[-1].started):>6}  {text}"
        self._write(text + "\n")

    def _write(self, text: str) -> None:
        if self.stream is None:  # unpickled in a process that did not set it up: show nothing
            return
        self.stream.write(text)
        self.stream.flush()

    def _block(self) -> list[str]:
        size = shutil.get_terminal_size((100, 30))
        now = time.monotonic()
        lines = [f"{p.name:<8}  done  {progress(p, now)}" for p in self.phases[:-1]]
        phase = self.phases[-1]
        lines.append(f"{phase.name:<8}  [{bar(phase.done(), phase.total())}]  {progress(phase, now)}")
        lines += trial_table(phase, self.metric, self.mode, max_rows=max(3, size.lines - len(lines) - 4))
        answer = means_line if phase.name == "confirm" else best_line
        lines.append(answer(phase, self.metric, self.mode))
        return [line if len(line) < size.columns else line[:size.columns - 2] + "…" for line in lines]

    def _clear(self) -> None:
        if self._drawn:
            # To the start of the block's first line, then erase to the end of the screen.
            self._write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _redraw(self) -> None:
        if not self.phases or self.stream is None:
            return
        lines = self._block()
        self._clear()
        self._write("\n".join(lines) + "\n")
        self._drawn = len(lines)
        self._last_draw = time.monotonic()


def for_search(space, baseline_key: dict, trials: int, verbose: int) -> SearchConsole:
    """The console of one search, its first phase started. verbose: 0 shows nothing (make bench),
    1 the live view, 2 line by line (Ray prints its boxes in between then)."""
    console = SearchConsole(space.metric, space.mode, baseline_key, space.max_epochs,
                            stream=sys.stdout if verbose else io.StringIO(), live=False if verbose >= 2 else None)
    early = " (ASHA stops weak ones early)" if space.scheduler != "none" else ""
    console.start_phase("search", trials * space.max_epochs,
                        detail=f"{space.name}, {trials} trials x up to {space.max_epochs} epochs{early}")
    return console
