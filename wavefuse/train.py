"""Adversarial training: ``python -m wavefuse.train``.

PGD-AT (Madry et al.), TRADES (Zhang et al.) or FGSM-RS (Wong et al.), optionally with the
wavelet high-frequency penalty of the model's activations (``--hf-penalty``), on a
(Wavelet-)WideResNet or PreActResNet-18, from the offline datasets of ``wavefuse.data``.

The defaults are the README's main job, a few minutes on a 2-core CPU: PGD-AT of a WRN-10-1 with
Wavelet Average Pooling (Haar, the paper's placement) on 4,000 Fashion-MNIST training images
(batch 64, SGD lr 0.1 cosine) for 2 epochs (L-inf eps 0.1, 10 steps of 0.025), then clean and
PGD-10 accuracy on 1,000 test images. The paper's CIFAR-10 recipe is::

    python -m wavefuse.train --data cifar10 --root DIR --subset 0 --test-subset 0 --depth 34 \\
        --widen 10 --batch-size 128 --epochs 110 --schedule step --milestones 100,105

Outputs in ``--out``: ``last.pt`` (model config, weights, optimizer, epoch, RNG states; what
``--resume`` continues from and ``python -m wavefuse.evaluate`` reads), ``best.pt`` (the epoch
with the best PGD test accuracy, the paper's model selection), ``metrics.jsonl`` (one JSON object
per epoch). Multi-process: ``torchrun --nproc_per_node K -m wavefuse.train ...`` (DDP; gloo on
CPU, nccl on CUDA; ``--batch-size`` is the global batch, split across the processes; only rank 0
writes). The HF penalty (``--hf-penalty LAMBDA``) hooks the residual stages' outputs by default
(wrn: block1, block2, block3; preact18: layer1..layer4; ``--hf-layers`` names others) and is
computed on the training forward pass only, not during the attack or the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from wavefuse import data as wdata
from wavefuse._cli_common import (
    CHECKPOINT_FORMAT,
    THREAT,
    CLIError,
    HelpFormatter,
    accuracy,
    all_reduce_sum,
    autocast,
    autocast_dtype,
    build_model,
    config_diff,
    describe,
    device_name,
    fmt_eps,
    input_stats,
    load_checkpoint,
    load_model_state,
    load_split,
    pick_device,
    run_main,
    save_checkpoint,
    versions,
    world,
)
from wavefuse.attacks import FGSM_RS, PGD
from wavefuse.nn import HFPenalty

PROG = "python -m wavefuse.train"
#: HFPenalty's default layers: the outputs of the residual stages.
HF_LAYERS = {
    "wrn": ("block1", "block2", "block3"),
    "preact18": ("layer1", "layer2", "layer3", "layer4"),
}


def positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {s}")
    return v


def nonneg_int(s: str) -> int:
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {s}")
    return v


def positive_float(s: str) -> float:
    v = float(s)
    if not v > 0 or not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {s}")
    return v


def nonneg_float(s: str) -> float:
    v = float(s)
    if not v >= 0 or not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {s}")
    return v


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Adversarial training (PGD-AT, TRADES, FGSM-RS) with wavelet models and the "
        "wavelet HF penalty, on offline datasets.",
        formatter_class=HelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        choices=wdata.DATASETS,
        default=None,
        help="dataset; default fashion-mnist, or digits (with a notice) when Fashion-MNIST "
        "is not installed",
    )
    g.add_argument(
        "--root", default=None, help="dataset folder (fashion-mnist: optional; cifar10: required)"
    )
    g.add_argument(
        "--subset",
        type=nonneg_int,
        default=4000,
        help="train on this many training images (a fixed class-balanced choice); 0: all",
    )
    g.add_argument(
        "--test-subset",
        type=nonneg_int,
        default=1000,
        help="test images for the per-epoch clean/PGD accuracy; 0: all",
    )
    g.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random crop (pad 4) and horizontal flip; default on for cifar10 only",
    )
    g = p.add_argument_group("method")
    g.add_argument(
        "--method",
        choices=("pgd", "trades", "fgsm-rs"),
        default="pgd",
        help="PGD-AT (Madry et al.), TRADES, or fast AT (FGSM with a random start)",
    )
    g.add_argument("--beta", type=nonneg_float, default=6.0, help="TRADES' weight of the KL term")
    g.add_argument(
        "--eps",
        type=positive_float,
        default=None,
        help="L-inf radius; default per dataset: 8/255 cifar10, 0.1 the 1-channel sets",
    )
    g.add_argument(
        "--alpha",
        type=positive_float,
        default=None,
        help="step size; default 2.5 eps / steps (eps/4 for 10 steps), fgsm-rs 1.25 eps",
    )
    g.add_argument(
        "--steps", type=positive_int, default=None, help="attack steps; default 10 (fgsm-rs: 1)"
    )
    g.add_argument(
        "--eval-steps", type=positive_int, default=10, help="steps of the per-epoch PGD test"
    )
    g.add_argument(
        "--hf-penalty",
        type=nonneg_float,
        default=0.0,
        metavar="LAMBDA",
        help="weight of the wavelet HF penalty of the activations (0: off). The penalty sums "
        "squared detail coefficients over channels and positions (~1e4 for a fresh WRN-10-1 on "
        "28x28): lambda ~1e-5 to 1e-4 makes it a few tenths",
    )
    g.add_argument(
        "--hf-layers",
        default=None,
        help="comma-separated module names for the penalty; default the residual stages' "
        "outputs (wrn: block1,block2,block3; preact18: layer1..layer4)",
    )
    g.add_argument("--hf-wave", default="haar", help="wavelet of the penalty")
    g.add_argument("--hf-level", type=positive_int, default=1, help="levels of the penalty")
    g = p.add_argument_group("model")
    g.add_argument(
        "--model", choices=("wrn", "preact18"), default="wrn", help="WideResNet or PreActResNet-18"
    )
    g.add_argument("--depth", type=positive_int, default=10, help="WRN depth (6n + 4)")
    g.add_argument("--widen", type=positive_int, default=1, help="WRN widening factor")
    g.add_argument(
        "--wavelet", default="haar", help="wavelet of the model's wavelet layers; 'none': off"
    )
    g.add_argument(
        "--placement",
        choices=("paper", "all_downsample"),
        default="paper",
        help="paper: WAP before the final pooling; all_downsample: wavelet stride-2 convs",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=positive_int, default=2, help="training epochs")
    g.add_argument("--batch-size", type=positive_int, default=64, help="global batch size")
    g.add_argument("--lr", type=positive_float, default=0.1, help="SGD's initial learning rate")
    g.add_argument("--momentum", type=nonneg_float, default=0.9, help="SGD's momentum")
    g.add_argument("--wd", type=nonneg_float, default=5e-4, help="weight decay")
    g.add_argument(
        "--schedule",
        choices=("cosine", "step", "constant"),
        default="cosine",
        help="cosine: per iteration to 0; step: x0.1 at each milestone epoch",
    )
    g.add_argument(
        "--milestones",
        default=None,
        help="step schedule's epochs, comma-separated; default 50%% and 75%% of --epochs",
    )
    g = p.add_argument_group("run")
    g.add_argument("--amp", choices=("none", "bf16"), default="none", help="autocast dtype")
    g.add_argument(
        "--channels-last", action="store_true", help="model and batches in channels_last"
    )
    g.add_argument("--device", default=None, help="default cuda if available, else cpu")
    g.add_argument(
        "--seed", type=int, default=0, help="seed of the initialisation, batches and attacks"
    )
    g.add_argument(
        "--out", default=None, help="output folder; default runs/<data>-<model>-<method>"
    )
    g.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an --out that holds a run (its checkpoints and metrics are "
        "replaced); without it such a run is refused",
    )
    g.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    return p


# --------------------------------------------------------------------------- setup


def init_distributed(device_arg: str | None) -> torch.device:
    """init_process_group when launched by torchrun (WORLD_SIZE set); the process's device."""
    if "WORLD_SIZE" not in os.environ:
        return pick_device(device_arg)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_arg)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def resolve_data(args, log) -> tuple[wdata.ArrayDataset, wdata.ArrayDataset]:
    name = args.data
    if name is None and args.root is not None:
        name = "fashion-mnist"  # a folder given for the default set: no quiet fallback from it
    if name is None:
        try:
            train = load_split("fashion-mnist", args.root, "train")  # damaged files: CLIError
            name = "fashion-mnist"
        except wdata.DatasetNotFoundError as e:
            log(f"notice: Fashion-MNIST is not installed ({e}). Falling back to --data digits.")
            name = "digits"
            train = load_split(name, None, "train")
    else:
        train = load_split(name, args.root, "train")
    if args.root is not None and name in ("digits", "mnist5k", "synthetic"):
        log(f"notice: --root is not used by --data {name} (it comes from a package, or is made)")
    args.data = name
    test = load_split(name, args.root, "test")
    return train, test


def threat(args, log=None) -> None:
    """Fills eps/alpha/steps from the dataset defaults (FGSM-RS: one step; a --steps given with
    it is not used, and ``log`` says so)."""
    base = THREAT[args.data]
    args.eps = base["eps"] if args.eps is None else args.eps
    if args.method == "fgsm-rs":
        if args.steps not in (None, 1) and log is not None:
            log(f"notice: --steps {args.steps} is not used by --method fgsm-rs (one step)")
        args.steps = 1
    args.steps = base["steps"] if args.steps is None else args.steps
    if args.alpha is None:
        args.alpha = 1.25 * args.eps if args.method == "fgsm-rs" else 2.5 * args.eps / args.steps
    args.eval_alpha = args.eps / 4  # PGD tests: step eps/4 (2/255 at 8/255), as the papers'


def model_config(args, train: wdata.ArrayDataset) -> dict:
    wavelet = None if args.wavelet.lower() == "none" else args.wavelet
    mean, std = input_stats(args.data, train)
    c, h, w = train.shape
    return {
        "model": args.model,
        "depth": args.depth if args.model == "wrn" else None,
        "widen": args.widen if args.model == "wrn" else None,
        "wavelet": wavelet,
        "placement": args.placement,
        "num_classes": train.num_classes,
        "in_channels": c,
        "image_size": [h, w],
        "mean": mean,
        "std": std,
        "data": args.data,
    }


def milestones(args) -> list[float]:
    if args.milestones is None:
        return [0.5 * args.epochs, 0.75 * args.epochs]
    try:
        return [float(m) for m in args.milestones.split(",") if m.strip()]
    except ValueError:
        raise CLIError(
            f"--milestones {args.milestones!r}: expected comma-separated epochs"
        ) from None


#: The options that define a training run besides the model config: a resumed run must repeat them
#: (the rest, --device, --amp, --channels-last, --out and the progress bars, may change).
#: --epochs may grow only where the learning rate of the epochs already trained does not depend on
#: it (epochs_fixed_by).
RUN_KEYS = (
    "data", "subset", "test_subset", "augment", "method", "beta", "eps", "alpha", "steps",
    "eval_steps", "hf_penalty", "hf_layers", "hf_wave", "hf_level", "batch_size", "lr",
    "momentum", "wd", "schedule", "milestones", "seed",
)  # fmt: skip


def epochs_fixed_by(args) -> str | None:
    """Why --epochs cannot change on resume (the schedule is stretched to it), or None."""
    if args.schedule == "cosine":
        return "the cosine schedule runs to 0 at --epochs"
    if args.schedule == "step" and args.milestones is None:
        return "the default step milestones are 50% and 75% of --epochs"
    return None


def resume_diff(ckpt: dict, config: dict, args) -> list[str]:
    """The differences between a checkpoint's run and this one that forbid resuming it."""
    saved = ckpt.get("args") or {}
    diff = [
        f"--{k.replace('_', '-')}: checkpoint {saved.get(k)!r}, asked {getattr(args, k)!r}"
        for k in RUN_KEYS
        if k in saved and saved[k] != getattr(args, k)
    ]
    if saved.get("augment", False) is None and "data" in saved:  # unresolved: before 2026-12-06
        default = saved["data"] == "cifar10"
        if default == args.augment:
            diff = [d for d in diff if not d.startswith("--augment:")]
    for k in ("mean", "std"):  # the training split's statistics: another split or subset
        a, b = ckpt["config"].get(k), config.get(k)
        if (
            a is not None
            and b is not None
            and not torch.allclose(
                torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
            )
        ):
            diff.append(f"input {k}: checkpoint {list(a)}, this training split {list(b)}")
    if "epochs" in saved and saved["epochs"] != args.epochs and epochs_fixed_by(args):
        diff.append(
            f"--epochs: checkpoint {saved['epochs']}, asked {args.epochs}, and "
            f"{epochs_fixed_by(args)} (--schedule constant or explicit --milestones can be extended)"
        )
    return diff


def lr_at(args, t: float, ms: list[float]) -> float:
    """Learning rate at fractional epoch t."""
    if args.schedule == "cosine":
        return args.lr * 0.5 * (1.0 + math.cos(math.pi * min(t / args.epochs, 1.0)))
    if args.schedule == "step":
        return args.lr * 0.1 ** sum(math.floor(t) >= m for m in ms)
    return args.lr


def augment(x: torch.Tensor) -> torch.Tensor:
    """Random crop with 4 pixels of zero padding and random horizontal flip, per sample."""
    n, _, h, w = x.shape
    pad = 4
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device)
    ox = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device)
    rows = (oy + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox + torch.arange(w, device=x.device))[:, None, None, :]
    flip = torch.rand(n, device=x.device) < 0.5
    cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return xp[batch, chan, rows, cols]


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def gather_rng(device: torch.device) -> list:
    """Every rank's RNG state (for the checkpoint); rank order."""
    mine = rng_state(device)
    _rank, size = world()
    if size == 1:
        return [mine]
    states = [None] * size
    dist.all_gather_object(states, mine)
    return states


def set_rng(states: list, device: torch.device, seed: int, epoch: int) -> None:
    rank, size = world()
    if len(states) == size:
        torch.set_rng_state(states[rank]["torch"])
        if device.type == "cuda" and "cuda" in states[rank]:
            torch.cuda.set_rng_state(states[rank]["cuda"], device)
    else:  # another world size: a fresh, still deterministic stream per rank
        torch.manual_seed(seed + 1000 * rank + epoch)


# --------------------------------------------------------------------------- training


class Trainer:
    def __init__(self, args, train, test, device, log):
        self.args, self.device, self.log = args, device, log
        self.train_ds, self.test_ds = train, test
        self.rank, self.size = world()
        if args.batch_size % self.size:
            raise CLIError(
                f"--batch-size {args.batch_size} (the global batch) is not divisible by the "
                f"{self.size} processes"
            )
        self.local_bs = args.batch_size // self.size
        self.config = model_config(args, train)
        torch.manual_seed(args.seed)  # the same initial weights on every rank
        raw = build_model(self.config).to(device)
        if args.channels_last:
            raw = raw.to(memory_format=torch.channels_last)
        self.raw = raw
        self.model = (
            nn.parallel.DistributedDataParallel(
                raw, device_ids=[device] if device.type == "cuda" else None
            )
            if self.size > 1
            else raw
        )
        torch.manual_seed(args.seed + 1000 * self.rank)
        self.penalty = None
        if args.hf_penalty > 0:
            default = HF_LAYERS[args.model]
            layers = [n.strip() for n in args.hf_layers.split(",")] if args.hf_layers else default
            if not all(layers):
                raise CLIError(
                    f"--hf-layers {args.hf_layers!r}: an empty layer name; give comma-separated "
                    f"module names of the model, e.g. {','.join(default)}"
                )
            try:
                self.penalty = HFPenalty(
                    raw, layers, wave=args.hf_wave, level=args.hf_level, weight=args.hf_penalty
                )
                self._check_penalty_layers(train, device)
            except (ValueError, TypeError) as e:
                raise CLIError(f"--hf-penalty: {e}") from None
        self.opt = torch.optim.SGD(
            raw.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.wd
        )
        amp = autocast_dtype(args.amp)
        if args.method == "fgsm-rs":
            self.attack = FGSM_RS(raw, eps=args.eps, alpha=args.alpha, autocast=amp)
        else:
            loss = "trades" if args.method == "trades" else "ce"
            self.attack = PGD(
                raw, eps=args.eps, alpha=args.alpha, steps=args.steps, loss=loss, autocast=amp
            )
        self.eval_attack = PGD(
            raw, eps=args.eps, alpha=args.eval_alpha, steps=args.eval_steps, autocast=amp
        )
        self.sampler = DistributedSampler(
            train, num_replicas=self.size, rank=self.rank, shuffle=True, seed=args.seed
        )
        self.milestones = milestones(args)
        self.augment = args.augment if args.augment is not None else args.data == "cifar10"
        self.start_epoch, self.best_pgd, self.wall_before = 0, -1.0, 0.0
        self.out = Path(args.out)

    # ---- checkpoints ----

    def _check_penalty_layers(self, train, device) -> None:
        """One forward pass of a zero image (eval mode, no gradient: no state changes) through
        the penalty's hooks, so that a named layer whose output is not (N, C, H, W) fails here,
        before anything is written or deleted, rather than at the first training step."""
        raw, penalty = self.raw, self.penalty
        was_training, was_enabled = raw.training, penalty.enabled
        raw.eval()
        penalty.enabled = True
        try:
            with torch.no_grad():
                raw(torch.zeros(1, *train.shape, device=device))
        finally:
            raw.train(was_training)
            penalty.enabled = was_enabled
            penalty.reset()

    def resume(self) -> None:
        path = self.out / "last.pt"
        ckpt = load_checkpoint(path)
        diff = config_diff(ckpt["config"], self.config)
        if ckpt["config"].get("data") != self.config["data"]:
            diff.append(
                f"data: checkpoint {ckpt['config'].get('data')!r}, asked {self.config['data']!r}"
            )
        if diff:
            raise CLIError(
                f"cannot resume from {path}: it holds a {describe(ckpt['config'])} model, this run "
                f"asks for {describe(self.config)} ({'; '.join(diff)}). Pass the checkpoint's "
                "options or another --out."
            )
        diff = resume_diff(ckpt, self.config, self.args)
        if diff:
            raise CLIError(
                f"cannot resume from {path}: its run was trained with other options "
                f"({'; '.join(diff)}). Pass the checkpoint's options or another --out."
            )
        load_model_state(self.raw, ckpt, path)
        self.opt.load_state_dict(ckpt["optimizer"])
        self.start_epoch, self.best_pgd = int(ckpt["epoch"]), float(ckpt["best_pgd"])
        self.wall_before = float(ckpt["wall_time_s"])
        set_rng(ckpt["rng"], self.device, self.args.seed, self.start_epoch)
        if self.rank == 0:
            self._mend_metrics(ckpt.get("metrics"))
        self.log(f"resumed from {path} after epoch {self.start_epoch}")

    def _mend_metrics(self, last_row: dict | None) -> None:
        """metrics.jsonl as of the checkpoint: the rows of later epochs go (a crash after the
        row was written but before its checkpoint: the epoch runs again), and the checkpoint's own
        row comes back if the crash came between the checkpoint and its row."""
        path = self.out / "metrics.jsonl"
        rows = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by the crash
                if int(row.get("epoch", 0)) <= self.start_epoch:
                    rows.append(row)
        if last_row and not any(int(r.get("epoch", 0)) == self.start_epoch for r in rows):
            rows.append(last_row)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def save(self, epoch: int, row: dict, wall: float, is_best: bool) -> None:
        rng = gather_rng(self.device)  # collective: every rank
        if self.rank != 0:
            return
        args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.args).items()}
        state = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config,
            "model": self.raw.state_dict(),
            "optimizer": self.opt.state_dict(),
            "epoch": epoch,
            "args": args,
            "threat": {
                "norm": "Linf",
                "eps": self.args.eps,
                "alpha": self.args.eval_alpha,
                "train_alpha": self.args.alpha,
                "steps": self.args.steps,
            },
            "rng": rng,
            "world_size": self.size,
            "best_pgd": self.best_pgd,
            "wall_time_s": wall,
            "metrics": row,
            "versions": versions(),
        }
        save_checkpoint(self.out / "last.pt", state)
        if is_best:
            save_checkpoint(self.out / "best.pt", state)

    # ---- one epoch ----

    def _batches(self, epoch: int):
        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(self.sampler)), dtype=torch.int64)
        for start in range(0, len(order), self.local_bs):
            yield order[start : start + self.local_bs]

    def _loss(self, x, x_adv, y):
        args = self.args
        if self.penalty is not None:
            self.penalty.enabled = True
        with autocast(self.device, args.amp):
            if args.method == "trades":
                # The clean pass through the unwrapped model, the adversarial one through DDP: the
                # gradient hooks of DDP fire once per parameter either way (the sum of both).
                logits_nat = self.raw(x).float()
                logits = self.model(x_adv).float()
                kl = F.kl_div(F.log_softmax(logits, 1), F.softmax(logits_nat, 1), reduction="sum")
                loss = F.cross_entropy(logits_nat, y) + args.beta * kl / x.shape[0]
            else:
                logits = self.model(x_adv).float()
                loss = F.cross_entropy(logits, y)
            pen = (
                self.penalty.value().float()
                if self.penalty is not None
                else torch.zeros((), device=self.device)
            )
            return loss + pen, logits, pen

    def train_epoch(self, epoch: int, progress) -> dict:
        args, device = self.args, self.device
        nb = math.ceil(len(self.sampler) / self.local_bs)
        sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, correct, n, penalty
        bar = progress(total=nb, desc=f"epoch {epoch + 1}/{args.epochs}")
        for i, idx in enumerate(self._batches(epoch)):
            lr = lr_at(args, epoch + i / nb, self.milestones)
            for group in self.opt.param_groups:
                group["lr"] = lr
            x, y = self.train_ds.images[idx].to(device), self.train_ds.labels[idx].to(device)
            if self.augment:
                x = augment(x)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.penalty is not None:
                self.penalty.enabled = False
            x_adv = self.attack(x, y)  # the model in eval() during the attack, restored after
            self.model.train()
            loss, logits, pen = self._loss(x, x_adv, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            n = x.shape[0]
            sums += torch.stack(
                [
                    loss.detach().double() * n,
                    (logits.argmax(1) == y).sum().double(),
                    torch.tensor(n, dtype=torch.float64, device=device),
                    pen.detach().double() * n,
                ]
            )
            bar.update(1)
            if i % 10 == 0 or i == nb - 1:
                bar.set_postfix(
                    loss=f"{sums[0].item() / sums[2].item():.3f}",
                    acc=f"{100 * sums[1].item() / sums[2].item():.1f}",
                    lr=f"{lr:.3g}",
                )
        bar.close()
        if self.penalty is not None:
            self.penalty.enabled = False
        sums = all_reduce_sum(sums).tolist()
        return {
            "lr": lr,
            "train_loss": sums[0] / sums[2],
            "train_acc": 100 * sums[1] / sums[2],
            "train_hf_penalty": sums[3] / sums[2],
            "train_n": int(sums[2]),
        }

    def run(self, progress, show: bool) -> dict | None:
        args = self.args
        metrics_path = self.out / "metrics.jsonl"
        t0 = time.perf_counter()
        row = None
        for epoch in range(self.start_epoch, args.epochs):
            te = time.perf_counter()
            row = {"epoch": epoch + 1, **self.train_epoch(epoch, progress)}
            train_s = time.perf_counter() - te
            if self.size > 1:  # BatchNorm statistics: rank 0's everywhere (what last.pt holds)
                for buf in self.raw.buffers():
                    dist.broadcast(buf, 0)
            acc = accuracy(
                self.raw,
                self.test_ds,
                {"clean": None, "pgd": self.eval_attack},
                self.local_bs,
                self.device,
                args.channels_last,
                progress=(lambda it: progress(it, desc="  test", leave=False)) if show else None,
            )
            wall = self.wall_before + time.perf_counter() - t0
            row.update(
                clean_acc=acc["clean"],
                pgd_acc=acc["pgd"],
                test_n=len(self.test_ds),
                pgd_steps=args.eval_steps,
                eps=args.eps,
                train_time_s=train_s,
                epoch_time_s=time.perf_counter() - te,
                wall_time_s=wall,
            )
            is_best = acc["pgd"] > self.best_pgd
            self.best_pgd = max(self.best_pgd, acc["pgd"])
            self.save(epoch + 1, row, wall, is_best)
            if self.rank == 0:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                self.log(
                    f"epoch {epoch + 1}/{args.epochs}: train loss {row['train_loss']:.4f} acc "
                    f"{row['train_acc']:.1f}% | test clean {acc['clean']:.1f}% PGD-{args.eval_steps} "
                    f"{acc['pgd']:.1f}% | {row['epoch_time_s']:.0f} s"
                )
        return row


# --------------------------------------------------------------------------- main


def make_progress(enabled: bool):
    """A tqdm factory (or a silent stand-in when disabled or tqdm is missing)."""
    if enabled:
        try:
            from tqdm import tqdm

            return lambda *a, **k: tqdm(*a, dynamic_ncols=True, **k)
        except ImportError:
            print(
                "notice: tqdm is not installed (pip install tqdm): no progress bars",
                file=sys.stderr,
            )

    class Silent:
        def __init__(self, iterable=None, **_):
            self.iterable = iterable

        def __iter__(self):
            return iter(self.iterable)

        def update(self, *_):
            pass

        def set_postfix(self, *_, **__):
            pass

        def close(self):
            pass

    return Silent


def check_out(out: Path, args) -> None:
    """--out must be a folder (or not exist yet); a fresh run never replaces a run silently."""
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file, not a folder")
    if args.resume or args.overwrite:
        return
    held = [name for name in ("last.pt", "best.pt", "metrics.jsonl") if (out / name).exists()]
    if held:
        raise CLIError(
            f"--out {out} holds a run ({', '.join(held)}): pass --resume to continue it, "
            "--overwrite to replace it, or another --out"
        )


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.resume and args.overwrite:
        raise CLIError("--resume continues the run in --out, --overwrite replaces it: pick one")
    if args.root is not None:  # stored in the checkpoint: evaluate may run from another folder
        args.root = str(Path(args.root).expanduser().resolve())
    device = init_distributed(args.device)
    rank, size = world()

    def log(msg: str) -> None:
        if rank == 0:
            print(msg, flush=True)

    train, test = resolve_data(args, log)
    if args.augment is None:
        args.augment = args.data == "cifar10"  # resolved, so that --resume compares values
    threat(args, log)
    train = train.subset(args.subset or None, seed=0)
    test = test.subset(args.test_subset or None, seed=0)
    args.out = args.out or f"runs/{args.data}-{args.model}-{args.method}"
    out = Path(args.out)
    check_out(out, args)
    _RUN.update(out=out, overwrite=args.overwrite)
    trainer = Trainer(args, train, test, device, log)  # bad options fail here, before any write
    if args.resume:
        trainer.resume()
    if rank == 0:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CLIError(f"--out {out}: cannot create the folder ({e.strerror or e})") from None
        if not args.resume:  # a fresh run (--overwrite, or an --out without a run): fresh files
            for name in ("metrics.jsonl", "last.pt", "best.pt"):
                (out / name).unlink(missing_ok=True)
    show = rank == 0 and not args.no_progress
    progress = make_progress(show)
    log(
        f"{args.method} training of {describe(trainer.config)} on {args.data} "
        f"({len(train)} train / {len(test)} test images), eps {fmt_eps(args.eps)}, "
        f"{args.steps} step{'s' if args.steps != 1 else ''} of {args.alpha:.4g}"
        + (
            f", HF penalty {args.hf_penalty:g} on {','.join(trainer.penalty.layers)}"
            if trainer.penalty
            else ""
        )
        + f"; {size} process(es) on {device} ({device_name(device)}); out {out}"
    )
    if trainer.start_epoch >= args.epochs:
        fixed = epochs_fixed_by(args)
        log(
            f"nothing to do: {out / 'last.pt'} has {trainer.start_epoch} epochs; "
            + (
                f"it cannot be extended ({fixed}): start another --out to train longer"
                if fixed
                else f"pass --epochs > {trainer.start_epoch} to train more"
            )
        )
        return
    row = trainer.run(progress, show)
    if rank == 0 and row is not None:
        print(
            f"final (epoch {row['epoch']}): clean test accuracy {row['clean_acc']:.2f}%, "
            f"PGD-{args.eval_steps} (L-inf eps {fmt_eps(args.eps)}) accuracy {row['pgd_acc']:.2f}% "
            f"on {row['test_n']} test images; wall time {row['wall_time_s']:.0f} s; "
            f"checkpoint {out / 'last.pt'}",
            flush=True,
        )


#: What an interrupted run can do next (``interrupted_hint``): set by ``main`` once it knows.
_RUN: dict = {}


def interrupted_hint() -> str:
    """After Ctrl-C: how to continue, from what --out holds now."""
    out = _RUN.get("out")
    if out is None:
        return "nothing was written"
    if not (out / "last.pt").is_file():
        return f"no epoch had finished: nothing to resume in {out}"
    drop = " (without --overwrite)" if _RUN.get("overwrite") else ""
    return f"{out / 'last.pt'} holds the last finished epoch: continue with the same options{drop} and --resume"


if __name__ == "__main__":
    run_main(PROG, main, interrupted=interrupted_hint)
