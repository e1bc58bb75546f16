"""``HFPenalty``: the wavelet high-frequency penalty of chosen activations, collected by hooks."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from wavefuse.filters import wavelet_name
from wavefuse.functional import hf_penalty
from wavefuse.nn.dwt import _check_backend
from wavefuse.ops._common import check_mode


def _unwrap(model: nn.Module) -> nn.Module:
    """The module whose names the user means: DDP and torch.compile wrappers add a prefix."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod  # torch.compile's OptimizedModule
        else:
            return model


def _select(model: nn.Module, layers) -> list[tuple[str, nn.Module]]:
    """Modules named in ``layers`` (names, module types, or module objects), in model order."""
    if isinstance(layers, (str, type, nn.Module)):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ValueError("layers must name at least one module")
    modules = dict(model.named_modules())
    for spec in layers:
        if isinstance(spec, str) and spec not in modules:
            raise ValueError(f"layers: {spec!r} is not a module of the model (see named_modules())")
        if not isinstance(spec, (str, type, nn.Module)):
            raise TypeError(
                f"layers entries must be module names, module types or modules, got {spec!r}"
            )
    chosen = []
    for name, m in modules.items():
        for spec in layers:
            if (
                (isinstance(spec, str) and spec == name)
                or (isinstance(spec, type) and isinstance(m, spec))
                or (isinstance(spec, nn.Module) and spec is m)
            ):
                chosen.append((name, m))
                break
    if not chosen:
        raise ValueError(f"layers={layers!r} matches no module of the model")
    return chosen


def _no_op(*args) -> None:
    """What a penalty's hook becomes in a copy or a pickle of the model it is on."""


def _detached() -> Callable:
    return _no_op


class _Hook:
    """A hook of an ``HFPenalty`` (the pre-hook on the model when ``name`` is None, else the
    forward hook on that layer). The penalty and its terms stay with the model the penalty was
    built on: in ``copy.deepcopy(model)`` (EMA / SWA copies, ``AveragedModel``) and in a pickled
    model (``torch.save(model)``) the hook is a no-op, never a second writer of the same terms."""

    __slots__ = ("name", "penalty")

    def __init__(self, penalty: HFPenalty, name: str | None) -> None:
        self.penalty, self.name = penalty, name

    def __call__(self, module, args, output=None) -> None:
        if self.name is None:
            self.penalty._start()
        else:
            self.penalty._add(self.name, output)

    def __deepcopy__(self, memo) -> Callable:
        return _no_op

    def __reduce__(self):
        return _detached, ()


class HFPenalty:
    """Forward hooks that compute ``hf_penalty`` of chosen activations; add ``.value()`` to the loss.

    ::

        pen = HFPenalty(model, layers=["block1", "block2"], wave="haar", level=1, weight=0.1)
        loss = F.cross_entropy(model(x), y) + pen.value()

    ``.value()`` is ``weight * sum_l hf_penalty(a_l, wave, level, mode, p, band_weights,
    reduction)`` over the hooked activations a_l of the latest forward pass of ``model`` (a hook on
    the model clears the terms when a pass starts; ``.reset()`` clears them by hand). Each term
    is the fused op's 0-d result, whose autograd node keeps only its activation (which the model's
    own graph keeps anyway) until backward; nothing else is stored. Hooks run inside a
    torch.compile'd model (compile after building the penalty: dynamo does not notice hooks added
    to a compiled model, and ``.value()`` then warns that it saw none) and under
    DistributedDataParallel
    (pass the wrapped or the inner model: names are the inner model's). ``.remove()`` removes the
    hooks; as a context manager the penalty removes them on exit. ``enabled = False`` skips the
    computation (during an attack's forward passes, say). A copy of the model
    (``copy.deepcopy``, ``torch.optim.swa_utils.AveragedModel``) or a pickled one
    (``torch.save(model)``) carries no penalty: the hooks there do nothing (build another
    HFPenalty on the copy if it needs one), and the original's terms stay its own.

    Parameters
    ----------
    model : nn.Module
    layers : str, type, nn.Module or an iterable of them
        Module names (``model.named_modules()``), module types (every instance), or modules;
        their outputs must be (N, C, H, W) tensors.
    wave, level, mode, p, band_weights, reduction
        As ``wavefuse.hf_penalty`` (``band_weights`` is its ``weights``); reduction "mean" or
        "sum".
    weight : float
        The factor lambda of the penalty in the loss.
    backend : str
        auto, reference, cpu, cuda, triton (as ``hf_penalty``'s).
    """

    def __init__(
        self,
        model: nn.Module,
        layers,
        wave="haar",
        level: int | None = 1,
        p: int = 2,
        weight: float = 1.0,
        *,
        mode: str = "periodization",
        band_weights=None,
        reduction: str = "mean",
        backend: str = "auto",
    ):
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction={reduction!r} is not supported; allowed: mean, sum")
        wave, mode = wavelet_name(wave, "wave"), check_mode(mode)
        self.wave, self.level, self.p, self.weight = wave, level, p, float(weight)
        self.mode, self.band_weights, self.reduction = mode, band_weights, reduction
        self.backend = _check_backend(backend)
        self.enabled = True
        self.terms: list[Tensor] = []
        base = _unwrap(model)
        self.layers = [name for name, _ in _select(base, layers)]
        self._handles = [base.register_forward_pre_hook(_Hook(self, None))]
        for name, m in _select(base, self.layers):
            self._handles.append(m.register_forward_hook(_Hook(self, name)))

    def _start(self) -> None:
        self.terms.clear()

    def _add(self, name: str, output) -> None:
        if not self.enabled:
            return
        if not isinstance(output, Tensor) or output.dim() != 4:
            raise ValueError(
                f"HFPenalty: the output of layer {name!r} is not an (N, C, H, W) tensor"
            )
        self.terms.append(
            hf_penalty(
                output,
                self.wave,
                self.level,
                self.mode,
                self.p,
                self.band_weights,
                self.reduction,
                backend=self.backend,
            )
        )

    def value(self) -> Tensor:
        """``weight`` times the sum of the penalties of the latest forward pass (0-d)."""
        if not self.terms:
            if self.enabled and not torch.compiler.is_compiling():
                warnings.warn(
                    "HFPenalty.value(): no hooked activation since the last forward pass started; "
                    "the penalty is 0. (A model compiled before the HFPenalty was built does not "
                    "run its hooks: build the penalty first, or call torch._dynamo.reset().)"
                )
            return torch.zeros(())
        total = self.terms[0]
        for t in self.terms[1:]:
            total = total + t
        return total * self.weight

    def reset(self) -> None:
        self.terms.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.terms.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        return (
            f"HFPenalty(layers={self.layers}, wave={self.wave!r}, level={self.level}, "
            f"p={self.p}, weight={self.weight}, mode={self.mode!r})"
        )
