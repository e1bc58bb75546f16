"""``convert``: swap a model's stride-2 convolutions and pooling layers for wavelet ones, in place."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import nn

from wavefuse.nn.conv import WaveletConv2d
from wavefuse.nn.dwt import _check_backend, _wave_and_mode
from wavefuse.nn.pool import WaveletAvgPool2d
from wavefuse.ops.pool import BANDS

TARGETS = ("conv_stride2", "avgpool", "maxpool")
_POOL_TYPES = {"avgpool": nn.AvgPool2d, "maxpool": nn.MaxPool2d}
# Input sizes at which a pooling layer's output size is compared with ceil(n/2) and floor(n/2);
# its size is floor((n + a) / 2) + b per axis, so a run of consecutive sizes decides the rule.
_PROBE_SIZES = range(4, 12)


class Replacement(NamedTuple):
    name: str  # the module's qualified name ("" for the root)
    old: type
    new: type


def _pool_size_rule(pool: nn.Module) -> bool | None:
    """True if the pool's output is ceil(n/2) on both axes for every probed size, False if it is
    floor(n/2), None otherwise (or if it returns indices, which a wavelet pool has no use for)."""
    if getattr(pool, "return_indices", False):
        return None
    rules = set()
    for n in _PROBE_SIZES:
        try:
            out = pool(torch.empty(1, 1, n, n + 1, device="meta"))
        except RuntimeError:  # the window does not fit this size: nothing to compare
            continue
        sizes = list(zip(out.shape[-2:], (n, n + 1)))
        if all(o == (s + 1) // 2 for o, s in sizes):
            rules.add(True)
        elif all(o == s // 2 for o, s in sizes):
            rules.add(False)
        else:
            return None
    return rules.pop() if len(rules) == 1 else None


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks)


def _wavelet_conv(conv: nn.Conv2d, wave: str, mode: str, pool: str, backend: str):
    # Built on the meta device (no allocation, no init), then given conv's own parameters.
    new = WaveletConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
        device="meta",
        dtype=conv.weight.dtype,
        wave=wave,
        mode=mode,
        pool=pool,
        backend=backend,
    )
    new.weight = conv.weight
    new.bias = conv.bias
    if new.band_weight is not None:
        w = conv.weight
        new.band_weight = nn.Parameter(torch.full_like(new.band_weight, 0.25, device=w.device))
    return new


def _replacement(m: nn.Module, targets, wave: str, mode: str, pool: str, backend: str):
    """The module that replaces m, or None (not a target); warns about targets it leaves."""
    if type(m) is nn.Conv2d and "conv_stride2" in targets and m.stride == (2, 2):
        if _has_hooks(m):
            warnings.warn(f"convert: leaving {m} alone: it has hooks (spectral_norm, say)")
            return None
        return _wavelet_conv(m, wave, mode, pool, backend)
    kind = next((k for k, t in _POOL_TYPES.items() if type(m) is t and k in targets), None)
    if kind is None or m.stride not in (2, (2, 2)):
        return None
    rule = None if _has_hooks(m) else _pool_size_rule(m)  # (the probe would run the hooks)
    if rule is None:
        warnings.warn(
            f"convert: leaving {m} alone: its output size is neither ceil(n/2) nor floor(n/2) "
            "for every input size n, it returns indices, or it has hooks"
        )
        return None
    if pool == "learned":
        raise ValueError(
            f"convert: pool='learned' cannot replace {m}: a pooling layer does not know its "
            "channel count; use pool='all' or 'll', or targets=('conv_stride2',)"
        )
    return WaveletAvgPool2d(wave, mode, pool, ceil_mode=rule, backend=backend)


def convert(
    model: nn.Module,
    wave="haar",
    targets=TARGETS,
    *,
    mode: str = "periodization",
    pool: str = "all",
    backend: str = "auto",
) -> tuple[nn.Module, list[Replacement]]:
    """Swap a model's stride-2 convolutions and pooling layers for wavelet ones, in place.

    * ``"conv_stride2"``: every ``nn.Conv2d`` (exactly that class: subclasses may change forward)
      with stride (2, 2) becomes a ``WaveletConv2d`` that holds the same Parameter objects (so an
      optimizer built before keeps training them) and gives the same output shape. With
      ``pool="learned"`` the band weights are new Parameters (1/4 each): build the optimizer
      after ``convert`` (or add them to it) for them to be trained.
    * ``"avgpool"`` / ``"maxpool"``: every ``nn.AvgPool2d`` / ``nn.MaxPool2d`` with stride 2 whose
      output size is ceil(n/2) (e.g. kernel 3 padding 1, ResNet's stem; kernel 2 with ceil_mode)
      or floor(n/2) (kernel 2, the default) for every input size becomes a ``WaveletAvgPool2d``
      with that size rule (``ceil_mode``). Pools of any other size rule (kernel 3 without padding,
      say), pools that return indices, modules with hooks and other strides are left alone with a
      warning; adaptive pools are never touched.

    Parameters
    ----------
    model : nn.Module
        Modified in place (a root that is itself a target is returned replaced).
    wave, mode : wavelet and boundary mode of the pooling.
    targets : iterable of {"conv_stride2", "avgpool", "maxpool"}
    pool : {"all", "ll", "learned"}
        Bands of the pooling ("learned" only for convolutions: they know their channel count).
    backend : str

    Returns
    -------
    (model, replacements) : the model and a list of ``Replacement(name, old type, new type)``.
    """
    wave, mode = _wave_and_mode(wave, mode)
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    bad = [t for t in targets if t not in TARGETS]
    if bad:
        raise ValueError(f"targets {bad} not supported; allowed: {', '.join(TARGETS)}")
    if pool not in BANDS + ("learned",):
        raise ValueError(f"pool={pool!r} is not supported; allowed: all, ll, learned")
    backend = _check_backend(backend)
    args = (targets, wave, mode, pool, backend)
    done: list[Replacement] = []
    memo: dict[int, nn.Module | None] = {}  # a module shared by two parents is replaced once

    def swap(m: nn.Module, name: str) -> nn.Module | None:
        if id(m) not in memo:
            new = _replacement(m, *args)
            if new is not None:
                new.train(m.training)
                done.append(Replacement(name, type(m), type(new)))
            memo[id(m)] = new
        return memo[id(m)]

    root = swap(model, "")
    if root is not None:
        return root, done
    # Every replacement is built first and set only when all have been: an error (pool="learned"
    # for a pooling layer, say) leaves the model as it was.
    todo = []
    for parent_name, parent in list(model.named_modules()):
        # _modules, not named_children(): that skips a second occurrence of a shared module.
        for child_name, child in list(parent._modules.items()):
            if child is None:
                continue
            new = swap(child, f"{parent_name}.{child_name}" if parent_name else child_name)
            if new is not None:
                todo.append((parent, child_name, new))
    for parent, child_name, new in todo:
        setattr(parent, child_name, new)
    return model, done
