"""The training and evaluation CLIs end to end (``python -m wavefuse.train`` / ``.evaluate`` in
subprocesses, tiny runs on the synthetic set), resume, a 2-process gloo DDP run through torchrun,
and the CLIs' error messages (in process)."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wavefuse import data as wdata
from wavefuse import evaluate, train
from wavefuse._cli_common import CHECKPOINT_FORMAT, CLIError, run_main

REPO = Path(__file__).resolve().parents[1]
# A WRN-10-1 on 64 synthetic 16x16 images, 2 batches an epoch, 2-step PGD; a constant learning rate
# so that a resumed run and an uninterrupted one follow the same schedule.
TINY = [
    "--data", "synthetic", "--subset", "64", "--test-subset", "32", "--batch-size", "32",
    "--steps", "2", "--eval-steps", "2", "--depth", "10", "--widen", "1", "--lr", "0.05",
    "--schedule", "constant", "--hf-penalty", "0.001", "--no-progress", "--device", "cpu",
]  # fmt: skip


def run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    # Sleeping, not spinning, OpenMP waits: on a busy 2-core machine spinning threads starve
    # each other (a tiny PGD run here took 30x longer without this).
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One epoch of the tiny run; tests that change the folder copy it first."""
    out = tmp_path_factory.mktemp("cli") / "run"
    proc = run(["-m", "wavefuse.train", *TINY, "--epochs", "1", "--out", str(out)], out.parent)
    (out / "stdout.txt").write_text(proc.stdout)
    return out


def test_train_writes_checkpoints_metrics_and_the_final_accuracies(trained):
    stdout = (trained / "stdout.txt").read_text()
    assert "final (epoch 1): clean test accuracy" in stdout and "PGD-2 (L-inf eps 0.1)" in stdout
    assert "HF penalty 0.001 on block1,block2,block3" in stdout
    assert "WRN-10-1, wavelet=haar (paper), 10 classes, 1x16x16 inputs" in stdout  # TINY's model
    (row,) = metrics(trained)
    for key in ("epoch", "train_loss", "train_acc", "clean_acc", "pgd_acc", "wall_time_s", "lr"):
        assert key in row, key
    assert row["epoch"] == 1 and row["train_n"] == 64 and row["test_n"] == 32
    assert 0 <= row["pgd_acc"] <= row["clean_acc"] <= 100 and row["train_hf_penalty"] > 0
    ckpt = load(trained / "last.pt")
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["epoch"] == 1
    assert ckpt["config"]["model"] == "wrn" and ckpt["config"]["wavelet"] == "haar"
    assert ckpt["config"]["image_size"] == [16, 16] and ckpt["threat"]["eps"] == 0.1
    assert set(ckpt) >= {"model", "optimizer", "rng", "args", "versions"}
    assert ckpt["args"]["augment"] is False  # resolved: on for cifar10 only
    assert (trained / "best.pt").is_file()


def test_resume_continues_exactly_where_an_uninterrupted_run_would_be(trained, tmp_path, capsys):
    resumed = tmp_path / "resumed"
    shutil.copytree(trained, resumed)
    proc = run(["-m", "wavefuse.train", *TINY, "--epochs", "2", "--out", str(resumed), "--resume"],
               tmp_path)  # fmt: skip
    assert "resumed from" in proc.stdout and "after epoch 1" in proc.stdout
    rows = metrics(resumed)
    assert [r["epoch"] for r in rows] == [1, 2]
    straight = tmp_path / "straight"
    run(["-m", "wavefuse.train", *TINY, "--epochs", "2", "--out", str(straight)], tmp_path)
    a, b = load(resumed / "last.pt"), load(straight / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for k, v in b["model"].items():
        assert torch.equal(a["model"][k], v), k
    assert rows[1]["train_loss"] == metrics(straight)[1]["train_loss"]
    # nothing left to do: a clear notice, no new epoch (in process: saves a start-up)
    train.main([*TINY, "--epochs", "2", "--out", str(resumed), "--resume"])
    assert "nothing to do" in capsys.readouterr().out and len(metrics(resumed)) == 2


def test_evaluate_end_to_end(trained, tmp_path):
    report_path = tmp_path / "report.json"
    proc = run(
        ["-m", "wavefuse.evaluate", str(trained / "last.pt"), "--n", "16", "--no-progress",
         "--attacks", "clean,pgd3,cw2,autoattack", "--json", str(report_path)],
        tmp_path,
    )  # fmt: skip
    assert "AutoAttack (torchattacks 3.5.1 implementation)" in proc.stdout
    report = json.loads(report_path.read_text())
    assert report["n"] == 16 and report["eps"] == 0.1 and report["seed"] == 0
    assert report["data"] == "synthetic" and report["norm"] == "Linf"
    assert {"torch", "wavefuse", "torchattacks", "python"} <= set(report["versions"])
    attacks = report["attacks"]
    assert list(attacks) == ["clean", "pgd3", "cw2", "autoattack"]
    assert attacks["pgd3"]["steps"] == 3 and attacks["pgd3"]["alpha"] == pytest.approx(0.025)
    assert attacks["cw2"]["name"].startswith("CW-Linf (PGD-2")
    assert attacks["autoattack"]["name"] == "AutoAttack (torchattacks 3.5.1 implementation)"
    for r in attacks.values():
        assert 0 <= r["accuracy"] <= attacks["clean"]["accuracy"]
        assert r["accuracy"] * 16 / 100 == pytest.approx(round(r["accuracy"] * 16 / 100))


def test_ddp_two_processes_gloo(tmp_path):
    out = tmp_path / "ddp"
    proc = run(
        ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "wavefuse.train", *TINY, "--epochs", "1", "--out", str(out)],
        tmp_path,
        timeout=150,
    )  # fmt: skip
    assert proc.stdout.count("final (epoch 1)") == 1  # only rank 0 prints
    assert "2 process(es)" in proc.stdout
    (row,) = metrics(out)  # only rank 0 writes
    assert row["train_n"] == 64 and row["test_n"] == 32  # each rank half, summed
    ckpt = load(out / "last.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])


@pytest.mark.parametrize(
    "extra",
    [
        ["--method", "trades", "--beta", "3"],
        ["--method", "fgsm-rs"],
        ["--amp", "bf16", "--channels-last", "--schedule", "step", "--milestones", "1"],
        ["--placement", "all_downsample", "--hf-layers", "block2.layer.0", "--hf-level", "2"],
        ["--model", "preact18", "--steps", "1", "--test-subset", "8", "--wavelet", "none"],
    ],
    ids=["trades", "fgsm-rs", "bf16-channels-last-step", "all-downsample-hf-layers", "preact18"],
)
def test_methods_and_options_in_process(extra, tmp_path, capsys):
    train.main([*TINY, "--epochs", "1", "--out", str(tmp_path), *extra])
    out = capsys.readouterr().out
    assert "final (epoch 1)" in out
    (row,) = metrics(tmp_path)
    assert row["train_n"] == 64 and 0 <= row["pgd_acc"] <= row["clean_acc"] <= 100
    assert all(math.isfinite(v) for v in row.values() if isinstance(v, float))
    ckpt = load(tmp_path / "last.pt")
    assert ckpt["args"]["method"] == train.parser().parse_args(extra).method
    if "trades" in extra:
        assert ckpt["args"]["beta"] == 3.0
    if "fgsm-rs" in extra:
        assert ckpt["threat"]["train_alpha"] == pytest.approx(0.125)  # 1.25 eps
        assert ckpt["threat"]["steps"] == 1 and "1 step of 0.125" in out
        assert "notice: --steps 2 is not used by --method fgsm-rs" in out  # TINY's --steps
        # the recorded "alpha" is the per-epoch PGD test's step (eps / 4), not the training one
        assert ckpt["threat"]["alpha"] == pytest.approx(ckpt["threat"]["eps"] / 4)
    if "--hf-layers" in extra:
        assert "HF penalty 0.001 on block2.layer.0" in out and row["train_hf_penalty"] > 0


def test_trades_loss_is_ce_plus_beta_times_the_batch_mean_kl(tmp_path):
    """TRADES' training loss as its reference code writes it: CE(f(x), y) + beta / N *
    KLDivLoss(sum)(log_softmax(f(x_adv)), softmax(f(x))), recomputed here from the model."""
    args = train.parser().parse_args(
        [*TINY, "--hf-penalty", "0", "--method", "trades", "--beta", "3", "--out", str(tmp_path)]
    )
    ds = wdata.load("synthetic", n=8, shape=(1, 16, 16))
    train.threat(args)
    trainer = train.Trainer(args, ds, ds, torch.device("cpu"), print)
    x, y = ds.images, ds.labels
    x_adv = torch.rand_like(x)
    trainer.raw.eval()  # BatchNorm from its running statistics: both passes alike
    with torch.no_grad():  # logits far from uniform: a KL term well above the tolerance
        trainer.raw.fc.weight.mul_(50)
    loss, _, pen = trainer._loss(x, x_adv, y)
    with torch.no_grad():
        nat, adv = trainer.raw(x), trainer.raw(x_adv)
        kl = torch.nn.KLDivLoss(reduction="sum")(adv.log_softmax(1), nat.softmax(1))
        expected = torch.nn.functional.cross_entropy(nat, y) + 3.0 * kl / x.shape[0]
    assert float(pen) == 0 and kl / x.shape[0] > 0.01
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)


def test_evaluate_attacks_are_pgd_on_their_losses():
    """--attacks pgdK / cwK are wavefuse.attacks.PGD with K steps on the CE / CW margin loss
    (the same adversarial images from the same seed); the two losses differ on this model."""
    from wavefuse.attacks import PGD

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()
    x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 10, (16,))
    adv = {}
    for kind, loss in [("pgd", "ce"), ("cw", "cw")]:
        _, atk = evaluate.make_attack(kind, 3, model, 0.1, 0.03, 10, 0)
        torch.manual_seed(1)
        adv[kind] = atk(x, y)
        torch.manual_seed(1)
        expected = PGD(model, eps=0.1, alpha=0.03, steps=3, loss=loss)(x, y)
        assert torch.equal(adv[kind], expected), kind
    assert not torch.equal(adv["pgd"], adv["cw"])


# --------------------------------------------------------------------------- errors (in process)


def fails(main, prog, argv, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        run_main(prog, main, argv)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_evaluate_errors(trained, tmp_path, capsys):
    err = fails(evaluate.main, evaluate.PROG, [str(tmp_path / "missing.pt")], capsys)
    assert "checkpoint" in err and "missing.pt not found" in err
    ckpt = str(trained / "last.pt")
    err = fails(evaluate.main, evaluate.PROG, [ckpt, "--json", str(tmp_path)], capsys)
    assert "is a folder: name the report file" in err  # before any attack runs
    for name, content in (("text.pt", b"root:x:0:0\n"), ("empty.pt", b"")):
        (tmp_path / name).write_bytes(content)
        err = fails(evaluate.main, evaluate.PROG, [str(tmp_path / name)], capsys)
        assert "not a torch.save file, or a truncated or damaged one" in err
    err = fails(evaluate.main, evaluate.PROG, [str(tmp_path)], capsys)
    assert "a directory" in err
    torch.save({"weight": torch.zeros(2)}, tmp_path / "bare.pt")
    err = fails(evaluate.main, evaluate.PROG, [str(tmp_path / "bare.pt")], capsys)
    assert "is not a wavefuse.train checkpoint" in err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert "cannot read checkpoint" in fails(
        evaluate.main, evaluate.PROG, [str(tmp_path / "junk.pt")], capsys
    )
    torch.save({"f": math.gcd}, tmp_path / "code.pt")  # a pickled function: weights_only refuses
    err = fails(evaluate.main, evaluate.PROG, [str(tmp_path / "code.pt")], capsys)
    assert "cannot read checkpoint" in err and "weights_only" not in err  # not torch's advice
    assert "not a checkpoint of plain tensors, numbers and strings" in err
    ckpt = str(trained / "last.pt")
    err = fails(evaluate.main, evaluate.PROG, [ckpt, "--data", "digits", "--n", "4"], capsys)
    assert "WRN-10-1" in err and "--data digits has 1x8x8 images" in err
    other = load(trained / "last.pt")
    other["config"]["widen"] = 2
    torch.save(other, tmp_path / "other.pt")
    err = fails(evaluate.main, evaluate.PROG, [str(tmp_path / "other.pt")], capsys)
    assert "does not fit the model WRN-10-2" in err
    other["config"]["model"] = "vit"
    torch.save(other, tmp_path / "other.pt")
    err = fails(evaluate.main, evaluate.PROG, [str(tmp_path / "other.pt")], capsys)
    assert "unknown model 'vit'; allowed: wrn, preact18" in err
    # what a checkpoint does not record must be passed
    other = load(trained / "last.pt")
    del other["threat"]
    torch.save(other, tmp_path / "other.pt")
    err = fails(evaluate.main, evaluate.PROG, [str(tmp_path / "other.pt")], capsys)
    assert "does not record eps: pass --eps" in err
    del other["config"]["data"]
    torch.save(other, tmp_path / "other.pt")
    err = fails(evaluate.main, evaluate.PROG, [str(tmp_path / "other.pt")], capsys)
    assert "does not say its dataset: pass --data" in err
    # the checkpoint's --root belongs to its dataset: another --data does not look there
    other = load(trained / "last.pt")
    other["args"]["root"] = str(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:  # a CIFAR-10 folder, were it looked in
        pickle.dump({b"data": [[0] * 3072], b"labels": [0]}, f)
    torch.save(other, tmp_path / "other.pt")
    err = fails(
        evaluate.main, evaluate.PROG, [str(tmp_path / "other.pt"), "--data", "cifar10"], capsys
    )
    assert "dataset 'cifar10' has no default location" in err
    err = fails(evaluate.main, evaluate.PROG, [ckpt, "--attacks", "clean,pgd"], capsys)
    assert "pgd needs its number of steps" in err
    err = fails(evaluate.main, evaluate.PROG, [ckpt, "--attacks", "fgsm"], capsys)
    assert "unknown attack 'fgsm'" in err
    err = fails(evaluate.main, evaluate.PROG, [ckpt, "--attacks", "cw,cw20"], capsys)
    assert "cw20 (= cw) is listed twice" in err  # cw is cw20


def test_evaluate_options_reach_the_report(trained, tmp_path, capsys):
    """--n 0 is the whole test split (256 synthetic images); --eps and --alpha replace the
    checkpoint's eps and eps / 4; --json's folder is created; attack names are trimmed and
    case-insensitive."""
    report_path = tmp_path / "new" / "report.json"
    evaluate.main(
        [str(trained / "last.pt"), "--n", "0", "--attacks", " Clean , PGD1", "--eps", "0.05",
         "--alpha", "0.02", "--no-progress", "--json", str(report_path)]
    )  # fmt: skip
    report = json.loads(report_path.read_text())
    assert report["n"] == len(wdata.load("synthetic", split="test")) == 256
    assert report["eps"] == 0.05 and report["epoch"] == 1
    assert list(report["attacks"]) == ["clean", "pgd1"]
    assert report["attacks"]["pgd1"]["alpha"] == 0.02 and "alpha" not in report["attacks"]["clean"]
    assert "PGD-1 (L-inf, step 0.02" in capsys.readouterr().out


def test_evaluate_tests_the_training_runs_test_images(trained, capsys):
    """With the same count, evaluate's test images are the training run's per-epoch test images:
    the clean accuracy of last.pt is the one its metrics row recorded."""
    (row,) = metrics(trained)
    report = trained.parent / "clean.json"
    evaluate.main(
        [str(trained / "last.pt"), "--n", str(row["test_n"]), "--attacks", "clean",
         "--batch-size", "32", "--no-progress", "--json", str(report)]
    )  # fmt: skip
    assert json.loads(report.read_text())["attacks"]["clean"]["accuracy"] == row["clean_acc"]


def test_evaluate_seeds_each_attack_and_keeps_its_report(trained, tmp_path, capsys, monkeypatch):
    """Every attack starts from torch.manual_seed(--seed), whatever ran before it; a report that
    cannot be written is printed; an unwritable --json folder is refused before any attack."""
    ckpt = str(trained / "last.pt")
    seen = []

    def accuracy(model, ds, attacks, *a, **k):
        seen.append(torch.rand(3))
        torch.rand(5)  # what an attack would draw
        return dict.fromkeys(attacks, 50.0)

    monkeypatch.setattr(evaluate, "accuracy", accuracy)
    evaluate.main([ckpt, "--n", "4", "--attacks", "clean,pgd1,cw1", "--seed", "7", "--no-progress"])
    torch.manual_seed(7)
    expected = torch.rand(3)
    assert len(seen) == 3 and all(torch.equal(r, expected) for r in seen)

    def cannot_write(self, text):
        raise OSError("disk full")

    capsys.readouterr()
    monkeypatch.setattr(Path, "write_text", cannot_write)
    with pytest.raises(SystemExit):
        run_main(evaluate.PROG, evaluate.main, [ckpt, "--n", "4", "--attacks", "clean",
                                                "--json", str(tmp_path / "r.json")])  # fmt: skip
    out, err = capsys.readouterr()
    assert "--json" in err and "cannot write the report (disk full); printed above" in err
    assert json.loads(out[out.index("{") :])["attacks"]["clean"]["accuracy"] == 50.0
    monkeypatch.undo()
    monkeypatch.setattr(evaluate.os, "access", lambda path, mode: False)
    err = fails(evaluate.main, evaluate.PROG, [ckpt, "--json", str(tmp_path / "r.json")], capsys)
    assert f"{tmp_path} is not writable" in err


def test_parse_attacks_rejects_what_it_cannot_run():
    assert evaluate.parse_attacks(evaluate.DEFAULT_ATTACKS) == [
        ("clean", "clean", None), ("pgd20", "pgd", 20), ("cw", "cw", evaluate.CW_STEPS),
    ]  # fmt: skip
    for spec, message in [
        ("clean5", "unknown attack 'clean5'"),
        ("autoattack2", "unknown attack 'autoattack2'"),
        ("pgd0", "pgd0: the number of steps must be >= 1"),
        ("cw0", "cw0: the number of steps must be >= 1"),
        ("clean,pgd2,clean", "--attacks: clean is listed twice"),
        ("clean,", "unknown attack ''"),
    ]:
        with pytest.raises(CLIError, match=re.escape(message)):
            evaluate.parse_attacks(spec)


def test_autoattack_gets_the_threat_model_classes_and_seed(monkeypatch):
    """torchattacks.AutoAttack (standard, L-inf) with --eps, the model's classes and --seed."""
    import types

    made = {}

    class AutoAttack:
        def __init__(self, model, **kw):
            made.update(kw)

    monkeypatch.setitem(
        sys.modules, "torchattacks", types.SimpleNamespace(AutoAttack=AutoAttack, __version__="x")
    )
    name, atk = evaluate.make_attack("autoattack", None, torch.nn.Identity(), 0.03, 0.01, 7, 5)
    assert isinstance(atk, AutoAttack) and name == "AutoAttack (torchattacks x implementation)"
    assert made == {"norm": "Linf", "eps": 0.03, "version": "standard", "n_classes": 7, "seed": 5}


def test_evaluate_checks_channels_and_classes_against_the_checkpoint():
    config = {"model": "wrn", "depth": 10, "widen": 1, "wavelet": None, "placement": "paper",
              "num_classes": 10, "in_channels": 1, "image_size": [16, 16], "data": "synthetic"}  # fmt: skip
    ok = wdata.load("synthetic", split="test", n=20)
    evaluate.check_data(config, ok, "c.pt")
    for other in (
        wdata.load("synthetic", split="test", n=20, shape=(3, 16, 16)),
        wdata.load("synthetic", split="test", n=20, num_classes=5),
    ):
        c = other.shape[0]
        with pytest.raises(CLIError, match=f"has {c}x16x16 images and {other.num_classes} classes"):
            evaluate.check_data(config, other, "c.pt")


def test_resume_errors(trained, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    argv = [*TINY, "--epochs", "2", "--out", str(out), "--resume"]
    err = fails(train.main, train.PROG, [*argv, "--depth", "16"], capsys)
    assert "cannot resume" in err and "depth: checkpoint 10, asked 16" in err
    err = fails(train.main, train.PROG, [*argv, "--wavelet", "none"], capsys)
    assert "wavelet: checkpoint 'haar', asked None" in err
    err = fails(train.main, train.PROG, [*argv, "--placement", "all_downsample"], capsys)
    assert "cannot resume" in err and "placement: checkpoint 'paper', asked 'all_downsample'" in err
    err = fails(
        train.main, train.PROG, [*TINY, "--out", str(tmp_path / "empty"), "--resume"], capsys
    )
    assert "last.pt not found" in err
    # the run's options too, not only the model's: another threat, method or training split
    err = fails(train.main, train.PROG, [*argv, "--eps", "0.2", "--method", "trades"], capsys)
    assert "its run was trained with other options" in err
    assert "--method: checkpoint 'pgd', asked 'trades'" in err
    assert "--eps: checkpoint 0.1, asked 0.2" in err
    err = fails(train.main, train.PROG, [*argv, "--subset", "48"], capsys)
    assert "--subset: checkpoint 64, asked 48" in err and "input mean: checkpoint" in err
    err = fails(train.main, train.PROG, [*argv, "--seed", "1", "--batch-size", "16"], capsys)
    assert "--seed: checkpoint 0, asked 1" in err and "--batch-size: checkpoint 32, asked 16" in err


def test_a_fresh_run_never_replaces_a_run(trained, tmp_path, capsys, monkeypatch):
    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    before = (out / "last.pt").read_bytes(), metrics(out)
    argv = [*TINY, "--epochs", "1", "--out", str(out)]
    err = fails(train.main, train.PROG, argv, capsys)
    assert f"--out {out} holds a run (last.pt, best.pt, metrics.jsonl): pass --resume" in err
    assert (out / "last.pt").read_bytes() == before[0] and metrics(out) == before[1]  # untouched
    err = fails(train.main, train.PROG, [*argv, "--resume", "--overwrite"], capsys)
    assert "pick one" in err
    (tmp_path / "afile").write_text("x")
    err = fails(train.main, train.PROG, [*TINY, "--out", str(tmp_path / "afile")], capsys)
    assert "is a file, not a folder" in err
    err = fails(train.main, train.PROG, [*TINY, "--out", str(tmp_path / "afile" / "s")], capsys)
    assert "cannot create the folder" in err
    # --overwrite starts afresh; a relative --root is stored resolved (evaluate runs elsewhere)
    monkeypatch.chdir(tmp_path)
    train.main([*argv, "--overwrite", "--root", "rel"])
    assert "--root is not used by --data synthetic" in capsys.readouterr().out
    assert len(metrics(out)) == 1
    assert load(out / "last.pt")["args"]["root"] == str(tmp_path / "rel")


def test_resume_compares_the_resolved_augment():
    """A checkpoint that stored augment unresolved (None: the dataset's default) resumes with
    the explicit default, and is refused with the other value."""
    saved = vars(train.parser().parse_args(TINY))
    assert saved["augment"] is None
    asked = train.parser().parse_args([*TINY, "--no-augment"])
    assert train.resume_diff({"args": saved, "config": {}}, {}, asked) == []
    asked = train.parser().parse_args([*TINY, "--augment"])
    (diff,) = train.resume_diff({"args": saved, "config": {}}, {}, asked)
    assert "--augment" in diff


def test_ctrl_c_is_one_line(capsys):
    def main(argv):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as info:
        run_main("prog", main, [], interrupted=lambda: "what to do")
    assert info.value.code == 130
    assert capsys.readouterr().err == "prog: interrupted; what to do\n"


def test_interrupted_hint_says_what_out_holds(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "_RUN", {})
    assert train.interrupted_hint() == "nothing was written"
    train._RUN.update(out=tmp_path / "fresh", overwrite=False)
    assert "no epoch had finished: nothing to resume" in train.interrupted_hint()
    train._RUN.update(out=trained, overwrite=True)
    hint = train.interrupted_hint()
    assert "last.pt holds the last finished epoch" in hint and "(without --overwrite)" in hint


def test_resume_may_extend_only_schedules_that_do_not_depend_on_epochs():
    def diff(extra, epochs):
        saved = train.parser().parse_args([*TINY, *extra, "--epochs", "2"])
        asked = train.parser().parse_args([*TINY, *extra, "--epochs", str(epochs)])
        return train.resume_diff({"args": vars(saved), "config": {}}, {}, asked)

    assert diff([], 4) == []  # TINY: constant
    assert diff(["--schedule", "step", "--milestones", "1"], 4) == []
    assert diff(["--schedule", "cosine"], 2) == []
    (cosine,) = diff(["--schedule", "cosine"], 4)
    assert "--epochs: checkpoint 2, asked 4" in cosine and "cosine schedule" in cosine
    (step,) = diff(["--schedule", "step"], 4)
    assert "default step milestones" in step


def test_resume_mends_the_metrics_to_the_checkpoint(trained, tmp_path, capsys):
    """A crash between a checkpoint and its metrics row, or between a row and its checkpoint."""
    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    argv = [*TINY, "--epochs", "1", "--out", str(out), "--resume"]  # nothing to train
    (row,) = metrics(out)
    (out / "metrics.jsonl").write_text("")
    train.main(argv)
    assert metrics(out) == [row]  # restored from the checkpoint
    later = json.dumps({**row, "epoch": 2})
    (out / "metrics.jsonl").write_text(json.dumps(row) + "\n" + later + "\n" + '{"epo')
    train.main(argv)
    assert metrics(out) == [row]  # epoch 2 had no checkpoint; the cut line goes too
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--eps", "-1"], "must be a finite number > 0"),
        (["--method", "mart"], "invalid choice: 'mart'"),
        (["--data", "imagenet"], "invalid choice: 'imagenet'"),
        (["--epochs", "0"], "must be an integer >= 1"),
        (["--placement", "everywhere"], "invalid choice"),
        (["--eps", "inf"], "must be a finite number > 0"),
        (["--lr", "nan"], "must be a finite number > 0"),
        (["--beta", "inf"], "must be a finite number >= 0"),
        (["--subset", "-1"], "must be an integer >= 0"),
    ],
)
def test_train_rejects_bad_values(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        train.parser().parse_args(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_zero_is_a_value_where_the_help_says_so():
    """--subset 0 / --test-subset 0 (all images), --beta, --hf-penalty, --momentum, --wd 0."""
    args = train.parser().parse_args(
        ["--subset", "0", "--test-subset", "0", "--beta", "0", "--hf-penalty", "0",
         "--momentum", "0", "--wd", "0"]
    )  # fmt: skip
    assert (args.subset, args.test_subset, args.beta, args.hf_penalty) == (0, 0, 0.0, 0.0)
    assert evaluate.parser().parse_args(["x.pt", "--n", "0"]).n == 0


def test_help_shows_defaults_but_not_none():
    text = " ".join(train.parser().format_help().split())
    assert "(default: 64)" in text and "(default: None)" not in text


def test_options_reach_the_trainer(tmp_path):
    """The optimiser, the training attack, the per-epoch PGD test and the sampler get the flags
    (--amp bf16: the attacks' autocast dtype); the training step is 2.5 eps / steps (Madry et
    al.'s rule)."""
    args = train.parser().parse_args(
        [*TINY, "--method", "trades", "--eps", "0.2", "--steps", "4", "--eval-steps", "3",
         "--lr", "0.07", "--momentum", "0.5", "--wd", "0.001", "--seed", "3", "--amp", "bf16",
         "--out", str(tmp_path)]
    )  # fmt: skip
    train.threat(args)
    assert args.alpha == pytest.approx(2.5 * 0.2 / 4)
    ds = wdata.load("synthetic", n=8, shape=(1, 16, 16))
    trainer = train.Trainer(args, ds, ds, torch.device("cpu"), print)
    (group,) = trainer.opt.param_groups
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.07, 0.5, 0.001)
    atk, test = trainer.attack, trainer.eval_attack
    assert (atk.loss, atk.steps, atk.eps, atk.alpha) == ("trades", 4, 0.2, pytest.approx(0.125))
    assert (test.loss, test.steps, test.eps, test.alpha) == ("ce", 3, 0.2, pytest.approx(0.05))
    assert trainer.sampler.seed == 3 and trainer.augment is False
    assert atk.autocast == test.autocast == torch.bfloat16
    args = train.parser().parse_args(
        ["--data", "synthetic", "--model", "preact18", "--wavelet", "None"]
    )
    config = train.model_config(args, ds)  # no WRN depth and width in a PreActResNet's config
    assert (config["model"], config["depth"], config["widen"], config["wavelet"]) == (
        "preact18", None, None, None
    )  # fmt: skip


def test_best_checkpoint_and_per_sample_training_metrics(tmp_path, monkeypatch):
    """best.pt is the epoch of the best PGD accuracy (the first epoch's whatever it is, 0% here;
    not replaced by a worse one); train_loss and train_acc (%) are means over samples (batches of
    32 and 16, each "loss" its batch's mean label, every prediction right)."""
    pgd = iter([0.0, 20.0, 10.0])
    monkeypatch.setattr(train, "accuracy", lambda *a, **k: {"clean": 50.0, "pgd": next(pgd)})

    def loss(self, x, x_adv, y):
        logits = self.model(x_adv) * 0 + torch.nn.functional.one_hot(y, 10)
        return (logits.sum() * 0 + y.double().mean()).float(), logits, torch.zeros(())

    monkeypatch.setattr(train.Trainer, "_loss", loss)
    monkeypatch.setattr(train, "PGD", lambda model, **kw: lambda x, y: x)  # no attack: faster
    out = tmp_path / "run"
    argv = [*TINY, "--subset", "48", "--steps", "1", "--hf-penalty", "0", "--out", str(out)]
    train.main([*argv, "--epochs", "1"])
    assert load(out / "best.pt")["epoch"] == 1
    train.main([*argv, "--epochs", "3", "--resume"])
    assert load(out / "best.pt")["epoch"] == 2 and load(out / "last.pt")["epoch"] == 3
    labels = wdata.load("synthetic").subset(48).labels.double()
    for row in metrics(out):
        assert row["train_n"] == 48 and row["train_acc"] == 100.0
        assert row["train_loss"] == pytest.approx(labels.mean().item())


def test_subset_zero_trains_and_tests_on_whole_splits(tmp_path, monkeypatch):
    """--subset 0 / --test-subset 0: all 1024 / 256 synthetic images (the loaders' defaults)."""
    got = {}

    class Stop(Exception):
        pass

    def trainer(args, train_ds, test_ds, device, log):
        got.update(train=len(train_ds), test=len(test_ds))
        raise Stop

    monkeypatch.setattr(train, "Trainer", trainer)
    with pytest.raises(Stop):
        train.main([*TINY, "--subset", "0", "--test-subset", "0", "--out", str(tmp_path)])
    assert got == {"train": 1024, "test": 256}


def test_global_batch_must_split_evenly_across_processes(tmp_path, monkeypatch):
    args = train.parser().parse_args([*TINY, "--batch-size", "32", "--out", str(tmp_path)])
    train.threat(args)
    ds = wdata.load("synthetic", n=8, shape=(1, 16, 16))
    monkeypatch.setattr(train, "world", lambda: (0, 3))
    with pytest.raises(CLIError, match="--batch-size 32 .* not divisible by the 3 processes"):
        train.Trainer(args, ds, ds, torch.device("cpu"), print)


def test_bad_milestones_and_devices_are_clean_errors(tmp_path, capsys):
    argv = [*TINY, "--epochs", "1", "--out", str(tmp_path / "out")]
    err = fails(
        train.main, train.PROG, [*argv, "--schedule", "step", "--milestones", "1,x"], capsys
    )
    assert "--milestones '1,x': expected comma-separated epochs" in err
    err = fails(train.main, train.PROG, [*argv, "--device", "bogus"], capsys)
    assert "--device 'bogus'" in err
    if not torch.cuda.is_available():
        err = fails(train.main, train.PROG, [*argv, "--device", "cuda"], capsys)
        assert "--device cuda: CUDA is not available here" in err
    assert not (tmp_path / "out").exists()


def test_known_datasets_use_the_published_threat_and_statistics():
    """Fashion-MNIST: eps 0.1, 10 steps of 0.025; CIFAR-10 and Fashion-MNIST inputs are normalised
    by the published constants, whatever the training split; other sets by its own statistics."""
    from wavefuse import models
    from wavefuse._cli_common import input_stats

    args = train.parser().parse_args(["--data", "fashion-mnist"])
    train.threat(args)
    assert (args.eps, args.steps, args.alpha) == (0.1, 10, pytest.approx(0.025))
    ones = wdata.ArrayDataset(
        torch.ones(4, 3, 2, 2), torch.zeros(4, dtype=torch.int64), 10, "x", "train"
    )
    assert input_stats("cifar10", ones) == (list(models.CIFAR10_MEAN), list(models.CIFAR10_STD))
    assert input_stats("fashion-mnist", ones) == (
        list(models.FASHION_MNIST_MEAN), list(models.FASHION_MNIST_STD)
    )  # fmt: skip
    two = torch.tensor([0.0, 1.0]).repeat(2).view(4, 1, 1, 1).expand(4, 2, 1, 1).clone()
    two[:, 1] = 0.5  # channel 0: 0, 1, 0, 1 (mean 0.5, std sqrt(1/3)); channel 1: constant
    mean, std = input_stats("digits", wdata.ArrayDataset(two, ones.labels, 10, "x", "train"))
    assert mean == [0.5, 0.5] and std == [round(math.sqrt(1 / 3), 4), 0.001]


def test_fmt_eps_writes_multiples_of_one_255th_as_such():
    from wavefuse._cli_common import fmt_eps

    assert fmt_eps(8 / 255) == "8/255" and fmt_eps(2 / 255) == "2/255"
    assert fmt_eps(0.1) == "0.1" and fmt_eps(0.3) == "0.3"


def test_accuracy_evaluates_in_eval_mode_and_splits_samples_across_ranks(monkeypatch):
    """BatchNorm uses (and keeps) its running statistics; under K processes rank r takes samples
    r, r + K, ... and the counts are summed (here rank 1 of two, the other
    rank's counts taken as zero)."""
    from wavefuse import _cli_common

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        model[0].running_mean.fill_(0.3)
        model[0].running_var.fill_(2.0)
    model.train()
    x = torch.rand(10, 1, 2, 2)
    with torch.no_grad():
        pred = model.eval()(x).argmax(1)
    model.train()
    labels = torch.where(torch.arange(10) < 7, pred, 1 - pred)  # samples 7, 8, 9 wrong
    ds = wdata.ArrayDataset(x, labels, 2, "x", "test")
    acc = _cli_common.accuracy(model, ds, {"clean": None}, 3, torch.device("cpu"))
    assert acc == {"clean": pytest.approx(70.0)}
    assert torch.equal(model[0].running_mean, torch.full((1,), 0.3))
    monkeypatch.setattr(_cli_common, "world", lambda: (1, 2))
    monkeypatch.setattr(_cli_common, "all_reduce_sum", lambda t: t)  # the other rank: nothing
    acc = _cli_common.accuracy(model, ds, {"clean": None}, 3, torch.device("cpu"))
    assert acc == {"clean": pytest.approx(100.0 * 3 / 5)}  # 1, 3, 5 right; 7, 9 wrong


def test_checkpoints_are_replaced_atomically(tmp_path, monkeypatch):
    """A save that fails half-way leaves the previous checkpoint as it was."""
    from wavefuse import _cli_common

    path = tmp_path / "last.pt"
    _cli_common.save_checkpoint(path, {"epoch": 1})
    before = path.read_bytes()

    def crash(state, f):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(_cli_common.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        _cli_common.save_checkpoint(path, {"epoch": 2})
    assert path.read_bytes() == before


def test_bad_model_and_penalty_options(tmp_path, capsys):
    argv = [*TINY, "--epochs", "1", "--out", str(tmp_path / "out")]
    err = fails(train.main, train.PROG, [*argv, "--depth", "12"], capsys)
    assert "depth must be 6n + 4" in err
    err = fails(train.main, train.PROG, [*argv, "--hf-layers", "block9"], capsys)
    assert "--hf-penalty" in err and "'block9' is not a module" in err
    assert not (tmp_path / "out").exists()  # nothing written for a bad command
    err = fails(train.main, train.PROG, [*argv, "--hf-layers", "block1,,block2"], capsys)
    assert "an empty layer name" in err and "block1,block2,block3" in err
    # a layer whose output is not (N, C, H, W): refused before --overwrite deletes a run
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.jsonl").write_text("{}\n")
    err = fails(train.main, train.PROG, [*argv, "--hf-layers", "fc", "--overwrite"], capsys)
    assert "--hf-penalty" in err and "'fc' is not an (N, C, H, W) tensor" in err
    assert (tmp_path / "out" / "metrics.jsonl").read_text() == "{}\n"
    err = fails(train.main, train.PROG, [*argv, "--data", "cifar10"], capsys)
    assert "'cifar10' has no default location" in err and "--root" in err


def test_default_data_falls_back_to_digits_with_a_notice(monkeypatch, tmp_path):
    monkeypatch.setattr(wdata, "FASHION_MNIST_DIRS", [str(tmp_path)])
    args = train.parser().parse_args([])
    assert args.data is None
    notices = []
    tr, te = train.resolve_data(args, notices.append)
    assert args.data == "digits" and tr.name == te.name == "digits"
    assert "Falling back to --data digits" in notices[0]
    assert "sudo apt-get install -y dataset-fashion-mnist" in notices[0]
    train.threat(args)
    assert args.eps == 0.1 and args.steps == 10 and args.alpha == pytest.approx(0.025)


def test_damaged_default_data_is_a_clean_error_not_a_fallback(monkeypatch, tmp_path, capsys):
    """Fashion-MNIST files that are there but damaged: one line and status 2, as with --data
    fashion-mnist (not a traceback, and not a quiet fallback to digits)."""
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (tmp_path / stem).write_bytes(b"garbage")
    monkeypatch.setattr(wdata, "FASHION_MNIST_DIRS", [str(tmp_path)])
    argv = ["--epochs", "1", "--out", str(tmp_path / "out"), "--no-progress", "--device", "cpu"]
    for extra in ([], ["--data", "fashion-mnist", "--root", str(tmp_path)]):
        err = fails(train.main, train.PROG, [*argv, *extra], capsys)
        assert "train-images-idx3-ubyte is not an IDX file (bad magic number 67617262)" in err
    assert not (tmp_path / "out").exists()


def test_root_without_data_means_fashion_mnist_with_no_fallback(tmp_path):
    args = train.parser().parse_args(["--root", str(tmp_path / "typo")])
    with pytest.raises(wdata.DatasetNotFoundError, match="fashion-mnist.*--root"):
        train.resolve_data(args, print)


def test_threat_defaults_per_dataset():
    args = train.parser().parse_args(["--data", "cifar10"])
    train.threat(args)
    assert (args.eps, args.alpha, args.steps) == (8 / 255, pytest.approx(2 / 255), 10)
    args = train.parser().parse_args(["--data", "cifar10", "--method", "fgsm-rs"])
    train.threat(args)
    assert args.alpha == pytest.approx(10 / 255)  # Wong et al.'s 1.25 eps
    assert args.steps == 1
    for steps, notices in (("1", []), ("3", ["notice: --steps 3 is not used by --method fgsm-rs"])):
        args = train.parser().parse_args(
            ["--data", "cifar10", "--method", "fgsm-rs", "--steps", steps]
        )
        log = []
        train.threat(args, log.append)
        assert args.steps == 1 and [n.split(" (")[0] for n in log] == notices


def test_lr_schedules_match_torch_schedulers():
    """lr_at at each epoch start is torch's MultiStepLR (gamma 0.1; default milestones 50% and 75%
    of --epochs) and CosineAnnealingLR (T_max = --epochs, to 0); "constant" stays --lr."""
    for argv, make in [
        (
            ["--schedule", "step", "--milestones", "3,5"],
            lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [3, 5], 0.1),
        ),
        (["--schedule", "step"], lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [4, 6], 0.1)),
        (["--schedule", "cosine"], lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 8)),
        (["--schedule", "constant"], lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1.0)),
    ]:
        args = train.parser().parse_args(["--epochs", "8", "--lr", "0.2", *argv])
        ms = train.milestones(args)
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
        sched = make(opt)
        for epoch in range(8):
            assert train.lr_at(args, float(epoch), ms) == pytest.approx(sched.get_last_lr()[0]), (
                argv,
                epoch,
            )
            opt.step()
            sched.step()


def test_augment_is_a_padded_crop_or_its_mirror():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    y = train.augment(x)
    assert y.shape == x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    seen = set()
    for i in range(64):
        windows = {(r, c): padded[i, :, r : r + 8, c : c + 8] for r in range(9) for c in range(9)}
        found = [
            (r, c, flip)
            for (r, c), w in windows.items()
            for flip in (False, True)
            if torch.equal(y[i], w.flip(-1) if flip else w)
        ]
        assert found, i
        seen |= set(found)
    assert not torch.equal(y, x)
    # every offset 0..8 of the rows and the columns is drawn, with and without the flip
    assert {r for r, _, _ in seen} == {c for _, c, _ in seen} == set(range(9))
    assert {f for _, _, f in seen} == {False, True}


def test_recorded_versions_are_the_installed_distributions():
    """Checkpoints and reports record the versions `python -m wavefuse.info` prints: the installed
    distributions' (PyWavelets 1.9.0's wheel says 1.8.0 in pywt.__version__)."""
    from wavefuse import info
    from wavefuse._cli_common import versions

    v = versions()
    assert v["pywt"] == info._version("PyWavelets")
    assert v.get("torchattacks", "not installed") == info._version("torchattacks")
    assert info._version("wavefuse-no-such-distribution") == "not installed"
