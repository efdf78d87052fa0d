"""The private Ray attributes tricktune reads (search/ray_private.py) exist on real Ray objects.

When a Ray upgrade moves one of them, this fails here, naming it, instead of a search
failing halfway (a resumed search losing its MLflow records, say)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A real Tuner run (one trial, one report), restored from disk, and a real ASHA scheduler.
SCRIPT = r"""
import sys
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from search.ray_private import (asha_rungs, asha_time_attr_and_max_t, run_config_callbacks, set_asha_rungs,
                                trial_states)

class Seen(tune.Callback):
    pass

def one_report(config):
    tune.report({"val_top1": 1.0, "epoch": 1})

ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
scheduler = ASHAScheduler(time_attr="training_iteration", max_t=7, grace_period=1)
assert asha_time_attr_and_max_t(scheduler) == ("training_iteration", 7)
assert asha_rungs(scheduler) == [[[4, {}], [1, {}]]]  # one bracket, rungs at 1 and 4 (factor 4), last first
set_asha_rungs(scheduler, [[[4, {"a": 0.5}], [1, {"a": 0.4, "b": 0.3}]]])
assert asha_rungs(scheduler) == [[[4, {"a": 0.5}], [1, {"a": 0.4, "b": 0.3}]]]
tuner = tune.Tuner(one_report, tune_config=tune.TuneConfig(metric="val_top1", mode="max", num_samples=1),
                   run_config=tune.RunConfig(name="private", storage_path=sys.argv[1], callbacks=[Seen()], verbose=0))
results = tuner.fit()
(trial,) = trial_states(results)
assert trial.status == "TERMINATED" and trial.last_result["val_top1"] == 1.0, trial.status
restored = tune.Tuner.restore(sys.argv[1] + "/private", one_report)
callbacks = run_config_callbacks(restored)
assert [type(c).__name__ for c in callbacks if type(c).__name__ == "Seen"] == ["Seen"], callbacks
print("ok")
"""


def test_the_private_ray_attributes_tricktune_reads_are_where_it_reads_them(tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "RAY_AIR_NEW_OUTPUT": "0"})
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), (
        "a Ray upgrade moved an attribute search/ray_private.py reads: " + out.stderr[-2000:])
