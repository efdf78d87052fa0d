"""Behaviour of each augmentation on real Fashion-MNIST images from the embedded set."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from trainable.config import ConfigError, TrainConfig, from_dict
from trainable.registry import FASHION_MNIST_STATS
from trainable.tricks.augment import PAD, BatchAugment, policy, sample_transform
from trainable.tricks.batch_geometry import crop_flip_rotate, random_resized_crop_boxes

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
    return (x.float() / 255 - mean) / std  # augment.to_unit_float, then v2.Normalize's ops


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
                                   dict(random_erasing=1.0), dict(rotation_degrees=10)],
                         ids=lambda t: "-".join(map(str, t.values())))
def test_each_image_gets_its_own_random_draw(images, trick):
    # 32 copies of one image: a transform applied to the whole batch at once (one draw)
    # would give 32 identical outputs.
    out = augment(images[3:4].repeat(32, 1, 1, 1), **trick)
    assert len(torch.unique(out.flatten(1), dim=0)) >= 2


# --- batched crop, flip and rotation (trainable/tricks/batch_geometry.py) ---------------------


@pytest.mark.parametrize("height,width", [(32, 32), (24, 72)])  # square; a 3:1 strip where many attempts fail
def test_crop_boxes_follow_random_resized_crops_rules(height, width):
    from scipy import stats

    n = 4000
    mine = random_resized_crop_boxes(n, height, width)
    rrc, image = v2.RandomResizedCrop(8), torch.zeros(1, height, width)
    theirs = torch.tensor([[p["top"], p["left"], p["height"], p["width"]]
                           for p in (rrc.make_params([image]) for _ in range(n))])
    top, left, h, w = mine.T
    assert (h >= 1).all() and (w >= 1).all() and (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    features = {"area fraction": lambda b: b[:, 2] * b[:, 3] / (height * width),
                "log aspect": lambda b: torch.log(b[:, 3] / b[:, 2]),
                "top within its range": lambda b: b[:, 0] / (height - b[:, 2] + 1),
                "left within its range": lambda b: b[:, 1] / (width - b[:, 3] + 1)}
    for name, feature in features.items():
        # Two samples of 4000 from one distribution: p < 0.001 one time in 1000.
        assert stats.ks_2samp(feature(mine).numpy(), feature(theirs).numpy()).pvalue > 1e-3, name
    # The strip's fallback (no attempt fits: the centre 24x32 box) appears as often as in torchvision.
    centre = torch.tensor([0, (width - 32) // 2, 24, 32])
    if width == 72:
        rates = [(b == centre).all(1).float().mean().item() for b in (mine, theirs)]
        assert rates[1] > 0.005 and abs(rates[0] - rates[1]) < 0.02


def smooth_images(n=4, size=96):
    """Smooth colour images (no hard edges), so one resampling pass and two compare closely."""
    torch.manual_seed(0)
    return F.interpolate(torch.rand(n, 3, 8, 8) * 255, size=size, mode="bilinear").round().to(torch.uint8)


def torchvision_pipeline(image, box, flip, angle, size):
    out = v2.functional.resized_crop(image, *box, [size, size], antialias=True)
    out = v2.functional.horizontal_flip(out) if flip else out
    return v2.functional.rotate(out, angle, interpolation=v2.InterpolationMode.BILINEAR) if angle else out


BOXES = torch.tensor([[0, 0, 96, 96], [12, 7, 48, 72], [29, 19, 67, 60], [0, 24, 79, 72]])  # top, left, h, w


def test_one_pass_crop_and_flip_match_torchvision_within_one_level():
    x = smooth_images()
    flips = torch.tensor([False, True, False, True])
    out = crop_flip_rotate(x, BOXES, flips, None)
    for i in range(len(x)):
        diff = (out[i] - torchvision_pipeline(x[i], BOXES[i].tolist(), flips[i], 0.0, 96).float()).abs()
        # torchvision rounds to uint8 between steps; the crop's outermost pixels here blend
        # in half a pixel from just outside the box (torchvision repeats the box edge).
        assert diff[:, 1:-1, 1:-1].max() <= 1.001 and (diff > 2).float().mean() < 0.01


def test_one_pass_rotation_matches_torchvision_except_along_the_rotated_edge():
    x = smooth_images()
    flips, angles = torch.tensor([True, False, False, True]), torch.tensor([5.0, -3.0, 7.0, -12.0])
    out = crop_flip_rotate(x, BOXES, flips, angles)
    for i in range(len(x)):
        ref = torchvision_pipeline(x[i], BOXES[i].tolist(), flips[i], float(angles[i]), 96).float()
        diff = (out[i] - ref).abs()
        # The 1-px line where the black corners begin is soft in torchvision (it blends with
        # 0) and sharp here: ~4 % of a 96-px image's pixels. An angle of the wrong sign
        # differs by 17-53 levels on average (and on 88-95 % of pixels).
        assert diff.mean() < 1.5 and (diff > 2).float().mean() < 0.04
        assert (out[i] == 0).all(0).float().mean() > 0.002  # the black corners are there


def test_rotation_angles_are_drawn_as_random_rotation_draws_them():
    from scipy import stats

    white = torch.full((400, 3, 32, 32), 255, dtype=torch.uint8)
    mean, std = (0.5,) * 3, (0.25,) * 3
    batched = BatchAugment(TrainConfig(rotation_degrees=30), mean, std, train=True)(white)
    # The same resampling (tested against torchvision's above) with v2.RandomRotation's own draws.
    rotation = v2.RandomRotation(30)
    angles = torch.tensor([rotation.make_params([white[0]])["angle"] for _ in range(400)])
    reference = (crop_flip_rotate(white, None, None, angles) / 255 - 0.5) / 0.25
    # The black share of a rotated white square grows with |angle|: equal distributions of it
    # mean equal distributions of |angle|, U(0, 30) on both.
    black = lambda out: (out[:, 0] == -2).flatten(1).float().mean(1)  # noqa: E731 - 0 normalized is -2
    assert stats.ks_2samp(black(batched).numpy(), black(reference).numpy()).pvalue > 1e-3
    # And the sign: which half of the top row turns black depends on the direction.
    tilt = lambda out: (out[:, 0, 0, :16] == -2).sum(1) - (out[:, 0, 0, 16:] == -2).sum(1)  # noqa: E731
    assert stats.ks_2samp(tilt(batched).numpy(), tilt(reference).numpy()).pvalue > 1e-3
    assert (tilt(batched) > 0).float().mean() > 0.3 and (tilt(batched) < 0).float().mean() > 0.3
    assert 0.05 < black(batched).mean() < 0.25 and black(batched).min() < 0.01
    assert torch.equal(BatchAugment(TrainConfig(), mean, std, train=True)(white[:4]),
                       BatchAugment(TrainConfig(), mean, std, train=False)(white[:4]))  # 0 = off


def test_rotation_degrees_is_validated_and_reaches_the_dataloader_path():
    for bad in (-1, 181):
        with pytest.raises(ConfigError, match=r"rotation_degrees=.* is outside \[0, 180\]"):
            from_dict(rotation_degrees=bad)
    steps = sample_transform(from_dict(rotation_degrees=5), 32, MEAN, STD, train=True).transforms
    assert [t.degrees for t in steps if isinstance(t, v2.RandomRotation)] == [[-5.0, 5.0]]
    assert not any(isinstance(t, v2.RandomRotation) for t in sample_transform(TrainConfig(), 32, MEAN, STD, True)
                   .transforms)
