"""One behaviour test (or a few) per trick in trainable/tricks, on real torch objects."""

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from trainable.config import ConfigError, effective_lr, from_dict
from trainable.tricks.distill import distill_loss, kd_loss
from trainable.tricks.ema import build_ema
from trainable.tricks.param_groups import param_groups
from trainable.tricks.precision import autocast, grad_scaler
from trainable.tricks.sam import SAM, disable_running_stats, enable_running_stats
from trainable.tricks.schedule import build_scheduler, lr_factor
from trainable.tricks.targets import Mixer, soft_cross_entropy

STEPS_PER_EPOCH = 5


# --- schedule ----------------------------------------------------------------------------

def _lrs(cfg, groups=None, make=build_scheduler, past_end=False):
    """LR of every group before each optimizer step of a whole run, as fit() would see it
    (``past_end``: and once after the last step, the ``lr`` fit() reports)."""
    groups = groups or [{"params": [nn.Parameter(torch.zeros(1))], "lr": effective_lr(cfg)}]
    opt = torch.optim.SGD(groups, lr=effective_lr(cfg), momentum=0.9)
    sched = make(opt, cfg, STEPS_PER_EPOCH)
    seen = []
    for _ in range(cfg.epochs * STEPS_PER_EPOCH):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return seen + [[g["lr"] for g in opt.param_groups]] if past_end else seen


def test_warmup_rises_then_cosine_falls_to_min_lr():
    cfg = from_dict(lr=0.1, min_lr=0.001, warmup_epochs=1, epochs=4, schedule="cosine")
    lrs = [lr for (lr,) in _lrs(cfg)]
    warm = STEPS_PER_EPOCH
    assert lrs[0] == pytest.approx(0.1 / (warm + 1))  # the first step is not taken at LR 0
    assert all(a < b for a, b in zip(lrs[:warm], lrs[1:warm + 1]))
    assert lrs[warm] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(lrs[warm:], lrs[warm + 1:]))
    assert lrs[-1] == pytest.approx(0.001)  # the floor is reached at the last step, not after it


def test_step_schedule_multiplies_by_gamma_at_milestones():
    cfg = from_dict(lr=0.1, epochs=4, schedule="step", step_milestones=(0.5, 0.75), step_gamma=0.1)
    lrs = [lr for (lr,) in _lrs(cfg)]  # 20 steps: milestones at steps 10 and 15
    assert lrs[:10] == pytest.approx([0.1] * 10)
    assert lrs[10:15] == pytest.approx([0.01] * 5)
    assert lrs[15:] == pytest.approx([0.001] * 5)


def test_onecycle_peaks_at_lr_at_end_of_warmup():
    cfg = from_dict(lr=0.1, epochs=4, warmup_epochs=1, schedule="onecycle")
    lrs = [lr for (lr,) in _lrs(cfg)]
    assert max(lrs) == pytest.approx(0.1)
    assert lrs.index(max(lrs)) == STEPS_PER_EPOCH - 1
    assert lrs[0] == pytest.approx(0.1 / 25)  # torch's div_factor
    assert lrs[-1] < lrs[0]


def test_lr_per_256_scales_by_batch_size():
    assert effective_lr(from_dict(lr=0.1, batch_size=64, lr_per_256=True)) == pytest.approx(0.025)
    assert effective_lr(from_dict(lr=0.1, batch_size=1024, lr_per_256=True)) == pytest.approx(0.4)
    assert effective_lr(from_dict(lr=0.1, batch_size=64)) == pytest.approx(0.1)
    # min_lr stays absolute: the cosine ends at min_lr, not min_lr * batch/256.
    lrs = _lrs(from_dict(lr=0.1, min_lr=0.001, batch_size=64, lr_per_256=True, epochs=2))
    assert lrs[0][0] == pytest.approx(0.025) and lrs[-1][0] == pytest.approx(0.001)
    # config.validate compares min_lr with the scaled peak, so build_scheduler need not.
    with pytest.raises(ConfigError, match="min_lr=0.05 is above the peak lr 0.025"):
        from_dict(lr=0.1, min_lr=0.05, batch_size=64, lr_per_256=True)


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "onecycle"])
def test_schedule_keeps_per_group_lr_ratios(schedule):
    cfg = from_dict(lr=0.1, min_lr=0.001, epochs=4, warmup_epochs=1, schedule=schedule)
    groups = [{"params": [nn.Parameter(torch.zeros(1))], "lr": 0.1},
              {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.01}]
    for head, stem in _lrs(cfg, groups):
        assert head / stem == pytest.approx(10.0)


def test_lr_factor_is_the_cosine_formula_after_warmup_and_holds_the_floor():
    total, warm, floor = 25, 4, 0.1
    for step in range(warm, total):
        progress = (step - warm) / (total - 1 - warm)
        expected = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        assert lr_factor(step, total, warm, "cosine", floor, [], 0.1) == pytest.approx(expected)
    assert lr_factor(total + 3, total, warm, "cosine", floor, [], 0.1) == pytest.approx(floor)
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, total, warm, "linear", floor, [], 0.1)


def _torch_schedulers(opt, cfg, steps_per_epoch):
    """build_scheduler made of torch's own schedulers, as the comment in build_scheduler describes."""
    total, warm = cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch)
    S = torch.optim.lr_scheduler
    warmup = S.LinearLR(opt, start_factor=1 / (warm + 1), end_factor=1.0, total_iters=warm)
    if cfg.schedule == "constant":
        return warmup
    if cfg.schedule == "step":
        milestones = [round(f * total) for f in cfg.step_milestones]
        return S.ChainedScheduler([warmup, S.MultiStepLR(opt, milestones, cfg.step_gamma)])
    cosine = S.CosineAnnealingLR(opt, T_max=total - 1 - warm, eta_min=cfg.min_lr)
    hold = S.ConstantLR(opt, factor=cfg.min_lr / effective_lr(cfg), total_iters=10**9)  # torch's cosine rises again
    return S.SequentialLR(opt, [warmup, cosine, hold], milestones=[warm, total - 1])


def _rel_diff(a, b):
    return max(abs(x - y) / abs(x) if x else abs(y) for row_a, row_b in zip(a, b) for x, y in zip(row_a, row_b))


def test_why_lambdalr_not_torch_schedulers():
    def groups(*lrs):
        return [{"params": [nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]

    # Why build_scheduler keeps LambdaLR: where torch's composition can express the schedule
    # it agrees to float rounding (3e-14 at worst), every step of 790 and one past the end ...
    for overrides, lrs in ((dict(warmup_epochs=1, min_lr=1e-3), (0.1,)), (dict(warmup_epochs=1), (0.1, 0.05)),
                           (dict(warmup_epochs=2, schedule="constant"), (0.1, 0.05)),
                           (dict(warmup_epochs=2, schedule="step", step_milestones=(0.1, 0.5)), (0.1, 0.05))):
        cfg = from_dict(lr=0.1, epochs=158, **overrides)  # 790 steps
        ours, theirs = (_lrs(cfg, groups(*lrs), make, past_end=True) for make in (build_scheduler, _torch_schedulers))
        assert _rel_diff(ours, theirs) < 1e-13, overrides
    # ... but CosineAnnealingLR's eta_min is one absolute floor for all groups, so layer-wise
    # LRs lose their ratio near the end of a cosine with min_lr > 0 (5x at step 18 of 20) ...
    cfg = from_dict(lr=0.1, min_lr=1e-3, epochs=4, warmup_epochs=1)
    ours, theirs = (_lrs(cfg, groups(0.1, 0.01), make) for make in (build_scheduler, _torch_schedulers))
    assert ours[18][1] == pytest.approx(2.24e-4, rel=1e-3) and theirs[18][1] == pytest.approx(1.11e-3, rel=1e-2)
    # ... and a single step after warmup (T_max = 0) is taken at 0 instead of at the peak.
    cfg = from_dict(lr=0.1, epochs=1, warmup_epochs=0.9)  # 5 steps, 4 of them warmup
    assert _lrs(cfg)[-1] == [pytest.approx(0.1)] and _lrs(cfg, make=_torch_schedulers)[-1] == [0.0]


# --- targets -----------------------------------------------------------------------------

K = 10


def test_mixup_targets_are_lam_weighted_onehots_with_lam_from_the_images():
    y = torch.arange(8) % K
    onehot, onehot_prev = F.one_hot(y, K).float(), F.one_hot(y.roll(1, 0), K).float()
    mixer = Mixer(K, mixup_alpha=0.4)
    assert mixer.active
    for seed in range(5):
        torch.manual_seed(seed)
        x = torch.randn(8, 3, 4, 4)
        mixed, target = mixer(x, y)
        # torchvision pairs each image with the previous one: mixed = lam*x + (1-lam)*x.roll(1, 0).
        prev = x.roll(1, 0)
        lam = ((mixed - prev) / (x - prev)).median().item()
        torch.testing.assert_close(mixed, lam * x + (1 - lam) * prev)
        assert target.dtype == torch.float32
        torch.testing.assert_close(target, lam * onehot + (1 - lam) * onehot_prev)
        torch.testing.assert_close(target.sum(1), torch.ones(8))


def test_cutmix_target_weight_is_the_unerased_area():
    y = torch.arange(8) % K
    # Image i is the constant i+1, so the pasted box is exactly where pixels changed.
    x = torch.arange(1.0, 9.0).view(8, 1, 1, 1).expand(8, 3, 16, 16).contiguous()
    mixer = Mixer(K, cutmix_alpha=1.0)
    kept_fractions = []
    for seed in range(10):
        torch.manual_seed(seed)
        mixed, target = mixer(x, y)
        assert set(mixed.unique().tolist()) <= set(x.unique().tolist())  # pixels are pasted, not blended
        kept = (mixed == x).all(dim=1).float().mean(dim=(1, 2))  # per image
        torch.testing.assert_close(kept, kept[:1].expand(8))  # one box for the whole batch
        lam = kept[0].item()
        kept_fractions.append(lam)
        torch.testing.assert_close(target, lam * F.one_hot(y, K) + (1 - lam) * F.one_hot(y.roll(1, 0), K))
        torch.testing.assert_close(target.sum(1), torch.ones(8))
    assert min(kept_fractions) < 1.0  # some box was actually pasted


def test_switch_prob_picks_cutmix_or_mixup():
    x, y = torch.arange(1.0, 9.0).view(8, 1, 1, 1).expand(8, 3, 8, 8).contiguous(), torch.arange(8) % K
    values = set(x.unique().tolist())
    torch.manual_seed(0)
    for switch_prob, pasted in ((1.0, True), (0.0, False)):
        mixer = Mixer(K, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=switch_prob)
        for _ in range(5):
            mixed, _ = mixer(x, y)
            assert (set(mixed.unique().tolist()) <= values) == pasted  # cutmix pastes, mixup blends


def test_integer_labels_are_never_mixed_when_off():
    x, y = torch.randn(8, 3, 4, 4), torch.arange(8) % K
    for mixer in (Mixer(K), Mixer(K, mixup_alpha=0.2, cutmix_alpha=1.0, mix_prob=0.0)):
        assert not mixer.active
        out_x, target = mixer(x, y)
        assert torch.equal(out_x, x)
        assert target.dtype == torch.float32 and torch.equal(target, F.one_hot(y, K).float())


def test_mix_prob_leaves_some_batches_unmixed_with_onehot_targets():
    x, y = torch.randn(8, 3, 4, 4), torch.arange(8) % K
    mixer = Mixer(K, mixup_alpha=1.0, cutmix_alpha=1.0, mix_prob=0.5)
    torch.manual_seed(0)
    unmixed = 0
    for _ in range(40):
        out_x, target = mixer(x, y)
        if torch.equal(out_x, x):
            unmixed += 1
            assert torch.equal(target, F.one_hot(y, K).float())
        torch.testing.assert_close(target.sum(1), torch.ones(8))
    assert 5 < unmixed < 35


def test_label_smoothing_target_and_loss():
    eps = 0.1
    y = torch.tensor([3, 7])
    torch.manual_seed(0)
    logits = torch.randn(2, K)
    mixed = 0.7 * F.one_hot(y, K).float() + 0.3 * F.one_hot(y.flip(0), K).float()
    for soft in (F.one_hot(y, K).float(), mixed):
        # Szegedy et al.'s smoothed target, (1 - eps) * soft + eps / K, by hand.
        smooth = (1 - eps) * soft + eps / K
        torch.testing.assert_close(smooth.sum(1), torch.ones(2))
        by_hand = -(smooth * logits.log_softmax(-1)).sum(1).mean()
        torch.testing.assert_close(soft_cross_entropy(logits, soft, eps), by_hand)
    # The soft path with one-hot targets is the ordinary integer-label loss.
    torch.testing.assert_close(soft_cross_entropy(logits, F.one_hot(y, K).float(), eps),
                               F.cross_entropy(logits, y, label_smoothing=eps))
    assert soft_cross_entropy(logits, mixed, eps) != soft_cross_entropy(logits, mixed, 0.0)


# --- distillation --------------------------------------------------------------------------

def test_kd_loss_zero_for_identical_logits_and_positive_otherwise():
    torch.manual_seed(0)
    student, teacher = torch.randn(4, K), torch.randn(4, K)
    assert kd_loss(student, student.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    ce = F.cross_entropy(student, torch.arange(4))
    assert distill_loss(ce, student, student.clone(), 4.0, weight=1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(ce, student, teacher, 4.0, weight=0.0).item() == pytest.approx(ce.item())
    assert kd_loss(student, teacher, 4.0).item() > 0


def test_kd_loss_is_t_squared_times_softened_kl():
    torch.manual_seed(0)
    student, teacher = torch.randn(4, K), torch.randn(4, K)
    for t in (1.0, 4.0):
        p, q = (teacher / t).softmax(-1), (student / t).softmax(-1)
        kl = (p * (p.log() - q.log())).sum(1).mean()
        torch.testing.assert_close(kd_loss(student, teacher, t), t ** 2 * kl)
    # Hinton et al.'s reason for T^2: at high T the scaled term stops shrinking with T.
    ratio = kd_loss(student, teacher, 10.0) / kd_loss(student, teacher, 20.0)
    assert ratio.item() == pytest.approx(1.0, abs=0.05)


# --- SAM -----------------------------------------------------------------------------------

def _tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)


def _sam_step(model, rho, lr=0.1):
    """One SAM step done as the training loop does it; returns the forward-call count."""
    x, y = _batch()
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=lr, momentum=0.9)
    enable_running_stats(model)
    F.cross_entropy(model(x), y).backward()
    opt.first_step(zero_grad=True)
    disable_running_stats(model)
    F.cross_entropy(model(x), y).backward()
    opt.second_step(zero_grad=True)
    enable_running_stats(model)
    handle.remove()
    return len(calls)


def _sgd_step(model, lr=0.1):
    x, y = _batch()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def test_sam_two_passes_and_differs_from_sgd_but_equals_it_at_rho_0():
    sgd = _tiny_net()
    _sgd_step(sgd)
    sam = _tiny_net()
    assert _sam_step(sam, rho=0.05) == 2
    assert any(not torch.allclose(a, b) for a, b in zip(sam.parameters(), sgd.parameters()))
    sam0 = _tiny_net()
    _sam_step(sam0, rho=0.0)
    for a, b in zip(sam0.parameters(), sgd.parameters()):
        torch.testing.assert_close(a, b)
    # BN running stats moved once (momentum 0 on the second pass), as in the SGD step.
    torch.testing.assert_close(sam[1].running_mean, sgd[1].running_mean)
    assert sam[1].momentum == 0.1


def test_sam_step_is_sgd_with_the_gradient_at_the_perturbed_point():
    torch.manual_seed(0)
    model = nn.Linear(5, 2)
    x, y = torch.randn(12, 5), torch.randint(0, 2, (12,))
    rho, lr = 0.5, 0.1
    w0 = [p.detach().clone() for p in model.parameters()]
    expected = copy.deepcopy(model)
    grads = torch.autograd.grad(F.cross_entropy(expected(x), y), list(expected.parameters()))
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    with torch.no_grad():
        for p, g in zip(expected.parameters(), grads):
            p.add_(rho * g / norm)
    adv = torch.autograd.grad(F.cross_entropy(expected(x), y), list(expected.parameters()))

    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=lr)
    F.cross_entropy(model(x), y).backward()
    opt.first_step(zero_grad=True)
    F.cross_entropy(model(x), y).backward()
    opt.second_step(zero_grad=True)
    for p, w, g in zip(model.parameters(), w0, adv):
        torch.testing.assert_close(p.detach(), w - lr * g)


def test_sam_shares_groups_with_base_so_schedulers_drive_it():
    model = _tiny_net()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    sched = build_scheduler(opt, from_dict(lr=0.1, epochs=2, schedule="cosine"), STEPS_PER_EPOCH)
    x, y = _batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "lr_scheduler.step() before optimizer.step()"
        for _ in range(3):
            F.cross_entropy(model(x), y).backward()
            opt.first_step()
            F.cross_entropy(model(x), y).backward()
            opt.second_step()
            sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == opt.param_groups[0]["lr"] < 0.1
    # Saving the SAM optimizer saves the base's momentum buffers, and they load back.
    state = opt.state_dict()
    assert any("momentum_buffer" in s for s in state["state"].values())
    fresh = SAM(_tiny_net().parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    fresh.load_state_dict(state)
    assert fresh.param_groups is fresh.base_optimizer.param_groups
    assert fresh.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


def test_disable_running_stats_freezes_bn_statistics():
    model = _tiny_net()
    x, _ = _batch()
    before = model[1].running_mean.clone()
    disable_running_stats(model)
    model(x)
    torch.testing.assert_close(model[1].running_mean, before)
    enable_running_stats(model)
    assert model[1].momentum == 0.1
    model(x)
    assert not torch.allclose(model[1].running_mean, before)


# --- EMA -----------------------------------------------------------------------------------

def test_ema_off_at_zero_and_blends_weights_and_buffers():
    model = _tiny_net()
    assert build_ema(model, 0.0) is None
    ema = build_ema(model, 0.9)
    ema.update_parameters(model)  # the first update copies the live model
    old = [t.detach().clone() for t in [*model.parameters(), model[1].running_mean]]
    for t, o in zip(ema.module.parameters(), old):
        torch.testing.assert_close(t, o)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model(_batch()[0])  # moves BN running_mean
    ema.update_parameters(model)
    new = [*model.parameters(), model[1].running_mean]
    averaged = [*ema.module.parameters(), ema.module[1].running_mean]
    for a, o, n in zip(averaged, old, new):
        torch.testing.assert_close(a, 0.9 * o + 0.1 * n.detach())
        assert not torch.allclose(a, n) and not torch.allclose(a, o)


# --- parameter groups ----------------------------------------------------------------------

class _CifarResNetNames(nn.Module):
    """Three stages with torchvision's attribute names, like the CIFAR ResNets."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)
        self.layer1 = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
        self.layer2 = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
        self.layer3 = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
        self.fc = nn.Linear(4, 10)


def _owner(groups, param):
    (group,) = [g for g in groups if any(p is param for p in g["params"])]
    return group


def test_no_bias_decay_splits_biases_and_bn_from_weights():
    model = resnet18(weights=None, num_classes=10)
    groups = param_groups(model, lr=0.1, weight_decay=5e-4, no_bias_decay=True, layer_lr_decay=None)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert {g["name"] for g in groups} == {"all", "all.no_decay"}
    for name, p in model.named_parameters():
        decay = _owner(groups, p)["weight_decay"]
        if name.endswith("bias") or ".bn" in name or name.startswith("bn") or "downsample.1" in name:
            assert decay == 0.0, name
        else:
            assert p.ndim >= 2 and decay == 5e-4, name
    (plain,) = param_groups(model, lr=0.1, weight_decay=5e-4, no_bias_decay=False, layer_lr_decay=None)
    assert plain["weight_decay"] == 5e-4 and plain["lr"] == 0.1


@pytest.mark.parametrize("make, stages", [(lambda: resnet18(weights=None, num_classes=10), 4),
                                          (_CifarResNetNames, 3)])
def test_layer_lr_decay_gives_stem_smallest_lr_and_head_full_lr(make, stages):
    model = make()
    d = 0.5
    groups = param_groups(model, lr=0.1, weight_decay=5e-4, no_bias_decay=True, layer_lr_decay=d)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert all(g["params"] for g in groups)
    assert _owner(groups, model.fc.weight)["lr"] == pytest.approx(0.1)
    assert _owner(groups, model.conv1.weight)["lr"] == pytest.approx(0.1 * d ** (stages + 1))
    assert _owner(groups, model.bn1.weight)["lr"] == pytest.approx(0.1 * d ** (stages + 1))
    last = getattr(model, f"layer{stages}")
    assert _owner(groups, next(last.parameters()))["lr"] == pytest.approx(0.1 * d)
    assert min(g["lr"] for g in groups) == _owner(groups, model.conv1.weight)["lr"]
    assert _owner(groups, model.bn1.weight)["weight_decay"] == 0.0  # both tricks compose


def test_stage_lr_divisors_give_each_stage_lr_over_its_divisor():
    # The CUB fine-tuning studies' rule: stem lr/10, stage 1 lr/8, 2 lr/6, 3 lr/4, 4 and head lr/2.
    model = resnet18(weights=None, num_classes=10)
    groups = param_groups(model, lr=0.1, weight_decay=5e-4, no_bias_decay=False, layer_lr_decay=None,
                          stage_lr_divisors=(10, 8, 6, 4, 2, 2))
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    for module, divisor in ((model.conv1, 10), (model.bn1, 10), (model.layer1, 8), (model.layer2, 6),
                            (model.layer3, 4), (model.layer4, 2), (model.fc, 2)):
        assert _owner(groups, next(module.parameters()))["lr"] == pytest.approx(0.1 / divisor)


@pytest.mark.parametrize("values, fragment", [
    ({"model": "resnet18", "stage_lr_divisors": "10,8,6,4,2"}, "resnet18 needs 6 divisors"),
    ({"model": "resnet20", "stage_lr_divisors": "10,8,6,4,2,2"}, "resnet20 needs 5 divisors"),
    ({"model": "resnet18", "stage_lr_divisors": "10,8,6,4,2,0"}, "a divisor <= 0"),
    ({"model": "resnet18", "stage_lr_divisors": "10,8,6,4,2,2", "layer_lr_decay": 0.5}, "one way"),
])
def test_bad_stage_lr_divisors_fail_in_config(values, fragment):
    from trainable.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match=fragment):
        from_dict(values)
    assert from_dict({"model": "resnet20", "stage_lr_divisors": "10,8,4,2,2"}).stage_lr_divisors == (10, 8, 4, 2, 2)


# --- precision -----------------------------------------------------------------------------

def test_autocast_and_grad_scaler_follow_amp():
    layer, x = nn.Linear(4, 4), torch.randn(2, 4)
    cpu = torch.device("cpu")
    with autocast(cpu, "off"):
        assert layer(x).dtype == torch.float32
    with autocast(cpu, "bf16"):
        assert layer(x).dtype == torch.bfloat16
    assert grad_scaler(cpu, "fp16").is_enabled()
    assert not grad_scaler(cpu, "bf16").is_enabled() and not grad_scaler(cpu, "off").is_enabled()
    with pytest.raises(ConfigError, match="amp: unknown value 'fp8'"):
        from_dict(amp="fp8")



# --- precise BN ------------------------------------------------------------------------------

def test_precise_bn_reestimates_a_copy_and_leaves_the_model_alone():
    from torch import nn

    from trainable.tricks.precise_bn import with_precise_bn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(64, 3, 5, 5) * 3 + 2
    batches = [(x[i:i + 16], None) for i in range(0, 64, 16)] + [(torch.full((16, 3, 5, 5), 1e6), None)]
    estimated = with_precise_bn(model, iter(batches), images=64)  # the 5th (absurd) batch is never read
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with torch.no_grad():
        features = model[0](x)
    bn = estimated[1]
    assert torch.allclose(bn.running_mean, features.mean(dim=(0, 2, 3)), atol=1e-4)
    assert torch.allclose(bn.running_var, features.var(dim=(0, 2, 3)), rtol=1e-2)
    assert with_precise_bn(model, iter(batches), images=0) is model  # off at 0


def test_precise_bn_changes_the_evaluation_not_the_training():
    from trainable.config import from_dict
    from trainable.loop import fit

    tiny = dict(train_subset=256, val_subset=128, epochs=2, batch_size=64, lr=0.2, device="cpu", threads=1)
    plain, precise = [], []
    fit(from_dict(tiny), lambda m, d: plain.append(m))
    fit(from_dict(tiny, precise_bn=256), lambda m, d: precise.append(m))
    assert [m["train_loss"] for m in plain] == [m["train_loss"] for m in precise]  # training untouched
    assert [m["val_loss"] for m in plain] != [m["val_loss"] for m in precise]  # the evaluation is not
