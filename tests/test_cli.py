"""The training and evaluation CLIs end to end (``python -m wavefuse.train`` / ``.evaluate`` in
subprocesses, tiny runs on the synthetic set), resume, a 2-process gloo DDP run through torchrun,
and the CLIs' error messages (in process)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wavefuse import data as wdata
from wavefuse import evaluate, train
from wavefuse._cli_common import CHECKPOINT_FORMAT, run_main

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
    ckpt = str(trained / "last.pt")
    err = fails(evaluate.main, evaluate.PROG, [ckpt, "--data", "digits", "--n", "4"], capsys)
    assert "WRN-10-1" in err and "--data digits has 1x8x8 images" in err
    other = load(trained / "last.pt")
    other["config"]["widen"] = 2
    torch.save(other, tmp_path / "other.pt")
    err = fails(evaluate.main, evaluate.PROG, [str(tmp_path / "other.pt")], capsys)
    assert "does not fit the model WRN-10-2" in err
    err = fails(evaluate.main, evaluate.PROG, [ckpt, "--attacks", "clean,pgd"], capsys)
    assert "pgd needs its number of steps" in err
    err = fails(evaluate.main, evaluate.PROG, [ckpt, "--attacks", "fgsm"], capsys)
    assert "unknown attack 'fgsm'" in err
    err = fails(evaluate.main, evaluate.PROG, [ckpt, "--attacks", "cw,cw20"], capsys)
    assert "cw20 (= cw) is listed twice" in err  # cw is cw20


def test_resume_errors(trained, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    argv = [*TINY, "--epochs", "2", "--out", str(out), "--resume"]
    err = fails(train.main, train.PROG, [*argv, "--depth", "16"], capsys)
    assert "cannot resume" in err and "depth: checkpoint 10, asked 16" in err
    err = fails(train.main, train.PROG, [*argv, "--wavelet", "none"], capsys)
    assert "wavelet: checkpoint 'haar', asked None" in err
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
    ],
)
def test_train_rejects_bad_values(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        train.parser().parse_args(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


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
    for i in range(64):
        windows = [padded[i, :, r : r + 8, c : c + 8] for r in range(9) for c in range(9)]
        assert any(torch.equal(y[i], w) or torch.equal(y[i], w.flip(-1)) for w in windows), i
    assert not torch.equal(y, x)


def test_recorded_versions_are_the_installed_distributions():
    """Checkpoints and reports record the versions `python -m wavefuse.info` prints: the installed
    distributions' (PyWavelets 1.9.0's wheel says 1.8.0 in pywt.__version__)."""
    from wavefuse import info
    from wavefuse._cli_common import versions

    v = versions()
    assert v["pywt"] == info._version("PyWavelets")
    assert v.get("torchattacks", "not installed") == info._version("torchattacks")
