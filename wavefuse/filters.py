"""Filter banks from PyWavelets, never hand-typed.

The supported wavelets are every orthogonal PyWavelets wavelet of at most 40 taps (the size the
GPU kernels are built for): haar, db1-db20, sym2-sym20 and coif1-coif6 (DESIGN.md lists up to
coif5; coif6 has 36 taps, coif7 42). Their banks are read once at import into a plain dict of
float tuples. Lookups are then pure Python, so a function
that asks for a filter bank traces through ``torch.compile(fullgraph=True)`` without calling pywt.

Filter tensors have shape (2, L): row 0 the low-pass, row 1 the high-pass taps, exactly as
``pywt.Wavelet(name).filter_bank`` gives them (``dec_lo, dec_hi, rec_lo, rec_hi``).
"""

from __future__ import annotations

import warnings

import pywt
import torch

MODES = ("zero", "symmetric", "reflect", "periodic", "periodization")


def _pywt_mode_spellings() -> tuple[dict[int, str], dict[str, str]]:
    """PyWavelets' other spellings of a mode, read from pywt: its integer codes
    (``pywt.Modes.periodization`` is 5) and its deprecated short names ("per", "sym", ...), each
    mapped to the canonical name."""
    by_code = {getattr(pywt.Modes, name): name for name in pywt.Modes.modes}
    old = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for short in ("zpd", "cpd", "sym", "ppd", "sp1", "per"):  # pywt's renamed modes
            try:
                old[short] = by_code[pywt.Modes.from_object(short)]
            except (AttributeError, ValueError):  # a later pywt that dropped the old name
                pass
    return by_code, old


#: pywt.Modes codes -> names, and pywt's deprecated short names -> names (every pywt mode, not
#: only those in MODES: a supported spelling of an unsupported mode is refused by its name).
MODE_CODES, OLD_MODE_NAMES = _pywt_mode_spellings()

#: Every wavelet wavefuse accepts, by name; all orthogonal, at most 40 taps.
WAVELETS = (
    ("haar",)
    + tuple(f"db{i}" for i in range(1, 21))
    + tuple(f"sym{i}" for i in range(2, 21))
    + tuple(f"coif{i}" for i in range(1, 7))
)
ALLOWED = "haar, db1-db20, sym2-sym20, coif1-coif6"


def _orthogonal_banks() -> dict[str, tuple[tuple[float, ...], ...]]:
    banks = {}
    for name in WAVELETS:
        w = pywt.Wavelet(name)
        assert w.orthogonal, name
        banks[name] = tuple(tuple(float(t) for t in f) for f in w.filter_bank)
    return banks


_BANKS = _orthogonal_banks()
#: name -> (dec_lo, dec_hi, rec_lo, rec_hi), pywt's taps as float tuples (read-only use).
FILTER_BANKS = _BANKS
_CACHE: dict[tuple, torch.Tensor] = {}


def wavelet_name(wavelet, argname: str = "wavelet") -> str:
    """Validate ``wavelet`` (a name or a ``pywt.Wavelet``) and return its canonical name."""
    if isinstance(wavelet, pywt.Wavelet):
        name = wavelet.name
        if name in _BANKS and tuple(map(tuple, wavelet.filter_bank)) == _BANKS[name]:
            return name
        raise ValueError(
            f"{argname}: pywt.Wavelet {name!r} is not one of the supported orthogonal wavelets "
            f"(custom filter banks are not supported); allowed: {ALLOWED}"
        )
    if not isinstance(wavelet, str):
        raise TypeError(
            f"{argname} must be a wavelet name (str) or a pywt.Wavelet, "
            f"got {type(wavelet).__name__}"
        )
    if wavelet in _BANKS:
        return wavelet
    if wavelet in pywt.wavelist(kind="all"):
        raise ValueError(
            f"{argname}={wavelet!r} is not supported: wavefuse needs an orthogonal wavelet of at "
            f"most 40 taps (biorthogonal and continuous wavelets are not); allowed: {ALLOWED}"
        )
    raise ValueError(f"{argname}={wavelet!r} is not a known wavelet; allowed: {ALLOWED}")


def filter_length(name: str) -> int:
    return len(_BANKS[name][0])


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other float type computes (and keeps taps) in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def filter_bank(
    name: str, kind: str, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(2, L) tensor ``[lo; hi]``: ``kind="dec"`` analysis taps, ``kind="rec"`` synthesis taps.

    ``dtype`` is the data's dtype; the taps are stored in its compute dtype (``compute_dtype``).
    Cached per (name, kind, compute dtype, device) in eager mode; under torch.compile the taps
    become graph constants.
    """
    bank = _BANKS[name]
    taps = (bank[0], bank[1]) if kind == "dec" else (bank[2], bank[3])
    cdtype = compute_dtype(dtype)
    if torch.compiler.is_compiling():
        return torch.tensor(taps, dtype=cdtype, device=device)
    key = (name, kind, cdtype, str(device))
    t = _CACHE.get(key)
    if t is None:
        # A bank first asked for under torch.inference_mode() would be an inference tensor, and
        # every later autograd call that saves it for backward would fail ("Inference tensors
        # cannot be saved for backward"): cached banks are always created as normal tensors.
        with torch.inference_mode(False):
            t = torch.tensor(taps, dtype=cdtype, device=device)
        # Two threads may both miss and both build a bank: equal values, the first stored wins.
        t = _CACHE.setdefault(key, t)
    return t
