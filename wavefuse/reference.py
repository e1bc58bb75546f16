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

import functools

import torch
import torch.nn.functional as F
from torch import Tensor


def _no_autocast(fn):
    """Run ``fn`` with autocast off on its tensors' device. The reference computes in the compute
    dtype it chooses (float32 for half types, float64 for float64); under ``torch.autocast`` its
    matmuls and convolutions would silently run in the autocast type instead (a bfloat16 matmul:
    errors of 1e-2 on float32 data), unlike the compiled and Triton kernels, which autocast does
    not touch. (2026-11-23, issue 9: ops under autocast run in the input's dtype.)"""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        device = next((a.device.type for a in args if isinstance(a, Tensor)), "cpu")
        if device not in ("cpu", "cuda") or not torch.is_autocast_enabled(device):
            return fn(*args, **kwargs)
        with torch.autocast(device, enabled=False):
            return fn(*args, **kwargs)

    return run


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


@_no_autocast
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


@_no_autocast
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


@_no_autocast
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


@_no_autocast
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


# --------------------------------------------------------------------------------------------------
# Wavelet pooling: a weighted sum of the four bands of one level is one stride-2 correlation of the
# boundary-extended input with the L x L kernel K_c = F^T W_c F (see wavefuse/ops/pool.py), so the
# reference gathers the extended input once and runs one depthwise conv2d; no band is formed.
# --------------------------------------------------------------------------------------------------


def _pool_extend(x: Tensor, taps: int, mode: str) -> Tensor:
    """x: (N, C, H, W) -> the extended input (N, C, 2h + L - 2, 2w + L - 2) (no copy where the
    extension is the identity: two taps on an even axis)."""
    h, w = x.shape[-2:]
    idx_h = None if taps == 2 and h % 2 == 0 else _analysis_gather_index(h, taps, mode, x.device)
    idx_w = None if taps == 2 and w % 2 == 0 else _analysis_gather_index(w, taps, mode, x.device)
    if idx_h is not None or idx_w is not None:
        x = F.pad(x, (0, int(idx_w is not None), 0, int(idx_h is not None)))
    if idx_w is not None:
        x = x.index_select(-1, idx_w)
    if idx_h is not None:
        x = x.index_select(-2, idx_h)
    return x


def _conv_kernel(kernel: Tensor, channels: int) -> Tensor:
    """(C', L, L) taps in PyWavelets' convolution order -> a (C, 1, L, L) conv2d weight."""
    return kernel.flip(-2, -1).expand(channels, *kernel.shape[1:]).unsqueeze(1)


@_no_autocast
def wavelet_pool2d_ref(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """One-level wavelet pooling. x: (N, C, H, W), kernel: (C', L, L) with C' in {1, C}
    -> (N, C, h, w) with h = analysis_length(H, L, mode), w likewise, in x's dtype.

    ``out[n, c, k, l] = sum_{m, q} K[c, m, q] * xe[2k + 1 - m, 2l + 1 - q]`` with xe the input
    extended by ``mode`` (periodization: ``x[(2k + L/2 - m) mod H']``), i.e. exactly dwt2d's
    correlation with the 2-D kernel K in place of the separable products of [lo; hi]."""
    c, taps = x.shape[1], kernel.shape[-1]
    if c == 0:  # conv2d refuses groups=0: the empty result directly
        h, w = (analysis_length(n, taps, mode) for n in x.shape[-2:])
        return x.new_zeros(x.shape[0], 0, h, w)
    xe = _pool_extend(x.to(kernel.dtype), taps, mode)
    return F.conv2d(xe, _conv_kernel(kernel, c), stride=2, groups=c).to(x.dtype)


@_no_autocast
def wavelet_pool2d_adjoint_ref(
    grad: Tensor, kernel: Tensor, mode: str, input_size: list[int]
) -> Tensor:
    """Adjoint (transpose) of ``wavelet_pool2d_ref`` with respect to x. grad: (N, C, h, w),
    kernel: (C', L, L) -> (N, C, H, W) with (H, W) = input_size: the transposed correlation, then
    the extension folded back onto the input (scatter-add of the gather)."""
    n, c = grad.shape[:2]
    h, w = input_size
    taps = kernel.shape[-1]
    if c == 0:  # conv_transpose2d refuses groups=0
        return grad.new_zeros(n, 0, h, w)
    ge = F.conv_transpose2d(grad.to(kernel.dtype), _conv_kernel(kernel, c), stride=2, groups=c)
    if not (taps == 2 and w % 2 == 0):
        idx = _analysis_gather_index(w, taps, mode, grad.device)
        ge = ge.new_zeros(n, c, ge.shape[-2], w + 1).index_add_(-1, idx, ge)[..., :w]
    if not (taps == 2 and h % 2 == 0):
        idx = _analysis_gather_index(h, taps, mode, grad.device)
        ge = ge.new_zeros(n, c, h + 1, w).index_add_(-2, idx, ge)[..., :h, :]
    return ge.to(grad.dtype)


@_no_autocast
def wavelet_pool2d_kernel_grad_ref(grad: Tensor, x: Tensor, taps: int, mode: str) -> Tensor:
    """Gradient of ``sum(grad * wavelet_pool2d_ref(x, K))`` with respect to a per-channel K.
    grad: (N, C, h, w), x: (N, C, H, W) -> (C, L, L) in the compute dtype (float64 for float64
    x, else float32): ``G[c, m, q] = sum_{n, k, l} grad[n, c, k, l] * xe[n, c, 2k+1-m, 2l+1-q]``,
    the conv2d weight gradient of the extended input; contracted with the filter bank it is the
    per-channel sum of band * grad (no band is formed)."""
    cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    c = x.shape[1]
    if c == 0:  # conv2d_weight refuses groups=0
        return x.new_zeros(0, taps, taps, dtype=cdtype)
    xe = _pool_extend(x.to(cdtype), taps, mode)
    g = torch.nn.grad.conv2d_weight(xe, (c, 1, taps, taps), grad.to(cdtype), stride=2, groups=c)
    return g[:, 0].flip(-2, -1)


# --------------------------------------------------------------------------------------------------
# Fused ops, as compositions of the transforms above: band energies and the high-frequency penalty
# (DESIGN.md contract 4), the PGD step and the wavelet-filtered PGD step (contracts 5 and 6).
# Everything computes in the compute dtype of the filter bank (float32 for half types, float64 for
# float64), including the approximation that carries over from one level to the next.
# --------------------------------------------------------------------------------------------------


def _analysis_cascade(x: Tensor, filters: Tensor, mode: str, level: int):
    """Multilevel analysis in the compute dtype: the detail bands of levels 1..J (finest first,
    each (N, C, 3, h_j, w_j)), the input size [H_j, W_j] of each level and the approximation of
    level J (x itself, in the compute dtype, when level is 0)."""
    a = x.to(filters.dtype)
    details, sizes = [], []
    for _ in range(level):
        sizes.append([a.shape[-2], a.shape[-1]])
        a, hi = dwt2d_ref(a, filters, mode)
        details.append(hi)
    return details, sizes, a


@_no_autocast
def band_energy_ref(x: Tensor, filters: Tensor, mode: str, level: int, p: int) -> Tensor:
    """Per-sample, per-level, per-band sums of ``|d|^p`` over channels and positions.

    x: (N, C, H, W), filters: (2, L) dec [lo; hi], p: 1 or 2 -> (N, J, 3) with J = ``level``;
    ``[:, j - 1, b]`` is level j (finest first), band b in (cH, cV, cD). The result is in the
    compute dtype (``filters.dtype``: float32 for half inputs, float64 for float64).
    """
    details, _, _ = _analysis_cascade(x, filters, mode, level)
    if not details:
        return x.new_zeros((x.shape[0], 0, 3), dtype=filters.dtype)
    sums = [(d.square() if p == 2 else d.abs()).sum(dim=(1, 3, 4)) for d in details]
    return torch.stack(sums, dim=1)


@_no_autocast
def band_energy_backward_ref(
    grad: Tensor, x: Tensor, filters: Tensor, mode: str, level: int, p: int
) -> Tensor:
    """Vector-Jacobian product of ``band_energy_ref`` with respect to x.

    grad: (N, J, 3), x: (N, C, H, W) -> grad_x: (N, C, H, W) in x's dtype,
    ``grad_x = sum_{j,b} A_jb^T (grad[:, j-1, b] * phi'(A_jb x))`` with ``A_jb`` the analysis
    cascade down to band b of level j, ``phi'(d) = 2d`` (p=2) or ``sign(d)`` (p=1, the subgradient
    0 at d=0, as ``torch.abs``; a NaN d stays NaN, where torch's ``sign(NaN)`` is 0: a poisoned
    input is never hidden, docs/edge_policies.md). Recomputes the coefficients, then runs the
    adjoint cascade."""
    details, sizes, _ = _analysis_cascade(x, filters, mode, level)
    if not details:
        return torch.zeros_like(x)
    g = grad.to(filters.dtype)
    ga = details[-1].new_zeros(details[-1][:, :, 0].shape)
    for j in reversed(range(level)):
        d = details[j]
        psi = 2 * d if p == 2 else torch.where(d.isnan(), d, d.sign())
        gd = g[:, j].reshape(g.shape[0], 1, 3, 1, 1) * psi
        ga = dwt2d_adjoint_ref(ga, gd, filters, mode, sizes[j])
    return ga.to(x.dtype)


def weighted_penalty(energies: Tensor, weights: Tensor | None, reduction: str) -> Tensor:
    """(N, J, 3) energies, (J, 3) weights (None: all ones) -> the weighted sum over levels and
    bands per sample, (N,) for ``reduction="none"``, its sum or its mean over samples (0-d)."""
    weighted = energies if weights is None else energies * weights.to(energies.dtype)
    per_sample = weighted.sum(dim=(1, 2))
    if reduction == "none":
        return per_sample
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


@_no_autocast
def hf_penalty_ref(
    x: Tensor,
    filters: Tensor,
    mode: str,
    level: int,
    p: int,
    weights: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``sum_{j,b} weights[j-1, b] * band_energy[:, j-1, b]`` per sample, then reduced.

    x: (N, C, H, W), weights: (J, 3) or None (all ones) -> (N,) ("none") or 0-d ("sum": over
    samples, "mean": the mean over samples), in the compute dtype. Its gradient with respect to x
    is ``band_energy_backward_ref`` with ``grad = d(penalty)/d(energies)``."""
    return weighted_penalty(band_energy_ref(x, filters, mode, level, p), weights, reduction)


@_no_autocast
def scale_details_ref(
    g: Tensor, filters: Tensor, mode: str, level: int, hf_scale: list[float]
) -> Tensor:
    """``idwt(scale_hf(dwt(g)))``: the detail bands of level j (all three) times ``hf_scale[j-1]``.

    g: (N, C, H, W), filters: (2, L) dec [lo; hi] of an orthogonal wavelet (synthesis uses the
    reversed taps) -> (N, C, H, W) in the compute dtype. Each synthesis level is cropped to the size
    that level analysed (PyWavelets' ``waverec2`` trimming, then a final crop to (H, W)), so with
    every scale 1 this is the perfect reconstruction of g (to rounding; the fused op skips the
    transform then, see ``wavelet_pgd_step_ref``)."""
    details, sizes, a = _analysis_cascade(g, filters, mode, level)
    rec = filters.flip(-1)
    for j in reversed(range(level)):
        a = _crop(idwt2d_ref(a, details[j] * hf_scale[j], rec, mode), sizes[j])
    return a


def _crop(t: Tensor, size: list[int]) -> Tensor:
    return t[..., : size[0], : size[1]]


def _per_sample_norm(t: Tensor) -> Tensor:
    """(N, ...) -> (N,) L2 norms, as torchattacks' ``torch.norm(t.view(N, -1), p=2, dim=1)``."""
    return torch.linalg.vector_norm(t.flatten(1), 2, dim=1)


#: torchattacks 3.5.1 PGDL2's ``eps_for_division``: g / (||g||_2 + 1e-10), per sample.
L2_EPS_FOR_DIVISION = 1e-10


@_no_autocast
def pgd_step_ref(
    x_adv: Tensor,
    grad: Tensor,
    x_nat: Tensor,
    eps,
    alpha,
    lo=0.0,
    hi=1.0,
    norm: str = "Linf",
) -> Tensor:
    """One PGD update, torchattacks 3.5.1's ``PGD`` / ``PGDL2`` step written out op for op.

    x_adv, grad, x_nat: (N, C, H, W); eps, alpha, lo, hi: Python floats or tensors broadcastable
    to x (per sample (N, 1, 1, 1), per channel (1, C, 1, 1); for L2 eps is per sample) ->
    the new x_adv (N, C, H, W) in x_adv's dtype (a new tensor; x_adv is not modified).

    Linf: ``x' = x_adv + alpha * sign(g)``; ``delta = clamp(x' - x, -eps, eps)``;
    ``x_adv = clamp(x + delta, lo, hi)``.
    L2: ``g = g / (||g||_2 + 1e-10)`` per sample; ``x' = x_adv + alpha * g``; ``delta = x' - x``;
    ``delta = delta * min(eps / ||delta||_2, 1)`` per sample; ``x_adv = clamp(x + delta, lo, hi)``.
    ``eps / ||delta||`` is computed as torchattacks' ``eps / tensor`` is, ``reciprocal * eps``, so
    float32 results are bit-identical; the differences: a zero delta keeps factor 1 where
    torchattacks computes ``0 * inf = NaN`` (eps = 0 and delta = 0), and a NaN gradient entry
    makes that entry of x_adv NaN (torch's ``sign(NaN)`` is 0: torchattacks would take no step
    there and hide the NaN; docs/edge_policies.md).
    Half types compute in float32 and round once at the end (torchattacks rounds every op).
    """
    cdtype = torch.float64 if x_adv.dtype == torch.float64 else torch.float32
    xa, g, x = (t.to(cdtype) for t in (x_adv, grad, x_nat))
    eps, alpha, lo, hi = (
        v.to(cdtype) if isinstance(v, Tensor) else v for v in (eps, alpha, lo, hi)
    )
    n = x.shape[0]
    if norm == "Linf":
        xa = xa + alpha * torch.where(g.isnan(), g, g.sign())  # NaN propagates
        delta = torch.clamp(xa - x, min=-eps, max=eps)
    else:
        g = g / (_per_sample_norm(g) + L2_EPS_FOR_DIVISION).view(n, 1, 1, 1)
        xa = xa + alpha * g
        delta = xa - x
        delta_norm = _per_sample_norm(delta)
        eps_n = eps.reshape(-1) if isinstance(eps, Tensor) else eps
        factor = torch.minimum(delta_norm.reciprocal() * eps_n, torch.ones_like(delta_norm))
        factor = torch.where(delta_norm == 0, torch.ones_like(factor), factor)
        delta = delta * factor.view(-1, 1, 1, 1)
    # Two one-sided clamps: lo and hi may be a float and a tensor (clamp takes two of a kind);
    # the values are torch.clamp's, which only compares.
    return torch.clamp(torch.clamp(x + delta, min=lo), max=hi).to(x_adv.dtype)


@_no_autocast
def wavelet_pgd_step_ref(
    x_adv: Tensor,
    grad: Tensor,
    x_nat: Tensor,
    eps,
    alpha,
    filters: Tensor,
    mode: str,
    level: int,
    hf_scale: list[float],
    lo=0.0,
    hi=1.0,
    norm: str = "Linf",
) -> Tensor:
    """``pgd_step_ref`` on ``scale_details_ref(grad)``: the gradient's detail bands of level j are
    multiplied by ``hf_scale[j-1]`` before the step. Shapes as ``pgd_step_ref``; filters: (2, L)
    dec [lo; hi]. With every scale 1 (or level 0) the transform is skipped, so the step is exactly
    ``pgd_step_ref`` (a round trip through the transform would perturb g by rounding, enough to
    flip ``sign`` of its tiny entries)."""
    if level > 0 and any(s != 1.0 for s in hf_scale):
        grad = scale_details_ref(grad, filters, mode, level, hf_scale)
    return pgd_step_ref(x_adv, grad, x_nat, eps, alpha, lo, hi, norm)
