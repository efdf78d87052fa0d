"""``fit(cfg, report)``: one ResNet training run, every trick a config value.

Plain PyTorch, split as torchvision's ``references/classification/train.py`` is:
:func:`fit` loads the data, builds a :class:`Training` (model, optimizer, schedule and
tricks) from the config, calls :func:`restore` when resuming, then per epoch runs
:func:`train_one_epoch` (each step through :func:`optimizer_step`) and :func:`evaluate`,
saves a checkpoint and calls ``report``. The Ray trainable in ``search/`` is a few lines
around this; tests call it directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel

from trainable.config import CHECKPOINT_FILE, TrainConfig, effective_lr, from_dict, to_dict
from trainable.data import Data, load_data, steps_per_epoch
from trainable.files import atomic_path
from trainable.models import build_model, load_teacher
from trainable.tricks.distill import distill_loss
from trainable.tricks.ema import build_ema
from trainable.tricks.param_groups import param_groups
from trainable.tricks.precise_bn import with_precise_bn
from trainable.tricks.precision import autocast, grad_scaler
from trainable.tricks.sam import SAM, disable_running_stats, enable_running_stats
from trainable.tricks.schedule import build_scheduler
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


def _epoch_seed(seed: int, epoch: int) -> int:
    # Every epoch's shuffling and augmentation depend only on (seed, epoch), so a run
    # resumed from a checkpoint replays exactly what an uninterrupted run would do.
    return seed * 100_003 + epoch


@dataclass
class Training:
    """What one run trains and steps, built from the config; a checkpoint saves its state."""

    model: nn.Module  # the live weights
    forward: nn.Module  # ``model``, or its torch.compile wrapper: what training calls
    teacher: nn.Module | None  # distillation teacher, eval mode
    optimizer: torch.optim.Optimizer  # SAM wraps the base optimizer when sam_rho > 0
    scheduler: LRScheduler  # stepped after every optimizer step
    scaler: torch.amp.GradScaler  # a pass-through unless amp=fp16
    ema: AveragedModel | None  # validated instead of ``model`` when ema_decay > 0
    mixer: Mixer  # mixup/cutmix; returns soft targets either way


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(model, effective_lr(cfg), cfg.weight_decay, cfg.no_bias_decay, cfg.layer_lr_decay,
                          cfg.stage_lr_divisors)
    if cfg.optimizer == "sgd":
        kwargs = dict(momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
        if cfg.sam_rho > 0:
            return SAM(groups, torch.optim.SGD, rho=cfg.sam_rho, **kwargs)
        return torch.optim.SGD(groups, **kwargs)
    if cfg.sam_rho > 0:
        return SAM(groups, torch.optim.AdamW, rho=cfg.sam_rho)
    return torch.optim.AdamW(groups)


def build_training(cfg: TrainConfig, data: Data, device: torch.device) -> Training:
    """The model (and teacher) for ``data``'s images and classes, and every trick around it."""
    model = build_model(cfg, data.num_classes, data.in_channels, data.image_size).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    teacher = None
    if cfg.teacher_checkpoint:
        teacher = load_teacher(cfg.teacher_checkpoint, data.num_classes, data.in_channels, device)
        if cfg.channels_last:
            teacher = teacher.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model)
    return Training(
        model=model, forward=torch.compile(model) if cfg.compile else model, teacher=teacher,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg, steps_per_epoch(data.n_train, cfg.batch_size)),
        scaler=grad_scaler(device, cfg.amp), ema=build_ema(model, cfg.ema_decay),
        mixer=Mixer(data.num_classes, cfg.mixup_alpha, cfg.cutmix_alpha, cfg.mix_prob, cfg.mix_switch_prob))


def restore(training: Training, checkpoint_dir: str, device: torch.device) -> tuple[int, list[dict]]:
    """Load what :func:`save_checkpoint` wrote into ``training``; returns (epochs done, their metrics)."""
    state = torch.load(os.path.join(checkpoint_dir, CHECKPOINT_FILE), map_location=device, weights_only=True)
    training.model.load_state_dict(state["model"])
    training.optimizer.load_state_dict(state["optimizer"])
    training.scheduler.load_state_dict(state["scheduler"])
    training.scaler.load_state_dict(state["scaler"])
    if training.ema is not None:
        training.ema.load_state_dict(state["ema"])
    # No RNG state to restore: every epoch reseeds from (seed, epoch) before it draws (_epoch_seed);
    # an older checkpoint's "rng_cpu" entry is ignored.
    return state["epoch"], list(state["history"])


def training_loss(training: Training, x: Tensor, soft: Tensor, cfg: TrainConfig, device: torch.device) -> Tensor:
    """Cross-entropy against the soft targets (smoothed by ``label_smoothing``), plus the
    distillation term when there is a teacher."""
    with autocast(device, cfg.amp):
        logits = training.forward(x)
        if training.teacher is None:
            return soft_cross_entropy(logits.float(), soft, cfg.label_smoothing)
        with torch.no_grad():  # teacher: eval mode, same mixed batch, no gradients
            teacher_logits = training.teacher(x)
        ce = soft_cross_entropy(logits.float(), soft, cfg.label_smoothing)
        return distill_loss(ce, logits.float(), teacher_logits.float(), cfg.kd_temperature, cfg.kd_weight)


def optimizer_step(training: Training, loss_fn: Callable[[], Tensor]) -> Tensor:
    """One optimizer step on the loss ``loss_fn`` computes (forward included); returns the loss
    at the weights the step started from. SAM takes two passes, everything else one pass
    through the GradScaler."""
    loss = loss_fn()
    if isinstance(training.optimizer, SAM):
        loss.backward()
        training.optimizer.first_step(zero_grad=True)
        # Second pass at the perturbed weights; BN running stats were updated
        # by the first pass already (as in the SAM reference code).
        disable_running_stats(training.model)
        loss_fn().backward()
        training.optimizer.second_step(zero_grad=True)
        enable_running_stats(training.model)
    else:
        training.scaler.scale(loss).backward()
        training.scaler.step(training.optimizer)
        training.scaler.update()
        training.optimizer.zero_grad(set_to_none=True)
    return loss


def train_one_epoch(training: Training, data: Data, cfg: TrainConfig, epoch: int,
                    device: torch.device) -> tuple[float, int]:
    """One pass over the shuffled training set (epoch counted from 0); returns (mean loss, images seen)."""
    epoch_seed = _epoch_seed(cfg.seed, epoch)
    torch.manual_seed(epoch_seed)
    generator = torch.Generator().manual_seed(epoch_seed)
    training.model.train()
    loss_sum = torch.zeros((), device=device)
    seen = 0
    for step, (x, y) in enumerate(data.train_batches(cfg.batch_size, generator, device)):
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x, soft = training.mixer(x, y)
        loss = optimizer_step(training, functools.partial(training_loss, training, x, soft, cfg, device)).detach()
        training.scheduler.step()
        if training.ema is not None:
            training.ema.update_parameters(training.model)
        # A NaN never comes back, so stop at once; checking every 20 steps keeps
        # the GPU from syncing each step while wasting at most 20 steps.
        if step % 20 == 0 and not torch.isfinite(loss):
            raise NonFiniteLossError(epoch + 1, step, loss.item())
        loss_sum += loss * y.shape[0]
        seen += y.shape[0]
    train_loss = (loss_sum / max(seen, 1)).item()
    if not math.isfinite(train_loss):
        raise NonFiniteLossError(epoch + 1, steps_per_epoch(data.n_train, cfg.batch_size), train_loss)
    return train_loss, seen


def eval_model(training: Training, data: Data, cfg: TrainConfig, epoch: int, device: torch.device) -> nn.Module:
    """What is validated: the EMA weights when EMA is on, else the live ones; with precise_bn,
    a copy whose BN statistics are re-estimated on a fixed sample of training images."""
    model = training.ema.module if training.ema is not None else training.model
    if not cfg.precise_bn:
        return model
    # A fixed sample per epoch, drawn after the epoch's training (which reseeds the RNG
    # itself), so precise BN never changes what training sees.
    torch.manual_seed(_epoch_seed(cfg.seed, epoch) + 50_000)
    generator = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch) + 50_000)
    return with_precise_bn(model, data.train_batches(cfg.batch_size, generator, device), cfg.precise_bn)


@torch.no_grad()
def evaluate(model: nn.Module, batches, amp: str, device: torch.device, channels_last: bool) -> dict:
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


def validates(cfg: TrainConfig, epoch: int) -> bool:
    """Is epoch ``epoch`` (1-based) validated: every ``eval_every``-th, and always the last.
    Skipping one changes nothing else (evaluation never touches the live model or training's RNG)."""
    return epoch % cfg.eval_every == 0 or epoch == cfg.epochs


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
    """Train per ``cfg``; after each epoch call ``report(metrics, checkpoint_dir)`` (the val_*
    metrics only after the epochs it validates: :func:`validates`).

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
    training = build_training(cfg, data, device)
    start_epoch, history = (0, []) if resume_from is None else restore(training, resume_from, device)
    metrics: dict = {}
    with _checkpoint_dir(workdir) as checkpoint_dir:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            train_loss, seen = train_one_epoch(training, data, cfg, epoch, device)
            train_seconds = time.perf_counter() - t0
            val = evaluate(eval_model(training, data, cfg, epoch, device), data.val_batches(cfg.batch_size * 2, device),
                           cfg.amp, device, cfg.channels_last) if validates(cfg, epoch + 1) else {}
            metrics = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                **val,
                # LR of the last (head) group at the end of the epoch: the peak-LR curve
                # people compare, whatever the per-stage factors are.
                "lr": training.optimizer.param_groups[-1]["lr"],
                "epoch_seconds": time.perf_counter() - t0,
                "images_per_second": seen / train_seconds,
            }
            history.append(metrics)
            save_checkpoint(checkpoint_dir, cfg, data, epoch + 1, history, training)
            if report is not None:
                report(dict(metrics), checkpoint_dir)
    return metrics


@contextlib.contextmanager
def _checkpoint_dir(workdir: str | None) -> Iterator[str]:
    """``workdir/checkpoint``; with no workdir, a temporary one that is removed afterwards."""
    own_workdir = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="tricktune-")
    checkpoint_dir = os.path.join(workdir, "checkpoint")
    os.makedirs(checkpoint_dir, exist_ok=True)
    try:
        yield checkpoint_dir
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def save_checkpoint(directory: str, cfg: TrainConfig, data: Data, epoch: int, history: list[dict],
                    training: Training) -> None:
    state = {
        "epoch": epoch,
        "history": history,
        "config": to_dict(cfg),
        # What export_weights needs to rebuild the model without loading the data again.
        "data": {"num_classes": data.num_classes, "in_channels": data.in_channels, "image_size": data.image_size},
        "model": training.model.state_dict(),
        "optimizer": training.optimizer.state_dict(),
        "scheduler": training.scheduler.state_dict(),
        "scaler": training.scaler.state_dict(),
        "ema": training.ema.state_dict() if training.ema is not None else None,
    }
    with atomic_path(os.path.join(directory, CHECKPOINT_FILE)) as tmp:
        torch.save(state, tmp)


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
