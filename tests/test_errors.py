"""Bad input raises ValueError/TypeError naming the argument; too-high levels warn as PyWavelets."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import pywt
import torch

import wavefuse

X = torch.randn(1, 2, 8, 8)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: wavefuse.wavedec2(torch.randn(8, 8), "haar"), ValueError, "data must be 4-D"),
        (lambda: wavefuse.dwt2(torch.randn(2, 1, 2, 8, 8), "haar"), ValueError, "data must be 4-D"),
        (
            lambda: wavefuse.wavedec2(torch.ones(1, 1, 8, 8, dtype=torch.int64), "haar"),
            TypeError,
            "data has dtype torch.int64; allowed: float16",
        ),
        (
            lambda: wavefuse.dwt2(torch.ones(1, 1, 8, 8, dtype=torch.complex64), "haar"),
            TypeError,
            "data has dtype torch.complex64",
        ),
        (
            lambda: wavefuse.dwt2(np.ones((1, 1, 8, 8)), "haar"),
            TypeError,
            "data must be a torch.Tensor",
        ),
        (lambda: wavefuse.dwt2(torch.ones(1, 1, 0, 8), "haar"), ValueError, "data has an empty"),
        (lambda: wavefuse.wavedec2(X, "nonesuch"), ValueError, "wavelet='nonesuch' is not a known"),
        (lambda: wavefuse.wavedec2(X, "bior2.2"), ValueError, "wavelet='bior2.2' is not supported"),
        (lambda: wavefuse.wavedec2(X, "morl"), ValueError, "wavelet='morl' is not supported"),
        (lambda: wavefuse.wavedec2(X, "db21"), ValueError, "wavelet='db21' is not supported"),
        (
            lambda: wavefuse.wavedec2(X, pywt.Wavelet("bior1.3")),
            ValueError,
            "wavelet: pywt.Wavelet",
        ),
        (lambda: wavefuse.wavedec2(X, 3), TypeError, "wavelet must be a wavelet name"),
        (
            lambda: wavefuse.wavedec2(X, "haar", "smooth"),
            ValueError,
            "mode='smooth' is not supported; allowed: zero, symmetric, reflect, periodic, periodization",
        ),
        (
            lambda: wavefuse.idwt2((X, (X, X, X)), "haar", "sp1"),
            ValueError,
            "mode='sp1' (PyWavelets' 'smooth') is not supported",
        ),
        (lambda: wavefuse.dwt2(X, "haar", pywt.Modes.smooth), ValueError, "mode=3 (PyWavelets'"),
        (lambda: wavefuse.dwt2(X, "haar", 9), ValueError, "mode=9 is not supported"),
        (lambda: wavefuse.dwt2(X, "haar", True), ValueError, "mode=True is not supported"),
        (
            lambda: wavefuse.wavedec2(X, "haar", level=-1),
            ValueError,
            "Level value of -1 is too low",
        ),
        (lambda: wavefuse.wavedec2(X, "haar", level=1.5), TypeError, "level must be an int"),
        (lambda: wavefuse.wavedec2(X, "haar", axes=(0, 1)), ValueError, "axes must be"),
        (
            lambda: wavefuse.dwt2(torch.ones(1, 1, 1, 8), "haar", "reflect"),
            ValueError,
            "mode='reflect' needs at least 2 samples",
        ),
        (
            lambda: wavefuse.wavedec2(X, "haar", backend="gpu"),
            ValueError,
            "backend='gpu' is not one of auto, reference, cpu, cuda, triton",
        ),
        (
            lambda: wavefuse.waverec2([X, (X, X.to("meta"), X)], "haar"),
            ValueError,
            "coeffs: all tensors must be on one device",
        ),
        (
            lambda: wavefuse.idwt2((X, (X, X.double(), X)), "haar"),
            TypeError,
            "coeffs: all tensors must have one dtype",
        ),
        (
            lambda: wavefuse.idwt2((X, (X, X[..., :4], X)), "haar"),
            ValueError,
            "coeffs: all bands must have one shape",
        ),
        (
            lambda: wavefuse.idwt2((None, (None, None, None)), "haar"),
            ValueError,
            "at least one non-None band",
        ),
        (lambda: wavefuse.idwt2((X, (X, X)), "haar"), ValueError, "3-tuple"),
        (lambda: wavefuse.waverec2([X, X], "haar"), ValueError, "3-tuple"),
        (lambda: wavefuse.waverec2([], "haar"), ValueError, "non-empty list"),
        (
            lambda: wavefuse.idwt2((torch.ones(1, 1, 2, 2), (None, None, None)), "db4", "zero"),
            ValueError,
            "coeffs: 2x2 coefficients are too few",
        ),
        (  # the boundary: 2m - L + 2 = 0 would be an empty signal (pywt returns a 0x0 array)
            lambda: wavefuse.idwt2((torch.ones(1, 1, 1, 3), (None, None, None)), "db2", "zero"),
            ValueError,
            "coeffs: 1x3 coefficients are too few",
        ),
        (
            lambda: wavefuse.DWTInverse("db4")((torch.ones(1, 1, 2, 2), [None])),
            ValueError,
            "yl: 2x2 coefficients are too few",
        ),
        (lambda: wavefuse.DWTForward(J=-1), ValueError, "J must be an int >= 0, got -1"),
        (lambda: wavefuse.DWTForward(J=1.0), TypeError, "J must be an int >= 0, got float"),
        (lambda: wavefuse.DWTForward(J=True), TypeError, "J must be an int >= 0, got bool"),
        (
            lambda: wavefuse.DWTInverse()((X, [(X, X, X)])),
            TypeError,
            "yh must be a list or tuple of (N, C, 3, h, w) tensors (or None for a level of zeros), "
            + "finest first, as DWTForward returns it; got entries of type tuple",
        ),
        (lambda: wavefuse.DWTInverse()((X, None)), TypeError, "yh must be a list or tuple"),
        (
            lambda: wavefuse.DWTInverse()((X, [np.zeros((1, 2, 3, 8, 8))])),
            TypeError,
            "got entries of type ndarray",
        ),
        (
            lambda: wavefuse.functional.dwt_max_level(64, "nonesuch"),
            ValueError,
            "filter_len='nonesuch' is not the name of a discrete wavelet",
        ),
        (
            lambda: wavefuse.functional.dwt_max_level(64, 1),
            ValueError,
            "filter_len=1 is invalid",
        ),
        (lambda: wavefuse.functional.dwt_max_level(64, 2.5), TypeError, "filter_len must be"),
        (lambda: wavefuse.functional.dwt_max_level(-5, 4), ValueError, "data_len=-5 is invalid"),
        (lambda: wavefuse.functional.dwt_max_level("64", 4), TypeError, "data_len must be an int"),
        (lambda: wavefuse.DWTForward(J=1, wave="bior2.2"), ValueError, "wave='bior2.2'"),
        (lambda: wavefuse.DWTForward(J=1, mode="constant"), ValueError, "mode='constant'"),
        (lambda: wavefuse.DWTInverse(backend="fast"), ValueError, "backend='fast'"),
        (lambda: wavefuse.DWTForward(J=1)(torch.randn(3, 8, 8)), ValueError, "x must be 4-D"),
        (
            lambda: wavefuse.DWTInverse()((X, [torch.randn(1, 2, 8, 8)])),
            ValueError,
            "yh entries must be",
        ),
    ],
)
def test_bad_input_raises_a_clear_error(call, exc, match):
    with pytest.raises(exc, match=match.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_a_custom_pywt_wavelet_under_a_supported_name_is_refused():
    """A pywt.Wavelet is taken by its taps, not its label: a custom bank named "db2" (here db3's
    taps) must not run as db2; pywt's own db2 object works."""
    fake = pywt.Wavelet("db2", filter_bank=pywt.Wavelet("db3").filter_bank)
    assert fake.name == "db2"
    for call in (
        lambda: wavefuse.wavedec2(X, fake, level=1),
        lambda: wavefuse.hf_penalty(X, fake),
        lambda: wavefuse.DWTForward(1, fake),
    ):
        with pytest.raises(ValueError, match="custom filter banks are not supported"):
            call()
    ours = wavefuse.wavedec2(X.double(), pywt.Wavelet("db2"), level=1)
    theirs = pywt.wavedec2(X.double().numpy(), "db2", level=1)
    np.testing.assert_allclose(ours[0].numpy(), theirs[0], atol=1e-10)


def test_too_high_level_warns_exactly_as_pywt():
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    with pytest.warns(UserWarning) as ours:
        coeffs = wavefuse.wavedec2(x, "db4", level=2)
    with pytest.warns(UserWarning) as theirs:
        expected = pywt.wavedec2(x.numpy(), "db4", level=2)
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    assert len(coeffs) == len(expected) == 3


def test_max_level_does_not_warn():
    x = torch.randn(1, 1, 64, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coeffs = wavefuse.wavedec2(x, "db2")
    assert len(coeffs) - 1 == pywt.dwt_max_level(40, 4)


@pytest.mark.parametrize("name", ["per", "sym", "zpd", "ppd", pywt.Modes.periodization, 1])
def test_pywt_mode_spellings_work_as_in_pywt(name):
    """PyWavelets' integer codes and deprecated short names of a supported mode: the same
    coefficients as pywt gives for that spelling, and pywt's DeprecationWarning for an old name."""
    x = torch.randn(1, 1, 9, 8, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        expected = pywt.wavedec2(x.numpy(), "db2", name, level=2)
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        got = wavefuse.wavedec2(x, "db2", name, level=2)
    for caught in (theirs, ours):  # pywt warns once per axis; wavefuse once per call
        deprecated = [w for w in caught if issubclass(w.category, DeprecationWarning)]
        assert bool(deprecated) == isinstance(name, str)
    for g, e in zip([got[0], *(b for level in got[1:] for b in level)],
                    [expected[0], *(b for level in expected[1:] for b in level)]):  # fmt: skip
        np.testing.assert_allclose(g.numpy(), e, rtol=0, atol=1e-12)
    # and through the inverse and the drop-in modules
    back = wavefuse.waverec2(got, "db2", name)
    np.testing.assert_allclose(back.numpy(), pywt.waverec2(expected, "db2", name), atol=1e-12)


def test_dwt_max_level_matches_pywt():
    for data_len in (0, 1, 3, 4, 7, 64, 100, 1023):
        for filt in (2, 4, 6.0, 40, 41, "db2", "coif6", "bior2.2", "dmey", pywt.Wavelet("sym5")):
            assert wavefuse.functional.dwt_max_level(data_len, filt) == pywt.dwt_max_level(
                data_len, filt
            ), (data_len, filt)


def test_dwt_forward_levels_as_pytorch_wavelets():
    """J: any integral type; J=0 gives (x, []) as pytorch_wavelets' DWTForward does."""
    ptw = pytest.importorskip("pytorch_wavelets")
    x = torch.randn(2, 3, 8, 8)
    yl, yh = wavefuse.DWTForward(J=0)(x)
    pyl, pyh = ptw.DWTForward(J=0)(x)
    assert torch.equal(yl, pyl) and yh == pyh == []
    yl, yh = wavefuse.DWTForward(J=np.int64(2), wave="db2", mode="symmetric")(x)
    pyl, pyh = ptw.DWTForward(J=2, wave="db2", mode="symmetric")(x)
    torch.testing.assert_close(yl, pyl)
    assert len(yh) == len(pyh) == 2
    assert wavefuse.DWTInverse("db2", "symmetric")((yl, yh)).shape == x.shape


def test_coif6_is_supported():
    """Every orthogonal pywt wavelet of at most 40 taps: coif6 has 36, coif7 (42) is refused."""
    x = torch.randn(1, 1, 40, 40, dtype=torch.float64)
    got = wavefuse.dwt2(x, "coif6", "symmetric")
    expected = pywt.dwt2(x.numpy(), "coif6", "symmetric")
    np.testing.assert_allclose(got[0].numpy(), expected[0], atol=1e-12)
    with pytest.raises(ValueError, match="wavelet='coif7' is not supported"):
        wavefuse.dwt2(x, "coif7")


def test_dwt_modules_take_filter_taps_as_pytorch_wavelets():
    """wave as taps: (dec_lo, dec_hi) or four for DWTForward, (rec_lo, rec_hi) for DWTInverse,
    float32-rounded ones too (a pytorch_wavelets module's buffers); the same results as the name.
    Custom banks and different row/column filters are refused clearly."""
    ptw = pytest.importorskip("pytorch_wavelets")
    w = pywt.Wavelet("db3")
    x = torch.randn(2, 3, 11, 10)
    fwd = wavefuse.DWTForward(2, (w.dec_lo, w.dec_hi), "symmetric")
    assert fwd.wave == "db3"
    f32 = [np.float32(w.dec_lo), np.float32(w.dec_hi)] * 2
    assert wavefuse.DWTForward(2, f32, "symmetric").wave == "db3"
    yl, yh = fwd(x)
    pyl, pyh = ptw.DWTForward(2, (w.dec_lo, w.dec_hi), "symmetric")(x)
    torch.testing.assert_close(yl, pyl, atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(yh, pyh, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    inv = wavefuse.DWTInverse([torch.tensor(w.rec_lo), torch.tensor(w.rec_hi)], "symmetric")
    assert inv.wave == "db3" and inv((yl, yh)).shape == (2, 3, 12, 10)
    with pytest.raises(ValueError, match="are not the rec taps of a supported wavelet"):
        wavefuse.DWTInverse((w.dec_lo, w.dec_hi[::-1]))
    with pytest.raises(ValueError, match="are not the dec taps of a supported wavelet"):
        wavefuse.DWTForward(1, ([0.5, 0.5], [0.5, -0.5]))
    with pytest.raises(ValueError, match="different row and column filters"):
        wavefuse.DWTForward(1, (w.dec_lo, w.dec_hi, *pywt.Wavelet("db2").filter_bank[:2]))
    with pytest.raises(ValueError, match="wave: 3 filters"):
        wavefuse.DWTForward(1, (w.dec_lo, w.dec_hi, w.dec_lo))
    with pytest.raises(TypeError, match="non-numbers"):
        wavefuse.DWTForward(1, ("db3", "db3"))


def test_mode_str_subclasses_and_the_warning_points_at_the_caller():
    """np.str_ and str Enum members are their value; an old pywt name's DeprecationWarning is
    attributed to the user's line on every path (else Python's default filters hide it)."""
    import enum

    class Mode(str, enum.Enum):
        SYM = "symmetric"

    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    expected = wavefuse.dwt2(x, "db2", "symmetric")[0]
    for mode in (np.str_("symmetric"), Mode.SYM):
        assert torch.equal(wavefuse.dwt2(x, "db2", mode)[0], expected)
    calls = (
        lambda: wavefuse.dwt2(x, "db2", "sym"),
        lambda: wavefuse.hf_penalty(x, "db2", 1, "sym"),
        lambda: wavefuse.WaveletAvgPool2d("db2", "sym"),
        lambda: wavefuse.DWTForward(1, "db2", "sym"),
    )
    for call in calls:
        with pytest.warns(DeprecationWarning, match="renamed sym to symmetric") as caught:
            call()
        assert caught[0].filename == __file__
