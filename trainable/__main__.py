"""``python -m trainable --set key=value ...``: one training run, one line per epoch.

    python -m trainable --set model=resnet56 --set epochs=15 --save-weights teachers/teacher.pt

is how a distillation teacher is made (``make teacher``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from trainable.config import CHECKPOINT_FILE, ConfigError, describe, from_dict, parse_overrides
from trainable.files import atomic_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainable", description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable); see --help-config")
    parser.add_argument("--save-weights", metavar="PATH", help="write the final weights here (a teacher file)")
    parser.add_argument("--checkpoint-dir", metavar="DIR", help="keep the latest checkpoint here (for --resume)")
    parser.add_argument("--resume", metavar="DIR", help="continue from a checkpoint directory")
    parser.add_argument("--json", action="store_true", help="print each epoch's metrics as one JSON line")
    parser.add_argument("--help-config", action="store_true", help="list every config key, type and default")
    args = parser.parse_args(argv)
    if args.help_config:
        print(describe())
        return 0
    try:
        pairs = [p for item in args.set for p in item.split()]
        cfg = from_dict(parse_overrides(pairs))
        if args.resume and not os.path.isfile(os.path.join(args.resume, CHECKPOINT_FILE)):
            raise ConfigError(f"--resume: no checkpoint ({CHECKPOINT_FILE}) in {args.resume!r}; give a "
                              "--checkpoint-dir an earlier run wrote")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from trainable.loop import export_weights, fit  # torch import: only after the config is known good

    keep = args.checkpoint_dir or (os.path.join("runs", "last") if args.save_weights else None)

    def report(metrics: dict, checkpoint_dir: str) -> None:
        if args.json:
            print(json.dumps(metrics), flush=True)
        else:
            val = (f"val_loss {metrics['val_loss']:.4f}  val_top1 {metrics['val_top1']:6.2f}  "
                   f"val_top5 {metrics['val_top5']:6.2f}  " if "val_loss" in metrics else "")  # eval_every
            print(f"epoch {metrics['epoch']:>3}/{cfg.epochs}  train_loss {metrics['train_loss']:.4f}  {val}"
                  f"lr {metrics['lr']:.4g}  {metrics['epoch_seconds']:.1f}s  "
                  f"{metrics['images_per_second']:.0f} img/s", flush=True)
        if keep:
            os.makedirs(keep, exist_ok=True)
            with atomic_path(os.path.join(keep, CHECKPOINT_FILE)) as tmp:
                shutil.copy2(os.path.join(checkpoint_dir, CHECKPOINT_FILE), tmp)

    try:
        fit(cfg, report, resume_from=args.resume)
    except ConfigError as err:  # data/model problems found while loading
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.save_weights:
        export_weights(keep, args.save_weights)
        print(f"saved weights to {args.save_weights}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
