"""Behaviour of trainable.models: architectures, stems, ResNet-D, zero-gamma, stages, weight files.

Everything runs offline: pretrained weights come from files written into tmp_path.
"""

import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from trainable.config import ConfigError, from_dict
from trainable.models import ModelError, build_model, load_teacher, save_weights


def _cfg(**overrides):
    return from_dict({"model": "resnet20", **overrides})


def _downsamples(model):
    return [m.downsample for m in model.modules() if isinstance(getattr(m, "downsample", None), nn.Sequential)]


def test_model_error_is_a_config_error():
    # The command line and the search treat every ConfigError as "fix your config".
    assert issubclass(ModelError, ConfigError)


def test_unknown_model_and_stem_are_rejected_by_the_config():
    # config.validate is the one place that checks names; build_model trusts them.
    with pytest.raises(ConfigError, match="model: unknown value 'resnet9000'; choose one of resnet20"):
        _cfg(model="resnet9000")
    with pytest.raises(ConfigError, match="stem: unknown value 'tiny'; choose one of auto, imagenet, small"):
        _cfg(stem="tiny")


def test_resnet20_has_the_papers_parameter_count():
    model = build_model(_cfg(), num_classes=10, in_channels=3, image_size=32)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - 0.27e6) / 0.27e6 < 0.05, n


@pytest.mark.parametrize("name", ["resnet20", "resnet56", "resnet18", "resnet50"])
@pytest.mark.parametrize(("channels", "size", "classes"), [(1, 28, 10), (3, 32, 100)])
def test_forward_shapes(name, channels, size, classes):
    model = build_model(_cfg(model=name), classes, channels, size)
    assert model(torch.randn(2, channels, size, size)).shape == (2, classes)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_auto_stem_is_small_for_small_images_and_imagenet_for_large(name):
    for size in (28, 32):
        model = build_model(_cfg(model=name), 10, 3, size)
        assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
        assert isinstance(model.maxpool, nn.Identity)
    model = build_model(_cfg(model=name), 10, 3, 224)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, nn.MaxPool2d)


def test_explicit_stem_overrides_auto_and_conv1_takes_the_data_channels():
    model = build_model(_cfg(model="resnet18", stem="imagenet"), 10, 1, 28)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.in_channels == 1
    assert isinstance(model.maxpool, nn.MaxPool2d)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    small = build_model(_cfg(model="resnet18", stem="small"), 10, 3, 224)
    assert small.conv1.kernel_size == (3, 3) and isinstance(small.maxpool, nn.Identity)


def test_cifar_resnets_always_have_the_3x3_stem_and_three_stages():
    model = build_model(_cfg(model="resnet56", stem="imagenet"), 10, 1, 224)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.in_channels == 1
    assert [model.layer1[0].conv1.out_channels, model.layer2[0].conv1.out_channels,
            model.layer3[0].conv1.out_channels] == [16, 32, 64]
    assert len(model.layer1) == 9  # (56 - 2) / 6
    assert hasattr(model, "layer3") and not hasattr(model, "layer4")


@pytest.mark.parametrize("name", ["resnet20", "resnet50"])
def test_resnet_d_average_pools_every_strided_shortcut(name):
    plain = build_model(_cfg(model=name), 10, 1, 28)
    model = build_model(_cfg(model=name, resnet_d=True), 10, 1, 28)
    strided = [d for d in _downsamples(plain) if d[0].stride != (1, 1)]
    assert len(strided) == (2 if name == "resnet20" else 3)
    d_downsamples = _downsamples(model)
    assert len(d_downsamples) == len(_downsamples(plain))
    pooled = [d for d in d_downsamples if isinstance(d[0], nn.AvgPool2d)]
    assert len(pooled) == len(strided)
    for d in pooled:
        assert d[1].stride == (1, 1) and d[1].kernel_size == (1, 1) and isinstance(d[2], nn.BatchNorm2d)
        assert d[0].ceil_mode and not d[0].count_include_pad
    for d in d_downsamples:  # no shortcut is still strided
        conv = next(m for m in d if isinstance(m, nn.Conv2d))
        assert conv.stride == (1, 1)
    # 28 px reaches 7 px, then an odd size: the pooled shortcut must match the 3x3/2 path.
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet20", "resnet50"])
def test_zero_gamma_makes_every_block_start_as_its_shortcut(name):
    model = build_model(_cfg(model=name, zero_gamma=True), 10, 3, 32)
    blocks = [m for m in model.modules() if isinstance(m, (torchvision.models.resnet.BasicBlock,
                                                            torchvision.models.resnet.Bottleneck))]
    last_bns = [b.bn3 if isinstance(b, torchvision.models.resnet.Bottleneck) else b.bn2 for b in blocks]
    assert last_bns and all(torch.all(bn.weight == 0) for bn in last_bns)
    for block, channels, size in ((model.layer1[1], model.layer1[1].conv1.in_channels, 8),
                                  (model.layer2[0], model.layer2[0].conv1.in_channels, 8)):
        x = torch.randn(2, channels, size, size)
        shortcut = block.downsample(x) if block.downsample is not None else x
        torch.testing.assert_close(block(x), torch.relu(shortcut))
    # Off by default: the same block is no longer its shortcut.
    plain = build_model(_cfg(model=name), 10, 3, 32).layer1[1]
    x = torch.randn(2, plain.conv1.in_channels, 8, 8)
    assert not torch.allclose(plain(x), torch.relu(x))


@pytest.fixture
def resnet18_file(tmp_path):
    """A randomly initialised ImageNet-shaped resnet18 (3 channels, 1000 classes) as a raw state dict."""
    torch.manual_seed(1)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    return str(path), state


def test_pretrained_file_loads_layers_sums_rgb_kernels_and_keeps_a_new_head(resnet18_file):
    path, state = resnet18_file
    model = build_model(_cfg(model="resnet18", stem="imagenet", pretrained=path), 10, 1, 28)
    loaded = model.state_dict()
    for key in ("layer1.0.conv1.weight", "layer4.1.bn2.running_var", "layer3.0.downsample.0.weight", "bn1.weight"):
        torch.testing.assert_close(loaded[key], state[key])
    torch.testing.assert_close(model.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    assert model.fc.out_features == 10


def test_pretrained_plain_weights_fit_a_resnet_d_model(resnet18_file):
    path, state = resnet18_file
    model = build_model(_cfg(model="resnet18", stem="imagenet", resnet_d=True, pretrained=path), 10, 3, 224)
    torch.testing.assert_close(model.layer2[0].downsample[1].weight, state["layer2.0.downsample.0.weight"])
    torch.testing.assert_close(model.layer2[0].downsample[2].running_mean, state["layer2.0.downsample.1.running_mean"])


def test_pretrained_from_another_model_names_the_mismatch(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ModelError, match=r"do not fit resnet18: unexpected layer1\.2\.conv1\.weight"):
        build_model(_cfg(model="resnet18", stem="imagenet", pretrained=str(path)), 10, 3, 224)


def test_pretrained_with_a_different_stem_says_which_stem_fits(resnet18_file):
    path, _ = resnet18_file
    with pytest.raises(ModelError, match="conv1.weight.*stem=imagenet"):
        build_model(_cfg(model="resnet18", pretrained=path), 10, 3, 32)  # auto -> small 3x3 stem


def test_pretrained_corrupt_file_raises_model_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"this is not a torch file")
    with pytest.raises(ModelError, match="not a readable torch weights file"):
        build_model(_cfg(model="resnet18", pretrained=str(path)), 10, 3, 32)


def test_pretrained_name_offline_says_to_download_elsewhere(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    # get_state_dict calls this; patched so the test never touches the network.
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(ModelError, match=r"could not download .*resnet18.*pretrained=/path/to/file\.pth"):
        build_model(_cfg(model="resnet18", pretrained="IMAGENET1K_V1"), 10, 3, 224)
    with pytest.raises(ModelError, match="IMAGENET1K_V1"):  # the error lists the names that exist
        build_model(_cfg(model="resnet18", pretrained="IMAGENET9K"), 10, 3, 224)
    with pytest.raises(ModelError, match="no weights for resnet20"):
        build_model(_cfg(pretrained="DEFAULT"), 10, 3, 32)


def _trained_a_little(model, channels, size):
    # A few train-mode forwards move the BN running statistics away from their init,
    # so the round trip checks buffers as well as weights.
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, channels, size, size) * 3 + 1)
    return model.eval()


def test_save_weights_and_load_teacher_give_identical_logits(tmp_path):
    cfg = _cfg(model="resnet20", resnet_d=True)
    model = _trained_a_little(build_model(cfg, 10, 1, 28), 1, 28)
    path = tmp_path / "teacher.pt"
    save_weights(path, model, cfg, 10, 1, 28)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "tricktune-weights-v1" and raw["stem"] == "small" and raw["resnet_d"] is True
    teacher = load_teacher(str(path), 10, 1, "cpu")
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), model(x), rtol=0, atol=0)


def test_save_weights_unwraps_ema_and_records_the_resolved_stem(tmp_path):
    cfg = _cfg(model="resnet18")
    model = _trained_a_little(build_model(cfg, 10, 3, 32), 3, 32)
    ema = torch.optim.swa_utils.AveragedModel(model)
    path = tmp_path / "ema.pt"
    save_weights(path, ema, cfg, 10, 3, 32)
    assert torch.load(path, weights_only=True)["stem"] == "small"
    teacher = load_teacher(path, 10, 3, "cpu")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), ema.module.eval()(x))
    # The same file also serves as pretrained weights (a new head for 5 classes).
    student = build_model(_cfg(model="resnet18", pretrained=str(path)), 5, 3, 32)
    torch.testing.assert_close(student.layer4[1].conv2.weight, model.layer4[1].conv2.weight)


def test_load_teacher_rejects_wrong_data_missing_and_corrupt_files(tmp_path):
    cfg = _cfg()
    path = tmp_path / "teacher.pt"
    save_weights(path, build_model(cfg, 10, 1, 28), cfg, 10, 1, 28)
    with pytest.raises(ModelError, match=r"has 10 classes but the data set has 100.*make teacher"):
        load_teacher(str(path), 100, 1, "cpu")
    with pytest.raises(ModelError, match=r"3.*make teacher"):
        load_teacher(str(path), 10, 3, "cpu")
    with pytest.raises(ModelError, match="make teacher"):
        load_teacher(str(tmp_path / "nowhere.pt"), 10, 1, "cpu")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\x00garbage")
    with pytest.raises(ModelError, match="not a readable"):
        load_teacher(str(broken), 10, 1, "cpu")
    raw = tmp_path / "raw.pt"
    torch.save(build_model(cfg, 10, 1, 28).state_dict(), raw)
    with pytest.raises(ModelError, match="tricktune-weights-v1"):
        load_teacher(str(raw), 10, 1, "cpu")
    # The model name comes from the file, which config.validate never sees.
    foreign = tmp_path / "foreign.pt"
    torch.save({**torch.load(path, weights_only=True), "model": "resnet9000"}, foreign)
    with pytest.raises(ModelError, match="names model 'resnet9000', not one of resnet20.*make teacher"):
        load_teacher(str(foreign), 10, 1, "cpu")
