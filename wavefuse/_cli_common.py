"""What ``python -m wavefuse.train`` and ``python -m wavefuse.evaluate`` share: dataset defaults,
model configs and checkpoints, the accuracy loop, versions, the error exit."""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import math
import os
import platform
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from wavefuse import data as wdata
from wavefuse.models import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    PreActResNet18,
    WideResNet,
)

#: The threat model per dataset: L-inf eps, step size and steps of the training attack (and the
#: per-epoch PGD test). CIFAR-10: the paper's (8/255, 2/255, 10). The 1-channel sets: eps 0.1 (the
#: Fashion-MNIST setting of issue 7's results), step 2.5 * eps / steps (Madry et al.'s rule).
THREAT = {
    "cifar10": {"eps": 8 / 255, "alpha": 2 / 255, "steps": 10},
    "fashion-mnist": {"eps": 0.1, "alpha": 0.025, "steps": 10},
    "mnist5k": {"eps": 0.1, "alpha": 0.025, "steps": 10},
    "digits": {"eps": 0.1, "alpha": 0.025, "steps": 10},
    "synthetic": {"eps": 0.1, "alpha": 0.025, "steps": 10},
}
#: Input normalisation stored in the model config: the published constants where there are some,
#: else the training split's per-channel mean and std.
KNOWN_STATS = {
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "fashion-mnist": (FASHION_MNIST_MEAN, FASHION_MNIST_STD),
}
#: The keys of a model config (saved in every checkpoint; two configs match when these do).
CONFIG_KEYS = (
    "model", "depth", "widen", "wavelet", "placement", "num_classes", "in_channels", "image_size",
)  # fmt: skip
CHECKPOINT_FORMAT = "wavefuse-train-1"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None and False (their help says what they mean)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class CLIError(Exception):
    """An error the CLI reports as ``prog: error: message`` (exit status 2), without a traceback."""


def run_main(prog: str, main, argv=None, interrupted=None) -> None:
    """Runs ``main(argv)``; user-facing errors become one line on stderr and exit status 2, and
    Ctrl-C one line (``interrupted()``, when given: what to do next) and status 130, not a
    traceback."""
    try:
        main(argv)
    except (CLIError, wdata.DatasetNotFoundError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        hint = interrupted() if interrupted is not None else ""
        print(f"{prog}: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        sys.exit(130)
    finally:
        if dist.is_available() and dist.is_initialized():
            shut_down_distributed()


def shut_down_distributed() -> None:
    """Ends a torchrun process's process group, with a barrier first when no error is raised.

    A Gloo worker thread frees a finished collective's tensors after the caller has its result;
    where that lands in interpreter finalisation (the pool outlives destroy_process_group once a
    DDP model was built), the thread cannot take the GIL and the process aborts ("terminate called
    without an active exception", seen in 1 of ~10 two-process runs on a loaded 2-core machine).
    Gloo's barrier waits for the work queued or running before it, so after it those threads are
    idle, or free tensors while this thread waits with the GIL released.
    """
    if sys.exc_info()[0] is None:  # on an error, another rank may never reach the barrier
        dist.barrier()
    dist.destroy_process_group()


# --------------------------------------------------------------------------- devices, processes


def pick_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise CLIError(f"--device {name!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: CUDA is not available here (torch {torch.__version__})")
    return device


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if world()[1] > 1:
        dist.all_reduce(t)
    return t


def autocast_dtype(amp: str | None):
    return {"bf16": torch.bfloat16, "none": None, None: None}[amp]


def autocast(device: torch.device, amp: str | None):
    dtype = autocast_dtype(amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# --------------------------------------------------------------------------- data


def load_split(name: str, root, split: str) -> wdata.ArrayDataset:
    try:
        return wdata.load(name, root=root, split=split)
    except (ValueError, TypeError) as e:
        raise CLIError(str(e)) from None


def input_stats(name: str, train: wdata.ArrayDataset) -> tuple[list[float], list[float]]:
    if name in KNOWN_STATS:
        mean, std = KNOWN_STATS[name]
        return list(mean), list(std)
    x = train.images.transpose(0, 1).flatten(1).double()
    return [round(v, 4) for v in x.mean(1).tolist()], [
        round(max(v, 1e-3), 4) for v in x.std(1).tolist()
    ]


# --------------------------------------------------------------------------- models


def build_model(config: dict) -> nn.Module:
    """The model a config describes (see ``CONFIG_KEYS``; ``mean``/``std`` normalise inputs)."""
    common = {
        "num_classes": config["num_classes"],
        "wavelet": config["wavelet"],
        "placement": config["placement"],
        "in_channels": config["in_channels"],
        "mean": config.get("mean"),
        "std": config.get("std"),
    }
    try:
        if config["model"] == "wrn":
            return WideResNet(config["depth"], config["widen"], **common)
        if config["model"] == "preact18":
            return PreActResNet18(**common)
    except (ValueError, TypeError) as e:
        raise CLIError(f"model config {describe(config)}: {e}") from None
    raise CLIError(f"unknown model {config['model']!r}; allowed: wrn, preact18")


def describe(config: dict) -> str:
    name = (
        f"WRN-{config['depth']}-{config['widen']}"
        if config["model"] == "wrn"
        else "PreActResNet-18"
    )
    wave = (
        f", wavelet={config['wavelet']} ({config['placement']})"
        if config["wavelet"]
        else ", no wavelet"
    )
    c, (h, w) = config["in_channels"], config["image_size"]
    return f"{name}{wave}, {config['num_classes']} classes, {c}x{h}x{w} inputs"


def config_diff(saved: dict, wanted: dict) -> list[str]:
    return [
        f"{k}: checkpoint {saved.get(k)!r}, asked {wanted.get(k)!r}"
        for k in CONFIG_KEYS
        if _norm(saved.get(k)) != _norm(wanted.get(k))
    ]


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic: a crash while saving leaves the previous checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path) -> dict:
    """A checkpoint written by ``wavefuse.train``, validated, on CPU."""
    path = Path(path)
    if not path.is_file():
        hint = " (a directory: pass the checkpoint in it, e.g. last.pt)" if path.is_dir() else ""
        raise CLIError(f"checkpoint {path} not found{hint}")
    try:
        # weights_only: a checkpoint holds tensors, numbers, strings, lists and dicts only.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "weights_only" in first or "Weights only" in first:
            # torch's advice (weights_only=False) is wrong here: ours hold plain data only
            why = "not a checkpoint of plain tensors, numbers and strings (corrupt, or another tool's)"
        else:  # torch's own words say little here ("list index out of range", or nothing)
            why = (
                "not a torch.save file, or a truncated or damaged one "
                f"({type(e).__name__}{': ' + first if first else ''})"
            )
        raise CLIError(f"cannot read checkpoint {path}: {why}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CLIError(
            f"{path} is not a wavefuse.train checkpoint (no format={CHECKPOINT_FORMAT!r} entry); "
            "a bare state_dict can be loaded into wavefuse.models by hand"
        )
    return ckpt


def load_model_state(model: nn.Module, ckpt: dict, path) -> None:
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CLIError(
            f"checkpoint {path} does not fit the model {describe(ckpt['config'])}: "
            f"{' '.join(first[:3])}"
        ) from None


# --------------------------------------------------------------------------- evaluation


def accuracy(
    model: nn.Module,
    ds: wdata.ArrayDataset,
    attacks: dict,
    batch_size: int,
    device: torch.device,
    channels_last: bool = False,
    progress=None,
) -> dict[str, float]:
    """Accuracy (%) per attack on ``ds``; ``attacks`` maps a name to None (clean) or an attack
    ``atk(x, y) -> x_adv``. Under a process group each rank takes every world-th sample and the
    counts are summed. Robust accuracy counts a sample only if the attack's output is classified
    correctly (clean mistakes count as failures)."""
    rank, size = world()
    idx = torch.arange(rank, len(ds), size)
    model.eval()
    correct = torch.zeros(len(attacks), dtype=torch.float64, device=device)
    batches = range(0, len(idx), batch_size)
    for start in progress(batches) if progress else batches:
        b = idx[start : start + batch_size]
        x, y = ds.images[b].to(device), ds.labels[b].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for i, atk in enumerate(attacks.values()):
            xa = x if atk is None else atk(x, y)  # attacks take their own input gradients
            with torch.no_grad():
                correct[i] += (model(xa).argmax(1) == y).sum()
    total = all_reduce_sum(torch.tensor([float(len(idx))], dtype=torch.float64, device=device))
    correct = all_reduce_sum(correct)
    return {k: 100.0 * c / max(total.item(), 1.0) for k, c in zip(attacks, correct.tolist())}


# --------------------------------------------------------------------------- reports


@functools.cache
def versions() -> dict[str, str]:
    import numpy as np

    import wavefuse

    out = {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "wavefuse": wavefuse.__version__,
    }
    # the installed distributions' versions, as `python -m wavefuse.info` prints them (a module's
    # own __version__ can disagree: PyWavelets 1.9.0's wheel says 1.8.0 in pywt/version.py)
    for key, name in (("torchattacks", "torchattacks"), ("pywt", "PyWavelets")):
        try:
            out[key] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def fmt_eps(eps: float) -> str:
    k = eps * 255
    return f"{round(k)}/255" if math.isclose(k, round(k), abs_tol=1e-6) else f"{eps:g}"
