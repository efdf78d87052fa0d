"""The one training config: every default, with its unit and the reason for it.

A search space produces a flat ``{name: value}`` dict; :func:`from_dict` turns it
into a frozen :class:`TrainConfig`, rejecting unknown keys, wrong types and
impossible values with one line that names the key and the fix. Nothing here
touches data, models or files beyond cheap ``os.path`` checks, so a typo in a
space file fails in milliseconds, before Ray starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, fields

from trainable.registry import DATASETS, MODELS

SCHEDULES = ("constant", "step", "cosine", "onecycle")
OPTIMIZERS = ("sgd", "adamw")
AUGMENTS = ("none", "autoaugment", "randaugment", "trivialaugment")
CROPS = ("none", "pad", "random_resized")
AMP_MODES = ("off", "bf16", "fp16")
STEMS = ("auto", "imagenet", "small")
LOADERS = ("auto", "memory", "dataloader")


# What fit() reports once per epoch, and which way each improves (None: not a quality).
# The one list of metric names: a space's `metric`, the MLflow callback, the report's
# curves and a diverged trial's placeholder result all read it from here.
# Accuracies are percentages (0-100) so deltas read as "points", as papers write them.
METRICS = {"epoch": None, "train_loss": "min", "val_loss": "min", "val_top1": "max", "val_top5": "max",
           "lr": None, "epoch_seconds": "min", "images_per_second": "max"}
REPORTED_METRICS = tuple(METRICS)
# The file fit() writes in every checkpoint directory (kept here, torch-free, so the CLI
# can check a --resume folder before importing torch).
CHECKPOINT_FILE = "state.pt"


class ConfigError(ValueError):
    """A config value is wrong; the message is one line naming the key and the fix."""


class DataError(ConfigError):
    """The data cannot be loaded as configured; the message is one line naming the problem and the fix.

    Kept here, beside ConfigError, so trainable.data and trainable.folder_cache both import it
    from below instead of from each other."""


@dataclass(frozen=True)
class TrainConfig:
    # --- data ---------------------------------------------------------------------
    # Embedded stratified Fashion-MNIST subset (10k train / 2k val): real images that
    # ship with the package, so a search runs offline and in minutes on 2 CPU cores.
    dataset: str = "fashion_mnist_subset"
    # Root of the files for non-embedded data sets (None = the data set's default place).
    data_dir: str | None = None
    # Use only the first N training / validation images (stratified order); 0 = all.
    # Lets a smoke run or a quick search shrink the data without another data set.
    train_subset: int = 0
    val_subset: int = 0
    # Side of the square network input in px; 0 = the data set's native size (28
    # Fashion-MNIST, 32 CIFAR; CUB/ImageFolder: the images' median short side, at most 224,
    # so a folder of 32-px images does not train at 224 px for 49x the compute).
    image_size: int = 0
    # memory: uint8 tensors on the training device, batched augmentation, no worker
    # processes (fastest for data that fits); dataloader: torch DataLoader with workers;
    # auto: memory when the decoded set is under ~2 GB.
    loader: str = "auto"
    num_workers: int = 2  # DataLoader workers; 2 cores here, so more only oversubscribes

    # --- model --------------------------------------------------------------------
    # resnet20..110: the CIFAR ResNets of He et al. 2016 (0.27M params for resnet20,
    # seconds per epoch on a CPU); resnet18..152: torchvision ImageNet ResNets.
    model: str = "resnet20"
    # auto: 3x3 stride-1 stem without max-pool when image_size <= 64 (a 7x7/2 stem plus
    # pool would shrink 28 px to 7 px before the first block), else the ImageNet stem.
    stem: str = "auto"
    resnet_d: bool = False  # ResNet-D: avg-pool before the 1x1 downsample conv (Bag of Tricks, sec. 4.1)
    zero_gamma: bool = False  # init the last BN gamma of each block to 0 (Goyal et al. 2017)
    # A torchvision weights name ("IMAGENET1K_V1", downloaded when online) or a local
    # state-dict file; the head is replaced for this data set's classes.
    pretrained: str | None = None

    # --- optimisation -------------------------------------------------------------
    optimizer: str = "sgd"
    # Peak learning rate. 0.1 is He et al.'s CIFAR value for batch 128 with SGD+momentum.
    lr: float = 0.1
    # True: ``lr`` is per 256 images and is scaled by batch_size/256 (Goyal et al. 2017).
    lr_per_256: bool = False
    momentum: float = 0.9
    nesterov: bool = False
    # 5e-4 is the usual CIFAR ResNet value; ImageNet recipes use 1e-4.
    weight_decay: float = 5e-4
    no_bias_decay: bool = False  # biases and BN parameters get weight decay 0 (Bag of Tricks, sec. 3.1)
    # Discriminative LRs: stage k counted from the head gets lr * layer_lr_decay**k, so
    # the stem learns slowest (ULMFiT, Howard & Ruder 2018). None = one LR for all.
    layer_lr_decay: float | None = None
    # Per-stage LRs as divisors of lr, from the stem to the head: (stem, layer1..layerN, head),
    # so 5 numbers for the CIFAR ResNets (3 stages) and 6 for torchvision's (4). The CUB-200
    # fine-tuning studies used (10, 8, 6, 4, 2, 2): stem lr/10 ... stage 4 and head lr/2.
    # Empty = one LR for all (or layer_lr_decay's geometric rule).
    stage_lr_divisors: tuple[float, ...] = ()
    sam_rho: float = 0.0  # SAM neighbourhood radius (Foret et al. 2021); 0.05 is their CIFAR value; 0 = off
    batch_size: int = 128
    epochs: int = 10
    # Validate after every Nth epoch and after the last; 1 = every epoch. A run nobody stops
    # early (a confirmation run) needs only its final value, and validation (with precise BN)
    # is more than half of a default-recipe epoch on the CPU (3.3 s vs 1.5 s median, docs/evidence.md).
    eval_every: int = 1

    # --- learning-rate schedule (stepped per optimizer step) ------------------------
    schedule: str = "cosine"
    warmup_epochs: float = 0.0  # linear warmup from ~0 to lr; 5 in Goyal et al. for big batches
    min_lr: float = 0.0  # cosine floor, reached at the last step
    # step: multiply by step_gamma at these fractions of training (30/60/90 of 120 epochs
    # in Bag of Tricks = 0.25/0.5/0.75); fractions so the shape survives any epoch count.
    step_milestones: tuple[float, ...] = (0.5, 0.75)
    step_gamma: float = 0.1

    # --- regularisation ------------------------------------------------------------
    label_smoothing: float = 0.0  # eps: target = (1-eps)*onehot + eps/K (Szegedy et al. 2016); 0.1 is usual
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixing (Zhang et al. 2018); 0.2 in Bag of Tricks; 0 = off
    cutmix_alpha: float = 0.0  # CutMix box ratio ~ Beta(alpha, alpha) (Yun et al. 2019); 1.0 usual; 0 = off
    mix_prob: float = 1.0  # chance a batch is mixed at all when mixup or cutmix is on
    mix_switch_prob: float = 0.5  # with both on: chance of cutmix instead of mixup (timm's switch_prob)
    # Knowledge distillation (Hinton et al. 2015): a teacher file written by
    # ``python -m trainable --save-weights``; None = off.
    teacher_checkpoint: str | None = None
    kd_temperature: float = 4.0  # softens both distributions; KL term is scaled by T^2
    kd_weight: float = 0.5  # loss = (1-w) * CE + w * T^2 * KL

    # --- augmentation ---------------------------------------------------------------
    augment: str = "none"  # policy: AutoAugment (Cubuk 2019), RandAugment (2020), TrivialAugment (2021)
    randaugment_n: int = 2  # ops per image (RandAugment paper's ImageNet value)
    randaugment_m: int = 9  # magnitude on the 0..30 scale (paper's ImageNet value)
    random_erasing: float = 0.0  # probability per image (Zhong et al. 2020; 0.25 in timm); 0 = off
    hflip: bool = False
    color_jitter: float = 0.0  # brightness/contrast/saturation strength; 0 = off
    # pad: 4-px pad + random crop (He et al. CIFAR); random_resized: Inception crop.
    crop: str = "none"
    # Rotate each training image by an angle drawn uniformly from [-d, +d] degrees (corners
    # filled with black); the CUB-200 ResNet-50 fine-tuning studies used 5. 0 = off.
    rotation_degrees: float = 0.0

    # --- model averaging, precision, speed --------------------------------------------
    ema_decay: float = 0.0  # EMA of weights and BN buffers, validated instead of live weights; 0 = off
    # Before each evaluation, re-estimate BN statistics on this many training images (precise
    # BN, Wu & Johnson 2021; pycls uses 8192): early epochs then rank configurations as the
    # end of training does (make bench, fidelity figure). 0 = off: BN's running statistics.
    precise_bn: int = 0
    amp: str = "off"
    channels_last: bool = False
    compile: bool = False  # torch.compile; pays off only for long runs (tens of s to compile)
    device: str = "auto"  # auto = cuda if available else cpu
    threads: int = 0  # torch intra-op threads; 0 = torch's default. Set when packing trials.
    seed: int = 0


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(key: str, value, hint):
    """Return ``value`` as ``hint`` or raise ConfigError. Accepts YAML/CLI spellings."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of numbers, got {value!r}; write e.g. {key}=0.5,0.75")
        return tuple(_coerce(key, v, args[0]) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if hint is int:
        return coerce_int(key, value)
    if hint is float:
        return coerce_float(key, value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {hint} for {key}")  # a bug in TrainConfig, not user input


def _number(key: str, value, kind: type, noun: str):
    """``value`` as ``kind`` (int or float), accepting YAML/CLI strings; never a bool."""
    if not isinstance(value, bool):
        if isinstance(value, (int, float)) and (kind is float or float(value).is_integer()):
            return kind(value)
        if isinstance(value, str):
            try:
                # YAML 1.1 reads 1e-4 (no dot) as a string; int("3") and float("1e-4") both parse here.
                return kind(value) if kind is float else int(value.strip())
            except ValueError:
                pass
    raise ConfigError(f"{key}: expected {noun}, got {value!r}")


def coerce_int(key: str, value) -> int:
    """An integer from an int, a whole float or a string of digits; ConfigError otherwise."""
    return _number(key, value, int, "an integer")


def coerce_float(key: str, value) -> float:
    """A float from a number or a numeric string (``1e-4``); ConfigError otherwise (bools too)."""
    return _number(key, value, float, "a number")


def unknown_key_hint(key: str) -> str:
    """``unknown training key ...; did you mean ...?``: the message for a key TrainConfig lacks."""
    close = difflib.get_close_matches(str(key), FIELDS, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "run `python -m trainable --help-config` to list the keys"
    return f"{key!r}; {hint}"


def unknown_key_error(key: str, where: str = "config") -> ConfigError:
    return ConfigError(f"unknown {where} key {unknown_key_hint(key)}")


def explain(key: str, value, err: ConfigError) -> str:
    """The error's message, plus the YAML pitfall behind most string-typed surprises."""
    message = str(err)
    if isinstance(value, bool) and _HINTS.get(key) in (str, str | None):
        message += ("; YAML reads off/on/no/yes as true/false: quote the value, e.g. "
                    f"{key}: '{'off' if not value else 'on'}'")
    return message


def is_number_key(key: str) -> bool:
    """Whether ``key`` holds a number (int or float, optional or not)."""
    return _HINTS[key] in (int, float, int | None, float | None)


def is_int_key(key: str) -> bool:
    return _HINTS[key] in (int, int | None)


def coerce_value(key: str, value):
    """Coerce one value for ``key`` (used by the space loader for each sampled domain)."""
    if key not in FIELDS:
        raise unknown_key_error(key)
    return _coerce(key, value, _HINTS[key])


def from_dict(values: typing.Mapping | None = None, **overrides) -> TrainConfig:
    """Build a validated TrainConfig from a flat dict; unknown keys and bad values raise ConfigError."""
    merged = {**(values or {}), **overrides}
    kwargs = {key: coerce_value(key, value) for key, value in merged.items()}
    cfg = TrainConfig(**kwargs)
    validate(cfg)
    return cfg


def to_dict(cfg: TrainConfig) -> dict:
    """Flat dict with the same names as the space files and MLflow params."""
    # Tuples as lists: what a YAML space file writes, so a recorded config reads back the same.
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def parse_overrides(pairs: typing.Iterable[str]) -> dict:
    """``["lr=0.1", "hflip=true"]`` -> dict; the values are coerced by from_dict."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. --set lr=0.05")
        key, value = pair.split("=", 1)
        key = key.strip()
        if key not in FIELDS:
            raise unknown_key_error(key, "--set")
        out[key] = value.strip()
    return out


def _choice(cfg, key, allowed):
    value = getattr(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key}: unknown value {value!r}; choose one of {', '.join(allowed)}")


def _range(cfg, key, low=None, high=None, low_open=False, high_open=False, fix=""):
    value = getattr(cfg, key)
    if value is None:
        return
    bad = (low is not None and (value < low or (low_open and value == low))) or (
        high is not None and (value > high or (high_open and value == high)))
    if bad:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        span = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
        raise ConfigError(f"{key}={value!r} is outside {span}{'; ' + fix if fix else ''}")


def validate(cfg: TrainConfig) -> None:
    """Cheap checks only (no data or model is touched): values, choices, and that files exist."""
    for key, allowed in (("dataset", DATASETS), ("model", MODELS), ("schedule", SCHEDULES),
                         ("optimizer", OPTIMIZERS), ("augment", AUGMENTS), ("crop", CROPS),
                         ("amp", AMP_MODES), ("stem", STEMS), ("loader", LOADERS)):
        _choice(cfg, key, allowed)
    for key in ("train_subset", "val_subset", "image_size", "num_workers", "threads", "randaugment_n", "seed",
                "precise_bn"):
        _range(cfg, key, 0)
    _range(cfg, "epochs", 1, fix="train for at least one epoch")
    _range(cfg, "eval_every", 1, fix="1 validates after every epoch")
    _range(cfg, "batch_size", 1)
    _range(cfg, "lr", 0, low_open=True, fix="the learning rate must be positive")
    _range(cfg, "min_lr", 0)
    peak = effective_lr(cfg)
    if cfg.min_lr > peak and cfg.schedule == "cosine":
        raise ConfigError(f"min_lr={cfg.min_lr} is above the peak lr {peak:g}; the cosine floor must be below it")
    _range(cfg, "momentum", 0, 1, high_open=True)
    _range(cfg, "weight_decay", 0)
    _range(cfg, "layer_lr_decay", 0, 1, low_open=True, fix="use a factor in (0, 1], or None for one LR")
    _stage_lr_divisors(cfg)
    _range(cfg, "sam_rho", 0, fix="0 turns SAM off; 0.05 is the paper's CIFAR value")
    if cfg.sam_rho > 0 and cfg.amp == "fp16":
        # fp16 needs a GradScaler, whose unscale/step bookkeeping assumes one backward per step.
        raise ConfigError("sam_rho: SAM with amp=fp16 is not supported; use amp=bf16 or amp=off")
    _range(cfg, "warmup_epochs", 0)
    if cfg.warmup_epochs >= cfg.epochs and cfg.schedule in ("cosine", "onecycle") and cfg.warmup_epochs > 0:
        raise ConfigError(f"warmup_epochs={cfg.warmup_epochs} must be below epochs={cfg.epochs}")
    for m in cfg.step_milestones:
        if not 0 < m < 1:
            raise ConfigError(f"step_milestones: {m} is not a fraction of training in (0, 1)")
    _range(cfg, "step_gamma", 0, 1, low_open=True)
    _range(cfg, "label_smoothing", 0, 1, high_open=True, fix="0.1 is the usual value, 0 turns it off")
    _range(cfg, "mixup_alpha", 0, fix="0 turns mixup off, 0.2 is Bag of Tricks' value")
    _range(cfg, "cutmix_alpha", 0, fix="0 turns cutmix off, 1.0 is the CutMix paper's value")
    _range(cfg, "mix_prob", 0, 1)
    _range(cfg, "mix_switch_prob", 0, 1)
    _range(cfg, "kd_temperature", 0, low_open=True, fix="use a temperature > 0, typically 1-10")
    _range(cfg, "kd_weight", 0, 1)
    _range(cfg, "randaugment_m", 0, 30)
    _range(cfg, "random_erasing", 0, 1)
    _range(cfg, "color_jitter", 0)
    _range(cfg, "rotation_degrees", 0, 180, fix="0 turns rotation off; the CUB fine-tuning studies used 5")
    _range(cfg, "ema_decay", 0, 1, high_open=True, fix="0 turns EMA off; 0.999 is typical")
    if cfg.teacher_checkpoint is not None and not os.path.isfile(cfg.teacher_checkpoint):
        raise ConfigError(
            f"teacher_checkpoint: no file at {cfg.teacher_checkpoint!r}; make one with `make teacher`")
    if cfg.pretrained is not None and looks_like_path(cfg.pretrained) and not os.path.isfile(cfg.pretrained):
        raise ConfigError(f"pretrained: no file at {cfg.pretrained!r}; give a state-dict file or a torchvision "
                          "weights name such as IMAGENET1K_V1")
    if cfg.data_dir is not None and not os.path.isdir(cfg.data_dir):
        raise ConfigError(f"data_dir: no directory at {cfg.data_dir!r}; point it at the data set's files")
    needs = DATASETS[cfg.dataset].needs_data_dir
    if needs and cfg.data_dir is None:
        raise ConfigError(f"data_dir: dataset={cfg.dataset} needs data_dir={needs}")


def _stage_lr_divisors(cfg: TrainConfig) -> None:
    divisors = cfg.stage_lr_divisors
    if not divisors:
        return
    if cfg.layer_lr_decay is not None:
        raise ConfigError("stage_lr_divisors: give per-stage LRs one way; set layer_lr_decay=None or "
                          "stage_lr_divisors=()")
    stages = MODELS[cfg.model].stages
    if len(divisors) != stages + 2:
        example = ",".join(["10", "8", "6", "4", "2", "2"][-(stages + 2):])
        raise ConfigError(f"stage_lr_divisors: {cfg.model} needs {stages + 2} divisors (stem, layer1..layer{stages}, "
                          f"head), got {len(divisors)}; e.g. {example}")
    if any(d <= 0 for d in divisors):
        raise ConfigError(f"stage_lr_divisors: {list(divisors)} has a divisor <= 0; each stage's lr is lr/divisor")


def effective_lr(cfg: TrainConfig) -> float:
    """Peak LR of the run: ``cfg.lr``, times ``batch_size/256`` when ``cfg.lr_per_256`` (the linear
    scaling rule of Goyal et al. 2017, arXiv:1706.02677)."""
    if cfg.lr_per_256:
        return cfg.lr * cfg.batch_size / 256
    return cfg.lr


def looks_like_path(value: str) -> bool:
    """A ``pretrained`` value that names a file rather than a torchvision weights name."""
    return "/" in value or os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors"))


def describe() -> str:
    """One line per key: name, type, default, for ``--help-config``."""
    return "\n".join(f"{f.name:<20} {_type_name(_HINTS[f.name]):<14} {f.default!r}" for f in fields(TrainConfig))


__all__ = ["TrainConfig", "ConfigError", "DataError", "from_dict", "to_dict", "parse_overrides", "coerce_value",
           "coerce_int", "coerce_float", "unknown_key_hint", "unknown_key_error", "explain", "looks_like_path",
           "effective_lr", "is_number_key", "is_int_key", "validate", "describe", "FIELDS", "METRICS",
           "REPORTED_METRICS", "CHECKPOINT_FILE"]
