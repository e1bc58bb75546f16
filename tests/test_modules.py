"""DWTForward / DWTInverse: drop-ins for pytorch_wavelets (forward values compared; its gradients are
wrong in several modes, so gradients are checked against our own adjoint with gradcheck instead)."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import TOL, assert_close

import wavefuse

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # pytorch_wavelets imports the deprecated pkg_resources
    ptw = pytest.importorskip("pytorch_wavelets", reason="pytorch_wavelets is in the [test] extra")

PEER_MODES = ["zero", "symmetric", "reflect", "periodic", "periodization"]
# pytorch_wavelets builds its taps in float32 (then .double() only widens the rounded values), so
# agreement with it is at float32-tap precision; agreement with pywt is tested to 1e-10 elsewhere.
PEER_TOL = 1e-6


@pytest.mark.parametrize("mode", PEER_MODES)
@pytest.mark.parametrize("wave", ["haar", "db2", "db4", "sym3"])
def test_dwt_forward_and_inverse_match_pytorch_wavelets(wave, mode):
    for h, w in [(32, 32), (29, 30)]:
        x = torch.randn(2, 3, h, w, dtype=torch.float64)
        for J in (1, 2, 3):
            theirs_f = ptw.DWTForward(J=J, wave=wave, mode=mode).double()
            yl_t, yh_t = theirs_f(x)
            yl, yh = wavefuse.DWTForward(J=J, wave=wave, mode=mode)(x)
            what = f"{wave} {mode} {h}x{w} J={J}"
            assert_close(yl, yl_t, PEER_TOL, what + " yl")
            assert len(yh) == len(yh_t) == J
            for j, (a, b) in enumerate(zip(yh, yh_t)):
                assert a.shape == b.shape and a.shape[2] == 3
                assert_close(a, b, PEER_TOL, f"{what} yh[{j}]")
            y_t = ptw.DWTInverse(wave=wave, mode=mode).double()((yl_t, yh_t))
            y = wavefuse.DWTInverse(wave=wave, mode=mode)((yl, yh))
            assert_close(y, y_t, PEER_TOL, what + " inverse")


def test_per_alias_and_none_details():
    x = torch.randn(1, 2, 16, 16)  # float32: the peer's None-detail zeros are float32 always
    yl, yh = wavefuse.DWTForward(J=2, wave="db2", mode="per")(x)
    yl_t, yh_t = ptw.DWTForward(J=2, wave="db2", mode="per")(x)
    assert_close(yl, yl_t, TOL[torch.float32])
    y = wavefuse.DWTInverse(wave="db2", mode="per")((yl, [None, yh[1]]))
    y_t = ptw.DWTInverse(wave="db2", mode="per")((yl_t, [None, yh_t[1]]))
    assert_close(y, y_t, TOL[torch.float32])


def test_loads_a_pytorch_wavelets_state_dict():
    peer = torch.nn.Sequential(ptw.DWTForward(J=1, wave="db2"), torch.nn.Identity())
    ours = torch.nn.Sequential(wavefuse.DWTForward(J=1, wave="db2"), torch.nn.Identity())
    assert any("h0_col" in k for k in peer.state_dict())
    ours.load_state_dict(peer.state_dict())  # strict: the peer's filter buffers are accepted
    inv = wavefuse.DWTInverse(wave="db2")
    inv.load_state_dict(ptw.DWTInverse(wave="db2").state_dict())


@pytest.mark.parametrize("mode", ["symmetric", "periodization"])
def test_module_gradients_and_half_types(mode):
    x = torch.randn(1, 2, 11, 10, dtype=torch.float64, requires_grad=True)
    fwd, inv = wavefuse.DWTForward(J=2, wave="db2", mode=mode), wavefuse.DWTInverse("db2", mode)

    def roundtrip(t):
        yl, yh = fwd(t)
        return inv((yl, [yh[0] * 0.5, yh[1]]))

    assert torch.autograd.gradcheck(roundtrip, (x,))
    for dtype in (torch.float16, torch.bfloat16):
        yl, yh = fwd(x.detach().to(dtype))
        assert yl.dtype == dtype and yh[0].dtype == dtype
        yl64, yh64 = fwd(x.detach().to(dtype).double())
        assert_close(yl, yl64, TOL[dtype], str(dtype))
        for a, b in zip(yh, yh64):
            assert_close(a, b, TOL[dtype], f"{dtype} yh")


def test_defaults_match_pytorch_wavelets():
    """Constructed with no arguments the modules are the peer's (J=1, db1, mode "zero"): the
    default mode shows on an odd size with a longer wavelet, where the boundary matters."""
    x = torch.randn(2, 3, 13, 10, dtype=torch.float64)
    for args in [(), (2,)]:
        yl, yh = wavefuse.DWTForward(*args)(x)
        yl_t, yh_t = ptw.DWTForward(*args).double()(x)
        assert_close(yl, yl_t, PEER_TOL, f"DWTForward{args} yl")
        assert len(yh) == len(yh_t)
        for a, b in zip(yh, yh_t):
            assert_close(a, b, PEER_TOL, f"DWTForward{args} yh")
        y = wavefuse.DWTInverse()((yl, yh))
        assert_close(y, ptw.DWTInverse().double()((yl_t, yh_t)), PEER_TOL, "DWTInverse()")
    yl, yh = wavefuse.DWTForward(J=2, wave="db3")(x)
    yl_t, yh_t = ptw.DWTForward(J=2, wave="db3").double()(x)
    assert_close(yl, yl_t, PEER_TOL, "default mode, db3 yl")
    for a, b in zip(yh, yh_t):
        assert_close(a, b, PEER_TOL, "default mode, db3 yh")
    y = wavefuse.DWTInverse(wave="db3")((yl, yh))
    assert_close(y, ptw.DWTInverse(wave="db3").double()((yl_t, yh_t)), PEER_TOL, "default mode inv")
