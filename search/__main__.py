"""``python -m search SPACE [--recipe R] [--set k=v ...] [--samples N] [--confirm-seeds N] [--resume] [--verbose]``

Runs a real Ray Tune search over a named space (spaces/<SPACE>.yaml) layered on a recipe
(spaces/recipes/): Optuna TPE proposes, ASHA stops bad trials early, then the best
configurations and the baseline run again over paired seeds and the summary gives each a
verdict. MLflow records every trial. What it prints is search/console/view.py's view (redrawn
in a terminal, one line per event otherwise), then the summary below; --verbose adds Ray's
own per-trial boxes and worker logs.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from trainable.config import ConfigError, parse_overrides


def _print_summary(s: dict) -> None:
    from search.labels import trial_label
    from search.summary import confirmation_lines

    print("\n" + "=" * 72)
    print(f"search {s['space']} on recipe {s['recipe']}: {s['trials']} trials"
          + (f", {s['errors']} failed" if s.get("errors") else ""))
    if "best_value" in s:
        print(f"best single run {s['best_trial']}: {s['metric']} {s['best_value']:.2f}"
              + (f", val_top5 {s['best_val_top5']:.2f}" if s.get("best_val_top5") is not None else "")
              + f" ({trial_label(s['best_config'])})")
        if "baseline_value" in s:
            print(f"baseline run    {s['metric']} {s['baseline_value']:.2f}   delta {s['delta']:+.2f} points "
                  "(one seed each: a hint, not a result)")
    else:
        print("no trial produced a result")
    if s.get("confirm"):
        print("\n".join(confirmation_lines(s["confirm"], s["metric"])))
    elif "best_value" in s and not s.get("interrupted"):
        print("not confirmed over seeds (--confirm-seeds 0): the best single run may be the luckiest")
    print(f"MLflow       experiment {s['experiment']!r}, parent run {s['parent_run_id']} ({s['tracking_uri']})")
    print(f"             runs: {s['runs_url']}")
    print(f"             (the UI: make mlflow) ;  table and plots: make report SPACE={s['space']}")
    print(f"Ray results  {s['results']}")
    if s.get("interrupted"):
        print(f"INTERRUPTED: finished trials are kept; continue with  {s['resume_command']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search", description=__doc__.splitlines()[0])
    parser.add_argument("space", help="a space name in spaces/ (e.g. mixup_alpha) or a path to a .yaml file")
    parser.add_argument("--recipe", help="the setup the space is layered on: a name in spaces/recipes/ "
                                         "(default: the embedded Fashion-MNIST one) or a path")
    parser.add_argument("--data-dir", help="the recipe's data set folder (its data_dir), e.g. /data/CUB_200_2011")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="fix a training key for every trial (repeatable)")
    parser.add_argument("--samples", type=int, help="number of trials (overrides the space's num_samples)")
    parser.add_argument("--confirm-top", type=int, metavar="K", help="confirm the K best configurations (default 2)")
    parser.add_argument("--confirm-seeds", type=int, metavar="N",
                        help="seeds per confirmed configuration and the baseline (default 3; 0 = no confirmation)")
    parser.add_argument("--resume", action="store_true", help="continue the latest interrupted search of SPACE")
    parser.add_argument("--smoke", action="store_true", help="tiny data, 2 epochs, 3 trials: the whole path fast")
    parser.add_argument("--dashboard", action="store_true",
                        help="Ray dashboard on http://127.0.0.1:8265 (the address and how to sign in are printed)")
    parser.add_argument("--storage", help="results folder or URI (default ./ray_results or $TRICKTUNE_STORAGE)")
    parser.add_argument("--max-failures", type=int, default=2, help="retries of a trial that raises (default 2)")
    parser.add_argument("--verbose", action="store_true",
                        help="also Ray's per-trial boxes and the workers' INFO logs (one line per event, no redraw)")
    args = parser.parse_args(argv)

    from search.console import quiet_libraries
    from search.runner import SearchError, SearchOptions, run_search

    if not args.verbose:
        quiet_libraries()

    try:
        if args.samples is not None and args.samples < 1:
            raise ConfigError(f"--samples {args.samples}: run at least one trial")
        pairs = [p for item in args.set for p in item.split()]
        overrides = {**parse_overrides(pairs), **({"data_dir": args.data_dir} if args.data_dir else {})}
        opts = SearchOptions(space=args.space, overrides=overrides, recipe=args.recipe, samples=args.samples,
                             confirm_top=args.confirm_top, confirm_seeds=args.confirm_seeds,
                             smoke=args.smoke, resume=args.resume, storage=args.storage,
                             dashboard=args.dashboard, max_failures=args.max_failures, verbose=2 if args.verbose else 1)
        # SIGTERM (a killed `make`, a scheduler's stop) ends the search like Ctrl-C does:
        # Ray stops the trials, saves the experiment state, and our runs are closed.
        signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
        summary = run_search(opts)
    except (ConfigError, SearchError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
