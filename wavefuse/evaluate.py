"""Robustness evaluation of a ``wavefuse.train`` checkpoint: ``python -m wavefuse.evaluate CKPT``.

Attacks (``--attacks``, comma-separated, in this order of cost):

- ``clean``: accuracy on the unperturbed test images.
- ``pgd<K>`` (``pgd20`` by default): L-inf PGD with K steps of ``--alpha`` (default eps / 4:
  2/255 at 8/255), random start, cross-entropy loss (``wavefuse.attacks.PGD``).
- ``cw`` / ``cw<K>``: CW-Linf, the same PGD (20 steps unless K is given) on the CW margin loss
  with confidence 50 (``loss="cw"``), as the robustness evaluations of TRADES / MART.
- ``autoattack``: AutoAttack, standard version (APGD-CE, APGD-T, FAB-T, Square), torchattacks'
  implementation (``torchattacks.AutoAttack``, reported under that name, not the original fra31
  code). Slow on a CPU.

The test images are the first ``--n`` of a fixed class-balanced order of the test split (the
same images as the training run's per-epoch test with the same count). The report goes to stdout
and, with ``--json``, to a file with the threat model, n, seed and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from wavefuse import data as wdata
from wavefuse._cli_common import (
    CLIError,
    HelpFormatter,
    accuracy,
    build_model,
    describe,
    device_name,
    fmt_eps,
    load_checkpoint,
    load_model_state,
    load_split,
    pick_device,
    run_main,
    versions,
)
from wavefuse.attacks import CW_KAPPA, PGD
from wavefuse.train import make_progress, nonneg_int, positive_float, positive_int

PROG = "python -m wavefuse.evaluate"
DEFAULT_ATTACKS = "clean,pgd20,cw"
CW_STEPS = 20


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Clean, PGD, CW-Linf and AutoAttack accuracy of a wavefuse.train checkpoint.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("checkpoint", help="a checkpoint written by wavefuse.train (last.pt, best.pt)")
    p.add_argument("--data", choices=wdata.DATASETS, default=None, help="default: the checkpoint's")
    p.add_argument("--root", default=None, help="dataset folder; default: the checkpoint's")
    p.add_argument(
        "--n", type=nonneg_int, default=1000, help="test images; 0: the whole test split"
    )
    p.add_argument(
        "--attacks",
        default=DEFAULT_ATTACKS,
        help="comma-separated: clean, pgd<K>, cw[<K>], autoattack",
    )
    p.add_argument("--eps", type=positive_float, default=None, help="default: the checkpoint's")
    p.add_argument("--alpha", type=positive_float, default=None, help="PGD/CW step; default eps/4")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--seed", type=int, default=0, help="seeds every attack's random start")
    p.add_argument("--device", default=None, help="default cuda if available, else cpu")
    p.add_argument("--json", default=None, metavar="PATH", help="write the report as JSON here")
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_attacks(spec: str) -> list[tuple[str, str, int | None]]:
    """'clean,pgd20,cw' -> [(key, kind, steps)]; kind in clean, pgd, cw, autoattack."""
    out = []
    for key in (s.strip().lower() for s in spec.split(",")):
        m = re.fullmatch(r"(clean|pgd|cw|autoattack)(\d*)", key)
        if not key or m is None or (m.group(1) in ("clean", "autoattack") and m.group(2)):
            raise CLIError(
                f"--attacks: unknown attack {key!r}; allowed: clean, pgd<K> (e.g. pgd20), cw, "
                "cw<K>, autoattack"
            )
        kind, steps = m.group(1), int(m.group(2)) if m.group(2) else None
        if kind == "pgd" and steps is None:
            raise CLIError("--attacks: pgd needs its number of steps, e.g. pgd20")
        if steps == 0:
            raise CLIError(f"--attacks {key}: the number of steps must be >= 1")
        if kind == "cw" and steps is None:
            steps = CW_STEPS
        same = [k for k, kd, st in out if (kd, st) == (kind, steps)]
        if same:
            twice = key if same[0] == key else f"{key} (= {same[0]})"
            raise CLIError(f"--attacks: {twice} is listed twice")
        out.append((key, kind, steps))
    return out


def make_attack(kind, steps, model, eps, alpha, num_classes, seed):
    """(display name, attack or None)."""
    if kind == "clean":
        return "clean", None
    if kind == "pgd":
        return f"PGD-{steps} (L-inf, step {alpha:.4g}, random start)", PGD(
            model, eps=eps, alpha=alpha, steps=steps
        )
    if kind == "cw":
        return f"CW-Linf (PGD-{steps} on the CW margin loss, kappa {CW_KAPPA:g})", PGD(
            model, eps=eps, alpha=alpha, steps=steps, loss="cw"
        )
    try:
        import torchattacks
    except ImportError:
        raise CLIError(
            "autoattack uses torchattacks' implementation: pip install torchattacks==3.5.1"
        ) from None
    atk = torchattacks.AutoAttack(
        model, norm="Linf", eps=eps, version="standard", n_classes=num_classes, seed=seed
    )
    return f"AutoAttack (torchattacks {torchattacks.__version__} implementation)", atk


def check_data(config: dict, test: wdata.ArrayDataset, ckpt_path) -> None:
    c, h, w = test.shape
    ok = (
        c == config["in_channels"]
        and [h, w] == list(config["image_size"])
        and test.num_classes == config["num_classes"]
    )
    if not ok:
        raise CLIError(
            f"checkpoint {ckpt_path} holds a {describe(config)} model (trained on "
            f"{config.get('data')}); --data {test.name} has {c}x{h}x{w} images and "
            f"{test.num_classes} classes"
        )


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    attacks = parse_attacks(args.attacks)
    if args.json:
        check_report_path(Path(args.json))
    ckpt = load_checkpoint(args.checkpoint)
    config, threat = ckpt["config"], ckpt.get("threat", {})
    device = pick_device(args.device)
    name = args.data or config.get("data")
    if name is None:
        raise CLIError(f"{args.checkpoint} does not say its dataset: pass --data")
    root = args.root if args.root is not None else ckpt.get("args", {}).get("root")
    if args.data and args.data != config.get("data") and args.root is None:
        root = None
    test = load_split(name, root, "test")
    check_data(config, test, args.checkpoint)
    test = test.subset(args.n or None, seed=0)
    eps = args.eps if args.eps is not None else threat.get("eps")
    if eps is None:
        raise CLIError(f"{args.checkpoint} does not record eps: pass --eps")
    alpha = args.alpha if args.alpha is not None else eps / 4

    model = build_model(config)
    load_model_state(model, ckpt, args.checkpoint)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)  # input gradients only (torchattacks and ours)

    progress = make_progress(not args.no_progress)
    print(
        f"{args.checkpoint}: {describe(config)}, epoch {ckpt.get('epoch')}; {name} test, "
        f"n={len(test)}, L-inf eps {fmt_eps(eps)}, seed {args.seed}, {device} ({device_name(device)})",
        flush=True,
    )
    results = {}
    for key, kind, steps in attacks:
        torch.manual_seed(args.seed)
        display, atk = make_attack(kind, steps, model, eps, alpha, test.num_classes, args.seed)
        t0 = time.perf_counter()
        acc = accuracy(
            model,
            test,
            {key: atk},
            args.batch_size,
            device,
            progress=None if args.no_progress else (lambda it, d=key: progress(it, desc=d)),
        )[key]
        seconds = time.perf_counter() - t0
        results[key] = {"name": display, "accuracy": acc, "steps": steps, "time_s": seconds}
        if kind in ("pgd", "cw"):
            results[key]["alpha"] = alpha
        print(f"  {display:<66s} {acc:6.2f}%   ({seconds:.0f} s)", flush=True)

    report = {
        "checkpoint": str(args.checkpoint),
        "model": describe(config),
        "config": config,
        "epoch": ckpt.get("epoch"),
        "data": name,
        "split": "test",
        "n": len(test),
        "norm": "Linf",
        "eps": eps,
        "seed": args.seed,
        "attacks": results,
        "device": f"{device} ({device_name(device)})",
        "versions": versions(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if args.json:
        text = json.dumps(report, indent=2) + "\n"
        try:
            Path(args.json).write_text(text)
        except OSError as e:  # checked before the attacks; the report is not lost either way
            print(text)
            raise CLIError(
                f"--json {args.json}: cannot write the report ({e}); printed above"
            ) from None
        print(f"report: {args.json}", file=sys.stderr)


def check_report_path(path: Path) -> None:
    """Before any attack runs (an AutoAttack evaluation takes long): --json names a file that can
    be written, its folder created if missing."""
    if path.is_dir():
        raise CLIError(
            f"--json {path} is a folder: name the report file (e.g. {path / 'eval.json'})"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"--json {path}: cannot create its folder ({e.strerror or e})") from None
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK):
        raise CLIError(f"--json {path}: {target} is not writable")


if __name__ == "__main__":
    run_main(PROG, main)
