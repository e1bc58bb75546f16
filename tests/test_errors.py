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
        (lambda: wavefuse.idwt2((X, (X, X, X)), "haar", "per"), ValueError, "mode='per'"),
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
        (
            lambda: wavefuse.DWTInverse("db4")((torch.ones(1, 1, 2, 2), [None])),
            ValueError,
            "yl: 2x2 coefficients are too few",
        ),
        (lambda: wavefuse.DWTForward(J=0), ValueError, "J must be an int >= 1"),
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
