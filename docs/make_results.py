"""Trains and evaluates three small WideResNets on Fashion-MNIST and writes docs/results.md.

(a) PGD-AT, plain WRN; (b) PGD-AT, WRN with Wavelet Average Pooling (Haar, the paper's placement:
WideWaveletResNet); (c) as (b) plus the wavelet HF penalty of the three residual stages' outputs.
Same seed, data subset, epochs and threat model (L-inf eps 0.1) for all three; then clean, PGD-20
and CW-Linf (PGD-20, margin loss) accuracy on a fixed class-balanced set of test images, by
``python -m wavefuse.evaluate``. Every number in the report comes from this run; nothing is tuned
after the fact.

    python docs/make_results.py            # about 20 minutes on a 2-core CPU
    python docs/make_results.py --quick    # a seconds-scale smoke test; writes runs/results-quick/

The runs go to ``--work`` (default runs/results), one folder per configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: (key, title, extra train options)
RUNS = [
    ("a-plain", "(a) PGD-AT, plain WRN", ["--wavelet", "none"]),
    (
        "b-wap",
        "(b) PGD-AT, WAP (Haar, paper placement)",
        ["--wavelet", "haar", "--placement", "paper"],
    ),
    ("c-wap-hf", "(c) PGD-AT, WAP + HF penalty", ["--wavelet", "haar", "--placement", "paper"]),
]
#: The full run: sized for ~20 minutes on 2 CPU cores (measured: see the report's wall times).
FULL = {
    "subset": 4000, "epochs": 3, "test_subset": 500, "eval_n": 1000, "depth": 10, "widen": 1,
    "steps": 10, "batch_size": 64, "lr": 0.1, "hf_penalty": 3e-5,
}  # fmt: skip
QUICK = {
    "subset": 64, "epochs": 1, "test_subset": 32, "eval_n": 16, "depth": 10, "widen": 1,
    "steps": 2, "batch_size": 32, "lr": 0.05, "hf_penalty": 3e-5,
}  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a tiny smoke run (not for the report)")
    p.add_argument("--data", default="fashion-mnist", help="dataset (the report: fashion-mnist)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None, help="run folders; default runs/results[-quick]")
    p.add_argument(
        "--output", default=None, help="report; default docs/results.md (quick: in --work)"
    )
    for key, value in FULL.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None,
                       help=f"default {value} ({QUICK[key]} with --quick)")  # fmt: skip
    return p


def run(cmd: list[str]) -> tuple[str, float]:
    print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    # OpenMP threads that sleep instead of spinning while they wait: on a shared machine spinning
    # threads starve each other (here, 2-thread PGD ran 30x slower under a load average of 3-4
    # than with this setting; measured 2026-11-23). A value set by the caller wins.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"command failed with status {proc.returncode}")
    return proc.stdout, seconds


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    args.load_before = load_average()
    cfg = dict(QUICK if args.quick else FULL)
    for key in cfg:
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    work = Path(args.work or ("runs/results-quick" if args.quick else "runs/results"))
    if not work.is_absolute():
        work = REPO / work
    output = (
        Path(args.output)
        if args.output
        else (work / "results.md" if args.quick else REPO / "docs" / "results.md")
    )
    py = [sys.executable, "-m"]
    results, commands = [], []
    t_all = time.perf_counter()
    for key, title, extra in RUNS:
        out = work / key
        if out.is_relative_to(REPO):
            out = out.relative_to(REPO)  # commands run in the repo root: short, portable paths
        train_cmd = py + [
            "wavefuse.train", "--data", args.data, "--eps", "0.1", "--model", "wrn",
            "--depth", str(cfg["depth"]), "--widen", str(cfg["widen"]),
            "--subset", str(cfg["subset"]), "--test-subset", str(cfg["test_subset"]),
            "--epochs", str(cfg["epochs"]), "--batch-size", str(cfg["batch_size"]),
            "--lr", str(cfg["lr"]), "--steps", str(cfg["steps"]), "--seed", str(args.seed),
            "--out", str(out), "--overwrite", "--no-progress", *extra,
        ]  # fmt: skip
        if key == "c-wap-hf":
            train_cmd += ["--hf-penalty", str(cfg["hf_penalty"])]
        train_out, train_s = run(train_cmd)
        report = out / "evaluate.json"
        eval_cmd = py + [
            "wavefuse.evaluate", str(out / "last.pt"), "--n", str(cfg["eval_n"]),
            "--attacks", "clean,pgd20,cw", "--seed", str(args.seed), "--json", str(report),
            "--no-progress",
        ]  # fmt: skip
        _, eval_s = run(eval_cmd)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        results.append({
            "key": key, "title": title, "train_s": train_s, "eval_s": eval_s, "metrics": rows,
            "eval": json.loads(report.read_text()), "train_log": train_out.strip().splitlines()[0],
        })  # fmt: skip
        commands += [train_cmd, eval_cmd]
    total = time.perf_counter() - t_all
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(args, cfg, results, commands, total))
    print(f"wrote {output} ({total:.0f} s in all)")


def pct(x: float) -> str:
    return f"{x:.1f}"


def render(args, cfg: dict, results: list[dict], commands: list[list[str]], total: float) -> str:
    first = results[0]["eval"]
    versions = ", ".join(f"{k} {v}" for k, v in first["versions"].items())
    n = first["n"]
    title = (
        "Results (--quick smoke run: the numbers mean nothing)"
        if args.quick
        else ("Results: wavelet-regularised PGD-AT on Fashion-MNIST (CPU, small scale)")
    )
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    alpha = 2.5 * 0.1 / cfg["steps"]
    half_width = 196 * (0.21 / n) ** 0.5  # 95% binomial interval at 70%, in points
    head = f"""# {title}

Written by `python docs/make_results.py{" --quick" if args.quick else ""}` on {date}; {cpu_name()},
{os.cpu_count()} cores, no GPU, `OMP_WAIT_POLICY={os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}`;
load average {args.load_before} at the start, {load_average()} at the end (wall times depend on
it). Versions: {versions}.

## Setup

- Data: {args.data}; {cfg["subset"]} training images (a fixed class-balanced subset, `--subset`);
  evaluation on {n} test images (a fixed class-balanced subset of the test split).
- Model: WRN-{cfg["depth"]}-{cfg["widen"]}, 1 input channel, input normalisation inside the model.
- Training: PGD-AT (Madry et al.), L-inf eps 0.1, {cfg["steps"]} steps of {alpha:.4g}, random
  start; SGD lr {cfg["lr"]} (cosine to 0, per iteration), momentum 0.9, weight decay 5e-4, batch
  {cfg["batch_size"]}, {cfg["epochs"]} epoch(s), seed {args.seed}; the last epoch's weights are
  evaluated.
- (a) plain WRN; (b) WRN with Wavelet Average Pooling (Haar, one level, (LL+LH+HL+HH)/4) before
  the global pooling (the paper's WideWaveletResNet placement); (c) as (b) plus the wavelet HF
  penalty of the outputs of block1, block2 and block3 (Haar, level 1, squared detail
  coefficients summed over channels and positions, mean over the batch), lambda =
  {cfg["hf_penalty"]:g}.
- Evaluation (`python -m wavefuse.evaluate`, seed {args.seed}): clean; PGD-20 (step eps/4 =
  0.025, random start, CE loss); CW-Linf (PGD-20 on the CW margin loss, kappa 50).

## Numbers

Accuracy (%) on {n} {args.data} test images, L-inf eps 0.1.

| run | clean | PGD-20 | CW-Linf | train wall time | eval wall time |
| --- | ---: | ---: | ---: | ---: | ---: |
"""
    table = ""
    for r in results:
        a = r["eval"]["attacks"]
        table += (
            f"| {r['title']} | {pct(a['clean']['accuracy'])} | {pct(a['pgd20']['accuracy'])} | "
            f"{pct(a['cw']['accuracy'])} | {r['train_s']:.0f} s | {r['eval_s']:.0f} s |\n"
        )
    epochs = ""
    for r in results:
        for m in r["metrics"]:
            epochs += (
                f"| {r['key']} | {m['epoch']} | {m['train_loss']:.4f} | {pct(m['train_acc'])} | "
                f"{m['train_hf_penalty']:.4f} | {pct(m['clean_acc'])} | {pct(m['pgd_acc'])} | "
                f"{m['epoch_time_s']:.0f} s |\n"
            )
    shell = "\n".join("python " + " ".join(shlex.quote(c) for c in cmd[1:]) for cmd in commands)
    tail = f"""
Total wall time of the three runs: {total / 60:.1f} min (training includes a per-epoch clean and
PGD-10 test on {cfg["test_subset"]} images).

Per epoch (train loss and accuracy on the adversarial examples, HF penalty term = lambda x
penalty, test on {cfg["test_subset"]} images):

| run | epoch | train loss | train acc | HF penalty term | clean | PGD-10 | epoch time |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{epochs}
## Reading them

One seed, {cfg["epochs"]} epoch(s) on {cfg["subset"]} images, {n} test images: the 95% binomial
interval of an accuracy near 70% is about +-{half_width:.1f} points, and the seed-to-seed spread
is not measured, so smaller differences between the runs are noise. These are small CPU runs
that exercise the pipeline end to end; they are not the paper's CIFAR-10 WRN-34-10 experiment
and say nothing about its claims.

## Commands

```bash
{shell}
```
"""
    return head + table + tail


if __name__ == "__main__":
    main()
