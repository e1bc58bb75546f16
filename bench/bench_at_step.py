"""End-to-end benchmark: one PGD-10 adversarial-training step (attack + update), two versions.

* ``reference_loop``: the step as published adversarial-training code writes it: float32,
  NCHW, the attack calling ``loss.backward()`` (so every weight gradient is computed and thrown
  away, 10 times), the PGD update as separate torch ops, and for the WideWaveletResNet's Wavelet
  Average Pooling a dense-matrix Haar DWT (``DenseHaarWAP``: explicit Haar analysis matrices
  applied with matmul, (LL + LH + HL + HH) / 4), as a training script without a fused op would do.
* ``wavefuse``: ``wavefuse.attacks.PGD(model, eps, alpha, 10, autocast="bf16",
  cuda_graph=True)`` (input gradient only, fused in-place step, the loop captured in a CUDA graph;
  without a graph where capture fails, noted), the model from ``wavefuse.models`` in channels_last,
  the update under bf16 autocast.

Models: WideWaveletResNet-34-10 (WAP before the final pooling, the paper's) and PreActResNet-18,
10 classes, batch 128 of 3 x 32 x 32 synthetic images, eps 8/255, alpha 2/255, SGD (lr 0.1,
momentum 0.9, weight decay 5e-4). Both versions start from the same weights.

Reported per model and version: the step time (median, p20, p80 over the timed steps), its split
into attack and update (CUDA events), and the peak memory (``torch.cuda.max_memory_allocated``
over the timed steps). CSV rows: op ``at_step``, backend ``reference_loop`` (its own row) and
``wavefuse`` (baseline ``reference_loop``, speedup = reference ms / wavefuse ms), the model in the
``mode`` column (``wave`` = "haar" for the wavelet model), no bytes (gbps, pct_copy empty). The
split, the memory and the agreement check go to ``gpu-<slug>-at_step-notes.md`` and
``gpu-<slug>-at_step.json``.

Agreement check: a small WideWaveletResNet (depth 10, widen 2) is adversarially trained from one
initialisation with each version on the same synthetic 10-class task (same batches), then both
are evaluated with the same attack (the reference PGD-10, float32, fixed seed); their robust
accuracies (means over ``AGREE_SEEDS`` attack seeds) must agree within ``AGREE_TOL``.

    python bench/bench_at_step.py                   # on a GPU machine
    python bench/bench_at_step.py --device cpu      # a CPU (``CPU``: WideWaveletResNet-16-4 and
                                                    # PreActResNet-18, batch 32, float32, a
                                                    # smaller agreement run; ~10 min on 2 cores):
                                                    # results/cpu.csv, cpu-at_step-notes.md
    python bench/bench_at_step.py --device cpu --smoke   # the logic: tiny models, batch 4,
                                                         # PGD-2; writes under /tmp
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import _gpu
import _results

OP = "at_step"
EPS, ALPHA = 8 / 255, 2 / 255
NUM_CLASSES = 10
SGD = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}
#: |robust accuracy (reference-trained) - robust accuracy (wavefuse-trained)| allowed, absolute.
#: Two trainings that differ in rounding (bf16 vs fp32) drift apart; on 1,000 test images one
#: accuracy's sampling spread alone is ~1.5 points.
AGREE_TOL = 0.05
#: The synthetic task's class-prototype amplitude (``synthetic``): robustly learnable at EPS.
PROTO_AMPLITUDE = 0.3
#: The agreement check trains each version once per attack seed and compares the means.
AGREE_SEEDS = (4, 5)


@dataclass
class Config:
    batch: int = 128
    steps: int = 10  # PGD steps
    warmup: int = 3  # untimed AT steps per version (the first captures the CUDA graph)
    timed: int = 10  # timed AT steps per version
    models: tuple = ("wwrn-34-10", "preact-18")
    # agreement check
    agree_model: str = "wwrn-10-2"
    agree_train: int = 2048
    agree_test: int = 1000
    agree_epochs: int = 10  # long enough to reach a plateau, where two runs compare
    agree_lr: float = 0.05


#: ``--device cpu``: the same step on a small CPU, sized to finish in minutes. PreActResNet-18 at
#: batch 32 takes ~0.65 s per forward + input gradient on 2 cores, so WRN-34-10 and batch 128
#: (hours per version) are out; WideWaveletResNet-16-4 keeps the wavelet model (WAP) in.
CPU = Config(
    batch=32,
    steps=10,
    warmup=1,
    timed=3,
    models=("wwrn-16-4", "preact-18"),
    agree_model="wwrn-10-2",
    agree_train=512,
    agree_test=500,
    agree_epochs=5,
)

SMOKE = Config(
    batch=4,
    steps=2,
    warmup=1,
    timed=2,
    models=("wwrn-10-1", "preact-18"),
    agree_model="wwrn-10-1",
    agree_train=32,
    agree_test=16,
    agree_epochs=1,
)


# ----------------------------------------------------------------------------- the reference


def haar_analysis_matrices(n: int, device, dtype) -> tuple[Tensor, Tensor]:
    """(lo, hi), each (n/2, n): one level of the orthonormal Haar DWT along an axis of even
    length n, PyWavelets' convention: ``(lo @ v)[i] = (v[2i] + v[2i+1]) / sqrt(2)``,
    ``(hi @ v)[i] = (v[2i] - v[2i+1]) / sqrt(2)``."""
    if n % 2:
        raise ValueError(f"DenseHaarWAP needs even sizes, got {n}")
    r = 1 / math.sqrt(2)
    lo = torch.zeros(n // 2, n, device=device, dtype=dtype)
    hi = torch.zeros(n // 2, n, device=device, dtype=dtype)
    i = torch.arange(n // 2, device=device)
    lo[i, 2 * i], lo[i, 2 * i + 1] = r, r
    hi[i, 2 * i], hi[i, 2 * i + 1] = r, -r
    return lo, hi


class DenseHaarWAP(nn.Module):
    """Wavelet Average Pooling, (LL + LH + HL + HH) / 4 of a one-level Haar DWT, computed the way
    a training script without a wavelet op does it: the four bands as matrix products
    ``A_h x A_w^T`` with dense Haar analysis matrices (x: (N, C, H, W) -> (N, C, H/2, W/2))."""

    def forward(self, x: Tensor) -> Tensor:
        lo_h, hi_h = haar_analysis_matrices(x.shape[-2], x.device, x.dtype)
        lo_w, hi_w = haar_analysis_matrices(x.shape[-1], x.device, x.dtype)
        rows_lo, rows_hi = torch.matmul(lo_h, x), torch.matmul(hi_h, x)  # (N, C, H/2, W)
        ll = torch.matmul(rows_lo, lo_w.t())
        lh = torch.matmul(rows_lo, hi_w.t())
        hl = torch.matmul(rows_hi, lo_w.t())
        hh = torch.matmul(rows_hi, hi_w.t())
        return (ll + lh + hl + hh) / 4


def reference_attack(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int
) -> Tensor:
    """PGD-Linf as the published adversarial-training loops write it (eval mode, random start,
    ``loss.backward()``, sign step, projection by min/max, clamp to [0, 1])."""
    model.eval()
    x_adv = x.detach() + torch.empty_like(x).uniform_(-eps, eps)
    x_adv = torch.clamp(x_adv, 0.0, 1.0)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()
        grad = x_adv.grad.detach()
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    return x_adv.detach()


def reference_update(model: nn.Module, opt, x_adv: Tensor, y: Tensor) -> None:
    model.train()
    opt.zero_grad()
    loss = F.cross_entropy(model(x_adv), y)
    loss.backward()
    opt.step()


# ----------------------------------------------------------------------------- the two versions


@dataclass
class Version:
    """An AT step split in two callables: attack(x, y) -> x_adv, update(x_adv, y)."""

    name: str
    model: nn.Module
    attack: Callable[[Tensor, Tensor], Tensor]
    update: Callable[[Tensor, Tensor], None]
    prepare: Callable[[Tensor], Tensor]  # the input's layout for this version
    opt: torch.optim.Optimizer
    note: str = ""
    atk: object = None  # wavefuse.attacks.PGD (the fallback switches its graph off)


def make_reference(model: nn.Module, steps: int) -> Version:
    """The reference: ``model`` with its WAP (if any) replaced by DenseHaarWAP, float32, NCHW."""
    if not isinstance(getattr(model, "wap", nn.Identity()), nn.Identity):
        model.wap = DenseHaarWAP()
    opt = torch.optim.SGD(model.parameters(), **SGD)
    return Version(
        "reference_loop",
        model,
        lambda x, y: reference_attack(model, x, y, EPS, ALPHA, steps),
        lambda xa, y: reference_update(model, opt, xa, y),
        lambda x: x.contiguous(),
        opt,
    )


def make_wavefuse(model: nn.Module, steps: int, device: torch.device) -> Version:
    """wavefuse.attacks.PGD (input gradients only, the fused step), channels_last; on CUDA also
    bf16 autocast (attack and update) and the CUDA graph.

    On the CPU the step stays float32: CPUs without bfloat16 arithmetic (AVX2, as on our 2-core
    EPYC) run bf16 autocast far slower -- PreActResNet-18, batch 32, forward + input gradient:
    0.65 s in float32, 15.8 s under bf16 autocast (2026-12-03) -- so a user there would not
    turn it on, and neither does this benchmark."""
    from wavefuse.attacks import PGD

    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), **SGD)
    graph = amp = device.type == "cuda"
    atk = PGD(
        model,
        EPS,
        ALPHA,
        steps,
        random_start=True,
        norm="Linf",
        autocast="bf16" if amp else None,
        cuda_graph=graph,
    )

    def update(x_adv: Tensor, y: Tensor) -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x_adv), y)
        loss.backward()
        opt.step()

    return Version(
        "wavefuse",
        model,
        lambda x, y: atk(x, y),
        update,
        lambda x: x.contiguous(memory_format=torch.channels_last),
        opt,
        note=f"autocast {'bf16' if amp else 'off (float32)'}, channels_last, cuda_graph={graph}",
        atk=atk,
    )


def run_step(v: Version, x: Tensor, y: Tensor) -> Tensor:
    x_adv = v.attack(x, y)
    v.update(x_adv, y)
    return x_adv


def first_step_with_fallback(v: Version, x: Tensor, y: Tensor) -> None:
    """The first (untimed) step; where the CUDA-graph capture fails, go on without a graph."""
    try:
        run_step(v, x, y)
    except Exception as e:
        atk = v.atk
        if atk is None or not atk.cuda_graph:
            raise
        atk.clear_cuda_graphs()
        atk.cuda_graph = False
        v.note = (
            f"autocast bf16, channels_last, cuda_graph=False (capture failed: "
            f"{type(e).__name__}: {str(e).splitlines()[0][:160]})"
        )
        print(f"  CUDA graph capture failed, timing without: {e}", flush=True)
        run_step(v, x, y)


# ----------------------------------------------------------------------------- models and data


def build_model(name: str) -> nn.Module:
    """'wwrn-<depth>-<widen>' (WideWaveletResNet, WAP before the final pooling) or 'preact-18'."""
    from wavefuse import models

    if name == "preact-18":
        return models.PreActResNet18(NUM_CLASSES)
    if name.startswith("wwrn-"):
        depth, widen = (int(v) for v in name.split("-")[1:])
        return models.WideWaveletResNet(depth, widen, NUM_CLASSES)
    raise ValueError(f"unknown model {name!r}: wwrn-<depth>-<widen> or preact-18")


def synthetic(n: int, device, seed: int) -> tuple[Tensor, Tensor]:
    """A 10-class image task: class prototypes are smooth random patterns (4x4 noise, upsampled),
    images = 0.5 + PROTO_AMPLITUDE * prototype + 0.1 * pixel noise, clamped to [0, 1].

    The amplitude sets how robust the task can be at eps = 8/255. For the best linear classifier
    between two classes (w = p_i - p_j), the margin left after the worst L-inf attack, over the
    noise's standard deviation along w, (a |w|^2 / 2 - eps |w|_1) / (0.1 |w|_2), has median 5.1
    and minimum 1.8 over the 45 pairs at a = 0.15 (the amplitude until 2026-12-04), 23.5 and 17.3
    at a = 0.3. At 0.15 both versions' robust accuracy stayed at or under chance after the
    agreement runs (H200: 0.098 vs 0.101; CPU config: 0.03 vs 0.056), so the check compared
    noise; at 0.3, CPU config (wwrn-10-2, 5 epochs of 512 images, float32 both): clean 1.0 and
    1.0, robust 0.852 (reference_loop) vs 0.882 (wavefuse)."""
    gen = torch.Generator().manual_seed(1234)  # the prototypes: one task for every call
    protos = F.interpolate(
        torch.randn(NUM_CLASSES, 3, 4, 4, generator=gen),
        size=(32, 32),
        mode="bilinear",
        align_corners=False,
    )
    protos = protos / protos.flatten(1).abs().amax(1).view(-1, 1, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    x = 0.5 + PROTO_AMPLITUDE * protos[y] + 0.1 * torch.randn(n, 3, 32, 32, generator=gen)
    return x.clamp(0, 1).to(device), y.to(device)


# ----------------------------------------------------------------------------- timing


@dataclass
class Timing:
    model: str
    version: str
    step_ms: list = field(default_factory=list)
    attack_ms: list = field(default_factory=list)
    update_ms: list = field(default_factory=list)
    peak_mib: float | None = None  # torch.cuda.max_memory_allocated over the timed steps
    # max_memory_reserved too: a replayed CUDA graph allocates nothing (its memory is the
    # graph's private pool, reserved at capture), so "allocated" alone undercounts it.
    peak_reserved_mib: float | None = None
    note: str = ""

    def summary(self) -> dict:
        def q(v):
            return [float(np.quantile(v, p)) for p in _gpu.QUANTILES] if v else None

        return {
            "model": self.model,
            "version": self.version,
            "step_ms": q(self.step_ms),
            "attack_ms": q(self.attack_ms),
            "update_ms": q(self.update_ms),
            "peak_mib": self.peak_mib,
            "peak_reserved_mib": self.peak_reserved_mib,
            "note": self.note,
        }


def _events(device: torch.device):
    if device.type == "cuda":
        return [torch.cuda.Event(enable_timing=True) for _ in range(3)]
    return None


def time_version(v: Version, x: Tensor, y: Tensor, cfg: Config, device, model_name) -> Timing:
    x = v.prepare(x)
    t = Timing(model_name, v.name)
    torch.manual_seed(0)
    first_step_with_fallback(v, x, y)
    for _ in range(cfg.warmup - 1):
        run_step(v, x, y)
    _gpu.synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(cfg.timed):
        ev = _events(device)
        if ev:
            ev[0].record()
            x_adv = v.attack(x, y)
            ev[1].record()
            v.update(x_adv, y)
            ev[2].record()
            torch.cuda.synchronize(device)
            a, u = ev[0].elapsed_time(ev[1]), ev[1].elapsed_time(ev[2])
        else:
            t0 = time.perf_counter()
            x_adv = v.attack(x, y)
            t1 = time.perf_counter()
            v.update(x_adv, y)
            t2 = time.perf_counter()
            a, u = (t1 - t0) * 1e3, (t2 - t1) * 1e3
        t.attack_ms.append(a)
        t.update_ms.append(u)
        t.step_ms.append(a + u)
    if device.type == "cuda":
        t.peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
        t.peak_reserved_mib = torch.cuda.max_memory_reserved(device) / 2**20
    t.note = v.note
    return t


def bench_model(name: str, cfg: Config, device) -> list[Timing]:
    torch.manual_seed(0)
    base = build_model(name).to(device)
    x, _ = synthetic(cfg.batch, device, seed=7)
    y = torch.randint(0, NUM_CLASSES, (cfg.batch,), generator=torch.Generator().manual_seed(8))
    y = y.to(device)
    timings = []
    for make in (
        lambda m: make_reference(m, cfg.steps),
        lambda m: make_wavefuse(m, cfg.steps, device),
    ):
        v = make(copy.deepcopy(base))
        print(f"{name}: {v.name} ...", flush=True)
        t = time_version(v, x, y, cfg, device, name)
        s = t.summary()
        print(
            f"  step {s['step_ms'][0]:.2f} ms (attack {s['attack_ms'][0]:.2f}, update "
            f"{s['update_ms'][0]:.2f}), peak {t.peak_mib or float('nan'):.0f} MiB; {t.note}",
            flush=True,
        )
        timings.append(t)
        del v
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return timings


# ----------------------------------------------------------------------------- agreement


@torch.no_grad()
def _accuracy(model: nn.Module, x: Tensor, y: Tensor, batch: int) -> float:
    model.eval()
    hits = sum(
        int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
        for i in range(0, len(x), batch)
    )
    return hits / len(x)


def robust_accuracy(model: nn.Module, x: Tensor, y: Tensor, batch: int, steps: int) -> float:
    """Accuracy under the reference PGD (float32, NCHW), seeded: one evaluator for both."""
    torch.manual_seed(1)
    advs = [
        reference_attack(model, x[i : i + batch], y[i : i + batch], EPS, ALPHA, steps)
        for i in range(0, len(x), batch)
    ]
    model.zero_grad(set_to_none=True)
    return _accuracy(model, torch.cat(advs), y, batch)


def agreement(cfg: Config, device) -> dict:
    """Train the small model with each version from one init on one task, once per attack seed
    (``AGREE_SEEDS``: the random starts differ, the batches do not); compare the versions' mean
    robust accuracies. One seed is not enough: on the CPU config two reference trainings that
    differ only in the attack's seed reached 0.816 and 0.858 (2026-12-04), as far apart as the
    tolerance, so one wavefuse run against one reference run compared seeds as much as code."""
    torch.manual_seed(0)
    base = build_model(cfg.agree_model).to(device)
    xtr, ytr = synthetic(cfg.agree_train, device, seed=1)
    xte, yte = synthetic(cfg.agree_test, device, seed=2)
    order = torch.randperm(cfg.agree_train, generator=torch.Generator().manual_seed(3))
    out = {
        "model": cfg.agree_model,
        "train": cfg.agree_train,
        "test": cfg.agree_test,
        "epochs": cfg.agree_epochs,
        "batch": cfg.batch,
        "pgd_steps": cfg.steps,
        "seeds": list(AGREE_SEEDS),
    }
    for make in (
        lambda m: make_reference(m, cfg.steps),
        lambda m: make_wavefuse(m, cfg.steps, device),
    ):
        runs = []
        for seed in AGREE_SEEDS:
            v = make(copy.deepcopy(base))
            for group in v.opt.param_groups:
                group["lr"] = cfg.agree_lr
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            for epoch in range(cfg.agree_epochs):
                for i in range(0, cfg.agree_train - cfg.batch + 1, cfg.batch):
                    idx = order[i : i + cfg.batch].to(device)
                    x = v.prepare(xtr[idx])
                    if epoch == 0 and i == 0:
                        first_step_with_fallback(v, x, ytr[idx])
                    else:
                        run_step(v, x, ytr[idx])
            _gpu.synchronize(device)
            train_s = time.perf_counter() - t0
            model = v.model.to(memory_format=torch.contiguous_format)
            runs.append(
                {
                    "seed": seed,
                    "clean_acc": _accuracy(model, xte, yte, cfg.batch),
                    "robust_acc": robust_accuracy(model, xte, yte, cfg.batch, cfg.steps),
                    "train_s": train_s,
                }
            )
            print(f"agreement {v.name}: {runs[-1]}", flush=True)
        out[v.name] = {
            "clean_acc": float(np.mean([r["clean_acc"] for r in runs])),
            "robust_acc": float(np.mean([r["robust_acc"] for r in runs])),
            "robust_accs": [r["robust_acc"] for r in runs],
            "train_s": float(np.mean([r["train_s"] for r in runs])),
            "runs": runs,
            "note": v.note,
        }
    diff = abs(out["reference_loop"]["robust_acc"] - out["wavefuse"]["robust_acc"])
    out["robust_acc_diff"] = diff
    out["tolerance"] = AGREE_TOL
    out["agree"] = diff <= AGREE_TOL
    return out


# ----------------------------------------------------------------------------- output


def measurements(timings: list[Timing], cfg: Config, device) -> list[_results.Measurement]:
    ms = []
    for t in timings:
        ms.append(
            _results.Measurement(
                op=OP,
                backend=t.version,
                shape=(cfg.batch, 3, 32, 32),
                dtype="float32",
                wave="haar" if t.model.startswith("wwrn") else "",
                mode=t.model,
                level="",
                times_s=[v / 1e3 for v in t.step_ms],
                nbytes=0,
                is_baseline=t.version == "reference_loop",
                device=str(device),
            )
        )
    return ms


def _accs(version: dict) -> str:
    return ", ".join(f"{a:.3f}" for a in version["robust_accs"])


def notes_lines(timings: list[Timing], agree: dict | None, cfg: Config) -> list[str]:
    lines = [
        f"PGD-{cfg.steps} Linf AT step (eps 8/255, alpha 2/255), batch {cfg.batch} of 3x32x32, "
        f"{cfg.warmup} untimed + {cfg.timed} timed steps per version; attack/update split by "
        + ("CUDA events" if timings and timings[0].peak_mib is not None else "the wall clock")
    ]
    for t in timings:
        s = t.summary()
        mem = (
            f"{t.peak_mib:.0f} MiB allocated, {t.peak_reserved_mib:.0f} MiB reserved"
            if t.peak_mib is not None
            else "n/a (CPU)"
        )
        lines.append(
            f"`{t.model}` {t.version}: step {s['step_ms'][0]:.2f} ms (p20 {s['step_ms'][1]:.2f}, "
            f"p80 {s['step_ms'][2]:.2f}) = attack {s['attack_ms'][0]:.2f} + update "
            f"{s['update_ms'][0]:.2f} ms (medians); peak memory {mem}"
            + (f"; {t.note}" if t.note else "")
        )
    if agree is not None:
        r, w = agree["reference_loop"], agree["wavefuse"]
        verdict = "AGREE" if agree["agree"] else "DISAGREE"
        lines.append(
            f"agreement ({verdict}): `{agree['model']}` adversarially trained {agree['epochs']} "
            f"epochs on {agree['train']} synthetic images with each version, evaluated on "
            f"{agree['test']} by the reference PGD-{agree['pgd_steps']}, once per attack seed "
            f"{agree['seeds']}: mean robust accuracy {r['robust_acc']:.3f} (reference_loop: "
            f"{_accs(r)}) vs {w['robust_acc']:.3f} (wavefuse: {_accs(w)}), |diff| "
            f"{agree['robust_acc_diff']:.3f} (tolerance {agree['tolerance']}); mean clean "
            f"{r['clean_acc']:.3f} vs {w['clean_acc']:.3f}"
        )
        if max(r["robust_acc"], w["robust_acc"]) < 2 / NUM_CLASSES:
            lines.append(
                f"both robust accuracies are under twice chance ({1 / NUM_CLASSES:.2f}): the run "
                "was too short to make either model robust, so the check shows only that both "
                "versions train without error, not that they reach the same robustness"
            )
    return lines


def parse(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--smoke", action="store_true", help="tiny models, batch 4, PGD-2")
    p.add_argument("--models", help="comma list (default: wwrn-34-10,preact-18)")
    p.add_argument("--timed", type=int, help="timed steps per version")
    p.add_argument("--no-agreement", action="store_true")
    p.add_argument("--out", type=Path, help="CSV path (default results/gpu-<device-slug>.csv)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "no CUDA device: nothing to benchmark here (bench_at_step.py runs on a GPU machine; "
            "`--device cpu --smoke` runs its logic with tiny models)"
        )
        return 0
    on_cpu = device.type != "cuda"
    cfg = copy.deepcopy(SMOKE if args.smoke else CPU if on_cpu else Config())
    if args.models:
        cfg.models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if args.timed:
        cfg.timed = args.timed
    if device.type == "cuda":
        torch.cuda.set_device(torch.device(device).index or 0)  # torch 2.11 wants an index
    elif args.smoke:
        torch.set_num_threads(1)
    else:
        _results.steady_allocator()  # as the other CPU benchmarks (bench/README.md)
    if args.out:
        path = args.out
    elif args.smoke:
        path = Path(tempfile.gettempdir()) / "wavefuse-bench-smoke" / "cpu-smoke.csv"
    elif on_cpu:
        path = _gpu.RESULTS / "cpu.csv"
    else:
        path = _gpu.csv_path(str(device))
    _gpu.on_sigterm()
    started = time.monotonic()
    timings, agree, failures = [], None, []
    print(f"torch {torch.__version__}, {_results.device_string(str(device))}, {asdict(cfg)}")
    try:
        for name in cfg.models:
            try:
                timings += bench_model(name, cfg, device)
            except (_gpu.Interrupted, KeyboardInterrupt):
                raise
            except Exception as e:  # noqa: BLE001 -- unattended: note it, go on
                failures.append(f"`{name}` failed: {type(e).__name__}: {e}")
                print(failures[-1], flush=True)
                import traceback

                traceback.print_exc()
        if not args.no_agreement:
            try:
                agree = agreement(cfg, device)
            except (_gpu.Interrupted, KeyboardInterrupt):
                raise
            except Exception as e:  # noqa: BLE001 -- unattended: note it, go on
                failures.append(f"agreement check failed: {type(e).__name__}: {e}")
                print(failures[-1], flush=True)
    except (_gpu.Interrupted, KeyboardInterrupt) as e:
        failures.append(f"PARTIAL run, stopped early ({e or type(e).__name__})")
        print(failures[-1], flush=True)
    env = _results.environment(str(device))
    if timings:  # a subset of the models, or one that failed: the others keep their rows
        rows = _results.build_rows(measurements(timings, cfg, device), env)
        _results.write_csv(path, rows, partial=bool(args.models or failures))
    minutes = (time.monotonic() - started) / 60
    lines = notes_lines(timings, agree, cfg) + failures
    notes = path.with_name(f"{path.stem}-{OP}-notes.md")
    about = f"{env['device']}, torch {env['torch']}, {env['date']}. Run took {minutes:.1f} min."
    notes.write_text(
        "\n".join(
            [f"# Notes on {path.name} ({OP})", "", about, ""] + [f"- {line}" for line in lines]
        )
        + "\n"
    )
    blob = {
        "env": env,
        "config": asdict(cfg),
        "timings": [t.summary() for t in timings],
        "agreement": agree,
        "failures": failures,
    }
    path.with_name(f"{path.stem}-{OP}.json").write_text(json.dumps(blob, indent=1) + "\n")
    print(f"wrote {path if timings else '(no rows)'}, {notes.name}, {path.stem}-{OP}.json")
    print("\n".join(lines))
    bad = failures or (agree is not None and not agree["agree"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
