"""Adversarial attacks for training and evaluation: PGD (L-inf, L2; CE, CW and TRADES losses,
optionally band-limited by a wavelet filter of the gradient) and FGSM with a random start.

Called like torchattacks: ``adv = PGD(model, eps=8/255)(images, labels)``. Float32 results are
bit-identical to ``torchattacks.PGD`` / ``PGDL2`` / ``FFGSM`` 3.5.1 under the same seed (the same
random-number draws in the same order, the same loss, the step by ``wavefuse.pgd_step``, which is
torchattacks' update op for op; a compiled L2 kernel sums the norms in its own order and may differ
from torch in the last bits, ``backend="reference"`` does not).

What differs from torchattacks, on purpose:

- The step loop never syncs with the host: no ``.item()``, no branch on a tensor value. Inputs are
  validated once per call, before the loop (the range check reads the images on CPU only, unless
  ``check_range=True``).
- The gradient is taken with ``torch.autograd.grad`` with respect to the input alone, so no weight
  gradient is computed and no parameter's ``.grad`` or ``requires_grad`` is touched.
- The update is in place (``wavefuse.pgd_step`` / ``wavelet_pgd_step``): one fused kernel a step.
- Each module's training flag is restored exactly after the attack (torchattacks calls
  ``model.train()`` on a model that was training, and leaves a model that was in eval() in train
  mode after ``set_model_training_mode(model_training=True)``).
- ``autocast=`` runs the forward and the loss in bfloat16/float16; ``cuda_graph=True`` captures the
  loop once per input shape and replays it.
- The attack also works when called under ``torch.no_grad()`` (an evaluation loop).
- torchattacks' targeted modes (``set_mode_targeted_*``) and ``set_normalization_used`` are here,
  without the messages torchattacks prints (``quiet`` is accepted and changes nothing); the
  model forward that the random and least-likely modes take runs with every module in eval()
  and restores each flag after (torchattacks' ``model.train()`` after it puts the BatchNorm and
  Dropout layers that ``set_model_training_mode`` kept in eval() back in training mode).
- Of torchattacks' ``Attack`` methods, ``get_logits`` (a subclass may override it: every forward
  of the attack goes through it), ``set_model``, ``set_device``, ``normalize``,
  ``inverse_normalize``, ``get_target_label`` and ``device`` are here; the dataset helpers
  (``save``, ``load``, ``to_type``, ``set_return_type``) are not. Tensors are never moved: the
  images, labels and model must be on one device (``set_device`` only checks that).
- Labels are int64 class indices (uint8 ones are taken as int64); soft (N, K) labels are not.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import numbers
import warnings
from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wavefuse.filters import wavelet_name
from wavefuse.functional import _cascade_args, _check_hf_scale, pgd_step, wavelet_pgd_step
from wavefuse.ops._common import check_mode, check_tensor4d

__all__ = ["FGSM_RS", "PGD"]

NORMS = ("Linf", "L2")
LOSSES = ("ce", "cw", "trades")
AUTOCAST_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}
#: The keyword arguments of ``wavelet_pgd_step`` that ``wavelet=`` may set, with their defaults
#: here: one Haar level, periodization, detail bands dropped (a low-pass, band-limited step).
WAVELET_DEFAULTS = {"wave": "haar", "level": 1, "mode": "periodization", "hf_scale": 0.0}
#: TRADES' random start (Zhang et al. 2019, github.com/yaodongyu/TRADES, trades.py):
#: ``x_adv = x + 0.001 * randn``.
TRADES_START_STD = 0.001
#: Default CW confidence: the ``cwloss(output, target, confidence=50)`` of the CW-Linf evaluation
#: codes (MART, TRADES-style robustness evaluations).
CW_KAPPA = 50.0
#: Step iterations run on a side stream before a CUDA graph is captured (the PyTorch docs' three).
CUDA_GRAPH_WARMUP_STEPS = 3
#: The most captured step loops an attack keeps (each holds its own memory pool); the least
#: recently used goes first. Settings (eps, alpha, steps, ...), shapes and model modes each key one.
CUDA_GRAPH_CACHE_SIZE = 4
#: What the range check allows outside [lo, hi] after ``set_normalization_used``, for the rounding
#: of ``((x - mean) / std) * std + mean``: this, or 4 ulps of the images' dtype if more (float16),
#: times the larger finite bound's magnitude (at least 1).
NORMALIZATION_RANGE_SLACK = 1e-5
#: torchattacks' attack modes (``atk.get_mode()``): untargeted, then the targeted ones by where the
#: target labels come from.
ATTACK_MODES = (
    "default",
    "targeted(custom)",
    "targeted(random)",
    "targeted(least-likely)",
    "targeted(label)",
)


class _Config(NamedTuple):
    """The validated attack settings (hashable: part of a CUDA graph's cache key)."""

    eps: float
    alpha: float
    steps: int
    random_start: bool
    norm: str
    loss: str
    kappa: float
    wavelet: tuple | None  # (wave, level, mode, hf_scale) as given (level resolved per call)
    autocast: torch.dtype | None
    cuda_graph: bool
    lo: float
    hi: float
    check_range: bool | None
    backend: str
    targeted: bool
    normalization: tuple | None  # (mean, std) as tuples of floats, or None


# ---- validation (Python values only: no tensor is read) ------------------------------------------


def _real(value, name: str, allowed: str, ok) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number ({allowed}), got {type(value).__name__}")
    value = float(value)
    if not ok(value):
        raise ValueError(f"{name}={value!r} is not allowed; allowed: {allowed}")
    return value


def _flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _check_autocast(autocast) -> torch.dtype | None:
    allowed = 'None, "bf16", "fp16", torch.bfloat16 or torch.float16'
    if autocast is None:
        return None
    if isinstance(autocast, str) and autocast in AUTOCAST_DTYPES:
        return AUTOCAST_DTYPES[autocast]
    if autocast in (torch.bfloat16, torch.float16):
        return autocast
    raise ValueError(f"autocast={autocast!r} is not supported; allowed: {allowed}")


def _check_wavelet(wavelet) -> tuple | None:
    """None, a wavelet name (or pywt.Wavelet), or a dict of wavelet_pgd_step's keyword arguments
    -> None or (wave, level, mode, hf_scale) with the defaults filled in."""
    if wavelet is None:
        return None
    if isinstance(wavelet, dict):
        unknown = sorted(set(map(str, wavelet)) - set(WAVELET_DEFAULTS))
        if unknown:
            raise ValueError(
                f"wavelet has unknown keys {unknown}; allowed keys: {', '.join(WAVELET_DEFAULTS)}"
            )
        kw = {**WAVELET_DEFAULTS, **wavelet}
    elif isinstance(wavelet, str) or hasattr(wavelet, "filter_bank"):
        kw = {**WAVELET_DEFAULTS, "wave": wavelet}
    else:
        raise TypeError(
            "wavelet must be None, a wavelet name (str) or a dict with keys "
            f"{', '.join(WAVELET_DEFAULTS)}; got {type(wavelet).__name__}"
        )
    hf = kw["hf_scale"]
    hf = tuple(hf) if isinstance(hf, (list, tuple)) else hf
    level = kw["level"]
    if level is not None and (isinstance(level, bool) or not isinstance(level, numbers.Integral)):
        raise TypeError(f"wavelet['level'] must be an int or None, got {type(level).__name__}")
    return (wavelet_name(kw["wave"], "wavelet['wave']"), level, check_mode(kw["mode"]), hf)


def _module_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in model.modules()]


# ---- the attack ----------------------------------------------------------------------------------


class PGD:
    r"""Projected gradient descent (Madry et al. 2018), torchattacks-compatible, with the CE, CW and
    TRADES losses and an optional wavelet-filtered (band-limited) step.

    ``adv = atk(images, labels)``: from a random start (or the clean images), ``steps`` times
    ``g = d loss(model(x_adv), labels) / d x_adv`` (the input gradient only) and one in-place step
    ``wavefuse.pgd_step(x_adv, g, images, eps, alpha, norm, lo, hi)``: L-inf ``x_adv + alpha *
    sign(g)`` projected onto the eps-box; L2 ``x_adv + alpha * g / (||g||_2 + 1e-10)`` projected
    onto the eps-ball, per sample; then clamped to [lo, hi]. With ``wavelet=`` the step is
    ``wavefuse.wavelet_pgd_step`` (g's wavelet detail bands scaled before the step).

    Losses (all maximised):

    - ``"ce"``: ``F.cross_entropy(logits, labels)`` (mean over the batch, as torchattacks).
    - ``"cw"``: the CW margin, summed over the batch: ``sum_i min(max_{j != y_i} z_ij - z_i,y_i,
      kappa)`` (``= -max(z_y - max_{j != y} z_j, -kappa)``, Carlini & Wagner's f6 with confidence
      kappa, negated), which is the ``cwloss(output, target, confidence=kappa)`` of the CW-Linf
      evaluation codes up to the constant ``N * kappa``: the same gradient. Once a sample is
      misclassified by a margin kappa its gradient is zero and it stops moving.
    - ``"trades"``: TRADES' inner maximisation, ``KLDivLoss(reduction="sum")(log_softmax(model(
      x_adv)), softmax(model(x_nat)))`` = ``sum_i KL(p_nat,i || p_adv,i)`` (the KL divergence of
      the adversarial prediction from the clean one), as TRADES' ``trades_loss``. The clean
      probabilities are computed once per call, under ``torch.no_grad()`` (TRADES recomputes
      them every step: the same values unless dropout is active during the attack). The start is
      TRADES' ``x_nat + 0.001 * randn`` (``torch.randn_like``; for either norm; not clamped to
      [lo, hi] nor projected, as in TRADES: the first step does both). With ``random_start=False``
      the attack starts at x_nat, where the KL gradient is zero up to rounding (~1e-9): its sign,
      an arbitrary direction, still drives full L-inf steps. Keep the random start.

    Targeted modes (torchattacks' ``set_mode_targeted_by_function``, ``_random``,
    ``_least_likely``, ``_by_label``; ``set_mode_default`` goes back) move the prediction
    towards target labels t instead: ``"ce"`` maximises ``-F.cross_entropy(logits, t)`` (as
    torchattacks), ``"cw"`` maximises ``sum_i min(z_i,t_i - max_{j != t_i} z_ij, kappa)`` (a
    sample stops once its target wins by kappa); ``"trades"`` has no target and refuses them. The
    target labels are computed once per call, before the random start, as torchattacks does.

    Parameters
    ----------
    model : nn.Module
        Maps (N, C, H, W) images in [lo, hi] to (N, K) logits (K >= 2); after
        ``set_normalization_used``, maps ``(x - mean) / std`` of such images.
    eps : float
        Radius of the L-inf box or the L2 ball, >= 0 (0: the clean images, e.g. an eps warm-up's
        first epoch).
    alpha : float
        Step size, >= 0.
    steps : int
        Number of steps, >= 0 (0: the start itself).
    random_start : bool
        L-inf: ``x + U(-eps, eps)`` (torchattacks.PGD); L2: a Gaussian direction scaled to
        ``r * eps``, ``r ~ U(0, 1)`` per sample (torchattacks.PGDL2); TRADES: ``x + 0.001 * randn``.
        Clamped to [lo, hi] (not for TRADES). Drawn from torch's global generator with the same
        calls as torchattacks, so a seed gives the same start.
    norm : {"Linf", "L2"}
    loss : {"ce", "cw", "trades"}
    wavelet : None, str or dict
        None: the plain step. A wavelet name (or ``pywt.Wavelet``): ``wavelet_pgd_step`` with that
        wavelet, ``level=1, mode="periodization", hf_scale=0.0`` (only the approximation band of the
        gradient is kept: a low-frequency attack). A dict: any of ``wavelet_pgd_step``'s keyword
        arguments ``wave, level, mode, hf_scale`` (the rest as above), e.g. ``{"wave": "db2",
        "level": 2, "hf_scale": [0.5, 0.0]}``.
    autocast : None, "bf16", "fp16", torch.bfloat16 or torch.float16
        Run the model's forward and the loss under ``torch.autocast(images.device.type, dtype)``
        (the loss on the logits cast to float32). The input gradient is cast to the images' dtype
        before the step; the result has the images' dtype. None: no autocast of ours (an
        enclosing autocast still applies).
    cuda_graph : bool
        Capture the whole step loop (forward, input gradient, step) into a ``torch.cuda.CUDAGraph``
        once per input shape, dtype and memory layout, and replay it (the random start stays
        outside the graph). The first call per shape runs 3 warm-up steps on a side stream, then
        the capture (with BatchNorm in training mode during the attack, these update its running
        statistics too, and dropout draws advance the CUDA generator, so a seeded run's later
        draws differ from an eager run's). CUDA tensors only. The graph holds the model's
        parameter tensors: an in-place update (``optimizer.step()``, ``load_state_dict``) is
        seen; a replaced tensor, changed settings (eps included: a schedule that changes eps
        every call captures every call), an enclosing autocast turned on or off, or another
        model mode make the attack capture again. At most ``CUDA_GRAPH_CACHE_SIZE`` (4) graphs
        are kept, the least recently used dropped first; ``clear_cuda_graphs()`` frees them all.
        An enclosing autocast runs in the graph with its weight-cast cache off.
    lo, hi : float
        The valid input range, lo < hi (+-inf for none): the start and every step are clamped to
        it, and the images must lie in it.

    Other Parameters
    ----------------
    kappa : float
        The CW confidence, >= 0 (``float("inf")``: the plain margin); used by ``loss="cw"``.
    check_range : bool or None
        Check that the images lie in [lo, hi], once per call before the loop. None (default): on
        CPU tensors only (on a GPU it would cost one host sync a call); True: on every device;
        False: never.
    backend : str
        The step ops' backend: "auto", "reference", "cpu", "cuda" or "triton".

    Notes
    -----
    ``atk(images, labels)`` sets the model's mode for the attack (eval() by default, see
    ``set_model_training_mode``) and restores every module's training flag afterwards, also on
    error; ``atk.forward(images, labels)`` is the attack alone, in the model's current mode (as
    torchattacks). Neither modifies images or labels. The loop does not sync with the host.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 2 / 255,
        steps: int = 10,
        random_start: bool = True,
        norm: str = "Linf",
        loss: str = "ce",
        wavelet: str | dict | None = None,
        autocast: str | torch.dtype | None = None,
        cuda_graph: bool = False,
        lo: float = 0.0,
        hi: float = 1.0,
        *,
        kappa: float = CW_KAPPA,
        check_range: bool | None = None,
        backend: str = "auto",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.eps, self.alpha, self.steps = eps, alpha, steps
        self.random_start, self.norm, self.loss = random_start, norm, loss
        self.wavelet, self.autocast, self.cuda_graph = wavelet, autocast, cuda_graph
        self.lo, self.hi, self.kappa = lo, hi, kappa
        self.check_range, self.backend = check_range, backend
        self._model_training = False
        self._batchnorm_training = False
        self._dropout_training = False
        self.attack_mode = "default"
        self._target_map_function = None
        self._kth_min = 1
        self._normalization: tuple | None = None
        self._normalizing = False
        # Kept for the attack's life (not cleared with the graphs): a captured graph reads them.
        self._normalization_tensors: dict[tuple, tuple[Tensor, Tensor]] = {}
        self._graphs: dict[tuple, tuple[tuple, _GraphedSteps]] = {}
        self._config()  # fail at construction, not at the first call

    # ---- settings --------------------------------------------------------------------------------

    def _config(self) -> _Config:
        """The attributes, validated (again at each call: torchattacks users set ``atk.eps``)."""
        lo = _real(self.lo, "lo", "a float, not NaN", lambda v: not math.isnan(v))
        hi = _real(self.hi, "hi", "a float, not NaN", lambda v: not math.isnan(v))
        if not lo < hi:
            raise ValueError(f"lo={lo!r} >= hi={hi!r}: the input range must satisfy lo < hi")
        if isinstance(self.steps, bool) or not isinstance(self.steps, numbers.Integral):
            raise TypeError(f"steps must be an int >= 0, got {type(self.steps).__name__}")
        if self.steps < 0:
            raise ValueError(f"steps={self.steps!r} is not allowed; allowed: an int >= 0")
        if not isinstance(self.norm, str) or self.norm not in NORMS:
            raise ValueError(f"norm={self.norm!r} is not supported; allowed: {', '.join(NORMS)}")
        if not isinstance(self.loss, str) or self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r} is not supported; allowed: {', '.join(LOSSES)}")
        if self.check_range not in (None, True, False):
            raise TypeError(f"check_range must be None, True or False, got {self.check_range!r}")
        if not isinstance(self.backend, str):
            raise TypeError(f"backend must be a str, got {type(self.backend).__name__}")
        if self.attack_mode not in ATTACK_MODES:
            raise ValueError(
                f"attack_mode={self.attack_mode!r} is not a mode; allowed: "
                f"{', '.join(ATTACK_MODES)} (set it with set_mode_default / set_mode_targeted_*)"
            )
        targeted = self.attack_mode != "default"
        if self.attack_mode == "targeted(custom)" and not callable(self._target_map_function):
            raise ValueError(
                "attack_mode='targeted(custom)' needs a target function: call "
                "set_mode_targeted_by_function(f)"
            )
        if targeted and self.loss == "trades":
            raise ValueError(
                f"loss='trades' has no target labels (it moves away from the clean prediction), "
                f"but the attack mode is {self.attack_mode!r}: call set_mode_default(), or use "
                "loss='ce' or 'cw' for a targeted attack"
            )
        finite = "a finite float >= 0"
        return _Config(
            eps=_real(self.eps, "eps", finite, lambda v: 0 <= v < math.inf),
            alpha=_real(self.alpha, "alpha", finite, lambda v: 0 <= v < math.inf),
            steps=int(self.steps),
            random_start=_flag(self.random_start, "random_start"),
            norm=self.norm,
            loss=self.loss,
            kappa=_real(self.kappa, "kappa", "a float >= 0 (inf allowed)", lambda v: v >= 0),
            wavelet=_check_wavelet(self.wavelet),
            autocast=_check_autocast(self.autocast),
            cuda_graph=_flag(self.cuda_graph, "cuda_graph"),
            lo=lo,
            hi=hi,
            check_range=self.check_range,
            backend=self.backend,
            targeted=targeted,
            normalization=self._normalization,
        )

    def set_model_training_mode(
        self,
        model_training: bool = False,
        batchnorm_training: bool = False,
        dropout_training: bool = False,
    ) -> None:
        """The model's mode during ``atk(...)``, with torchattacks' meaning.

        Parameters
        ----------
        model_training : bool
            False (default): ``model.eval()`` for the attack. True: ``model.train()``, then every
            module whose class name contains "BatchNorm" (unless ``batchnorm_training``) or
            "Dropout" (unless ``dropout_training``) back to eval().
        batchnorm_training, dropout_training : bool
            Keep BatchNorm / Dropout layers in training mode (only with ``model_training=True``).
        """
        self._model_training = _flag(model_training, "model_training")
        self._batchnorm_training = _flag(batchnorm_training, "batchnorm_training")
        self._dropout_training = _flag(dropout_training, "dropout_training")

    # torchattacks' targeted modes: same names, same meaning, nothing printed.

    @property
    def targeted(self) -> bool:
        """Whether the attack mode is a targeted one (torchattacks' ``atk.targeted``)."""
        return self.attack_mode != "default"

    def get_mode(self) -> str:
        """The attack mode: one of ``ATTACK_MODES``."""
        return self.attack_mode

    def set_mode_default(self) -> None:
        """Untargeted: maximise the loss at the true labels."""
        self.attack_mode, self._target_map_function = "default", None

    def set_mode_targeted_by_function(self, target_map_function, quiet: bool = False) -> None:
        """Targeted, with ``target_map_function(images, labels) -> target labels`` ((N,) int64 on
        the images' device), called once per attack call, e.g. ``lambda x, y: (y + 1) % 10``.
        ``quiet`` is torchattacks' (it silences a message this library does not print)."""
        if not callable(target_map_function):
            raise TypeError(
                "target_map_function must be callable as f(images, labels) -> target labels, "
                f"got {type(target_map_function).__name__}"
            )
        self.attack_mode, self._target_map_function = "targeted(custom)", target_map_function

    def set_mode_targeted_random(self, quiet: bool = False) -> None:
        """Targeted, each target drawn uniformly from the classes other than the label, with
        torchattacks' draws (``torch.rand`` on the CPU generator, one per image in order: a seed
        gives torchattacks' targets)."""
        self.attack_mode, self._target_map_function = "targeted(random)", None

    def set_mode_targeted_least_likely(self, kth_min: int = 1, quiet: bool = False) -> None:
        """Targeted, the target being the class other than the label with the ``kth_min``-th
        smallest logit of the clean images (1: the least likely), 1 <= kth_min < classes."""
        if isinstance(kth_min, bool) or not isinstance(kth_min, numbers.Integral):
            raise TypeError(f"kth_min must be an int >= 1, got {type(kth_min).__name__}")
        if kth_min < 1:
            raise ValueError(f"kth_min={kth_min!r} is not allowed; allowed: an int >= 1")
        self.attack_mode, self._target_map_function = "targeted(least-likely)", None
        self._kth_min = int(kth_min)

    def set_mode_targeted_by_label(self, quiet: bool = False) -> None:
        """Targeted, the ``labels`` passed to ``atk(images, labels)`` being the target labels."""
        self.attack_mode, self._target_map_function = "targeted(label)", None

    def set_normalization_used(self, mean, std) -> None:
        """The model takes normalised images ``(x - mean) / std``, per channel, with x in
        [lo, hi]: torchattacks 3.5's ``set_normalization_used``, the same ops (mean and std in
        the images' dtype, where torchattacks has float32 ones: float32 results are bitwise
        torchattacks', half-precision results keep their dtype). ``atk(images, labels)`` then
        takes normalised images, attacks ``x = images * std + mean`` (eps, alpha, lo and hi in
        that pixel space; the range check allows ``NORMALIZATION_RANGE_SLACK`` of rounding),
        feeds the model ``(x_adv - mean) / std`` and returns the normalised adversarial images
        ``(x_adv - mean) / std``. ``atk.forward`` is the attack in the model's own input space,
        with no normalisation (as torchattacks).

        Parameters
        ----------
        mean, std : sequences of floats (or 1-D tensors)
            One value per channel (the images' C), std > 0. ``None, None`` switches it off.
        """
        if mean is None and std is None:
            self._normalization = None
            return
        values = []
        for name, v in (("mean", mean), ("std", std)):
            if isinstance(v, Tensor) and v.dim() == 1:
                v = v.detach().cpu().tolist()
            elif hasattr(v, "ndim") and getattr(v, "ndim", None) == 1 and hasattr(v, "tolist"):
                v = v.tolist()  # a 1-D NumPy array
            if not isinstance(v, (list, tuple)) or len(v) == 0:
                raise TypeError(
                    f"{name} must be a non-empty list, tuple or 1-D tensor of floats, one per "
                    f"channel; got {type(v).__name__}"
                )
            values.append(
                tuple(
                    _real(x, f"{name}[{i}]", "a finite float", math.isfinite)
                    for i, x in enumerate(v)
                )
            )
        mean_t, std_t = values
        if len(mean_t) != len(std_t):
            raise ValueError(
                f"mean has {len(mean_t)} values, std {len(std_t)}: one per channel each"
            )
        if not all(s > 0 for s in std_t):
            raise ValueError(f"std={std_t!r} is not allowed; allowed: values > 0")
        self._normalization = (mean_t, std_t)

    def normalize(self, inputs: Tensor) -> Tensor:
        """``(inputs - mean) / std`` with ``set_normalization_used``'s values (else inputs)."""
        if self._normalization is None:
            return inputs
        mean, std = self._normalizer(self._normalization, inputs)
        return (inputs - mean) / std

    def inverse_normalize(self, inputs: Tensor) -> Tensor:
        """``inputs * std + mean`` with ``set_normalization_used``'s values (else inputs)."""
        if self._normalization is None:
            return inputs
        mean, std = self._normalizer(self._normalization, inputs)
        return inputs * std + mean

    def set_model(self, model: nn.Module) -> None:
        """Attack another model (torchattacks' ``set_model``); captured CUDA graphs are freed."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.clear_cuda_graphs()

    @property
    def device(self) -> torch.device:
        """The device of the model's first parameter or buffer (cpu for a model with none)."""
        for t in itertools.chain(self.model.parameters(), self.model.buffers()):
            return t.device
        return torch.device("cpu")

    def set_device(self, device) -> None:
        """torchattacks moves the inputs to this device; wavefuse moves nothing (no hidden
        copies in a training loop), so this only checks that the model is there."""
        device = torch.device(device)
        here = self.device
        if here.type != device.type or (device.index is not None and here.index != device.index):
            raise ValueError(
                f"set_device({str(device)!r}): the model is on {here}; wavefuse's attacks move "
                "no tensor: move the model (and pass images and labels) there yourself"
            )

    def get_target_label(self, inputs: Tensor, labels: Tensor | None = None) -> Tensor:
        """The target labels of the current targeted mode for ``inputs`` (torchattacks'
        ``get_target_label``; images in the attack's space, int64 labels)."""
        if self.attack_mode == "default":
            raise ValueError(
                "get_target_label: the attack mode is 'default' (untargeted); set one with "
                "set_mode_targeted_*"
            )
        cfg = self._config()
        if labels is None:
            raise ValueError("get_target_label needs the labels (as torchattacks' PGD does)")
        return self._target_labels(cfg, inputs.detach(), labels)

    @contextlib.contextmanager
    def _attack_mode(self) -> Iterator[None]:
        """torchattacks' ``_change_model_mode``; every module's flag restored on exit."""
        saved = _module_modes(self.model)
        try:
            if self._model_training:
                self.model.train()
                for m in self.model.modules():
                    name = type(m).__name__
                    if not self._batchnorm_training and "BatchNorm" in name:
                        m.eval()
                    if not self._dropout_training and "Dropout" in name:
                        m.eval()
            else:
                self.model.eval()
            yield
        finally:
            for m, training in saved:
                m.training = training

    def clear_cuda_graphs(self) -> None:
        """Drop the captured CUDA graphs (and the memory their pools hold)."""
        self._graphs.clear()

    def __repr__(self) -> str:
        names = ("eps", "alpha", "steps", "random_start", "norm", "loss", "lo", "hi")
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in names)
        extra = "".join(
            f", {k}={getattr(self, k)!r}"
            for k in ("wavelet", "autocast")
            if getattr(self, k) is not None
        )
        if self.attack_mode != "default":
            extra += f", attack_mode={self.attack_mode!r}"
            if self.attack_mode == "targeted(least-likely)":
                extra += f", kth_min={self._kth_min}"
        if self._normalization is not None:
            extra += f", normalization={self._normalization!r}"
        return f"{type(self).__name__}({args}{extra}, cuda_graph={self.cuda_graph!r})"

    # ---- the call --------------------------------------------------------------------------------

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        """The attack in the attack's model mode (see ``set_model_training_mode``).

        Parameters
        ----------
        images : Tensor
            (N, C, H, W) floating point, in [lo, hi] (normalised after
            ``set_normalization_used``), on the model's device.
        labels : Tensor
            (N,) int64 class indices, on the same device (the target labels in the
            ``"targeted(label)"`` mode).

        Returns
        -------
        Tensor
            (N, C, H, W) adversarial images (normalised after ``set_normalization_used``), the
            images' dtype, not requiring grad.
        """
        with self._attack_mode():
            cfg = self._config()
            if cfg.normalization is None:
                return self.forward(images, labels)
            check_tensor4d(images, "images")
            mean, std = self._normalizer(cfg.normalization, images)
            with torch.no_grad():
                pixels = images.detach() * std + mean  # torchattacks' inverse_normalize
            self._normalizing = True  # torchattacks' _normalization_applied = False
            try:
                adv = self.forward(pixels, labels)
            finally:
                self._normalizing = False
            with torch.no_grad():
                return (adv - mean) / std

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        """The attack in the model's current mode (``__call__`` sets the mode around it), in the
        model's own input space: called directly, no ``set_normalization_used`` normalisation
        (as torchattacks); ``__call__`` passes it unnormalised images and normalises the model's
        input."""
        cfg = self._config()
        if not self._normalizing:
            cfg = cfg._replace(normalization=None)
        return self._attack(cfg, images, labels)

    def _attack(self, cfg: _Config, images: Tensor, labels: Tensor) -> Tensor:
        x_nat, labels, wave_kw = self._check_inputs(cfg, images, labels)
        if x_nat.shape[0] == 0:
            return x_nat.clone()  # an empty batch: nothing to attack (L2's start would not reshape)
        if cfg.targeted:  # before the start's draws, as torchattacks
            labels = self._target_labels(cfg, x_nat, labels)
        x_adv = self._start(cfg, x_nat)
        target = self._clean_probs(cfg, x_nat) if cfg.loss == "trades" else None
        if cfg.cuda_graph and cfg.steps > 0:
            return self._graphed(cfg, wave_kw, x_adv, x_nat, labels, target)
        self._run_steps(cfg, wave_kw, x_adv, x_nat, labels, target, cfg.steps)
        return x_adv

    def _check_inputs(self, cfg: _Config, images, labels) -> tuple[Tensor, Tensor, dict | None]:
        """Once per call, before the loop: shapes, dtypes, devices, range, the wavelet's level."""
        check_tensor4d(images, "images")  # a 4-D float16/bfloat16/float32/float64 tensor
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "the attack needs autograd (gradients w.r.t. the images), which "
                "torch.inference_mode() turns off: call it outside the inference_mode block "
                "(torch.no_grad() is fine)"
            )
        n = images.shape[0]
        if not isinstance(labels, Tensor):
            raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
        if labels.dtype == torch.uint8:  # cross_entropy takes them in torchattacks
            labels = labels.long()
        if labels.dtype != torch.int64:
            raise TypeError(
                f"labels has dtype {labels.dtype}; allowed: torch.int64 (long) or torch.uint8 "
                "class indices"
            )
        if labels.shape != (n,):
            raise ValueError(
                f"labels has shape {tuple(labels.shape)}; allowed: ({n},), one class index per "
                f"image (images has shape {tuple(images.shape)})"
            )
        if labels.device != images.device:
            raise ValueError(f"labels is on {labels.device}, images on {images.device}")
        for what, tensors in (
            ("parameter", self.model.named_parameters()),
            ("buffer", self.model.named_buffers()),
        ):
            for name, t in tensors:
                if t.device != images.device:
                    raise ValueError(
                        f"model {what} {name!r} is on {t.device}, images on {images.device}: "
                        "move the model or the images to one device"
                    )
        if cfg.cuda_graph and images.device.type != "cuda":
            raise ValueError(
                f"cuda_graph=True needs CUDA tensors, images are on {images.device}: "
                "pass cuda_graph=False"
            )
        on_cpu = images.device.type == "cpu"
        if cfg.check_range or (cfg.check_range is None and on_cpu):
            x = images.detach()
            slack = 0.0
            if cfg.normalization is not None:
                scale = max([1.0] + [abs(b) for b in (cfg.lo, cfg.hi) if math.isfinite(b)])
                ulps = 4 * torch.finfo(x.dtype).eps
                slack = max(NORMALIZATION_RANGE_SLACK, ulps) * scale
            inside = (x >= cfg.lo - slack) & (x <= cfg.hi + slack)
            if not bool(inside.all()):  # one host read, not in the loop
                raise ValueError(
                    f"images must lie in [lo, hi] = [{cfg.lo}, {cfg.hi}]"
                    + (" once unnormalised (images * std + mean)" if slack else "")
                    + ", got values in "
                    f"[{x.min().item()}, {x.max().item()}] (NaN counts as outside); "
                    "pass lo=, hi= for another range"
                )
        wave_kw = None
        if cfg.wavelet is not None:
            wave, level, mode, hf_scale = cfg.wavelet
            with warnings.catch_warnings():  # level 0 is an error here, not a warning
                warnings.filterwarnings("ignore", message="level=None is 0 levels")
                name, mode, level = _cascade_args(images, wave, level, mode, "images")
            if level == 0:
                raise ValueError(
                    f"wavelet: level {cfg.wavelet[1]!r} is 0 levels of {name!r} for images of "
                    f"{images.shape[-2]}x{images.shape[-1]} (pywt.dwt_max_level), so the step "
                    "would have no detail band to scale: pass level >= 1 or a shorter wavelet, "
                    "or wavelet=None for plain PGD"
                )
            scales = _check_hf_scale(hf_scale, level)
            wave_kw = {"wave": name, "level": level, "mode": mode, "hf_scale": scales}
        if cfg.normalization is not None:
            self._normalizer(cfg.normalization, images)  # checked and made before the loop
        return images.detach(), labels.detach(), wave_kw

    def _normalizer(self, normalization: tuple, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, std) as (1, C, 1, 1) tensors on x's device and dtype, made once."""
        key = (normalization, x.device, x.dtype)
        cached = self._normalization_tensors.get(key)
        if cached is None:
            mean, std = normalization
            if len(mean) != x.shape[1]:
                raise ValueError(
                    f"set_normalization_used has {len(mean)} values per channel, the images "
                    f"have {x.shape[1]} channels (shape {tuple(x.shape)})"
                )
            cached = tuple(
                torch.tensor(v, dtype=x.dtype).view(1, -1, 1, 1).to(x.device) for v in (mean, std)
            )
            self._normalization_tensors[key] = cached
        return cached

    @torch.no_grad()
    def _target_labels(self, cfg: _Config, x_nat: Tensor, labels: Tensor) -> Tensor:
        """The target labels of a targeted mode, once per call (no sync unless the user's
        function syncs; the random mode copies its CPU draws to the device)."""
        mode = self.attack_mode
        if mode == "targeted(label)":
            return labels
        if mode == "targeted(custom)":
            target = self._target_map_function(x_nat, labels)
            if not isinstance(target, Tensor) or target.dtype != torch.int64:
                raise TypeError(
                    "target_map_function must return an int64 tensor of target labels, got "
                    + (
                        f"dtype {target.dtype}"
                        if isinstance(target, Tensor)
                        else type(target).__name__
                    )
                )
            if target.shape != labels.shape or target.device != labels.device:
                raise ValueError(
                    f"target_map_function returned shape {tuple(target.shape)} on "
                    f"{target.device}; allowed: {tuple(labels.shape)} on {labels.device}"
                )
            return target.detach()
        saved = _module_modes(self.model)  # torchattacks' get_output_with_eval_nograd
        try:
            self.model.eval()
            with self._autocast(cfg, x_nat):
                logits = self._logits(cfg, x_nat)
        finally:
            for m, training in saved:
                m.training = training
        classes = logits.shape[1]
        if mode == "targeted(random)":
            # torchattacks: l = classes without the label; l[int(len(l) * torch.rand([1]))].
            draws = ((classes - 1) * torch.rand(labels.shape[0])).long().to(labels.device)
            return draws + (draws >= labels).long()
        if self._kth_min >= classes:
            raise ValueError(
                f"kth_min={self._kth_min} is not allowed for a model with {classes} classes; "
                f"allowed: 1 <= kth_min <= {classes - 1} (the classes other than the label)"
            )
        # torchattacks: kthvalue over the row without the label (the same pick among tied logits)
        n = labels.shape[0]
        j = torch.arange(classes - 1, device=labels.device).expand(n, -1)
        others = j + (j >= labels.unsqueeze(1)).long()  # the class indices other than the label
        z = logits if logits.dtype == torch.float64 else logits.float()
        pick = z.gather(1, others).kthvalue(self._kth_min, dim=1).indices
        return others.gather(1, pick.unsqueeze(1)).squeeze(1)

    def _start(self, cfg: _Config, x_nat: Tensor) -> Tensor:
        """The starting point: a new tensor (the loop updates it in place)."""
        if not cfg.random_start:
            return x_nat.clone()
        if cfg.loss == "trades":
            return x_nat + TRADES_START_STD * torch.randn_like(x_nat)
        if cfg.norm == "Linf":
            x_adv = x_nat + torch.empty_like(x_nat).uniform_(-cfg.eps, cfg.eps)
        else:  # torchattacks.PGDL2, op for op
            n = x_nat.shape[0]
            delta = torch.empty_like(x_nat).normal_()
            # reshape: a view, as torchattacks' .view, unless the images are channels_last
            norms = delta.reshape(n, -1).norm(p=2, dim=1).view(n, 1, 1, 1)
            r = torch.zeros_like(norms).uniform_(0, 1)
            delta *= r / norms * cfg.eps
            x_adv = x_nat + delta
        return torch.clamp(x_adv, min=cfg.lo, max=cfg.hi)

    def _autocast(self, cfg: _Config, x: Tensor):
        # Autocast's weight-cast cache must be off while a CUDA graph is captured (PyTorch docs):
        # the capture would find the warm-up's casts in it and record no cast, so replays would
        # read weights cast before the next optimizer.step(), or freed with the cache.
        dev = x.device.type
        if cfg.autocast is not None:
            return torch.autocast(dev, dtype=cfg.autocast, cache_enabled=not cfg.cuda_graph)
        if cfg.cuda_graph and torch.is_autocast_enabled(dev):
            # the caller's enclosing autocast (AMP training), with its cache off for the graph
            return torch.autocast(dev, dtype=torch.get_autocast_dtype(dev), cache_enabled=False)
        return contextlib.nullcontext()

    def get_logits(self, inputs: Tensor, labels: Tensor | None = None, *args, **kwargs) -> Tensor:
        """torchattacks' hook: the model's logits of ``inputs`` (images in [lo, hi]), normalised
        first during a call after ``set_normalization_used``. Every forward of the attack goes
        through it, so a subclass may override it (to pick the logits out of a tuple, say), as
        with torchattacks."""
        if self._normalizing:
            inputs = self.normalize(inputs)
        return self.model(inputs)

    def _logits(self, cfg: _Config, x: Tensor) -> Tensor:
        logits = self.get_logits(x)
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise TypeError(
                f"the model returned {got}; the attack needs (N, K) logits: override get_logits "
                "in a subclass to pick them (as with torchattacks)"
            )
        return logits.float() if cfg.autocast is not None else logits

    @torch.no_grad()
    def _clean_probs(self, cfg: _Config, x_nat: Tensor) -> Tensor:
        """TRADES' ``softmax(model(x_nat))``, once per call."""
        with self._autocast(cfg, x_nat):
            return F.softmax(self._logits(cfg, x_nat), dim=1)

    def _loss(self, cfg: _Config, logits: Tensor, labels: Tensor, target: Tensor | None) -> Tensor:
        """The loss to maximise; labels are the target labels in a targeted mode."""
        if cfg.loss == "ce":
            ce = F.cross_entropy(logits, labels)
            return -ce if cfg.targeted else ce
        if cfg.loss == "cw":
            idx = labels.unsqueeze(1)
            z_y = logits.gather(1, idx).squeeze(1)
            z_other = logits.scatter(1, idx, -math.inf).max(dim=1).values
            margin = z_y - z_other if cfg.targeted else z_other - z_y
            return torch.clamp(margin, max=cfg.kappa).sum()
        return F.kl_div(F.log_softmax(logits, dim=1), target, reduction="sum")

    def _input_grad(self, cfg, x_adv: Tensor, labels: Tensor, target: Tensor | None) -> Tensor:
        """d loss / d x_adv, with no weight gradient and no host sync."""
        x = x_adv.detach().requires_grad_()
        with torch.enable_grad(), self._autocast(cfg, x):
            loss = self._loss(cfg, self._logits(cfg, x), labels, target)
        (grad,) = torch.autograd.grad(loss, x)
        return grad.to(x_adv.dtype)

    def _run_steps(self, cfg, wave_kw, x_adv, x_nat, labels, target, steps: int) -> None:
        """The loop: ``steps`` gradient steps on x_adv, in place. Nothing here reads a tensor."""
        step_kw = {"norm": cfg.norm, "lo": cfg.lo, "hi": cfg.hi, "backend": cfg.backend}
        with warnings.catch_warnings():
            # A level above pywt's maximum was warned about once, in _check_inputs: not per step.
            warnings.filterwarnings("ignore", message="Level value of")
            for _ in range(steps):
                grad = self._input_grad(cfg, x_adv, labels, target)
                with torch.no_grad():
                    if wave_kw is None:
                        pgd_step(x_adv, grad, x_nat, cfg.eps, cfg.alpha, **step_kw)
                    else:
                        wavelet_pgd_step(
                            x_adv, grad, x_nat, cfg.eps, cfg.alpha, **wave_kw, **step_kw
                        )

    # ---- CUDA graphs -----------------------------------------------------------------------------

    def _graphed(self, cfg, wave_kw, x_adv, x_nat, labels, target) -> Tensor:
        tensors = (x_nat, labels) + ((target,) if target is not None else ())
        dev = x_nat.device.type
        key = (  # wave_kw follows from cfg and the shape
            cfg,
            tuple((tuple(t.shape), t.stride(), t.dtype, t.device) for t in tensors),
            tuple(m.training for m in self.model.modules()),
            # an enclosing autocast is recorded into the graph (cfg.autocast is in cfg)
            (torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev)),
        )
        storage = tuple(t.data_ptr() for t in self.model.parameters()) + tuple(
            t.data_ptr() for t in self.model.buffers()
        )
        cached = self._graphs.pop(key, None)  # re-inserted below: the newest last
        if cached is None or cached[0] != storage:
            cached = None  # the stale graph's memory goes before the new capture
            while len(self._graphs) >= CUDA_GRAPH_CACHE_SIZE:  # the least recently used goes
                self._graphs.pop(next(iter(self._graphs)))
            graph = _GraphedSteps(self, cfg, wave_kw, x_adv, x_nat, labels, target)
            cached = (storage, graph)
        self._graphs[key] = cached
        return cached[1](x_adv, x_nat, labels, target)


class _GraphedSteps:
    """The step loop captured once into a CUDA graph over static input and output buffers."""

    def __init__(self, attack: PGD, cfg, wave_kw, x_adv, x_nat, labels, target) -> None:
        self.x_adv, self.x_nat, self.labels = x_adv.clone(), x_nat.clone(), labels.clone()
        self.target = None if target is None else target.clone()
        statics = (self.x_nat, self.labels, self.target)
        # Warm-up on a side stream (cuBLAS/cuDNN handles, autotuning, lazy init), as
        # torch.cuda.graphs' docs require, on a scratch copy: the static x_adv stays the start.
        device = x_nat.device
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            scratch = self.x_adv.clone()
            attack._run_steps(cfg, wave_kw, scratch, *statics, CUDA_GRAPH_WARMUP_STEPS)
        torch.cuda.current_stream(device).wait_stream(side)
        del scratch
        self.graph = torch.cuda.CUDAGraph()
        # On the images' device and the warm-up stream (torch's own capture stream belongs to
        # whichever device was current at the process's first capture); "thread_local": a
        # DataLoader's pin-memory thread may use CUDA meanwhile. Any host sync in the loop
        # would still fail the capture.
        with (
            torch.cuda.device(device),
            torch.cuda.graph(self.graph, stream=side, capture_error_mode="thread_local"),
        ):
            attack._run_steps(cfg, wave_kw, self.x_adv, *statics, cfg.steps)

    def __call__(self, x_adv: Tensor, x_nat: Tensor, labels: Tensor, target: Tensor | None):
        self.x_adv.copy_(x_adv)
        self.x_nat.copy_(x_nat)
        self.labels.copy_(labels)
        if target is not None:
            self.target.copy_(target)
        self.graph.replay()
        return self.x_adv.clone()


def _fixed(name: str, value, fixed) -> None:
    if not (value is fixed or (type(value) is type(fixed) and value == fixed)):
        raise ValueError(
            f"FGSM_RS: {name} is always {fixed!r} (one L-inf step from a random start); got "
            f"{value!r}: use PGD for other settings"
        )


class FGSM_RS(PGD):
    r"""FGSM with a random start (Wong, Rice & Kolter 2020, "Fast is better than free"):
    torchattacks' ``FFGSM``.

    ``x_adv = clamp(x + U(-eps, eps), lo, hi)``, then one L-inf step of size alpha (default
    10/255 = 1.25 eps, the paper's), projected onto the eps-box and clamped. The start is drawn as
    torchattacks draws it, ``torch.randn_like(x).uniform_(-eps, eps)`` (a normal draw overwritten
    by a uniform one), so a seed gives FFGSM's start.

    Parameters
    ----------
    model, eps, alpha, loss, wavelet, autocast, cuda_graph, lo, hi, kappa, check_range, backend
        As ``PGD`` (``steps=1``, ``random_start=True``, ``norm="Linf"``).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 10 / 255,
        *,
        loss: str = "ce",
        wavelet: str | dict | None = None,
        autocast: str | torch.dtype | None = None,
        cuda_graph: bool = False,
        lo: float = 0.0,
        hi: float = 1.0,
        kappa: float = CW_KAPPA,
        check_range: bool | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(
            model, eps, alpha, steps=1, random_start=True, norm="Linf", loss=loss,
            wavelet=wavelet, autocast=autocast, cuda_graph=cuda_graph, lo=lo, hi=hi,
            kappa=kappa, check_range=check_range, backend=backend,
        )  # fmt: skip

    # One L-inf step from a random start, always (torchattacks' FFGSM has no such settings):
    # setting another value is an error, not silently obeyed or ignored.
    steps = property(lambda self: 1, lambda self, v: _fixed("steps", v, 1))
    random_start = property(lambda self: True, lambda self, v: _fixed("random_start", v, True))
    norm = property(lambda self: "Linf", lambda self, v: _fixed("norm", v, "Linf"))

    def _start(self, cfg: _Config, x_nat: Tensor) -> Tensor:
        if cfg.loss == "trades":
            return super()._start(cfg, x_nat)
        noise = torch.randn_like(x_nat).uniform_(-cfg.eps, cfg.eps)  # FFGSM's draws, in order
        return torch.clamp(x_nat + noise, min=cfg.lo, max=cfg.hi)
