"""ResNets with torchvision's parameter names, the three architecture tricks, and weight files.

Two families, one naming scheme (``conv1``, ``bn1``, ``maxpool``, ``layer1..layerN``,
``fc``), so the layer-wise LR code and the pretrained/teacher loaders treat them alike:

* ``resnet20/32/44/56/110``: the CIFAR ResNets of He et al. 2016, "Deep Residual Learning
  for Image Recognition", sec. 4.2 (https://arxiv.org/abs/1512.03385): a 3x3 stem, three
  stages of n BasicBlocks at 16/32/64 channels, depth = 6n + 2. resnet20 has 0.27M
  parameters and trains an epoch of 10k 28-px images in seconds on a CPU.
* ``resnet18/34/50/101/152``: torchvision's ImageNet ResNets, with the stem chosen by
  ``cfg.stem`` so that 28- and 32-px images are not shrunk 4x before the first block.

Tricks (each off by default): ``resnet_d`` (:func:`apply_resnet_d`), ``zero_gamma``
(:func:`zero_gamma_`), ``pretrained`` (:func:`load_pretrained`). :func:`save_weights` and
:func:`load_teacher` write and read the self-describing weights file that knowledge
distillation and ``pretrained`` use.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Mapping

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from trainable.config import ConfigError, TrainConfig, looks_like_path
from trainable.registry import MODELS

WEIGHTS_FORMAT = "tricktune-weights-v1"
# At <= 64 px a 7x7/2 conv plus a 3x3/2 max-pool would leave 28 px as 7 px (and 32 px
# as 8 px) before the first residual block; the small stem keeps the full resolution.
SMALL_STEM_MAX_SIZE = 64
# Wrappers that prefix parameter names: DataParallel/DDP/AveragedModel ("module.")
# and torch.compile ("_orig_mod.").
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class ModelError(ConfigError):
    """A model cannot be built or a weights file does not fit; one line naming the problem and the fix."""


# --- architectures ----------------------------------------------------------------------


class CifarResNet(nn.Module):
    """He et al. 2016, sec. 4.2: 3x3 conv stem, 3 stages of ``n`` BasicBlocks (16/32/64 channels,
    stride 1/2/2), global average pool, linear head; depth = 6n + 2.

    Where a stage changes the shape the shortcut is a 1x1-conv projection + BN (the paper's
    option B) rather than option A's zero-padded identity, so every strided shortcut has
    the same ``downsample`` Sequential as torchvision's ResNets and ResNet-D applies to both
    families the same way. This adds 2.8k parameters to resnet20 (0.270M -> 0.272M for 3 channels, 10 classes).
    """

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6:
            raise ModelError(f"CIFAR ResNet depth {depth} is not 6n+2; use one of 20, 32, 44, 56, 110")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()  # kept so every model has torchvision's attribute set
        self.layer1 = _basic_stage(16, 16, n, stride=1)
        self.layer2 = _basic_stage(16, 32, n, stride=2)
        self.layer3 = _basic_stage(32, 64, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        # torchvision's ResNet init (He init, fan_out), so both families start alike.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _basic_stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
    layers = [BasicBlock(inplanes, planes, stride, downsample)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def resolve_stem(cfg: TrainConfig, image_size: int) -> str:
    """The stem ``cfg.stem`` means at ``image_size`` px: "small" or "imagenet".

    CIFAR ResNets always have the small 3x3 stem (He et al. 2016), whatever ``cfg.stem`` says."""
    if MODELS[cfg.model].cifar:
        return "small"
    if cfg.stem == "auto":
        return "small" if image_size <= SMALL_STEM_MAX_SIZE else "imagenet"
    return cfg.stem


def _architecture(model_name: str, stem: str, resnet_d: bool, num_classes: int, in_channels: int) -> nn.Module:
    if num_classes < 1 or in_channels < 1:
        raise ModelError(f"{model_name}: need num_classes >= 1 and in_channels >= 1, "
                         f"got {num_classes} and {in_channels}; check the data set")
    info = MODELS[model_name]  # a known name: config.validate and load_teacher let no other through
    if info.cifar:
        model = CifarResNet(info.depth, num_classes, in_channels)
    else:
        model = getattr(torchvision.models, model_name)(weights=None, num_classes=num_classes)
        if stem == "small":
            model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            model.maxpool = nn.Identity()
        elif in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    if resnet_d:
        apply_resnet_d(model)
    return model


def build_model(cfg: TrainConfig, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """The network ``cfg`` describes, for ``in_channels``-channel ``image_size``-px images
    and ``num_classes`` classes, with ``cfg.resnet_d``, ``cfg.zero_gamma`` and
    ``cfg.pretrained`` applied (in that order: pretrained weights overwrite zero gammas,
    since zero-gamma is an initialisation and pretrained weights are a better one)."""
    model = _architecture(cfg.model, resolve_stem(cfg, image_size), cfg.resnet_d, num_classes, in_channels)
    if cfg.zero_gamma:
        zero_gamma_(model)
    if cfg.pretrained is not None:
        load_pretrained(model, cfg.pretrained, cfg.model)
    return model


# --- tricks -------------------------------------------------------------------------------


def apply_resnet_d(model: nn.Module) -> nn.Module:
    """ResNet-D (He et al. 2019, "Bag of Tricks for Image Classification with Convolutional
    Neural Networks", sec. 4.1, https://arxiv.org/abs/1812.01187).

    A strided 1x1 shortcut conv reads only one pixel in four and ignores the rest; ResNet-D
    averages each 2x2 window first, then applies the 1x1 conv with stride 1. Every
    ``downsample = Sequential(conv1x1 stride s, bn)`` with s > 1 becomes
    ``Sequential(AvgPool2d(2, 2), conv1x1 stride 1, bn)``; stride-1 projections are kept.
    ``ceil_mode`` keeps the shortcut the same size as the 3x3/2 main path on odd inputs
    (7 px -> 4 px, as 28-px Fashion-MNIST gives in the last stage). Modifies ``model`` in place.
    """
    for block in model.modules():
        downsample = getattr(block, "downsample", None)
        if not isinstance(downsample, nn.Sequential) or not isinstance(downsample[0], nn.Conv2d):
            continue
        conv = downsample[0]
        if conv.stride == (1, 1):
            continue
        conv.stride = (1, 1)
        block.downsample = nn.Sequential(
            nn.AvgPool2d(2, stride=2, ceil_mode=True, count_include_pad=False), conv, *downsample[1:])
    return model


def zero_gamma_(model: nn.Module) -> nn.Module:
    """Zero-gamma (Goyal et al. 2017, "Accurate, Large Minibatch SGD", sec. 5.1,
    https://arxiv.org/abs/1706.02677; Bag of Tricks sec. 3.1).

    The last BatchNorm of each residual block (``bn2`` of a BasicBlock, ``bn3`` of a
    Bottleneck) starts with weight 0, so each block outputs relu(shortcut(x)) at init: the
    network starts shallow and is easier to train with large learning rates. In place.
    """
    for m in model.modules():
        if isinstance(m, Bottleneck):
            nn.init.zeros_(m.bn3.weight)
        elif isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)
    return model


# --- wrappers ------------------------------------------------------------------------------


def _unwrap(model: nn.Module) -> nn.Module:
    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            return model


def _strip_prefixes(name: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix):], True
    return name


# --- pretrained weights ---------------------------------------------------------------------


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Fit a conv1 kernel trained on ``weight.shape[1]`` channels to ``in_channels`` channels,
    as timm's ``adapt_input_conv`` does: one channel gets the sum of the RGB kernels (a grey
    image then gives the response an RGB image with R = G = B would); other counts repeat the
    kernels and scale by old/new channels so activations keep their magnitude."""
    old = weight.shape[1]
    if in_channels == old:
        return weight
    dtype = weight.dtype
    weight = weight.float()
    if in_channels == 1:
        weight = weight.sum(dim=1, keepdim=True)
    else:
        repeat = math.ceil(in_channels / old)
        weight = weight.repeat(1, repeat, 1, 1)[:, :in_channels] * (old / in_channels)
    return weight.to(dtype)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:160]}" if text else type(exc).__name__


def _is_head(key: str) -> bool:
    return key.startswith("fc.")


def _read_weights_file(path: str, what: str) -> dict:
    if str(path).endswith(".safetensors"):
        raise ModelError(f"{what} {path!r}: .safetensors files are not supported; "
                         "re-save the state dict with torch.save to a .pth file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own message advises weights_only=False, which would run code from the file.
        raise ModelError(f"{what} {str(path)!r} is not a readable torch weights file (corrupt, or it pickles "
                         "objects other than tensors); re-save it with torch.save(model.state_dict()) "
                         "or `make teacher`") from exc
    except Exception as exc:  # zip, EOF and torch errors all mean the same thing here
        raise ModelError(f"{what} {str(path)!r} is not a readable torch weights file ({_first_line(exc)}); "
                         "re-save it with torch.save(model.state_dict()) or `make teacher`") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{what} {str(path)!r} holds a {type(data).__name__}, not a state dict; "
                         "re-save it with torch.save(model.state_dict())")
    return data


def _state_dict_of(data: dict, path: str) -> dict[str, torch.Tensor]:
    """The tensors of a raw state dict, a save_weights file, or a ``{"state_dict": ...}`` dict."""
    if data.get("format") == WEIGHTS_FORMAT or isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    state = {_strip_prefixes(k): v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ModelError(f"pretrained {path!r} contains no tensors; give a state-dict file "
                         "(torch.save(model.state_dict())) or a file from `make teacher`")
    return state


def _match_downsample_layout(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Renumber ``downsample`` keys between plain ``(conv, bn)`` and ResNet-D ``(pool, conv, bn)``.

    The average pool has no parameters, so a plain ImageNet checkpoint fits a ResNet-D
    model once ``downsample.0/1`` become ``downsample.1/2``: its 1x1 conv then reads the
    2x2 average instead of one pixel of it, a start that fine-tuning adjusts (and the
    reverse for a ResNet-D file loaded into a plain model).
    """
    state = dict(state)
    for name, module in model.named_modules():
        downsample = getattr(module, "downsample", None)
        if not isinstance(downsample, nn.Sequential):
            continue
        prefix = f"{name}.downsample."
        model_is_d = isinstance(downsample[0], nn.AvgPool2d)
        file_is_d = f"{prefix}2.weight" in state and f"{prefix}0.weight" not in state
        if model_is_d == file_is_d or not any(k.startswith(prefix) for k in state):
            continue
        shift = 1 if model_is_d else -1
        moved = {}
        for key in [k for k in state if k.startswith(prefix)]:
            index, rest = key[len(prefix):].split(".", 1)
            moved[f"{prefix}{int(index) + shift}.{rest}"] = state.pop(key)
        state.update(moved)
    return state


def _download_torchvision_weights(model_name: str, name: str) -> dict[str, torch.Tensor]:
    if MODELS[model_name].cifar:
        raise ModelError(f"pretrained={name!r}: torchvision has no weights for {model_name}; give a weights "
                         "file (e.g. one written by `make teacher`) or use a torchvision model such as resnet18")
    weights_enum = torchvision.models.get_model_weights(model_name)
    try:
        weights = torchvision.models.get_weight(name) if "." in name else weights_enum[name]
    except (KeyError, ValueError):
        weights = None
    if weights is None or type(weights) is not weights_enum:
        names = ", ".join(["DEFAULT", *(w.name for w in weights_enum)])
        raise ModelError(f"pretrained={name!r}: not a weights name for {model_name}; choose one of {names} "
                         "or give a state-dict file path")
    try:
        # Reads torch.hub's cache (TORCH_HOME) first, so a machine without network works
        # once the file has been put there.
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:
        raise ModelError(f"pretrained={name!r}: could not download {weights.url} ({_first_line(exc)}); "
                         "download it on a machine with network and pass pretrained=/path/to/file.pth") from exc


def _describe_mismatch(missing, unexpected, wrong_shape) -> str:
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            parts.append(f"{label} {', '.join(keys[:3])}{more}")
    return "; ".join(parts)


def load_pretrained(model: nn.Module, pretrained: str, model_name: str) -> nn.Module:
    """Load ``pretrained`` (a torchvision weights name such as "IMAGENET1K_V1" or "DEFAULT",
    or a local file: a raw state dict or a :func:`save_weights` file) into ``model``.

    Transfer learning from ImageNet: every key must fit, except ``fc`` (the model keeps its
    new head for this data set's classes) and ``conv1`` when only its input-channel count
    differs (adapted by :func:`adapt_input_conv`). Anything else raises :class:`ModelError`.
    """
    # A path config.validate found a file at (or a file named like a weights name, in the working folder).
    if looks_like_path(pretrained) or os.path.isfile(pretrained):
        data = _read_weights_file(pretrained, "pretrained")
        saved_from = data.get("model") if data.get("format") == WEIGHTS_FORMAT else None
        state = _state_dict_of(data, pretrained)
    else:
        saved_from = model_name
        state = {_strip_prefixes(k): v for k, v in _download_torchvision_weights(model_name, pretrained).items()}
    state = _match_downsample_layout(state, model)

    target = model.state_dict()
    # Checkpoints from before PyTorch 0.4.1 have no BN step counters; they are not weights.
    missing = [k for k in target if k not in state and not _is_head(k) and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target and not _is_head(k)]
    wrong_shape, stem_hint = [], ""
    for key in (k for k in target if k in state and not _is_head(k)):
        have, want = state[key], target[key]
        if have.shape == want.shape:
            continue
        if key == "conv1.weight" and have.shape[:1] + have.shape[2:] == want.shape[:1] + want.shape[2:]:
            state[key] = adapt_input_conv(have, want.shape[1])
            continue
        wrong_shape.append(f"{key} {list(have.shape)} vs {list(want.shape)}")
        if key == "conv1.weight" and have.shape[2:] != want.shape[2:]:
            stem = "imagenet" if have.shape[-1] == 7 else "small"
            stem_hint = f" conv1 is {have.shape[-2]}x{have.shape[-1]} in the file: set stem={stem}."
    if missing or unexpected or wrong_shape:
        source = f" (the file says it is {saved_from})" if saved_from and saved_from != model_name else ""
        only_stem = stem_hint and not missing and not unexpected and len(wrong_shape) == 1
        fix = stem_hint if only_stem else stem_hint + " were they saved from another model?"
        raise ModelError(f"pretrained weights do not fit {model_name}{source}: "
                         f"{_describe_mismatch(missing, unexpected, wrong_shape)};{fix}")
    target.update({k: v for k, v in state.items() if k in target and not _is_head(k)})
    model.load_state_dict(target)
    return model


# --- weights files (teachers, exported models) --------------------------------------------


def save_weights(path, model: nn.Module, cfg: TrainConfig, num_classes: int, in_channels: int,
                 image_size: int) -> None:
    """Write ``model``'s weights with what is needed to rebuild it (format ``tricktune-weights-v1``).

    Pass the model to keep (the EMA copy when EMA was on). Only tensors, str, int and bool
    are stored, so the file loads with ``torch.load(weights_only=True)``.
    """
    state = {_strip_prefixes(k): v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    torch.save({
        "format": WEIGHTS_FORMAT,
        "model": cfg.model,
        "stem": resolve_stem(cfg, image_size),
        "resnet_d": bool(cfg.resnet_d),
        "image_size": int(image_size),
        "num_classes": int(num_classes),
        "in_channels": int(in_channels),
        "state_dict": state,
    }, path)


_TEACHER_KEYS = {"model", "stem", "resnet_d", "num_classes", "in_channels", "state_dict"}


def load_teacher(path, num_classes: int, in_channels: int, device) -> nn.Module:
    """The network in a :func:`save_weights` file, in eval mode with gradients off, for
    knowledge distillation (Hinton et al. 2015, https://arxiv.org/abs/1503.02531)."""
    what = "teacher_checkpoint"  # config.validate found a file there
    data = _read_weights_file(path, what)
    if data.get("format") != WEIGHTS_FORMAT or not data.keys() >= _TEACHER_KEYS:
        raise ModelError(f"{what} {str(path)!r} is not a {WEIGHTS_FORMAT} file (written by save_weights); "
                         "write one with `make teacher`")
    if data["model"] not in MODELS:  # the file names the model; config.validate never saw it
        raise ModelError(f"{what} {str(path)!r} names model {data['model']!r}, not one of {', '.join(MODELS)}; "
                         "write one with `make teacher`")
    if data["num_classes"] != num_classes:
        raise ModelError(f"{what} {str(path)!r} has {data['num_classes']} classes but the data set has "
                         f"{num_classes}; train a teacher on this data with `make teacher`")
    if data["in_channels"] != in_channels:
        raise ModelError(f"{what} {str(path)!r} takes {data['in_channels']}-channel images but the data set has "
                         f"{in_channels}; train a teacher on this data with `make teacher`")
    model = _architecture(data["model"], data["stem"], data["resnet_d"], num_classes, in_channels)
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        raise ModelError(f"{what} {str(path)!r}: its weights do not fit the {data['model']} it names "
                         f"({' '.join(str(exc).split())[:200]}); rewrite it with `make teacher`") from exc
    model.to(device).eval()
    model.requires_grad_(False)
    return model


__all__ = ["ModelError", "build_model", "save_weights", "load_teacher", "load_pretrained", "apply_resnet_d",
           "zero_gamma_", "adapt_input_conv", "resolve_stem", "CifarResNet"]
