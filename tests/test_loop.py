"""fit(cfg, report) end to end on real Fashion-MNIST images: accuracy, resume, every trick, bad input."""

from __future__ import annotations

import copy
import math
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
import torchvision
from conftest import TINY
from torch import nn

from trainable import loop
from trainable.config import CHECKPOINT_FILE, ConfigError, from_dict
from trainable.data import steps_per_epoch
from trainable.files import atomic_path
from trainable.loop import NonFiniteLossError, export_weights, fit
from trainable.models import build_model
from trainable.tricks.distill import kd_loss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_short_run_reaches_stated_accuracy(tiny):
    # Measured on this 2-core machine: ResNet-20, 2 epochs on 2,000 embedded images, lr 0.1
    # reaches 69.0 / 73.8 / 71.0 % val top-1 for seeds 0 / 1 / 2 (lr 0.05: 66.4 / 70.4 / 67.6).
    # 60 % leaves room for BLAS nondeterminism and still fails a loop that does not learn
    # (chance is 10 %; a broken loss or schedule stays far below).
    history = []
    fit(from_dict(tiny, train_subset=2000, val_subset=500, epochs=2, batch_size=64, lr=0.1, hflip=True,
                  channels_last=True), lambda m, d: history.append(m))
    assert [m["epoch"] for m in history] == [1, 2]
    assert history[-1]["val_top1"] >= 60.0
    assert history[-1]["val_top5"] >= history[-1]["val_top1"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for key in ("train_loss", "val_loss", "val_top1", "val_top5", "lr", "epoch_seconds", "images_per_second"):
        assert key in history[-1]


def test_resume_after_epoch_one_matches_uninterrupted_run(tiny, tmp_path):
    cfg = from_dict(tiny, epochs=2, mixup_alpha=0.2, ema_decay=0.9, hflip=True, crop="pad", warmup_epochs=0.5)
    straight = []
    fit(cfg, lambda m, d: straight.append(m))

    class Stop(Exception):
        pass

    saved = tmp_path / "ckpt"

    def stop_after_first(metrics, checkpoint_dir):
        shutil.copytree(checkpoint_dir, saved)
        raise Stop

    with pytest.raises(Stop):
        fit(cfg, stop_after_first)
    resumed = []
    fit(cfg, lambda m, d: resumed.append(m), resume_from=str(saved))
    assert [m["epoch"] for m in resumed] == [2]
    # Same data order, augmentation and state: equal up to float summation order (1e-4).
    for key in ("train_loss", "val_loss", "val_top1", "lr"):
        assert resumed[0][key] == pytest.approx(straight[1][key], abs=1e-4), key
    # Every epoch reseeds, so a checkpoint keeps no RNG state; one written with the old
    # "rng_cpu" entry still resumes to the same epoch.
    state = torch.load(saved / CHECKPOINT_FILE, weights_only=True)
    assert "rng_cpu" not in state
    old = tmp_path / "old"
    old.mkdir()
    torch.save({**state, "rng_cpu": torch.get_rng_state()}, old / CHECKPOINT_FILE)
    from_old = []
    fit(cfg, lambda m, d: from_old.append(m), resume_from=str(old))
    for key in ("train_loss", "val_loss", "val_top1", "lr"):
        assert from_old[0][key] == pytest.approx(straight[1][key], abs=1e-4), key


def test_atomic_path_replaces_only_when_the_write_completes(tmp_path):
    # How every checkpoint and cache file is written (trainable/files.py): an error inside the
    # block (as a kill mid-write) keeps the old file whole and leaves no temporary file behind.
    target = tmp_path / CHECKPOINT_FILE
    target.write_bytes(b"old")

    class Killed(Exception):
        pass

    with pytest.raises(Killed), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise Killed
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target  # same folder: the rename never copies
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # replaced only when the block ends
    assert target.read_bytes() == b"new" and sorted(tmp_path.iterdir()) == [target]


def test_eval_every_validates_some_epochs_and_the_last_and_changes_nothing_else(tiny):
    # A confirmation run validates every 5th epoch and the last: the final metrics must be those
    # of the run that validated after every epoch (evaluation never touches training).
    cfg = from_dict(tiny, epochs=5, mixup_alpha=0.2, ema_decay=0.9, precise_bn=64, hflip=True)
    every, some = [], []
    fit(cfg, lambda m, d: every.append(m))
    fit(from_dict({**tiny, "epochs": 5, "mixup_alpha": 0.2, "ema_decay": 0.9, "precise_bn": 64, "hflip": True,
                   "eval_every": 2}), lambda m, d: some.append(m))
    assert [m["epoch"] for m in some] == [1, 2, 3, 4, 5]  # every epoch still reported (progress, train_loss)
    assert [m["epoch"] for m in some if "val_top1" in m] == [2, 4, 5]
    for a, b in zip(every, some):
        assert a["train_loss"] == b["train_loss"] and a["lr"] == b["lr"]
        if "val_top1" in b:
            assert (a["val_loss"], a["val_top1"], a["val_top5"]) == (b["val_loss"], b["val_top1"], b["val_top5"])


@pytest.mark.parametrize("override, fragment", [
    ({"mixup_alph": 0.2}, "unknown config key 'mixup_alph'; did you mean 'mixup_alpha'"),
    ({"mixup_alpha": -0.1}, "mixup_alpha=-0.1 is outside"),
    ({"label_smoothing": 1.0}, "label_smoothing=1.0 is outside"),
    ({"model": "resnet9000"}, "model: unknown value 'resnet9000'"),
    ({"teacher_checkpoint": "/nonexistent/teacher.pt"}, "make teacher"),
    ({"data_dir": "/nonexistent/data"}, "data_dir: no directory"),
    ({"lr": "fast"}, "lr: expected a number"),
    ({"epochs": 0}, "epochs=0 is outside"),
    ({"eval_every": 0}, "eval_every=0 is outside"),
    ({"hflip": "maybe"}, "hflip: expected true/false"),
    ({"sam_rho": 0.05, "amp": "fp16"}, "SAM with amp=fp16"),
])
def test_bad_config_fails_fast_with_one_line(tiny, override, fragment):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        fit({**tiny, **override})
    assert time.perf_counter() - t0 < 1.0  # before any data or model is touched
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_diverging_run_stops_at_once(tiny):
    reports = []
    with pytest.raises(NonFiniteLossError) as err:
        fit(from_dict(tiny, lr=1e8, weight_decay=0.0, schedule="constant"), lambda m, d: reports.append(m))
    assert err.value.epoch == 1 and not reports
    assert "lower lr" in str(err.value)


# --- every trick, each with the evidence that it took effect -------------------------------


class Probe:
    """What one real fit() did, recorded by spies around the functions trainable.loop calls
    (each spy calls the real function and returns its result)."""

    def __init__(self, monkeypatch):
        self.model = self.init_state = self.data = self.first_images = self.checkpoint = self.metrics = None
        self.autocast = []  # per training forward: the autocast dtype, None when off
        self.layer1_channels_last = []  # per training forward: layer1's input memory format
        self.targets, self.smoothing = [], set()  # what every training loss got
        self.group_lrs = []  # {param group name: lr} at every optimizer step
        self.evaluated = []  # the model each evaluation ran
        real = {name: getattr(loop, name) for name in
                ("build_model", "load_data", "soft_cross_entropy", "optimizer_step", "evaluate")}

        def saw_input(module, args):
            if module is self.model and module.training:
                on = torch.is_autocast_enabled("cpu")
                self.autocast.append(torch.get_autocast_dtype("cpu") if on else None)
                if self.first_images is None:
                    self.first_images = args[0].detach().clone()

        def saw_activation(module, args):
            if module is self.model.layer1 and module.training:
                self.layer1_channels_last.append(args[0].is_contiguous(memory_format=torch.channels_last))

        def build_model(*args):
            self.model = real["build_model"](*args)
            self.init_state = copy.deepcopy(self.model.state_dict())
            self.model.register_forward_pre_hook(saw_input)
            self.model.layer1.register_forward_pre_hook(saw_activation)
            return self.model

        def load_data(*args):
            self.data = real["load_data"](*args)
            return self.data

        def soft_cross_entropy(logits, soft, label_smoothing):
            self.targets.append(soft.detach().clone())
            self.smoothing.add(label_smoothing)
            return real["soft_cross_entropy"](logits, soft, label_smoothing)

        def optimizer_step(training, loss_fn):
            self.group_lrs.append({g["name"]: g["lr"] for g in training.optimizer.param_groups})
            return real["optimizer_step"](training, loss_fn)

        def evaluate(model, *args):
            self.evaluated.append(model)
            return real["evaluate"](model, *args)

        for name, spy in (("build_model", build_model), ("load_data", load_data), ("evaluate", evaluate),
                          ("soft_cross_entropy", soft_cross_entropy), ("optimizer_step", optimizer_step)):
            monkeypatch.setattr(loop, name, spy)

    def run(self, overrides: dict) -> Probe:
        def report(metrics, checkpoint_dir):
            self.checkpoint = torch.load(os.path.join(checkpoint_dir, CHECKPOINT_FILE), weights_only=True)

        self.metrics = fit(from_dict({**TINY, **TRICK_RUN, **overrides}), report)
        assert self.metrics["epoch"] == 1 and math.isfinite(self.metrics["train_loss"])
        assert len(self.group_lrs) == steps_per_epoch(TRICK_RUN["train_subset"], TINY["batch_size"]) == 4
        return self

    @property
    def head_lrs(self) -> list[float]:
        return [list(lrs.values())[-1] for lrs in self.group_lrs]


TRICK_RUN = {"train_subset": 256, "val_subset": 128}


def _is_one_hot(targets):
    return bool(((targets == 0) | (targets == 1)).all() and (targets.sum(1) == 1).all())


@pytest.fixture(scope="module")
def plain():
    """A run with every trick off: what each trick's evidence is measured against."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return Probe(monkeypatch).run({})


def test_plain_run_shows_none_of_the_evidence(plain):
    # The spies saw every step of a run (4 of them); the checks below read what they recorded.
    assert len(plain.autocast) == len(plain.group_lrs) and set(plain.autocast) == {None}
    assert not any(plain.layer1_channels_last) and len(plain.layer1_channels_last) == 4
    assert all(_is_one_hot(t) for t in plain.targets) and plain.smoothing == {0.0}
    assert [list(lrs) for lrs in plain.group_lrs] == [["all"]] * 4
    assert plain.evaluated == [plain.model] and plain.checkpoint["ema"] is None
    assert plain.data.loader == "memory" and plain.head_lrs[0] == pytest.approx(0.1)


# Each check fails unless its trick changed what fit() did; the test also runs it on the
# plain run, where it must fail.


def targets_are_soft(p, plain):
    soft = torch.cat(p.targets)
    assert not _is_one_hot(soft)  # some rows are mixed
    torch.testing.assert_close(soft.sum(1), torch.ones(len(soft)))


def smoothing_reaches_the_loss(p, plain):
    assert p.smoothing == {0.1} and all(_is_one_hot(t) for t in p.targets)  # smoothed in the loss, not the targets


def two_passes_per_step(p, plain):
    assert len(p.autocast) == 2 * len(p.group_lrs)


def adamw_moments_are_saved(p, plain):
    assert all("exp_avg_sq" in s for s in p.checkpoint["optimizer"]["state"].values())


def ema_weights_are_evaluated(p, plain):
    (evaluated,) = p.evaluated
    assert evaluated is not p.model
    averaged = {k.removeprefix("module."): v for k, v in p.checkpoint["ema"].items() if k.startswith("module.")}
    live = p.checkpoint["model"]
    for key, value in evaluated.state_dict().items():
        torch.testing.assert_close(value, averaged[key])
    assert any(not torch.equal(averaged[k], live[k]) for k in live if live[k].is_floating_point())


def forward_runs_under_bf16(p, plain):
    assert set(p.autocast) == {torch.bfloat16}


def activations_are_channels_last(p, plain):
    assert all(p.layer1_channels_last)
    # (a 1-channel or 1x1 kernel is laid out the same either way, so only the others tell)
    convs = [w for w in p.model.parameters() if w.dim() == 4 and w.shape[1] > 1 and w.shape[-1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)


def images_differ_from_plain(p, plain):
    # Same seed, so the same images in the same order (labels equal), augmented differently.
    assert torch.equal(p.targets[0], plain.targets[0])
    changed = (p.first_images != plain.first_images).flatten(1).any(1)
    assert changed.float().mean() > 0.5


def dataloader_is_used(p, plain):
    assert p.data.loader == "dataloader" and ("train", TINY["batch_size"]) in p.data._batches._loaders


def per_stage_lrs(p, plain):
    lrs = p.group_lrs[0]  # stem, layer1..3, head; the .no_decay twin of each at the same LR
    assert set(lrs) == {f"{stage}{twin}" for stage in ("stem", "layer1", "layer2", "layer3", "head")
                        for twin in ("", ".no_decay")}
    for shallow, deep in (("stem", "layer1"), ("layer1", "layer2"), ("layer2", "layer3"), ("layer3", "head")):
        assert lrs[shallow] == pytest.approx(0.5 * lrs[deep]) == pytest.approx(lrs[f"{shallow}.no_decay"])
    groups = {g["name"]: g for g in p.checkpoint["optimizer"]["param_groups"]}
    assert groups["head.no_decay"]["weight_decay"] == 0 and groups["head"]["weight_decay"] == 5e-4
    assert all(g["nesterov"] for g in groups.values())


def model_is_resnet_d_with_zero_gamma(p, plain):
    downsamples = [m.downsample for m in p.model.modules() if getattr(m, "downsample", None) is not None]
    assert len(downsamples) == 2 and all(isinstance(d[0], nn.AvgPool2d) for d in downsamples)
    last_bns = [v for k, v in p.init_state.items() if k.endswith("bn2.weight")]
    assert len(last_bns) == 9 and all(torch.all(w == 0) for w in last_bns)


def lr_curve_is_one_cycle(p, plain):
    lrs = p.head_lrs
    assert lrs[0] == pytest.approx(0.1 / 25)  # torch's div_factor; the plain cosine starts at 0.1
    assert lrs[0] < lrs[1] and lrs[-1] < lrs[1]


def lr_steps_down_at_milestones(p, plain):
    # lr 0.1 per 256 images at batch 64 = 0.025; milestones 0.5/0.75 of 4 steps = steps 2 and 3.
    assert p.head_lrs == pytest.approx([0.025, 0.025, 0.0025, 0.00025])


def model_is_torchvision_resnet18(p, plain):
    assert isinstance(p.model, torchvision.models.ResNet) and len(p.model.layer4) == 2
    assert p.model.conv1.kernel_size == (3, 3)  # the small stem at 28 px


def bn_statistics_are_reestimated(p, plain):
    (evaluated,) = p.evaluated
    assert evaluated is not p.model  # a copy: the live running statistics stay as training left them
    live = p.checkpoint["model"]
    for key, value in evaluated.state_dict().items():
        if key.endswith(("running_mean", "running_var")):
            assert not torch.equal(value, live[key]), key
        elif not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(value, live[key])  # the same weights


def lrs_follow_the_divisors(p, plain):
    lrs = p.group_lrs[0]
    assert lrs == pytest.approx({"stem": 0.01, "layer1": 0.0125, "layer2": 0.025, "layer3": 0.05, "head": 0.05})


TRICKS = {
    "precise_bn": ({"precise_bn": 128}, [bn_statistics_are_reestimated]),
    "stage_lr_divisors": ({"stage_lr_divisors": (10, 8, 4, 2, 2)}, [lrs_follow_the_divisors]),
    "label_smoothing": ({"label_smoothing": 0.1}, [smoothing_reaches_the_loss]),
    "mixup": ({"mixup_alpha": 0.2}, [targets_are_soft]),
    "cutmix": ({"cutmix_alpha": 1.0, "mix_prob": 0.5}, [targets_are_soft]),
    "mixup+cutmix": ({"mixup_alpha": 0.2, "cutmix_alpha": 1.0}, [targets_are_soft]),
    "sam": ({"sam_rho": 0.05}, [two_passes_per_step]),
    "sam_adamw": ({"sam_rho": 0.05, "optimizer": "adamw", "lr": 1e-3}, [two_passes_per_step, adamw_moments_are_saved]),
    "ema": ({"ema_decay": 0.99}, [ema_weights_are_evaluated]),
    "bf16": ({"amp": "bf16"}, [forward_runs_under_bf16]),
    "channels_last": ({"channels_last": True}, [activations_are_channels_last]),
    "randaugment": ({"augment": "randaugment", "random_erasing": 0.25, "hflip": True, "crop": "pad"},
                    [images_differ_from_plain]),
    "autoaugment": ({"augment": "autoaugment", "color_jitter": 0.2}, [images_differ_from_plain]),
    "trivialaugment": ({"augment": "trivialaugment", "crop": "random_resized"}, [images_differ_from_plain]),
    "layer_lr_decay": ({"layer_lr_decay": 0.5, "no_bias_decay": True, "nesterov": True}, [per_stage_lrs]),
    "resnet_d+zero_gamma": ({"resnet_d": True, "zero_gamma": True}, [model_is_resnet_d_with_zero_gamma]),
    "onecycle": ({"schedule": "onecycle", "warmup_epochs": 0.3}, [lr_curve_is_one_cycle]),
    "step": ({"schedule": "step", "lr_per_256": True}, [lr_steps_down_at_milestones]),
    "torchvision_resnet18": ({"model": "resnet18"}, [model_is_torchvision_resnet18]),
    "dataloader_path": ({"loader": "dataloader", "num_workers": 0, "hflip": True, "crop": "pad"},
                        [dataloader_is_used, images_differ_from_plain]),
}


@pytest.mark.parametrize("name", list(TRICKS))
def test_every_trick_takes_effect_in_fit(monkeypatch, plain, name):
    overrides, checks = TRICKS[name]
    probe = Probe(monkeypatch).run(overrides)
    assert 0 <= probe.metrics["val_top1"] <= 100
    for check in checks:
        check(probe, plain)
        with pytest.raises(AssertionError):  # and the same check fails on the run without tricks
            check(plain, plain)


def test_distillation_with_a_teacher_made_by_the_cli(tiny, tmp_path):
    teacher = tmp_path / "teacher.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "trainable", "--set", "train_subset=256", "--set", "val_subset=128",
                          "--set", "epochs=1", "--set", "batch_size=64", "--set", "model=resnet32",
                          "--save-weights", str(teacher), "--checkpoint-dir", str(tmp_path / "ck")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "epoch   1/1" in out.stdout and teacher.exists()
    run = {**tiny, "train_subset": 256, "val_subset": 128, "mixup_alpha": 0.2}
    kd_terms = []

    def distill_loss(ce, student_logits, teacher_logits, temperature, weight):
        kd_terms.append((weight, kd_loss(student_logits, teacher_logits, temperature).item(),
                         student_logits.requires_grad))
        return real_distill_loss(ce, student_logits, teacher_logits, temperature, weight)

    real_distill_loss = loop.distill_loss
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(loop, "distill_loss", distill_loss)
        m = fit(from_dict(run, teacher_checkpoint=str(teacher), kd_temperature=4.0, kd_weight=0.5))
        weightless = fit(from_dict(run, teacher_checkpoint=str(teacher), kd_weight=0.0))
    plain = fit(from_dict(run))
    assert torch.isfinite(torch.tensor(m["train_loss"]))
    # Every step of both teacher runs added a KL term against a teacher that disagrees with the
    # student, with the student's logits in the graph (the term's gradient reaches the student).
    steps = steps_per_epoch(256, 64)
    assert [w for w, _, _ in kd_terms] == [0.5] * steps + [0.0] * steps
    assert all(0 < kl < math.inf and in_graph for _, kl, in_graph in kd_terms)
    # The term trained the student: its validation loss (plain CE, no teacher) moved away from the
    # run without a teacher; at weight 0 the teacher changes nothing at all.
    assert abs(m["val_loss"] - plain["val_loss"]) > 1e-4
    for key in ("train_loss", "val_loss", "val_top1"):
        assert weightless[key] == plain[key], key


def test_export_weights_round_trips_through_pretrained(tiny, tmp_path):
    kept = tmp_path / "kept"
    fit(from_dict(tiny, train_subset=128, val_subset=64, ema_decay=0.5),
        lambda m, d: shutil.copytree(d, kept, dirs_exist_ok=True))
    export_weights(str(kept), str(tmp_path / "w.pt"))
    # The exported weights are the checkpoint's EMA copy (not the live weights), tensor for tensor ...
    checkpoint = torch.load(kept / CHECKPOINT_FILE, weights_only=True)
    ema = {k.removeprefix("module."): v for k, v in checkpoint["ema"].items() if k.startswith("module.")}
    exported = torch.load(tmp_path / "w.pt", weights_only=True)["state_dict"]
    assert exported.keys() == ema.keys() == checkpoint["model"].keys()
    for key, value in ema.items():
        torch.testing.assert_close(exported[key], value, rtol=0, atol=0, msg=key)
    assert any(not torch.equal(ema[k], checkpoint["model"][k]) for k in ema)
    # ... and a model built with pretrained=<that file> holds them, all but its new head.
    cfg = from_dict(tiny, train_subset=128, val_subset=64, pretrained=str(tmp_path / "w.pt"))
    loaded = build_model(cfg, 10, 1, 28).state_dict()
    for key, value in ema.items():
        if not key.startswith("fc."):
            torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)
    m = fit(cfg)
    assert m["epoch"] == 1


def test_cli_rejects_bad_key_with_exit_2():
    out = subprocess.run([sys.executable, "-m", "trainable", "--set", "mixup_alph=0.2"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "mixup_alpha" in out.stderr
