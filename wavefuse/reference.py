"""Pure-PyTorch reference transforms: test oracle, benchmark baseline and fallback backend.

One 2-D level is two 1-D passes (along W, then along H), each a boundary extension by index
gather followed by a stride-2 correlation (unfold + matmul; its transpose overlap-adds with fold).
Conventions are PyWavelets' (../shared/REFERENCES.md):

* analysis, every mode but periodization: ``c[k] = sum_j f[j] * xe[2k + 1 - j]`` for
  ``k < (n + L - 1) // 2``, with ``xe`` the signal extended by ``mode``;
* periodization: ``n'`` = n rounded up to even (an odd signal repeats its last sample),
  ``K = n' / 2``, ``c[k] = sum_j f[j] * x[(2k + L/2 - j) mod n']``;
* synthesis, non-periodization: ``y[n] = sum_k a[k] g0[n + L - 2 - 2k] + d[k] g1[n + L - 2 - 2k]``,
  of length ``2M - L + 2``;
* synthesis, periodization: ``y[m] = sum_k a[k] g0[(m + L/2 - 1 - 2k) mod 2M] + ...``, length 2M.

The adjoints are the exact transposes: the adjoint of the boundary gather is a scatter-add that
folds the extension back onto the signal (for non-periodic modes this is *not* the inverse
transform). Half types compute in float32, float64 stays float64. Band order everywhere is
PyWavelets': cH (high-pass along H, low-pass along W), cV, cD.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# --------------------------------------------------------------------------------------------------
# Sizes and boundary index maps
# --------------------------------------------------------------------------------------------------


def analysis_length(n: int, filter_len: int, mode: str) -> int:
    """Coefficients per axis after one analysis level (``pywt.dwt_coeff_len``)."""
    if mode == "periodization":
        return (n + 1) // 2
    return (n + filter_len - 1) // 2


def synthesis_length(m: int, filter_len: int, mode: str) -> int:
    """Samples per axis after one synthesis level from ``m`` coefficients (pywt's ``idwt``)."""
    if mode == "periodization":
        return 2 * m
    return 2 * m - filter_len + 2


def extension_index(pos: Tensor, n: int, mode: str) -> Tensor:
    """Source index in [0, n) of the extended signal at positions ``pos``, -1 for zero padding.

    Positions may lie several periods away (filters longer than the signal): the reflection repeats.
    """
    if mode == "zero":
        return torch.where((pos >= 0) & (pos < n), pos, torch.full_like(pos, -1))
    if mode == "symmetric":  # half-sample mirror: ... x1 x0 | x0 x1 ... (period 2n)
        q = pos % (2 * n)
        return torch.where(q < n, q, 2 * n - 1 - q)
    if mode == "reflect":  # whole-sample mirror: ... x2 x1 | x0 x1 ... (period 2n - 2)
        if n == 1:
            return torch.zeros_like(pos)
        q = pos % (2 * n - 2)
        return torch.where(q < n, q, 2 * n - 2 - q)
    if mode == "periodic":
        return pos % n
    raise ValueError(f"mode={mode!r} has no extension map")


def _analysis_gather_index(n: int, filter_len: int, mode: str, device) -> Tensor:
    """Indices (into the signal padded with one trailing zero) of the 2K + L - 2 samples that a
    stride-2 correlation with the flipped filter turns into the K coefficients."""
    k = analysis_length(n, filter_len, mode)
    i = torch.arange(2 * k + filter_len - 2, device=device)
    if mode == "periodization":
        n_even = n + n % 2
        idx = ((i - filter_len // 2 + 1) % n_even).clamp_max(n - 1)
    else:
        idx = extension_index(i + 2 - filter_len, n, mode)
    return torch.where(idx < 0, torch.full_like(idx, n), idx)  # n = the padded zero


def _periodization_fold_index(m: int, filter_len: int, device) -> Tensor:
    """Where each of the 2M + L - 2 full transposed-convolution outputs wraps onto 2M samples."""
    u = torch.arange(2 * m + filter_len - 2, device=device)
    return (u - filter_len // 2 + 1) % (2 * m)


# --------------------------------------------------------------------------------------------------
# 1-D passes over the last dimension: "split" (R, n) -> (R, 2, K), "merge" (R, 2, K) -> (R, n)
# --------------------------------------------------------------------------------------------------


def _correlate2(xe: Tensor, taps: Tensor) -> Tensor:
    """Stride-2 correlation. xe: (R, 2K + L - 2), taps: (2, L) -> (R, 2, K),
    ``out[:, c, k] = sum_m xe[:, 2k + m] * taps[c, m]``."""
    return (xe.unfold(-1, taps.shape[-1], 2) @ taps.T).transpose(1, 2)


def _correlate2_adjoint(g: Tensor, taps: Tensor) -> Tensor:
    """Transpose of ``_correlate2`` (a stride-2 transposed convolution, overlap-added by fold).
    g: (R, 2, K) -> (R, 2K + L - 2)."""
    rows, _, k = g.shape
    taps_len = taps.shape[-1]
    cols = (g.transpose(1, 2) @ taps).transpose(1, 2)  # (R, L, K): tap m of block k
    n = 2 * k + taps_len - 2
    return F.fold(cols, output_size=(1, n), kernel_size=(1, taps_len), stride=(1, 2)).reshape(
        rows, n
    )


def _analysis_1d(x: Tensor, filters: Tensor, mode: str) -> Tensor:
    n, taps = x.shape[-1], filters.shape[-1]
    idx = _analysis_gather_index(n, taps, mode, x.device)
    return _correlate2(F.pad(x, (0, 1)).index_select(-1, idx), filters.flip(-1))


def _analysis_adjoint_1d(g: Tensor, filters: Tensor, mode: str, n: int) -> Tensor:
    taps = filters.shape[-1]
    idx = _analysis_gather_index(n, taps, mode, g.device)
    ge = _correlate2_adjoint(g, filters.flip(-1))
    return ge.new_zeros(ge.shape[0], n + 1).index_add_(-1, idx, ge)[:, :n]


def _synthesis_1d(c: Tensor, filters: Tensor, mode: str) -> Tensor:
    m, taps = c.shape[-1], filters.shape[-1]
    full = _correlate2_adjoint(c, filters)  # (R, 2M + L - 2)
    if mode == "periodization":
        out = full.new_zeros(full.shape[0], 2 * m)
        return out.index_add_(-1, _periodization_fold_index(m, taps, c.device), full)
    return full[:, taps - 2 : 2 * m]


def _synthesis_adjoint_1d(g: Tensor, filters: Tensor, mode: str) -> Tensor:
    n, taps = g.shape[-1], filters.shape[-1]
    if mode == "periodization":
        full = g.index_select(-1, _periodization_fold_index(n // 2, taps, g.device))
    else:
        full = F.pad(g, (taps - 2, taps - 2))
    return _correlate2(full, filters)


# --------------------------------------------------------------------------------------------------
# 2-D: W pass then H pass; bands flattened as (W band, H band) = A, H, V, D in pywt's order
# --------------------------------------------------------------------------------------------------


def _split2d(x: Tensor, split_w, split_h) -> Tensor:
    """(B, H, W) -> (B, 4, Kh, Kw) with band b = 2 * (W band) + (H band)."""
    b, h, w = x.shape
    t = split_w(x.reshape(b * h, w))  # (B*H, 2, Kw)
    kw = t.shape[-1]
    t = split_h(
        t.reshape(b, h, 2, kw).permute(0, 2, 3, 1).reshape(b * 2 * kw, h)
    )  # (B*2*Kw, 2, Kh)
    kh = t.shape[-1]
    return t.reshape(b, 2, kw, 2, kh).permute(0, 1, 3, 4, 2).reshape(b, 4, kh, kw)


def _merge2d(c: Tensor, merge_w, merge_h) -> Tensor:
    """(B, 4, Kh, Kw) -> (B, H, W), the exact layout inverse of ``_split2d``."""
    b, _, kh, kw = c.shape
    t = merge_h(c.reshape(b, 2, 2, kh, kw).permute(0, 1, 4, 2, 3).reshape(b * 2 * kw, 2, kh))
    h = t.shape[-1]
    t = merge_w(t.reshape(b, 2, kw, h).permute(0, 3, 1, 2).reshape(b * h, 2, kw))
    return t.reshape(b, h, t.shape[-1])


def _bands(ll: Tensor, hi: Tensor, dtype: torch.dtype) -> Tensor:
    n, c = ll.shape[:2]
    stacked = torch.cat([ll.unsqueeze(2), hi], dim=2).to(dtype)
    return stacked.reshape(n * c, 4, *ll.shape[-2:])


def _unbands(t: Tensor, n: int, c: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    t = t.reshape(n, c, 4, *t.shape[-2:]).to(dtype)
    return t[:, :, 0], t[:, :, 1:]


def dwt2d_ref(x: Tensor, filters: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """One analysis level. x: (N, C, H, W), filters: (2, L) dec [lo; hi]
    -> ll: (N, C, h, w), hi: (N, C, 3, h, w) with bands cH, cV, cD."""
    n, c, h, w = x.shape
    t = _split2d(
        x.to(filters.dtype).reshape(n * c, h, w),
        lambda r: _analysis_1d(r, filters, mode),
        lambda r: _analysis_1d(r, filters, mode),
    )
    return _unbands(t, n, c, x.dtype)


def dwt2d_adjoint_ref(
    grad_ll: Tensor, grad_hi: Tensor, filters: Tensor, mode: str, input_size: list[int]
) -> Tensor:
    """Adjoint (transpose) of ``dwt2d_ref``. grad_ll: (N, C, h, w), grad_hi: (N, C, 3, h, w)
    -> (N, C, H, W) with (H, W) = input_size."""
    n, c = grad_ll.shape[:2]
    h, w = input_size
    t = _merge2d(
        _bands(grad_ll, grad_hi, filters.dtype),
        lambda r: _analysis_adjoint_1d(r, filters, mode, w),
        lambda r: _analysis_adjoint_1d(r, filters, mode, h),
    )
    return t.reshape(n, c, h, w).to(grad_ll.dtype)


def idwt2d_ref(ll: Tensor, hi: Tensor, filters: Tensor, mode: str) -> Tensor:
    """One synthesis level. ll: (N, C, h, w), hi: (N, C, 3, h, w), filters: (2, L) rec [lo; hi]
    -> (N, C, H, W) with H = synthesis_length(h), W = synthesis_length(w) (no cropping)."""
    n, c = ll.shape[:2]
    t = _merge2d(
        _bands(ll, hi, filters.dtype),
        lambda r: _synthesis_1d(r, filters, mode),
        lambda r: _synthesis_1d(r, filters, mode),
    )
    return t.reshape(n, c, *t.shape[-2:]).to(ll.dtype)


def idwt2d_adjoint_ref(grad_y: Tensor, filters: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """Adjoint (transpose) of ``idwt2d_ref``. grad_y: (N, C, H, W) -> ll: (N, C, h, w),
    hi: (N, C, 3, h, w)."""
    n, c, h, w = grad_y.shape
    t = _split2d(
        grad_y.to(filters.dtype).reshape(n * c, h, w),
        lambda r: _synthesis_adjoint_1d(r, filters, mode),
        lambda r: _synthesis_adjoint_1d(r, filters, mode),
    )
    return _unbands(t, n, c, grad_y.dtype)
