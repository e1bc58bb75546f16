"""wavefuse.attacks: torchattacks' PGD / PGDL2 / FFGSM as the oracle (bit for bit in float32 under
one seed), independent pure-PyTorch loops for the CW and TRADES losses and the wavelet step, the
model's mode and parameters left as they were, no host sync in the loop, bad input."""

from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from torch import nn

from wavefuse import reference
from wavefuse.attacks import FGSM_RS, PGD
from wavefuse.filters import filter_bank

torchattacks = pytest.importorskip("torchattacks")

SHAPE = (8, 3, 8, 8)
CLASSES = 10
LINF = {"norm": "Linf", "eps": 8 / 255, "alpha": 2 / 255}
L2 = {"norm": "L2", "eps": 0.5, "alpha": 0.2}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add overhead, and stall on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Net(nn.Module):
    """A tiny conv net with BatchNorm and Dropout, so the attack's model mode matters."""

    def __init__(self, channels: int = 3, size: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(8 * (size // 2) ** 2, CLASSES)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.fc(self.drop(x).flatten(1))


def _data(shape=SHAPE, dtype=torch.float32):
    x = torch.rand(shape, dtype=dtype)
    x[0, 0, 0, :2] = torch.tensor([0.0, 1.0])  # on the bounds: the [0, 1] clamp acts
    return x, torch.randint(0, CLASSES, (shape[0],))


def _model(train: bool = True, **kw) -> nn.Module:
    model = _Net(**kw)
    with torch.no_grad():  # non-trivial running statistics, so eval() and train() differ
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model.train(train)


def _seeded(seed, fn, *args):
    torch.manual_seed(seed)
    return fn(*args)


def _modes(model):
    return [m.training for m in model.modules()]


def _assert_step_equal(got, expected, norm, backend):
    """The reference step is torchattacks op for op; the compiled L2 kernel sums its norms in its
    own order (test_pgd_step.py), so its L2 results may differ by a few ulps a step."""
    if backend == "reference" or norm == "Linf":
        assert torch.equal(got, expected), (got - expected).abs().max()
    else:
        assert_close(got, expected, 1e-6, f"{norm} {backend}")


# ----- torchattacks, the oracle -------------------------------------------------------------------

MODE_SETTINGS = [
    None,  # torchattacks' default: eval() during the attack
    {"model_training": True},  # train(), BatchNorm and Dropout back to eval()
    {"model_training": True, "batchnorm_training": True, "dropout_training": True},
]


@pytest.mark.parametrize("mode", MODE_SETTINGS, ids=["eval", "train-bn-drop-eval", "train-all"])
@pytest.mark.parametrize("random_start", [True, False])
@pytest.mark.parametrize("setting", [LINF, L2], ids=["Linf", "L2"])
@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_matches_torchattacks(setting, random_start, mode, backend):
    """PGD(norm="Linf") is torchattacks.PGD and PGD(norm="L2") torchattacks.PGDL2 under one seed:
    the same start, the same model mode (dropout masks and BatchNorm statistic updates included,
    on copies of one model), the same bits; and the same model mode afterwards."""
    x, y = _data()
    model = _model(train=True)
    kw = {"eps": setting["eps"], "alpha": setting["alpha"], "steps": 5}
    cls = torchattacks.PGD if setting["norm"] == "Linf" else torchattacks.PGDL2
    ours = PGD(model, **kw, random_start=random_start, norm=setting["norm"], backend=backend)
    theirs = cls(copy.deepcopy(model), **kw, random_start=random_start)
    if mode is not None:
        ours.set_model_training_mode(**mode)
        theirs.set_model_training_mode(**mode)
    expected = _seeded(1, theirs, x, y)
    got = _seeded(1, ours, x, y)
    assert got.dtype == x.dtype and not got.requires_grad
    _assert_step_equal(got, expected, setting["norm"], backend)
    assert _modes(model) == _modes(theirs.model)
    for a, b in zip(model.buffers(), theirs.model.buffers()):  # BatchNorm statistics
        # of the attack's inputs: as close as the steps (a few ulps apart for the C++ L2 kernel)
        _assert_step_equal(a, b, setting["norm"], backend)


@pytest.mark.parametrize("eps, alpha", [(8 / 255, 10 / 255), (0.1, 0.02)])
def test_fgsm_rs_matches_ffgsm(eps, alpha):
    x, y = _data()
    model = _model()
    expected = _seeded(3, torchattacks.FFGSM(copy.deepcopy(model), eps=eps, alpha=alpha), x, y)
    got = _seeded(3, FGSM_RS(model, eps=eps, alpha=alpha), x, y)
    assert torch.equal(got, expected), (got - expected).abs().max()
    assert (got - x).abs().amax() > 0.99 * eps  # the projection acted


TARGETED = {
    "function": lambda atk: atk.set_mode_targeted_by_function(lambda x, y: (y + 3) % CLASSES, True),
    "random": lambda atk: atk.set_mode_targeted_random(quiet=True),
    "least-likely": lambda atk: atk.set_mode_targeted_least_likely(kth_min=2, quiet=True),
    "label": lambda atk: atk.set_mode_targeted_by_label(quiet=True),
}


@pytest.mark.parametrize("mode", list(TARGETED))
@pytest.mark.parametrize("setting", [LINF, L2], ids=["Linf", "L2"])
def test_targeted_modes_match_torchattacks(setting, mode):
    """torchattacks' targeted modes: the same target labels (random: the same CPU draws, before
    the start's), the loss -CE at the targets, the same bits; set_mode_default goes back."""
    x, y = _data()
    model = _model(train=True)
    kw = {"eps": setting["eps"], "alpha": setting["alpha"], "steps": 4}
    cls = torchattacks.PGD if setting["norm"] == "Linf" else torchattacks.PGDL2
    ours = PGD(model, **kw, norm=setting["norm"], backend="reference")
    theirs = cls(copy.deepcopy(model), **kw)
    for atk in (ours, theirs):
        TARGETED[mode](atk)
    assert ours.targeted and ours.get_mode() == theirs.get_mode()
    expected = _seeded(2, theirs, x, y)
    got = _seeded(2, ours, x, y)
    assert torch.equal(got, expected), (got - expected).abs().max()
    assert _modes(model) == _modes(theirs.model)
    ours.set_mode_default()
    assert not ours.targeted and ours.get_mode() == "default"
    untargeted = _seeded(2, ours, x, y)
    assert torch.equal(untargeted, _seeded(2, cls(copy.deepcopy(model), **kw), x, y))
    assert not torch.equal(untargeted, got)


@pytest.mark.parametrize("mode", ["random", "least-likely"])
def test_targeted_modes_in_training_mode_match_torchattacks(mode):
    """The target labels' forward runs in eval() (torchattacks' get_output_with_eval_nograd);
    with set_model_training_mode(model_training=True, ...) the steps after it run in training
    mode again (dropout masks, BatchNorm batch statistics), as torchattacks' do: the same bits,
    the same BatchNorm statistics and the same modes afterwards."""
    x, y = _data()
    model = _model(train=True)
    kw = {"eps": LINF["eps"], "alpha": LINF["alpha"], "steps": 3}
    ours = PGD(model, **kw, backend="reference")
    theirs = torchattacks.PGD(copy.deepcopy(model), **kw)
    for atk in (ours, theirs):
        atk.set_model_training_mode(True, batchnorm_training=True, dropout_training=True)
        TARGETED[mode](atk)
    expected = _seeded(4, theirs, x, y)
    got = _seeded(4, ours, x, y)
    assert torch.equal(got, expected), (got - expected).abs().max()
    assert _modes(model) == _modes(theirs.model)
    for a, b in zip(model.buffers(), theirs.model.buffers()):
        assert torch.equal(a, b)


def test_random_targets_match_torchattacks_over_many_samples():
    """targeted(random) draws one of the classes other than the label, uniformly, with
    torchattacks' draws: the same targets for a batch large enough that every draw value (the
    ones that equal the label's index among them included) occurs, and never the label."""
    x, _ = _data(shape=(300, 3, 8, 8))
    y = torch.arange(300) % CLASSES
    model = _model(train=False)
    ours = PGD(model, eps=LINF["eps"], alpha=LINF["alpha"], steps=1, backend="reference")
    theirs = torchattacks.PGD(copy.deepcopy(model), eps=LINF["eps"], alpha=LINF["alpha"])
    for atk in (ours, theirs):
        TARGETED["random"](atk)
    expected = _seeded(5, theirs.get_target_label, x, y)
    got = _seeded(5, ours.get_target_label, x, y)
    assert torch.equal(got, expected)
    assert (got != y).all() and set(got.tolist()) == set(range(CLASSES))


class _Tied(nn.Module):
    """Logits with ties (a ReLU output: many exact zeros), in the images' dtype."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, CLASSES)

    def forward(self, x):
        return F.relu(self.fc(x.flatten(1)))


@pytest.mark.parametrize("kth", [1, 2, 4])
def test_least_likely_picks_torchattacks_target_among_ties_and_in_float64(kth):
    """kthvalue over the row without the label, as torchattacks: the same class among tied
    logits (a +inf at the label instead picks another), and float64 logits not rounded."""
    torch.manual_seed(0)
    model = _Tied().eval()
    x, y = torch.rand(64, 3, 8, 8), torch.randint(0, CLASSES, (64,))
    ours, theirs = PGD(model, steps=1), torchattacks.PGD(model, steps=1)
    for atk in (ours, theirs):
        atk.set_mode_targeted_least_likely(kth_min=kth, quiet=True)
    with torch.no_grad():
        assert (model(x) == 0).sum(1).ge(2).any(), "no ties: the test would not see them"
    got = ours._target_labels(ours._config(), x, y)
    assert torch.equal(got, theirs.get_least_likely_label(x, y))
    assert torch.equal(_seeded(1, ours, x, y), _seeded(1, theirs, x, y))
    close = _Tied().double().eval()
    with torch.no_grad():  # logits 1 + 1e-9 k: one float32 value, ten float64 ones
        close.fc.weight.zero_()
        close.fc.bias.copy_(1 + 1e-9 * torch.arange(CLASSES, dtype=torch.float64))
    ours.model = theirs.model = close
    xd, y5 = x[:4].double(), torch.full((4,), 5)
    assert torch.equal(
        ours._target_labels(ours._config(), xd, y5), theirs.get_least_likely_label(xd, y5)
    )


def test_fgsm_rs_targeted_matches_ffgsm_and_subclass_forward_is_called():
    x, y = _data()
    model = _model()
    ours, theirs = FGSM_RS(model), torchattacks.FFGSM(copy.deepcopy(model))
    for atk in (ours, theirs):
        atk.set_mode_targeted_random(quiet=True)
        atk.set_normalization_used([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    m, s = (
        torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1),
        torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1),
    )
    xn = (x - m) / s
    assert torch.equal(_seeded(8, ours, xn, y), _seeded(8, theirs, xn, y))
    calls = []

    class Logged(PGD):  # atk(x, y) goes through forward, as torchattacks' __call__ does
        def forward(self, images, labels):
            calls.append(images.shape)
            return super().forward(images, labels)

    atk = Logged(model, steps=1)
    atk(x, y)
    atk.set_normalization_used([0.5] * 3, [0.25] * 3)
    atk((x - 0.5) / 0.25, y)
    assert calls == [x.shape, x.shape]


def test_normalization_range_check_allows_half_precision_rounding():
    """Images normalised in float32 and stored in float16 unnormalise a few float16 ulps
    outside [0, 1]: still accepted (float32 ones to 1e-5), while a real excursion is not."""
    mean, std = [0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]
    m, s = (torch.tensor(v).view(1, 3, 1, 1) for v in (mean, std))
    x = (torch.arange(256.0) / 255).view(1, 1, 1, 256).expand(2, 3, 4, 256)
    xn = ((x - m) / s).half()
    assert ((xn.float() * s + m) < 0).any(), "no rounding below 0: the test would not see it"
    atk = PGD(_Flat(), steps=1)
    atk.set_normalization_used(mean, std)
    out = atk(xn, torch.tensor([1, 2]))
    assert out.dtype == torch.float16
    with pytest.raises(ValueError, match="once unnormalised"):
        atk(((x - 0.01 - m) / s).half(), torch.tensor([1, 2]))


class _Flat(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 256, CLASSES)

    def forward(self, x):
        return self.fc(x.float().flatten(1))


def test_targeted_attack_reaches_its_targets_and_cw_matches_oracle():
    """Targeted CE moves the prediction to the targets; targeted CW maximises
    min(z_t - max_{j != t} z_j, kappa), checked against a plain loop."""
    x, y = _data()
    model = _model(train=False)
    target = (y + 1) % CLASSES
    atk = PGD(model, eps=0.5, alpha=0.05, steps=30)
    atk.set_mode_targeted_by_label()
    adv = atk(x, target)
    with torch.no_grad():
        assert (model(adv).argmax(1) == target).float().mean() > (
            model(x).argmax(1) == target
        ).float().mean()
    kappa, eps, alpha, steps = 0.5, 8 / 255, 2 / 255, 5

    def loss_fn(m, xa, x, t):
        return torch.clamp(-_margin(m(xa), t), max=kappa).sum()

    torch.manual_seed(4)
    start = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    expected = _oracle_loop(copy.deepcopy(model), x, target, loss_fn, start, eps, alpha, steps)
    atk = PGD(model, eps, alpha, steps, loss="cw", kappa=kappa)
    atk.set_mode_targeted_by_function(lambda images, labels: (labels + 1) % CLASSES)
    torch.manual_seed(4)
    got = atk(x, y)
    assert torch.equal(got, expected), (got - expected).abs().max()


def test_targeted_mode_errors():
    x, y = _data()
    atk = PGD(_model(), steps=1)
    with pytest.raises(TypeError, match="target_map_function must be callable"):
        atk.set_mode_targeted_by_function(3)
    with pytest.raises(ValueError, match="kth_min"):
        atk.set_mode_targeted_least_likely(kth_min=0)
    atk.set_mode_targeted_least_likely(kth_min=CLASSES)
    with pytest.raises(ValueError, match=r"kth_min=10 is not allowed .* 1 <= kth_min <= 9"):
        atk(x, y)
    atk.set_mode_targeted_by_function(lambda images, labels: labels.int())
    with pytest.raises(TypeError, match="int64"):
        atk(x, y)
    atk.set_mode_targeted_by_function(lambda images, labels: labels[:2])
    with pytest.raises(ValueError, match="target_map_function returned shape"):
        atk(x, y)
    atk.loss = "trades"
    with pytest.raises(ValueError, match="loss='trades' has no target labels"):
        atk(x, y)
    atk.loss = "ce"
    assert "attack_mode='targeted(custom)'" in repr(atk)


@pytest.mark.parametrize("setting", [LINF, L2], ids=["Linf", "L2"])
@pytest.mark.parametrize("loss", ["ce", "trades"])
def test_normalization_used_matches_torchattacks(setting, loss):
    """set_normalization_used(mean, std), torchattacks 3.5's contract: atk takes normalised
    images, attacks them unnormalised (eps in pixel space), feeds the model normalised images
    and returns normalised ones. "ce": torchattacks' bits; "trades": our attack on a model with
    the normalisation inside, on the same unnormalised images."""
    x, y = _data()
    model = _model()
    mean, std = [0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]
    m, s = (torch.tensor(v).view(1, 3, 1, 1) for v in (mean, std))
    x_norm = (x - m) / s
    kw = {"eps": setting["eps"], "alpha": setting["alpha"], "steps": 3}
    ours = PGD(model, **kw, norm=setting["norm"], loss=loss, backend="reference")
    ours.set_normalization_used(mean, std)
    assert "normalization=" in repr(ours)
    got = _seeded(6, ours, x_norm, y)
    if loss == "ce":
        cls = torchattacks.PGD if setting["norm"] == "Linf" else torchattacks.PGDL2
        theirs = cls(copy.deepcopy(model), **kw)
        theirs.set_normalization_used(mean, std)
        expected = _seeded(6, theirs, x_norm, y)
    else:
        inner = nn.Sequential(_Normalize(m, s), copy.deepcopy(model))
        theirs = PGD(inner, **kw, norm=setting["norm"], loss=loss, backend="reference")
        expected = (_seeded(6, theirs, x_norm * s + m, y) - m) / s
    assert torch.equal(got, expected), (got - expected).abs().max()
    pixels = got * s + m
    assert pixels.amin() > -1e-5 and pixels.amax() < 1 + 1e-5
    moved = (pixels - x).abs().amax()
    assert moved > (0.5 * kw["eps"] if setting["norm"] == "Linf" else 0.0), moved
    ours.set_normalization_used(None, None)
    with pytest.raises(ValueError, match="images must lie in"):
        ours(x_norm, y)


class _Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x):
        return (x - self.mean) / self.std


def test_normalization_errors():
    x, y = _data()
    atk = PGD(_model(), steps=1)
    with pytest.raises(ValueError, match="mean has 3 values, std 2"):
        atk.set_normalization_used([0.5] * 3, [0.2] * 2)
    with pytest.raises(ValueError, match="std=.* values > 0"):
        atk.set_normalization_used([0.5] * 3, [0.2, 0.0, 0.2])
    with pytest.raises(TypeError, match="mean must be a non-empty list, tuple or 1-D tensor"):
        atk.set_normalization_used(0.5, [0.2])
    with pytest.raises(TypeError, match="std must be .* got dict"):
        atk.set_normalization_used([0.5], {0.2: 1})
    atk.set_normalization_used(torch.tensor([0.5, 0.5]), (0.2, 0.2))
    with pytest.raises(ValueError, match="2 values per channel, the images have 3 channels"):
        atk(x, y)
    atk.set_normalization_used([0.5] * 3, [0.25] * 3)
    with pytest.raises(ValueError, match=r"\[0.0, 1.0\] once unnormalised"):
        atk((x - 0.5) / 0.25 + 1.0, y)
    atk(x, y)  # x * std + mean lies in [0.5, 0.75]: in range
    with pytest.raises(ValueError, match=r"images must lie in \[lo, hi\] = \[0.0, 1.0\], got"):
        atk.forward(x_out := (x - 0.5) / 0.25, y)  # no normalisation in forward (torchattacks)
    assert x_out.amin() < 0


# ----- the model and the inputs are left as they were ---------------------------------------------


def test_model_state_restored():
    """Every module's flag (a frozen eval() BatchNorm inside a training model too), requires_grad
    as it was, no .grad anywhere, images and labels unchanged."""
    x, y = _data()
    model = _model(train=True)
    model.bn.eval()  # frozen statistics: torchattacks' model.train() would unfreeze them
    model.conv.weight.requires_grad_(False)
    before_modes, before_rg = _modes(model), [p.requires_grad for p in model.parameters()]
    x0, y0 = x.clone(), y.clone()
    weight_grads = []  # a parameter's hook runs whenever autograd computes its gradient
    for p in model.parameters():
        if p.requires_grad:
            p.register_hook(lambda g: weight_grads.append(g))
    for loss in ("ce", "cw", "trades"):
        for setting in ({}, {"model_training": True, "dropout_training": True}):
            atk = PGD(model, steps=2, loss=loss)
            atk.set_model_training_mode(**setting)
            atk(x, y)
            assert _modes(model) == before_modes
    assert [p.requires_grad for p in model.parameters()] == before_rg
    assert all(p.grad is None for p in model.parameters()) and not weight_grads
    assert torch.equal(x, x0) and torch.equal(y, y0)
    F.cross_entropy(model(x), y).backward()  # the hooks do fire on a weight gradient
    assert weight_grads


def test_eval_model_stays_eval_after_training_mode_attack():
    """torchattacks leaves an eval() model in train mode after model_training=True; we don't."""
    model = _model(train=False)
    atk = PGD(model, steps=1)
    atk.set_model_training_mode(model_training=True)
    seen = []
    model.register_forward_pre_hook(lambda m, a: seen.append(m.training))
    atk(*_data())
    assert seen == [True] and not any(_modes(model))


def test_mode_restored_on_error():
    model = _model(train=True)

    def boom(module, args):
        raise RuntimeError("boom")

    model.fc.register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        PGD(model)(*_data())
    assert all(_modes(model))


def test_forward_keeps_the_current_mode_and_works_under_no_grad():
    """forward() is the attack alone (torchattacks); both work inside torch.no_grad()."""
    model = _model(train=False)
    seen = []
    model.register_forward_pre_hook(lambda m, a: seen.append(m.training))
    x, y = _data()
    with torch.no_grad():
        PGD(model, steps=2).forward(x, y)
        model.train()
        PGD(model, steps=2).forward(x, y)
        PGD(model, steps=2)(x, y)
    assert seen == [False, False, True, True, False, False]


@pytest.mark.parametrize("loss", ["ce", "cw", "trades"])
@pytest.mark.parametrize(
    "setting, lo, hi",
    [(LINF, 0.0, 1.0), (L2, 0.0, 1.0), ({"norm": "Linf", "eps": 0.3, "alpha": 0.1}, -1.0, 1.0)],
)
def test_result_in_ball_and_range(setting, lo, hi, loss):
    x, y = _data()
    x = lo + (hi - lo) * x
    adv = PGD(_model(), steps=4, lo=lo, hi=hi, loss=loss, **setting)(x, y)
    delta = (adv - x).flatten(1)
    eps = setting["eps"]
    if setting["norm"] == "Linf":
        assert delta.abs().amax() <= eps * (1 + 1e-6)
    else:
        assert delta.norm(dim=1).amax() <= eps * (1 + 1e-6)
    assert adv.amin() >= lo and adv.amax() <= hi
    assert delta.abs().amax() > 0


@pytest.mark.parametrize("setting", [LINF, L2], ids=["Linf", "L2"])
def test_channels_last(setting):
    """channels_last images: the contiguous result (no random start: its draws follow memory
    order), in channels_last; with the random start, still in the ball."""
    x, y = _data()
    xc = x.contiguous(memory_format=torch.channels_last)
    model = _model(train=False)
    expected = PGD(model, steps=3, random_start=False, backend="reference", **setting)(x, y)
    got = PGD(model, steps=3, random_start=False, backend="reference", **setting)(xc, y)
    assert got.is_contiguous(memory_format=torch.channels_last)
    _assert_step_equal(got, expected, setting["norm"], "auto")  # L2: norms in memory order
    delta = (PGD(model, steps=3, **setting)(xc, y) - x).flatten(1)
    radius = delta.abs().amax(1) if setting["norm"] == "Linf" else delta.norm(dim=1)
    assert radius.amax() <= setting["eps"] * (1 + 1e-6)


# ----- CW and TRADES: independent loops of the same maths -----------------------------------------


def _torchattacks_linf(x_adv, g, x, eps, alpha):
    """torchattacks.PGD's update, copied."""
    adv = x_adv.detach() + alpha * g.sign()
    delta = torch.clamp(adv - x, min=-eps, max=eps)
    return torch.clamp(x + delta, min=0, max=1).detach()


def _torchattacks_l2(x_adv, g, x, eps, alpha):
    """torchattacks.PGDL2's update, copied (eps_for_division = 1e-10)."""
    n = len(x)
    grad_norms = torch.norm(g.view(n, -1), p=2, dim=1) + 1e-10
    g = g / grad_norms.view(n, 1, 1, 1)
    delta = x_adv.detach() + alpha * g - x
    delta_norms = torch.norm(delta.view(n, -1), p=2, dim=1)
    factor = torch.min(eps / delta_norms, torch.ones_like(delta_norms))
    delta = delta * factor.view(-1, 1, 1, 1)
    return torch.clamp(x + delta, min=0, max=1).detach()


def _cwloss(output, target, confidence):
    """The cwloss of the CW-Linf evaluation codes (MART, TRADES evaluations), verbatim but for
    Variable and .cuda()."""
    target_onehot = torch.zeros(target.size() + (output.shape[1],))
    target_onehot.scatter_(1, target.unsqueeze(1), 1.0)
    real = (target_onehot * output).sum(1)
    other = ((1.0 - target_onehot) * output - target_onehot * 10000.0).max(1)[0]
    return torch.sum(-torch.clamp(real - other + confidence, min=0.0))


def _margin(z, y):
    """max_{j != y} z_j - z_y per sample."""
    return z.scatter(1, y[:, None], -math.inf).amax(1) - z.gather(1, y[:, None])[:, 0]


def _oracle_loop(model, x, y, loss_fn, start, eps, alpha, steps, update=_torchattacks_linf):
    model.eval()
    x_adv = start.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(loss_fn(model, x_adv, x, y), x_adv)
        x_adv = update(x_adv, g, x, eps, alpha)
    return x_adv


@pytest.mark.parametrize("kappa", [None, 50.0, 0.05])
def test_cw_matches_oracle(kappa):
    """loss="cw" is PGD on the evaluation codes' cwloss(confidence=kappa): the same bits. A small
    kappa makes the clamp act (those samples stop moving). None: the default, those codes'
    confidence=50."""
    x, y = _data()
    model = _model()
    eps, alpha, steps = 8 / 255, 2 / 255, 6

    def loss_fn(m, xa, x, y):
        return _cwloss(m(xa), y, 50.0 if kappa is None else kappa)

    torch.manual_seed(7)
    start = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)  # torchattacks' start
    expected = _oracle_loop(copy.deepcopy(model), x, y, loss_fn, start, eps, alpha, steps)
    torch.manual_seed(7)
    kw = {} if kappa is None else {"kappa": kappa}
    got = PGD(model, eps, alpha, steps, loss="cw", **kw)(x, y)
    assert torch.equal(got, expected), (got - expected).abs().max()
    if kappa is not None and kappa < 1:
        with torch.no_grad():
            z = model.eval()(got)
        assert (_margin(z, y) > kappa).any(), "the clamp never acted: the test would not see it"


def test_trades_matches_oracle_and_computes_clean_logits_once():
    """loss="trades" is TRADES' loop (KLDivLoss(sum) of log_softmax(model(x_adv)) against
    softmax(model(x_nat)), recomputed every step there) from x + 0.001 * randn: the same bits,
    with one clean forward per call instead of one per step."""
    x, y = _data()
    model = _model()
    eps, alpha, steps = 8 / 255, 2 / 255, 5

    def loss_fn(m, xa, x, y):
        return F.kl_div(F.log_softmax(m(xa), dim=1), F.softmax(m(x), dim=1), reduction="sum")

    torch.manual_seed(5)
    start = x + 0.001 * torch.randn(x.shape)
    expected = _oracle_loop(copy.deepcopy(model), x, y, loss_fn, start, eps, alpha, steps)
    calls = []
    model.register_forward_pre_hook(lambda m, a: calls.append(a[0].requires_grad))
    torch.manual_seed(5)
    got = PGD(model, eps, alpha, steps, loss="trades")(x, y)
    assert torch.equal(got, expected), (got - expected).abs().max()
    assert calls == [False] + [True] * steps


@pytest.mark.parametrize("autocast", [None, "bf16"])
@pytest.mark.parametrize("setting", [LINF, L2], ids=["Linf", "L2"])
def test_trades_matches_oracle_in_l2_and_under_autocast(setting, autocast):
    """TRADES' KL summed over the batch (reduction="sum": L2's 1e-10 in the gradient
    normalisation sees the loss's scale) and, under autocast, computed on the logits cast to
    float32, the clean probabilities too: the same bits as the oracle loop with torchattacks'
    PGD or PGDL2 update."""
    x, y = _data()
    model = _model()
    eps, alpha, steps = setting["eps"], setting["alpha"], 4
    oracle = copy.deepcopy(model).eval()

    def cast():
        return torch.autocast("cpu", torch.bfloat16) if autocast else contextlib.nullcontext()

    with torch.no_grad(), cast():
        p_nat = F.softmax(oracle(x).float(), dim=1)

    def loss_fn(m, xa, x, y):
        with cast():
            return F.kl_div(F.log_softmax(m(xa).float(), dim=1), p_nat, reduction="sum")

    torch.manual_seed(5)
    start = x + 0.001 * torch.randn(x.shape)
    update = _torchattacks_linf if setting["norm"] == "Linf" else _torchattacks_l2
    expected = _oracle_loop(oracle, x, y, loss_fn, start, eps, alpha, steps, update)
    torch.manual_seed(5)
    atk = PGD(model, eps, alpha, steps, norm=setting["norm"], loss="trades", autocast=autocast)
    atk.backend = "reference"  # torchattacks' L2 norms op for op (the kernels sum in their order)
    got = atk(x, y)
    assert torch.equal(got, expected), (got - expected).abs().max()


@pytest.mark.parametrize("loss", ["ce", "cw", "trades"])
@pytest.mark.parametrize("setting", [LINF, L2], ids=["Linf", "L2"])
def test_attack_increases_its_loss(setting, loss):
    x, y = _data()
    model = _model(train=False)
    adv = PGD(model, steps=5, loss=loss, kappa=math.inf, **setting)(x, y)
    with torch.no_grad():
        z_nat, z_adv = model(x), model(adv)
        if loss == "ce":
            before, after = F.cross_entropy(z_nat, y), F.cross_entropy(z_adv, y)
        elif loss == "cw":
            before, after = _margin(z_nat, y).sum(), _margin(z_adv, y).sum()
        else:
            p = F.softmax(z_nat, dim=1)
            before = F.kl_div(F.log_softmax(z_nat, dim=1), p, reduction="sum")
            after = F.kl_div(F.log_softmax(z_adv, dim=1), p, reduction="sum")
    assert after > before


# ----- the wavelet step ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Level value of:UserWarning")
@pytest.mark.parametrize(
    "wavelet, kw",
    [
        ("haar", {"wave": "haar", "level": 1, "mode": "periodization", "hf_scale": [0.0]}),
        (
            {"wave": "db2", "level": 2, "mode": "symmetric", "hf_scale": [0.5, 0.0]},
            {"wave": "db2", "level": 2, "mode": "symmetric", "hf_scale": [0.5, 0.0]},
        ),
        (
            {"hf_scale": 0.25},
            {"wave": "haar", "level": 1, "mode": "periodization", "hf_scale": [0.25]},
        ),
    ],
    ids=["name", "dict", "defaults"],
)
@pytest.mark.parametrize("setting", [LINF, L2], ids=["Linf", "L2"])
@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_wavelet_matches_reference_loop(setting, wavelet, kw, backend):
    """wavelet= is the loop with reference.wavelet_pgd_step_ref on the CE input gradient, from
    the same start: the same bits with the reference backend."""
    x, y = _data((4, 3, 16, 16))
    model = _model(train=False, size=16)
    eps, alpha, norm, steps = setting["eps"], setting["alpha"], setting["norm"], 4
    filters = filter_bank(kw["wave"], "dec", x.dtype, x.device)
    start = x.clone()
    for _ in range(steps):
        xa = start.clone().requires_grad_()
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
        start = reference.wavelet_pgd_step_ref(
            start, g, x, eps, alpha, filters, kw["mode"], kw["level"], kw["hf_scale"], norm=norm
        )
    atk = PGD(model, eps, alpha, steps, False, norm, wavelet=wavelet, backend=backend)
    got = atk(x, y)
    _assert_step_equal(got, start, norm, backend)
    plain = PGD(model, eps, alpha, steps, False, norm)(x, y)
    assert not torch.equal(got, plain)


# ----- autocast -----------------------------------------------------------------------------------


@pytest.mark.parametrize("autocast", ["bf16", torch.bfloat16])
@pytest.mark.parametrize("setting", [LINF, L2], ids=["Linf", "L2"])
def test_autocast_bf16(setting, autocast):
    x, y = _data()
    model = _model(train=False)
    seen = []
    model.fc.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    adv = PGD(model, steps=3, autocast=autocast, **setting)(x, y)
    assert adv.dtype == x.dtype and seen == [torch.bfloat16] * 3
    delta = (adv - x).flatten(1)
    radius = delta.abs().amax(1) if setting["norm"] == "Linf" else delta.norm(dim=1)
    assert radius.amax() <= setting["eps"] * (1 + 1e-6) and radius.amax() > 0
    assert adv.amin() >= 0 and adv.amax() <= 1


def test_float64_images():
    x, y = _data(dtype=torch.float64)
    model = _model(train=False).double()
    torch.manual_seed(2)
    expected = torchattacks.PGD(copy.deepcopy(model), steps=3)(x, y)
    torch.manual_seed(2)
    got = PGD(model, steps=3)(x, y)
    assert got.dtype == torch.float64 and torch.equal(got, expected)


# ----- no host sync in the loop -------------------------------------------------------------------

SYNCING = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero")


def _raise(*args, **kwargs):
    raise AssertionError("host sync inside the attack loop")


def _guard_loop(monkeypatch, atk):
    """Make every tensor-to-host read raise while atk's step loop runs (not during validation)."""
    run = atk._run_steps

    def guarded(*args, **kwargs):
        with monkeypatch.context() as m:
            for name in SYNCING:
                m.setattr(torch.Tensor, name, _raise)
            m.setattr(torch, "nonzero", _raise)
            return run(*args, **kwargs)

    monkeypatch.setattr(atk, "_run_steps", guarded)


def test_the_guard_catches_a_sync(monkeypatch):
    atk = PGD(_model(), steps=1)
    _guard_loop(monkeypatch, atk)
    original = atk._loss
    monkeypatch.setattr(atk, "_loss", lambda *a: original(*a) * float(torch.ones(()).item()))
    with pytest.raises(AssertionError, match="host sync"):
        atk(*_data())


@pytest.mark.parametrize(
    "kw",
    [
        {"loss": "ce", **LINF},
        {"loss": "cw", **L2},
        {"loss": "trades", **LINF},
        {"loss": "ce", "wavelet": "haar", **L2},
        {"loss": "ce", "autocast": "bf16", **LINF},
    ],
    ids=["ce-Linf", "cw-L2", "trades", "wavelet", "autocast"],
)
def test_no_host_sync_in_loop_cpu(monkeypatch, kw):
    atk = PGD(_model(), steps=2, **kw)
    atk.set_model_training_mode(model_training=True, batchnorm_training=True, dropout_training=True)
    _guard_loop(monkeypatch, atk)
    atk(*_data())


# ----- bad input ----------------------------------------------------------------------------------

BAD_SETTINGS = [
    ({"eps": -0.1}, ValueError, "eps"),
    ({"eps": math.inf}, ValueError, "eps"),
    ({"eps": "8/255"}, TypeError, "eps"),
    ({"alpha": -1.0}, ValueError, "alpha"),
    ({"steps": -1}, ValueError, "steps"),
    ({"steps": 2.0}, TypeError, "steps"),
    ({"norm": "L1"}, ValueError, "norm='L1'.*Linf, L2"),
    ({"loss": "mse"}, ValueError, "loss='mse'.*ce, cw, trades"),
    ({"random_start": 1}, TypeError, "random_start"),
    ({"autocast": "fp8"}, ValueError, "autocast"),
    ({"autocast": torch.float32}, ValueError, "autocast"),
    ({"cuda_graph": "yes"}, TypeError, "cuda_graph"),
    ({"lo": 1.0, "hi": 0.0}, ValueError, "lo"),
    ({"lo": math.nan}, ValueError, "lo"),
    ({"kappa": -1.0}, ValueError, "kappa"),
    ({"wavelet": "bior2.2"}, ValueError, "wave"),
    ({"wavelet": {"wave": "haar", "levels": 2}}, ValueError, "levels"),
    ({"wavelet": {"mode": "circular"}}, ValueError, "mode"),
    ({"wavelet": 3}, TypeError, "wavelet"),
    ({"check_range": "cpu"}, TypeError, "check_range"),
]


@pytest.mark.parametrize("kw, exc, match", BAD_SETTINGS)
def test_bad_settings(kw, exc, match):
    with pytest.raises(exc, match=match):
        PGD(_model(), **kw)


def test_bad_settings_set_later_and_bad_model():
    atk = PGD(_model())
    atk.eps = -1.0  # torchattacks users set attributes: checked again at the call
    with pytest.raises(ValueError, match="eps"):
        atk(*_data())
    with pytest.raises(TypeError, match="model"):
        PGD(lambda x: x)
    with pytest.raises(TypeError, match="model_training"):
        atk.set_model_training_mode(model_training="yes")


def _bad_inputs():
    x, y = _data()
    return [
        (x.numpy(), y, TypeError, "images must be a torch.Tensor"),
        (x.to(torch.uint8), y, TypeError, "images has dtype"),
        (x[0], y, ValueError, "images must be 4-D"),
        (x, y.tolist(), TypeError, "labels must be a torch.Tensor"),
        (x, y.int(), TypeError, "labels has dtype"),
        (x, y.float(), TypeError, "labels has dtype"),
        (x, y[:-1], ValueError, r"labels has shape \(7,\); allowed: \(8,\)"),
        (x, y[:, None], ValueError, "labels has shape"),
        (x * 1.5, y, ValueError, r"images must lie in \[lo, hi\]"),
        (x - 0.5, y, ValueError, r"images must lie in \[lo, hi\]"),
        (torch.where(x > 0.5, math.nan, x), y, ValueError, "NaN"),
        (x.to("meta"), y.to("meta"), ValueError, "model parameter 'conv.weight' is on cpu"),
        (x, y.to("meta"), ValueError, "labels is on meta"),
    ]


@pytest.mark.parametrize("i", range(len(_bad_inputs())))
def test_bad_inputs(i):
    images, labels, exc, match = _bad_inputs()[i]
    with pytest.raises(exc, match=match):
        PGD(_model())(images, labels)


def test_range_check_switch_and_wavelet_level():
    x, y = _data()
    model = _model()
    PGD(model, steps=1, check_range=False)(x * 1.5, y)  # not checked when asked not to
    with pytest.raises(ValueError, match="cuda_graph"):
        PGD(model, cuda_graph=True)(x, y)
    with pytest.raises(ValueError, match="hf_scale"):
        PGD(model, wavelet={"level": 2, "hf_scale": [0.0]})(x, y)
    with pytest.raises(ValueError, match="lo"):
        PGD(model, lo=0.0, hi=0.0)


def test_wavelet_with_no_level_is_an_error_and_a_high_level_warns_once():
    """8x8 images: db4 has no level (pywt.dwt_max_level 0), so level=None would be plain PGD."""
    x, y = _data()
    model = _model()
    with pytest.raises(ValueError, match=r"wavelet: level None is 0 levels of 'db4'"):
        PGD(model, wavelet={"wave": "db4", "level": None})(x, y)
    with pytest.raises(ValueError, match=r"wavelet: level 0 is 0 levels"):
        PGD(model, wavelet={"wave": "haar", "level": 0})(x, y)
    with pytest.warns(UserWarning, match="Level value of 2 is too high") as record:
        PGD(model, steps=3, wavelet={"wave": "db2", "level": 2})(x, y)
    assert len([w for w in record if "Level value" in str(w.message)]) == 1  # not once per step


@pytest.mark.parametrize("setting", [LINF, L2], ids=["Linf", "L2"])
@pytest.mark.parametrize("loss", ["ce", "trades"])
def test_empty_batch(setting, loss):
    x, y = _data()
    out = PGD(_model(), steps=2, loss=loss, **setting)(x[:0], y[:0])
    assert out.shape == (0, *SHAPE[1:]) and out.dtype == x.dtype


def test_inference_mode_is_a_clear_error():
    x, y = _data()
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        PGD(_model(), steps=1)(x, y)


def test_repr():
    r = repr(PGD(_model(), wavelet="haar", autocast="bf16"))
    assert r.startswith("PGD(eps=0.031") and "wavelet='haar'" in r and "autocast='bf16'" in r
    assert repr(FGSM_RS(_model())).startswith("FGSM_RS(")


# ----- CUDA-graph bookkeeping that runs anywhere -----------------------------------------------------


def test_graph_autocast_turns_the_weight_cast_cache_off():
    """With cuda_graph=True the forward runs with autocast's weight-cast cache off: under the
    attack's own autocast and under an enclosing one (a graph would otherwise replay the
    warm-up's cast weights); the eager path leaves an enclosing autocast as it is."""
    x = torch.zeros(1, 3, 4, 4)
    for cuda_graph in (False, True):
        ours = PGD(_model(), autocast="bf16", cuda_graph=cuda_graph)
        with ours._autocast(ours._config(), x):
            assert torch.is_autocast_enabled("cpu")
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16
            assert torch.is_autocast_cache_enabled() is not cuda_graph
        plain = PGD(_model(), cuda_graph=cuda_graph)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with plain._autocast(plain._config(), x):
                assert torch.is_autocast_enabled("cpu")
                assert torch.get_autocast_dtype("cpu") == torch.bfloat16
                assert torch.is_autocast_cache_enabled() is not cuda_graph
            assert torch.is_autocast_cache_enabled()  # restored on exit
        with plain._autocast(plain._config(), x):
            assert not torch.is_autocast_enabled("cpu")


def test_graph_cache_keeps_the_most_recently_used(monkeypatch):
    """PGD._graphed's bookkeeping, with a stand-in for the capture: one graph per key (settings,
    shapes, model modes, enclosing autocast), reused while the parameters' storage holds, captured
    again (replacing, not adding) when it changes, and at most CUDA_GRAPH_CACHE_SIZE kept, the
    least recently used dropped first."""
    from wavefuse import attacks

    captured = []

    class Capture:
        def __init__(self, attack, cfg, *args):
            captured.append(cfg.eps)

        def __call__(self, x_adv, *args):
            return x_adv

    monkeypatch.setattr(attacks, "_GraphedSteps", Capture)
    model = _model()
    atk = PGD(model, cuda_graph=True)
    x, y = _data()
    size = attacks.CUDA_GRAPH_CACHE_SIZE

    def call(eps):
        atk.eps = eps
        return atk._graphed(atk._config(), None, x.clone(), x, y, None)

    for eps in range(size):
        call(eps / 255)
    assert len(atk._graphs) == size and len(captured) == size
    call(0.0)  # a hit: now the most recently used
    assert len(captured) == size
    call(size / 255)  # a miss with a full cache: 1 / 255, the least recently used, goes
    assert len(atk._graphs) == size and captured[-1] == size / 255
    call(0.0)
    call(2 / 255)
    assert len(captured) == size + 1
    call(1 / 255)
    assert len(captured) == size + 2 and len(atk._graphs) == size
    with torch.no_grad():
        model.fc.weight.data = model.fc.weight.data.clone()  # a replaced tensor: capture again
    call(1 / 255)
    assert len(captured) == size + 3 and len(atk._graphs) == size
    with torch.autocast("cpu", dtype=torch.bfloat16):  # an enclosing autocast: another key
        call(1 / 255)
    assert len(captured) == size + 4 and len(atk._graphs) == size
    atk.clear_cuda_graphs()
    assert not atk._graphs


# ----- GPU: no sync, CUDA graphs (run wherever a GPU is lent) --------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("kw", [{"loss": "ce", **LINF}, {"loss": "trades", **L2}])
def test_no_host_sync_in_loop_cuda(kw):
    model = _model().cuda()
    x, y = (t.cuda() for t in _data())
    atk = PGD(model, steps=3, **kw)
    run = atk._run_steps

    def guarded(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return run(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    atk._run_steps = guarded
    atk(x, y)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("kw", [{"loss": "ce", **LINF}, {"loss": "cw", **L2},
                                {"loss": "trades", "wavelet": "haar", **LINF}])  # fmt: skip
def test_cuda_graph_matches_eager(kw, monkeypatch):
    """The replayed graph gives the eager result (same seed, same start); one capture per shape."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    model = _model().cuda()
    x, y = (t.cuda() for t in _data())
    eager = PGD(model, steps=4, **kw)
    graphed = PGD(model, steps=4, cuda_graph=True, **kw)
    for seed in (0, 1):  # the second call replays the first capture with new inputs
        expected = _seeded(seed, eager, x, y)
        got = _seeded(seed, graphed, x, y)
        assert_close(got, expected, 1e-6, "cuda_graph")
        x = x.flip(0)
        y = y.flip(0)
    assert len(graphed._graphs) == 1
    graphed(*(t.cuda() for t in _data((4, 3, 8, 8))))
    assert len(graphed._graphs) == 2
    assert all(p.grad is None for p in model.parameters()) and all(_modes(model))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("enclosing", [None, torch.bfloat16])
def test_cuda_graph_follows_in_place_updates_under_an_enclosing_autocast(enclosing, monkeypatch):
    """AMP training's pattern: the attack inside the caller's autocast, parameters updated in
    place between calls. The replay reads the updated weights (the capture ran with autocast's
    weight-cast cache off, so the casts are in the graph), as the eager path does."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    model = _model().cuda()
    x, y = (t.cuda() for t in _data())
    eager = PGD(model, steps=3, **LINF)
    graphed = PGD(model, steps=3, cuda_graph=True, **LINF)
    amp = torch.autocast("cuda", dtype=enclosing) if enclosing else contextlib.nullcontext()
    for seed in (0, 1):
        with amp:  # the replay first: before an eager cast could refill memory it reads
            got = _seeded(seed, graphed, x, y)
            expected = _seeded(seed, eager, x, y)
        off = (got - expected).abs().gt(1e-6).float().mean().item()
        assert off <= (0.01 if enclosing else 0.0), (seed, off)  # bf16: a rare flipped sign
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.5)  # in place: the same storage, so the graph is replayed, not recaptured
    assert len(graphed._graphs) == 1


# ---- torchattacks' Attack API and settings a porting codebase uses -----------------------------------

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def test_a_get_logits_override_is_used_as_in_torchattacks():
    """A subclass's get_logits (normalising, or picking logits out of a tuple) runs for every
    forward: bit for bit torchattacks' result for the same subclass and seed."""
    model = _model(train=False)
    x, y = _data()
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)

    class Ours(PGD):
        def get_logits(self, inputs, labels=None, *args, **kwargs):
            return self.model((inputs - mean) / std)

    class Theirs(torchattacks.PGD):
        def get_logits(self, inputs, labels=None, *args, **kwargs):
            return self.model((inputs - mean) / std)

    got = _seeded(3, Ours(model, **LINF, backend="reference"), x, y)
    expected = _seeded(3, Theirs(model, eps=LINF["eps"], alpha=LINF["alpha"]), x, y)
    assert torch.equal(got, expected)
    assert not torch.equal(got, _seeded(3, PGD(model, **LINF, backend="reference"), x, y))

    class Pair(nn.Module):  # a model returning (logits, features)
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            return self.net(x), x

    with pytest.raises(TypeError, match="the model returned tuple.*override get_logits"):
        PGD(Pair(), **LINF)(x, y)

    class First(PGD):
        def get_logits(self, inputs, labels=None, *args, **kwargs):
            return self.model(inputs)[0]

    assert torch.equal(
        _seeded(3, First(Pair(), **LINF, backend="reference"), x, y),
        _seeded(3, PGD(model, **LINF, backend="reference"), x, y),
    )


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_zero_eps_alpha_and_steps_as_torchattacks(norm):
    """eps=0 (an eps warm-up's first epoch) gives the clean images exactly; steps=0 the start
    (torchattacks' draws); alpha=0 never moves from the start."""
    model = _model(train=False)
    x, y = _data()
    kw = {"norm": norm, "backend": "reference"}
    assert torch.equal(PGD(model, eps=0.0, alpha=0.01, **kw)(x, y), x)
    theirs = torchattacks.PGD if norm == "Linf" else torchattacks.PGDL2
    start = _seeded(5, PGD(model, eps=0.1, alpha=0.01, steps=0, **kw), x, y)
    expected = _seeded(5, theirs(model, eps=0.1, alpha=0.01, steps=0), x, y)
    assert torch.equal(start, expected) and not torch.equal(start, x)
    assert torch.equal(_seeded(5, PGD(model, eps=0.1, alpha=0.0, **kw), x, y), start)


def test_uint8_labels_are_class_indices():
    model = _model(train=False)
    x, y = _data()
    atk = PGD(model, **LINF, backend="reference")
    assert torch.equal(_seeded(1, atk, x, y.to(torch.uint8)), _seeded(1, atk, x, y))
    with pytest.raises(TypeError, match="labels has dtype torch.int32"):
        atk(x, y.int())


def test_fgsm_rs_settings_are_fixed():
    atk = FGSM_RS(_model(train=False))
    assert (atk.steps, atk.random_start, atk.norm) == (1, True, "Linf")
    atk.steps = 1  # its own value is fine
    for name, value in (("steps", 3), ("random_start", False), ("norm", "L2")):
        with pytest.raises(ValueError, match=f"FGSM_RS: {name} is always"):
            setattr(atk, name, value)


def test_torchattacks_attack_methods():
    """set_model, set_device, device, normalize / inverse_normalize, get_target_label: as
    torchattacks' (get_target_label: the same least-likely targets)."""
    model, other = _model(train=False), _model(train=False)
    x, y = _data()
    atk = PGD(model, **LINF)
    assert atk.device == torch.device("cpu")
    atk.set_device("cpu")
    with pytest.raises(ValueError, match="wavefuse's attacks move no tensor"):
        atk.set_device("meta")
    atk.set_model(other)
    assert atk.model is other
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        atk.set_model(lambda t: t)
    assert torch.equal(atk.normalize(x), x)
    atk.set_normalization_used(MEAN, STD)
    theirs = torchattacks.PGD(other, eps=LINF["eps"], alpha=LINF["alpha"])
    theirs.set_normalization_used(MEAN, STD)
    assert torch.equal(atk.normalize(x), theirs.normalize(x))
    assert torch.equal(atk.inverse_normalize(x), theirs.inverse_normalize(x))
    with pytest.raises(ValueError, match="the attack mode is 'default'"):
        atk.get_target_label(x, y)
    atk, theirs = PGD(other, **LINF), torchattacks.PGD(other)
    atk.set_mode_targeted_least_likely(2)
    theirs.set_mode_targeted_least_likely(2, quiet=True)
    assert torch.equal(atk.get_target_label(x, y), theirs.get_target_label(x, y))
