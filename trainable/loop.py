"""``fit(cfg, report)``: one ResNet training run, every trick a config value.

Plain PyTorch, readable top to bottom: build data, model, optimizer, schedule and
tricks from the config; per epoch train, validate, checkpoint, ``report``. The Ray
trainable in ``search/`` is a few lines around this; tests call it directly.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from trainable.config import CHECKPOINT_FILE, TrainConfig, from_dict, to_dict
from trainable.data import load_data
from trainable.models import build_model, load_teacher
from trainable.tricks.distill import distill_loss
from trainable.tricks.ema import build_ema
from trainable.tricks.param_groups import param_groups
from trainable.tricks.precision import autocast, grad_scaler
from trainable.tricks.sam import SAM, disable_running_stats, enable_running_stats
from trainable.tricks.schedule import build_scheduler, effective_lr
from trainable.tricks.targets import Mixer, soft_cross_entropy

Report = Callable[[dict, str], None]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; training stops at once (there is no recovering)."""

    def __init__(self, epoch: int, step: int, value: float):
        super().__init__(f"training loss became {value} at epoch {epoch} step {step}; "
                         "lower lr, add warmup_epochs, or turn amp off")
        self.epoch, self.step, self.value = epoch, step, value


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    # Data.train_batches drops a last batch of one image: BatchNorm cannot normalise it.
    return n_train // batch_size + (1 if n_train % batch_size >= 2 else 0)


def _epoch_seed(seed: int, epoch: int) -> int:
    # Every epoch's shuffling and augmentation depend only on (seed, epoch), so a run
    # resumed from a checkpoint replays exactly what an uninterrupted run would do.
    return seed * 100_003 + epoch


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(model, effective_lr(cfg), cfg.weight_decay, cfg.no_bias_decay, cfg.layer_lr_decay)
    if cfg.optimizer == "sgd":
        kwargs = dict(momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
        if cfg.sam_rho > 0:
            return SAM(groups, torch.optim.SGD, rho=cfg.sam_rho, **kwargs)
        return torch.optim.SGD(groups, **kwargs)
    if cfg.sam_rho > 0:
        return SAM(groups, torch.optim.AdamW, rho=cfg.sam_rho)
    return torch.optim.AdamW(groups)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "_orig_mod", model)  # torch.compile wraps the module


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches, amp: str, device: torch.device,
             channels_last: bool) -> dict:
    model.eval()
    total, loss_sum, top1, top5 = 0, 0.0, 0, 0
    for x, y in batches:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        k = min(5, logits.shape[1])
        best = logits.topk(k, dim=1).indices
        hit = best.eq(y[:, None])
        top1 += hit[:, 0].sum().item()
        top5 += hit.any(dim=1).sum().item()
        total += y.numel()
    return {"val_loss": loss_sum / total, "val_top1": 100.0 * top1 / total, "val_top5": 100.0 * top5 / total}


def preflight(cfg: TrainConfig) -> None:
    """Load the data and build the model (and teacher) once on the CPU, without training.

    The search runs this in the driver before Ray starts, so a data path with no
    images, a corrupt teacher or pretrained weights that do not fit fail in seconds
    with one line, instead of inside every trial. For an image folder on the memory
    path it builds the shared decoded cache (trainable/folder_cache.py), naming any file
    that does not decode, so the trials only map the cache.
    """
    device = torch.device("cpu")
    data = load_data(dataclasses.replace(cfg, num_workers=0), device)
    build_model(cfg, data.num_classes, data.in_channels, data.image_size)
    if cfg.teacher_checkpoint:
        load_teacher(cfg.teacher_checkpoint, data.num_classes, data.in_channels, device)


def fit(cfg: TrainConfig | Mapping, report: Report | None = None, *,
        resume_from: str | None = None, workdir: str | None = None) -> dict:
    """Train per ``cfg``; after each epoch call ``report(metrics, checkpoint_dir)``.

    ``resume_from`` is a checkpoint directory an earlier ``fit`` reported; training
    continues after its epoch as if it had never stopped. ``workdir`` is where the
    checkpoint is written (a temporary directory by default, removed at the end: the
    caller's ``report`` copies what it wants to keep). Returns the last metrics.
    """
    cfg = cfg if isinstance(cfg, TrainConfig) else from_dict(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)  # model init

    data = load_data(cfg, device)
    model = build_model(cfg, data.num_classes, data.in_channels, data.image_size).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    teacher = None
    if cfg.teacher_checkpoint:
        teacher = load_teacher(cfg.teacher_checkpoint, data.num_classes, data.in_channels, device)
        if cfg.channels_last:
            teacher = teacher.to(memory_format=torch.channels_last)

    optimizer = build_optimizer(cfg, model)
    n_steps = steps_per_epoch(data.n_train, cfg.batch_size)
    scheduler = build_scheduler(optimizer, cfg, n_steps)
    ema = build_ema(model, cfg.ema_decay)
    scaler = grad_scaler(device, cfg.amp)
    mixer = Mixer(data.num_classes, cfg.mixup_alpha, cfg.cutmix_alpha, cfg.mix_prob, cfg.mix_switch_prob)
    sam = isinstance(optimizer, SAM)

    start_epoch, history = 0, []
    if resume_from is not None:
        state = torch.load(os.path.join(resume_from, CHECKPOINT_FILE), map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng_cpu"])
        start_epoch, history = state["epoch"], list(state["history"])

    train_model = torch.compile(model) if cfg.compile else model

    def loss_of(x, soft):
        with autocast(device, cfg.amp):
            logits = train_model(x)
            if teacher is None:
                return soft_cross_entropy(logits.float(), soft, cfg.label_smoothing)
            with torch.no_grad():  # teacher: eval mode, same mixed batch, no gradients
                teacher_logits = teacher(x)
            ce = soft_cross_entropy(logits.float(), soft, cfg.label_smoothing)
            return distill_loss(ce, logits.float(), teacher_logits.float(), cfg.kd_temperature, cfg.kd_weight)

    own_workdir = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="tricktune-")
    checkpoint_dir = os.path.join(workdir, "checkpoint")
    os.makedirs(checkpoint_dir, exist_ok=True)
    metrics: dict = {}
    try:
        for epoch in range(start_epoch, cfg.epochs):
            epoch_seed = _epoch_seed(cfg.seed, epoch)
            torch.manual_seed(epoch_seed)
            generator = torch.Generator().manual_seed(epoch_seed)
            model.train()
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            seen = 0
            for step, (x, y) in enumerate(data.train_batches(cfg.batch_size, generator, device)):
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                x, soft = mixer(x, y)
                loss = loss_of(x, soft)
                if sam:
                    loss.backward()
                    optimizer.first_step(zero_grad=True)
                    # Second pass at the perturbed weights; BN running stats were updated
                    # by the first pass already (as in the SAM reference code).
                    disable_running_stats(model)
                    loss_of(x, soft).backward()
                    optimizer.second_step(zero_grad=True)
                    enable_running_stats(model)
                else:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                detached = loss.detach()
                # A NaN never comes back, so stop at once; checking every 20 steps keeps
                # the GPU from syncing each step while wasting at most 20 steps.
                if step % 20 == 0 and not torch.isfinite(detached):
                    raise NonFiniteLossError(epoch + 1, step, detached.item())
                loss_sum += detached * y.shape[0]
                seen += y.shape[0]
            train_loss = (loss_sum / max(seen, 1)).item()
            if not math.isfinite(train_loss):
                raise NonFiniteLossError(epoch + 1, n_steps, train_loss)
            train_seconds = time.perf_counter() - t0

            eval_model = ema.module if ema is not None else model
            val = evaluate(eval_model, data.val_batches(cfg.batch_size * 2, device), cfg.amp, device,
                           cfg.channels_last)
            metrics = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                **val,
                # LR of the last (head) group at the end of the epoch: the peak-LR curve
                # people compare, whatever the per-stage factors are.
                "lr": optimizer.param_groups[-1]["lr"],
                "epoch_seconds": time.perf_counter() - t0,
                "images_per_second": seen / train_seconds,
            }
            history.append(metrics)
            _save_checkpoint(checkpoint_dir, cfg, data, epoch + 1, history, model, optimizer, scheduler, scaler, ema)
            if report is not None:
                report(dict(metrics), checkpoint_dir)
    finally:
        if own_workdir:
            import shutil
            shutil.rmtree(workdir, ignore_errors=True)
    return metrics


def _save_checkpoint(directory, cfg, data, epoch, history, model, optimizer, scheduler, scaler, ema):
    state = {
        "epoch": epoch,
        "history": history,
        "config": to_dict(cfg),
        # What export_weights needs to rebuild the model without loading the data again.
        "data": {"num_classes": data.num_classes, "in_channels": data.in_channels, "image_size": data.image_size},
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "rng_cpu": torch.get_rng_state(),
    }
    # Write then rename: a process killed mid-save never leaves a half-written checkpoint.
    tmp = os.path.join(directory, CHECKPOINT_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, os.path.join(directory, CHECKPOINT_FILE))


def export_weights(checkpoint_dir: str, out_path: str) -> None:
    """Write a checkpoint's model (the EMA weights when EMA was on) as a weights file that
    ``teacher_checkpoint`` and ``pretrained`` accept."""
    from trainable.models import save_weights

    state = torch.load(os.path.join(checkpoint_dir, CHECKPOINT_FILE), map_location="cpu", weights_only=True)
    weights = state["model"]
    if state.get("ema") is not None:
        # AveragedModel keeps the copy under "module." plus its own n_averaged counter.
        weights = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    # The checkpoint's weights replace any pretrained ones, so don't load (or download) those again.
    cfg = dataclasses.replace(from_dict(state["config"]), pretrained=None)
    dims = state["data"]
    model = build_model(cfg, dims["num_classes"], dims["in_channels"], dims["image_size"])
    model.load_state_dict(weights)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    save_weights(out_path, model, cfg, dims["num_classes"], dims["in_channels"], dims["image_size"])
