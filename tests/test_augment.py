"""Behaviour of each augmentation on real Fashion-MNIST images from the embedded set."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from trainable.config import TrainConfig
from trainable.data import FASHION_MNIST_STATS
from trainable.tricks.augment import PAD, BatchAugment, policy, sample_transform

MEAN, STD = FASHION_MNIST_STATS


@pytest.fixture(scope="module")
def images():
    """256 real 28x28 images as uint8 [256,1,28,28] (all 10 classes, interleaved)."""
    import importlib.resources

    with (importlib.resources.files("trainable") / "assets" / "fashion_mnist_subset.npz").open("rb") as f:
        x = np.load(f)["x_train"][:256]
    return torch.from_numpy(x).unsqueeze(1)


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)  # augmentations draw from the global RNG, as in the training loop


def normalize(x):
    mean = torch.tensor(MEAN).view(1, -1, 1, 1)
    std = torch.tensor(STD).view(1, -1, 1, 1)
    return (x.float() * (1 / 255) - mean) / std  # as v2.ToDtype(scale=True): times 1/255


def augment(x, **cfg):
    return BatchAugment(TrainConfig(**cfg), MEAN, STD, train=True)(x)


def test_all_off_is_exact_normalization(images):
    assert torch.equal(augment(images), normalize(images))
    # With train=False every trick is off, whatever the config says.
    everything = dict(crop="pad", hflip=True, augment="randaugment", color_jitter=0.4, random_erasing=1.0)
    assert torch.equal(BatchAugment(TrainConfig(**everything), MEAN, STD, train=False)(images), normalize(images))


def test_pad_crop_is_a_shifted_window_with_its_own_offset_per_image(images):
    x = images[:64]
    out = augment(x, crop="pad")
    assert out.shape == x.shape and out.dtype == torch.float32
    padded = normalize(torch.nn.functional.pad(x, (PAD,) * 4))
    offsets = []
    for i in range(len(x)):
        found = [(dy, dx) for dy in range(2 * PAD + 1) for dx in range(2 * PAD + 1)
                 if torch.equal(out[i], padded[i, :, dy:dy + 28, dx:dx + 28])]
        assert found, f"image {i} is not a 28x28 window of its padded input"
        offsets.append(found[0])
    assert len(set(offsets)) > 20  # 81 possible offsets for 64 images: one shared draw would give 1


def test_hflip_mirrors_about_half_each_exactly(images):
    out = augment(images, hflip=True)
    same = (out == normalize(images)).flatten(1).all(1)
    mirrored = (out == normalize(images).flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()
    assert 0.40 < mirrored.float().mean() < 0.60  # 256 fair coins: sd 0.031


@pytest.mark.parametrize("name", ["autoaugment", "randaugment", "trivialaugment"])
def test_policy_keeps_shape_and_changes_images(images, name):
    x = images[:64]
    out = augment(x, augment=name)
    assert out.shape == x.shape and out.dtype == torch.float32
    changed = (out != normalize(x)).flatten(1).any(1)
    # Some ops are identity or skipped by their probability; most images must still change.
    assert changed.float().mean() > 0.5


def test_policy_choice():
    assert policy(TrainConfig(), 28) is None
    assert policy(TrainConfig(augment="autoaugment"), 28).policy == v2.AutoAugmentPolicy.CIFAR10
    assert policy(TrainConfig(augment="autoaugment"), 224).policy == v2.AutoAugmentPolicy.IMAGENET
    ra = policy(TrainConfig(augment="randaugment", randaugment_n=3, randaugment_m=5), 28)
    assert (ra.num_ops, ra.magnitude) == (3, 5)


def test_color_jitter_draws_per_image_on_grayscale(images):
    x = images[:64]
    out = augment(x, color_jitter=0.4)
    assert out.shape == x.shape
    # Brightness is a per-image factor: the ratio of mean pixel values must vary across images.
    back = out * STD[0] + MEAN[0]
    ratio = back.flatten(1).mean(1) / (x.float() / 255).flatten(1).mean(1)
    assert ratio.std() > 0.05


def test_color_jitter_and_policy_on_rgb(images):
    rgb = images[:16].expand(-1, 3, -1, -1).contiguous()
    out = BatchAugment(TrainConfig(color_jitter=0.4, augment="randaugment"), (0.5,) * 3, (0.25,) * 3, True)(rgb)
    assert out.shape == rgb.shape and out.dtype == torch.float32


def test_random_resized_crop_keeps_size_and_changes_images(images):
    x = images[:32]
    out = augment(x, crop="random_resized")
    assert out.shape == x.shape
    assert (out != normalize(x)).flatten(1).any(1).float().mean() > 0.9


def test_random_erasing_one_erases_a_rectangle_in_every_image(images):
    x = images[:64]
    out = augment(x, random_erasing=1.0)
    assert not (normalize(x) == 0).any()  # no pixel normalizes to exactly 0, so zeros mark erasing
    for i in range(len(x)):
        erased = out[i, 0] == 0
        rows, cols = erased.any(1).nonzero().flatten(), erased.any(0).nonzero().flatten()
        assert len(rows) and len(cols), f"image {i} has no erased pixels"
        box = erased[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all(), f"image {i}: erased pixels do not form a filled rectangle"
        assert torch.equal(out[i, 0][~erased], normalize(x[i:i + 1])[0, 0][~erased])


def test_sample_transform_takes_pil_and_uint8_tensor(images):
    x = images[0]
    val = sample_transform(TrainConfig(), 28, MEAN, STD, train=False)
    assert torch.allclose(val(x), normalize(x[None])[0], atol=1e-6)
    pil = Image.fromarray(x[0].numpy())
    assert torch.allclose(val(pil), normalize(x[None])[0], atol=1e-6)
    train = sample_transform(TrainConfig(crop="pad", hflip=True, augment="trivialaugment", color_jitter=0.3,
                                         random_erasing=0.5), 28, MEAN, STD, train=True)
    for sample in (pil, x):
        out = train(sample)
        assert out.shape == (1, 28, 28) and out.dtype == torch.float32
    rrc = sample_transform(TrainConfig(crop="random_resized"), 32, MEAN, STD, train=True)
    assert rrc(pil).shape == (1, 32, 32)


def test_batch_augment_rejects_float_input(images):
    with pytest.raises(TypeError, match="uint8"):
        augment(images.float())


@pytest.mark.parametrize("trick", [dict(crop="pad"), dict(crop="random_resized"), dict(hflip=True),
                                   dict(augment="autoaugment"), dict(augment="randaugment"),
                                   dict(augment="trivialaugment"), dict(color_jitter=0.4),
                                   dict(random_erasing=1.0)], ids=lambda t: "-".join(map(str, t.values())))
def test_each_image_gets_its_own_random_draw(images, trick):
    # 32 copies of one image: a transform applied to the whole batch at once (one draw)
    # would give 32 identical outputs.
    out = augment(images[3:4].repeat(32, 1, 1, 1), **trick)
    assert len(torch.unique(out.flatten(1), dim=0)) >= 2
