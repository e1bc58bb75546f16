"""wavefuse/ops/separable.py: wavelet_pgd_step's gradient filter as a sum of separable matrix pairs,
against the composition of the reference transforms (``reference.scale_details_ref``, itself
checked against PyWavelets in test_dwt.py), float64 on the CPU, plus the packing and its cache."""

from __future__ import annotations

import warnings
from collections import OrderedDict

import pytest
import torch
from conftest import ALL_MODES, assert_close

from wavefuse import reference
from wavefuse.filters import filter_bank
from wavefuse.ops import separable

SIZES = [(7, 6), (1, 5), (13, 29), (32, 32)]
SCALES = {
    "all zero": lambda j: [0.0] * j,
    "uniform": lambda j: [0.5] * j,
    "mixed": lambda j: [0.0, 0.5, -0.25][:j],
    "last only": lambda j: [1.0] * (j - 1) + [0.3],
}
# A 4-tap bank that is not perfect-reconstruction: nothing in the factorisation may assume it is.
NOT_PR = [[0.3, 0.9, 0.1, -0.2], [0.5, -0.4, 0.2, 0.7]]


def _apply(identity: float, terms, g: torch.Tensor) -> torch.Tensor:
    out = identity * g
    for coef, left, right in terms:
        out = out + coef * (left @ g @ right.T)
    return out


def _bank(wave: str) -> torch.Tensor:
    if wave == "not-pr":
        return torch.tensor(NOT_PR, dtype=torch.float64)
    return filter_bank(wave, "dec", torch.float64, "cpu")


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave", ["haar", "db2", "db4", "sym5", "coif2", "not-pr"])
def test_terms_equal_the_composition(wave, mode):
    """Every mode x wavelet x level 1-3 x odd/even/tiny sizes x scale pattern: the sum of terms
    is scale_details_ref within 1e-11 (the factorisation merges X_j with Y_{j-1}, equal for a
    perfect-reconstruction bank up to its own reconstruction error, ~2e-12 for sym5)."""
    bank = _bank(wave)
    gen = torch.Generator().manual_seed(0)
    for level in (1, 2, 3):
        for h, w in SIZES:
            for name, scales in SCALES.items():
                s = scales(level)
                g = torch.randn(2, 2, h, w, dtype=torch.float64, generator=gen)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    expected = reference.scale_details_ref(g, bank, mode, level, s)
                identity, terms = separable.separable_terms(bank, mode, level, h, w, s)
                what = f"{wave} {mode} level {level} {h}x{w} {name}"
                assert_close(_apply(identity, terms, g), expected, 1e-11, what)


def test_term_counts():
    """Perfect-reconstruction banks merge to one pair per distinct scale step (a uniform scale s is
    s G + (1 - s) Y_J G Y_J^T); the bank that is not PR keeps 2J pairs and no identity."""
    db4 = _bank("db4")
    for scales, identity, count in (
        ([0.0] * 3, 0.0, 1),
        ([0.5] * 3, 0.5, 1),
        ([0.0, 0.5, -0.25], 0.0, 3),
        ([1.0, 1.0, 0.3], 1.0, 2),  # G - 0.7 Y_2 G Y_2^T + 0.7 Y_3 G Y_3^T
    ):
        got_identity, terms = separable.separable_terms(db4, "symmetric", 3, 32, 32, scales)
        assert (got_identity, len(terms)) == (identity, count), scales
    identity, terms = separable.separable_terms(_bank("not-pr"), "zero", 2, 9, 11, [0.3, 0.6])
    assert identity == 0.0 and len(terms) == 4
    for wave in ("db4", "sym20", "coif5"):  # float32 taps: perfect reconstruction to ~3e-8
        bank32 = filter_bank(wave, "dec", torch.float32)
        for scales, count in (([0.0] * 3, 1), ([0.5] * 3, 1), ([0.0, 0.5, -0.25], 3)):
            _, terms = separable.separable_terms(bank32, "reflect", 3, 32, 20, scales)
            assert len(terms) == count, (wave, scales)


def test_packing_and_cache():
    """filter_terms pads L and R^T with zeros to the block sides, folds the coefficients into L,
    and rebuilds when the bank is modified in place (its version counter is in the key)."""
    bank = _bank("db2").clone()
    packed = separable.filter_terms(bank, "reflect", 2, 7, 6, [0.0, 0.5], torch.float64, 16, 8)
    assert packed.left.shape == (packed.count, 16, 16)
    assert packed.right_t.shape == (packed.count, 8, 8)
    g = torch.randn(7, 6, dtype=torch.float64)
    padded = torch.zeros(16, 8, dtype=torch.float64)
    padded[:7, :6] = g
    out = packed.identity * padded + sum(
        packed.left[k] @ padded @ packed.right_t[k] for k in range(packed.count)
    )
    assert out[7:].abs().max() == 0 and out[:, 6:].abs().max() == 0
    expected = reference.scale_details_ref(g.view(1, 1, 7, 6), bank, "reflect", 2, [0.0, 0.5])
    assert_close(out[:7, :6], expected[0, 0], 1e-12, "packed")
    again = separable.filter_terms(bank, "reflect", 2, 7, 6, [0.0, 0.5], torch.float64, 16, 8)
    assert again is packed
    bank.mul_(2.0)  # a different (scaled) bank: the cached matrices no longer apply
    rebuilt = separable.filter_terms(bank, "reflect", 2, 7, 6, [0.0, 0.5], torch.float64, 16, 8)
    assert rebuilt is not packed
    expected = reference.scale_details_ref(g.view(1, 1, 7, 6), bank, "reflect", 2, [0.0, 0.5])
    out = rebuilt.identity * padded + sum(
        rebuilt.left[k] @ padded @ rebuilt.right_t[k] for k in range(rebuilt.count)
    )
    assert_close(out[:7, :6], expected[0, 0], 1e-12, "rebuilt")


def test_float32_bank_terms_match_its_composition():
    """Merged terms of a float32 bank (float32 data's taps) against the composition of the
    reference transforms with those taps, in float64: the merge costs their reconstruction
    error only (~3e-8), well inside float32 compute."""
    gen = torch.Generator().manual_seed(1)
    for wave, mode in (("db4", "symmetric"), ("sym20", "periodization"), ("coif5", "zero")):
        bank = filter_bank(wave, "dec", torch.float32).to(torch.float64)
        g = torch.randn(1, 2, 29, 32, dtype=torch.float64, generator=gen)
        for scales in ([0.0] * 3, [0.0, 0.5, -0.25]):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = reference.scale_details_ref(g, bank, mode, 3, scales)
            identity, terms = separable.separable_terms(bank.float(), mode, 3, 29, 32, scales)
            assert_close(_apply(identity, terms, g), expected, 3e-7, f"{wave} {mode} {scales}")


def test_inference_tensor_bank():
    """A bank made under inference mode has no version counter: it is cached all the same."""
    with torch.inference_mode():
        bank = torch.tensor(filter_bank("db2", "dec", torch.float64).tolist(), dtype=torch.float64)
        first = separable.filter_terms(bank, "zero", 1, 5, 4, [0.5], torch.float64, 8, 8)
    assert bank.is_inference()
    assert separable.filter_terms(bank, "zero", 1, 5, 4, [0.5], torch.float64, 8, 8) is first


def test_cache_tells_views_and_devices_apart_and_checks_scales():
    """Two banks viewing one storage (same address and shape, other strides) get their own
    matrices; the matrices go to the device asked for; hf_scale needs one entry per level."""
    taps = _bank("db2")
    big = torch.zeros(2, 8, dtype=torch.float64)
    big[:, ::2] = taps
    big[:, 1::2] = 7.0
    strided, dense = big[:, ::2], big[:, :4]
    assert strided.data_ptr() == dense.data_ptr() and strided.shape == dense.shape
    g = torch.randn(1, 1, 6, 5, dtype=torch.float64)
    for bank in (strided, dense):
        packed = separable.filter_terms(bank, "symmetric", 1, 6, 5, [0.0], torch.float64, 6, 5)
        out = packed.identity * g[0, 0] + sum(
            packed.left[k] @ g[0, 0] @ packed.right_t[k] for k in range(packed.count)
        )
        expected = reference.scale_details_ref(g, bank, "symmetric", 1, [0.0])
        assert_close(out, expected[0, 0], 1e-12, f"stride {bank.stride()}")
    meta = separable.filter_terms(taps, "zero", 1, 5, 4, [0.5], torch.float32, 8, 8, "meta")
    assert meta.left.device.type == "meta" and meta.left.dtype == torch.float32
    with pytest.raises(ValueError, match="one per level"):
        separable.separable_terms(taps, "zero", 3, 5, 4, [0.5])


@pytest.mark.parametrize("mode", ALL_MODES)
def test_perfect_reconstruction(monkeypatch, mode):
    """perfect_reconstruction (the approximation chain's precondition, kernels/pgd_step.py): True
    for orthogonal banks (float64 and float32 taps, short and long, odd and even sizes, a filter
    longer than the signal), False for a bank without it. Axes over _PR_MAX_CHECK are checked at
    a representative length: the full check of a 301-sample axis gives the same answers."""
    for wave in ("db2", "db4", "sym5", "coif2", "db20"):
        for dtype in (torch.float64, torch.float32):
            bank = filter_bank(wave, "dec", dtype)
            assert separable.perfect_reconstruction(bank, mode, 3, 7, 64), (wave, mode, dtype)
            assert separable.perfect_reconstruction(bank, mode, 2, 301, 300), (wave, mode, dtype)
    bad = torch.tensor([[0.3, 0.9, 0.1, -0.2], [0.5, -0.4, 0.2, 0.7]], dtype=torch.float64)
    assert separable.perfect_reconstruction(bad, mode, 1, 9, 11) is False
    assert separable.perfect_reconstruction(bad, mode, 2, 301, 300) is False
    # a bank that is perfect-reconstruction except for a perturbed tap
    near = filter_bank("db4", "dec", torch.float64).clone()
    near[0, 3] += 1e-6
    assert separable.perfect_reconstruction(near, mode, 2, 301, 20) is False
    monkeypatch.setattr(separable, "_PR_MAX_CHECK", 10**4)
    separable._pr_cache.clear()
    for wave in ("db4", "db20"):
        bank = filter_bank(wave, "dec", torch.float64)
        assert separable.perfect_reconstruction(bank, mode, 2, 301, 300), (wave, mode)
    assert separable.perfect_reconstruction(bad, mode, 2, 301, 300) is False


def test_cache_key_tells_every_argument_apart():
    """filter_terms is cached per bank, mode, level, plane size, scales, dtype, block sides and
    device: a call that differs from a cached one in any of them gets its own matrices (the
    composition of the reference transforms for its own arguments), never the cached ones."""
    bank = _bank("db2")
    g = torch.randn(1, 1, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    base = {"mode": "symmetric", "level": 2, "scales": [0.0, 0.5], "dtype": torch.float64}
    base |= {"bh": 8, "bw": 8}
    for change in (
        {},
        {"mode": "reflect"},
        {"scales": [0.5, 0.0]},
        {"level": 1, "scales": [0.0]},
        {"dtype": torch.float32},
        {"bh": 16},
        {"bw": 16},
    ):
        a = base | change
        packed = separable.filter_terms(
            bank, a["mode"], a["level"], 6, 5, a["scales"], a["dtype"], a["bh"], a["bw"]
        )
        assert packed.left.dtype == packed.right_t.dtype == a["dtype"], change
        assert packed.left.shape[1:] == (a["bh"], a["bh"]), change
        assert packed.right_t.shape[1:] == (a["bw"], a["bw"]), change
        left, right_t = packed.left.double()[:, :6, :6], packed.right_t.double()[:, :5, :5]
        out = packed.identity * g[0, 0] + sum(
            left[k] @ g[0, 0] @ right_t[k] for k in range(packed.count)
        )
        expected = reference.scale_details_ref(g, bank, a["mode"], a["level"], a["scales"])
        tol = 1e-12 if a["dtype"] == torch.float64 else 1e-6
        assert_close(out, expected[0, 0], tol, str(change))
    on_cpu = separable.filter_terms(bank, "zero", 1, 6, 5, [0.5], torch.float32, 8, 8)
    on_meta = separable.filter_terms(bank, "zero", 1, 6, 5, [0.5], torch.float32, 8, 8, "meta")
    assert on_cpu.left.device.type == "cpu" and on_meta.left.device.type == "meta"


def test_cache_evicts_the_least_recently_used_beyond_its_size(monkeypatch):
    """At most _CACHE_SIZE entries stay cached; a hit makes an entry the most recently used, and
    the least recently used goes first."""
    monkeypatch.setattr(separable, "_CACHE_SIZE", 3)
    monkeypatch.setattr(separable, "_cache", OrderedDict())
    bank = _bank("haar")

    def get(scale):
        return separable.filter_terms(bank, "zero", 1, 2, 2, [scale], torch.float64, 2, 2)

    first, second = get(0.1), get(0.2)
    get(0.3)
    assert get(0.1) is first  # a hit: now the most recently used
    get(0.4)  # a fourth entry: the least recently used (0.2) goes
    assert len(separable._cache) == 3
    assert get(0.1) is first
    assert get(0.2) is not second


def test_hf_scale_needs_one_entry_per_level():
    """separable_terms refuses a scale list shorter or longer than the levels (one per level,
    finest first): an extra entry is not silently dropped."""
    taps = _bank("db2")
    for scales in ([0.5], [0.5, 0.5, 0.5]):
        with pytest.raises(ValueError, match="one per level"):
            separable.separable_terms(taps, "zero", 2, 5, 4, scales)
