"""The `convtri` command end to end: demo, LeNet runs with their outputs, checkpoints, resume and
evaluation, every user error as one line, Ctrl-C, the recipes, and DDP.

Runs whose subject is the command rather than our kernels (errors, resume, recipes) train the
torch.nn twin's layers (the ``torch_layers`` fixture): through Triton's interpreter each would take
minutes. That our kernels train exactly like those layers is test_lenet_small_run_with_torch_twin's
check (largest parameter difference below 1e-4 after an epoch on the same batches).
"""
import csv
import itertools
import os
import subprocess
import sys
import urllib.error

import pytest
import torch

from convtri.lenet import checkpoint, data, settings, training
from convtri.lenet.cli import main
from convtri.lenet.command import CommandError
from convtri.lenet.models import LeNet, TorchLeNet
from idx_files import digits_as_fashion_mnist

pytest.importorskip("sklearn")  # the offline default dataset

TINY = ["--dataset", "digits", "--limit", "48", "--batch-size", "16"]  # 3 steps an epoch


@pytest.fixture(autouse=True)
def _threads():
    """A CPU run sets one thread for torch and numpy's BLAS (training.one_cpu_thread): give the
    other test files back the counts they had."""
    from threadpoolctl import threadpool_limits  # with scikit-learn, which these tests need anyway
    threads = torch.get_num_threads()
    with threadpool_limits(limits=None):  # restores the BLAS threads on exit
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def torch_layers(monkeypatch):
    # torch.nn layers, kept as they are: `convert(fuse=True)` would move them onto our kernels,
    # through the interpreter (test_every_recipe_learns went from seconds to minutes each)
    monkeypatch.setattr(training, "LeNet", TorchLeNet)
    monkeypatch.setattr(training, "convert", lambda net, fuse: net)
    torch.set_num_threads(1)  # LeNet's small steps: a second thread only waits on a busy machine


@pytest.fixture
def offline(monkeypatch):
    def urlopen(url, timeout):
        raise urllib.error.URLError("no network in tests")
    monkeypatch.setattr(data.urllib.request, "urlopen", urlopen)


@pytest.fixture
def fashion_dir(tmp_path_factory):
    return digits_as_fashion_mnist(tmp_path_factory.mktemp("fashion"))


def run(capsys, *argv):
    """(exit status, stdout lines, stderr) of `convtri ARGV`."""
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def read_metrics(path):
    with open(path / "metrics.csv") as f:
        return list(csv.DictReader(f))


def one_error_line(err, command, *words):
    """stderr is exactly one line `convtri <command>: error: ...` holding ``words``, no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"convtri {command}: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])


# ----------------------------------------------------------------------------- demo

def test_demo(capsys):
    status, out, _ = run(capsys, "demo", "--device", "cpu")
    assert status == 0 and "chapter's answers: OK" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_demo_cuda_without_a_gpu(capsys):
    # was an AssertionError traceback
    status, _, err = run(capsys, "demo", "--device", "cuda")
    assert status == 2
    one_error_line(err, "demo", "--device cuda", "--device cpu")


# ----------------------------------------------------------------------------- a run and its outputs

def test_lenet_small_run_with_torch_twin(tmp_path, capsys):
    out = tmp_path / "run"
    # our kernels: 64 examples per split, one epoch, beside the torch twin
    status, printed, _ = run(capsys, "lenet", "--dataset", "digits", "--limit", "64", "--epochs", "1",
                             "--batch-size", "32", "--out", out, "--compare-torch")
    assert status == 0
    assert printed[-2].startswith("final: loss ") and "train_acc" in printed[-2] and "examples_per_s" in printed[-2]
    assert printed[-1].startswith("speed: convtri ") and "torch twin" in printed[-1] and "x the twin's" in printed[-1]
    epoch_line = next(line for line in printed if line.startswith("epoch 1/1:"))
    assert "torch twin" in epoch_line and "largest parameter difference" in epoch_line
    assert epoch_line.count("examples/s") == 2  # ours and the twin's
    assert "\r" not in "\n".join(printed)  # not a terminal: plain lines, no progress bar
    rows = read_metrics(out)
    assert len(rows) == 1
    assert {"loss", "train_acc", "test_acc", "test_loss", "examples_per_s", "torch_loss", "torch_examples_per_s",
            "max_param_diff"} <= set(rows[0])
    assert float(rows[0]["max_param_diff"]) < 1e-4  # our ops train like torch's from the same weights
    for image in ("curves.png", "filters.png"):
        assert (out / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = torch.load(out / "lenet.pt")
    assert saved["variant"] == "modern" and saved["arguments"]["lr"] == 0.02 and saved["epoch"] == 1
    assert set(saved["versions"]) == {"convtri", "torch", "triton"}
    twin = TorchLeNet(saved["variant"])
    twin.load_state_dict(saved["state_dict"])  # the network loads into plain torch.nn, as the README says


def test_lenet_pt_refuses_the_other_variant(tmp_path, capsys, torch_layers):
    # d2l and modern LeNets share every parameter name and shape: the file's variant is checked
    out = tmp_path / "run"
    assert run(capsys, "lenet", *TINY, "--epochs", "1", "--out", out)[0] == 0
    net = checkpoint.load_lenet(out / "lenet.pt")
    assert checkpoint.variant_of(net) == "modern" and not net.training
    with pytest.raises(ValueError, match=r"holds a modern LeNet .* the network given is d2l"):
        checkpoint.load_lenet(out / "lenet.pt", net=LeNet("d2l"))
    with pytest.raises(ValueError, match="holds a modern LeNet"):
        checkpoint.load_lenet(out / "lenet.pt", variant="d2l")
    torch.save(LeNet("modern").state_dict(), tmp_path / "bare.pt")  # a state_dict without its variant
    with pytest.raises(ValueError, match="no variant recorded"):
        checkpoint.load_lenet(tmp_path / "bare.pt")


def test_eval_only(tmp_path, capsys, torch_layers):
    out = tmp_path / "run"
    assert run(capsys, "lenet", *TINY, "--epochs", "1", "--out", out)[0] == 0
    final = float(read_metrics(out)[-1]["test_acc"])
    for saved in ("lenet.pt", "checkpoint.pt"):  # the dataset and limit come from the file
        status, printed, _ = run(capsys, "lenet", "--eval-only", out / saved)
        assert status == 0 and f"test_acc {final:.4f}" in printed[-1] and "on 48 digits test" in printed[-1]
    status, _, err = run(capsys, "lenet", "--eval-only", out / "lenet.pt", "--variant", "d2l")
    assert status == 2
    one_error_line(err, "lenet", "holds a modern LeNet", "--variant")
    status, _, err = run(capsys, "lenet", "--eval-only", out / "lenet.pt", "--epochs", "3")
    assert status == 2
    one_error_line(err, "lenet", "--epochs cannot be combined with --eval-only")
    status, _, err = run(capsys, "lenet", "--eval-only", tmp_path / "missing.pt")
    assert status == 2
    one_error_line(err, "lenet", "--eval-only", "no such file")


# ----------------------------------------------------------------------------- user errors

@pytest.mark.parametrize("argv, words", [
    (["--lr", "-1"], ["argument --lr", "more than 0"]),  # was a traceback from the optimizer
    (["--momentum", "-1"], ["argument --momentum", "at least 0"]),
    (["--epochs", "0"], ["argument --epochs", "at least 1"]),
    (["--variant", "alexnet"], ["argument --variant", "invalid choice"]),
    (["--dataset", "digits", "--optimizer", "adam", "--momentum", "0.5"], ["--momentum is SGD's", "--optimizer"]),
    (["--out", "a_file"], ["--out a_file is a file"]),  # was a FileExistsError traceback
    (["--out", "earlier_run"], ["--out earlier_run is not empty", "--overwrite", "--resume"]),
    (["--resume", "earlier_run"], ["--resume earlier_run: no checkpoint.pt there"]),
])
def test_usage_errors_are_one_line_and_leave_nothing(tmp_path, monkeypatch, capsys, argv, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    (tmp_path / "earlier_run").mkdir()
    (tmp_path / "earlier_run" / "notes.txt").write_text("mine")
    status, _, err = run(capsys, "lenet", *argv)
    assert status == 2
    one_error_line(err, "lenet", *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "earlier_run"]  # no run folder


def test_missing_data_with_no_download(tmp_path, monkeypatch, capsys, offline):
    # was a FileNotFoundError traceback speaking of download=False and root
    monkeypatch.chdir(tmp_path)
    status, _, err = run(capsys, "lenet", "--dataset", "fashion-mnist", "--data", tmp_path / "none", "--no-download")
    assert status == 1
    one_error_line(err, "lenet", f"--data {tmp_path / 'none'}", "--no-download", "--dataset digits")
    assert "download=False" not in err and list(tmp_path.iterdir()) == []


def test_no_network(tmp_path, monkeypatch, capsys, offline):
    # was three chained tracebacks
    monkeypatch.chdir(tmp_path)
    status, _, err = run(capsys, "lenet", "--dataset", "fashion-mnist", "--data", tmp_path / "cache")
    assert status == 1
    one_error_line(err, "lenet", "could not download Fashion-MNIST", "no network in tests", "--data",
                   "--dataset digits")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("damage, words", [
    (lambda content: content[:10], "corrupt gzip stream"),  # was a ValueError traceback
    (lambda content: __import__("gzip").compress(b"\0\0\x08\x03" + bytes(8)), "truncated IDX header"),
])
def test_corrupt_idx_files(tmp_path, monkeypatch, capsys, fashion_dir, damage, words):
    monkeypatch.chdir(tmp_path)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for path in fashion_dir.iterdir():
        (data_dir / path.name).write_bytes(path.read_bytes())
    broken = data_dir / "t10k-images-idx3-ubyte.gz"
    broken.write_bytes(damage(broken.read_bytes()))
    status, _, err = run(capsys, "lenet", "--dataset", "fashion-mnist", "--data", data_dir, "--no-download")
    assert status == 1
    one_error_line(err, "lenet", f"--data {data_dir}", str(broken), "delete or replace")
    assert words in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_diverging_loss_names_lr(tmp_path, capsys, torch_layers):
    status, _, err = run(capsys, "lenet", *TINY, "--lr", "1e6", "--out", tmp_path / "run")
    assert status == 1
    one_error_line(err, "lenet", "the loss became", "lower --lr")


def test_unexpected_errors_are_one_line_with_debug_for_the_traceback(tmp_path, capsys, monkeypatch):
    def broken(*args):
        raise RuntimeError("something inside\nwent wrong")
    monkeypatch.setattr(training, "train", broken)
    status, _, err = run(capsys, "lenet", *TINY, "--out", tmp_path / "run")
    assert status == 1
    one_error_line(err, "lenet", "RuntimeError: something inside went wrong", "--debug")
    with pytest.raises(RuntimeError, match="something inside"):
        main(["lenet", *TINY, "--out", str(tmp_path / "run"), "--debug"])
    monkeypatch.undo()
    with pytest.raises(CommandError):  # a user error too shows its traceback under --debug
        main(["lenet", "--dataset", "fashion-mnist", "--data", str(tmp_path / "none"), "--no-download", "--debug"])


# ----------------------------------------------------------------------------- Ctrl-C, resume, overwrite

def interrupt_at_step(monkeypatch, n):
    """Ctrl-C during the n-th training step of the run."""
    real, calls = training.Trainee.step, itertools.count(1)

    def step(self, x, y):
        if next(calls) == n:
            raise KeyboardInterrupt
        return real(self, x, y)
    monkeypatch.setattr(training.Trainee, "step", step)


def test_ctrl_c_keeps_the_last_epoch_and_resume_finishes_the_same_run(tmp_path, capsys, monkeypatch, torch_layers):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert run(capsys, "lenet", *TINY, "--epochs", "2", "--out", straight)[0] == 0
    with monkeypatch.context() as patch:
        interrupt_at_step(patch, 5)  # epoch 2, second step
        status, printed, err = run(capsys, "lenet", *TINY, "--epochs", "2", "--out", stopped)
    assert status == 130 and err.strip() == "convtri lenet: interrupted"
    assert f"keeps metrics.csv and checkpoint.pt of epoch 1: go on with `convtri lenet --resume {stopped}`" \
        in printed[-1]
    assert len(read_metrics(stopped)) == 1 and torch.load(stopped / "checkpoint.pt")["epoch"] == 1
    assert not (stopped / "lenet.pt").exists()

    status, printed, _ = run(capsys, "lenet", "--resume", stopped)
    assert status == 0 and any(line == f"resumed {stopped} after epoch 1" for line in printed)
    # the same batches, optimizer state and weights as the run that was never stopped
    for a, b in zip(read_metrics(straight), read_metrics(stopped)):
        assert {k: a[k] for k in ("epoch", "loss", "train_acc", "test_acc")} == \
               {k: b[k] for k in ("epoch", "loss", "train_acc", "test_acc")}
    for (name, a), b in zip(torch.load(straight / "lenet.pt")["state_dict"].items(),
                            torch.load(stopped / "lenet.pt")["state_dict"].values()):
        assert torch.equal(a, b), name

    status, _, err = run(capsys, "lenet", "--resume", stopped)  # done: more epochs must be asked for
    assert status == 2
    one_error_line(err, "lenet", "all its 2 epochs", "--epochs N")
    status, _, err = run(capsys, "lenet", "--resume", stopped, "--lr", "0.1")
    assert status == 2
    one_error_line(err, "lenet", "--lr cannot be combined with --resume")
    status, printed, _ = run(capsys, "lenet", "--resume", stopped, "--epochs", "3")
    assert status == 0 and len(read_metrics(stopped)) == 3


def test_resume_on_cpu_of_a_cuda_graph_run(tmp_path, capsys, torch_layers):
    # a --cuda-graph run's checkpoint holds Adam groups with capturable=True; resumed on CPU its
    # first step failed ("If capturable=True, params and state_steps must be on supported devices")
    out = tmp_path / "run"
    assert run(capsys, "lenet", *TINY, "--variant", "d2l", "--epochs", "1", "--out", out)[0] == 0  # Adam
    saved = torch.load(out / "checkpoint.pt")
    for group in saved["optimizer"]["param_groups"]:
        group["capturable"] = True
    torch.save(saved, out / "checkpoint.pt")
    status, printed, err = run(capsys, "lenet", "--resume", out, "--epochs", "2")
    assert status == 0, err
    assert len(read_metrics(out)) == 2
    assert [g["capturable"] for g in torch.load(out / "checkpoint.pt")["optimizer"]["param_groups"]] == [False]


def test_ctrl_c_in_the_first_epoch_leaves_no_folder(tmp_path, capsys, monkeypatch, torch_layers):
    interrupt_at_step(monkeypatch, 2)
    status, printed, err = run(capsys, "lenet", *TINY, "--out", tmp_path / "run")
    assert status == 130 and err.strip() == "convtri lenet: interrupted"
    assert "before any epoch ended: nothing saved" in printed[-1] and not (tmp_path / "run").exists()


def test_overwrite_replaces_an_earlier_run(tmp_path, capsys, torch_layers):
    out = tmp_path / "run"
    assert run(capsys, "lenet", *TINY, "--epochs", "2", "--out", out)[0] == 0
    (out / "notes.txt").write_text("mine")
    assert run(capsys, "lenet", *TINY, "--epochs", "1", "--out", out)[0] == 2  # refused: not empty
    assert len(read_metrics(out)) == 2
    assert run(capsys, "lenet", *TINY, "--epochs", "1", "--out", out, "--overwrite")[0] == 0
    assert len(read_metrics(out)) == 1 and torch.load(out / "checkpoint.pt")["epoch"] == 1
    assert (out / "notes.txt").read_text() == "mine"  # only a run's own files are replaced


# ----------------------------------------------------------------------------- recipes and time

@pytest.mark.parametrize("dataset", ["digits", "fashion-mnist"])
@pytest.mark.parametrize("variant", ["d2l", "modern"])
def test_every_recipe_learns(tmp_path, capsys, torch_layers, fashion_dir, dataset, variant):
    # each (dataset, variant) pair's defaults on a small budget: 1,438 training examples (all of the
    # digits, the whole of the stand-in Fashion-MNIST files) for the recipe's epochs. Was test_acc
    # 0.10 (chance) for d2l on digits.
    status, printed, _ = run(capsys, "lenet", "--dataset", dataset, "--variant", variant, "--data", fashion_dir,
                             "--no-download", "--device", "cpu", "--out", tmp_path / "run")
    assert status == 0
    recipe = settings.RECIPES[(dataset, variant)]
    assert f"{recipe['optimizer']} lr {recipe['lr']:g}" in printed[0]
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == recipe["epochs"] and float(rows[-1]["test_acc"]) > 0.6, rows[-1]


def test_estimate_and_what_to_do_about_a_long_cpu_run(tmp_path, capsys, monkeypatch, torch_layers):
    monkeypatch.setattr(training, "LONG_RUN_S", 0)  # every run counts as long
    status, printed, _ = run(capsys, "lenet", *TINY, "--epochs", "2", "--out", tmp_path / "run")
    assert status == 0
    estimate = next(i for i, line in enumerate(printed) if line.startswith("estimate: about "))
    assert estimate < next(i for i, line in enumerate(printed) if line.startswith("epoch 1/2"))
    for words in ("for 2 epochs", "that is long for a CPU", "--limit N (now 48", "--epochs N", "--device cuda"):
        assert words in printed[estimate], words
    assert "left)" in next(line for line in printed if line.startswith("epoch 1/2"))


def test_cpu_limits_fashion_mnist_by_default(tmp_path, capsys, torch_layers, fashion_dir, monkeypatch):
    # a plain `convtri lenet` that finds Fashion-MNIST ("auto") on CPU trains on --limit examples
    # per split (was the chapter's 10 epochs of 60,000 through the interpreter: 2.6 hours)
    monkeypatch.setattr(settings, "CPU_LIMIT", 100)  # the stand-in files hold fewer than the real limit
    status, printed, _ = run(capsys, "lenet", "--data", fashion_dir, "--epochs", "1", "--device", "cpu",
                             "--out", tmp_path / "run")
    assert status == 0 and "fashion-mnist 100 train / 100 test" in printed[0]
    assert "--limit 100 of 1438 / 359" in printed[0]


# ----------------------------------------------------------------------------- conventions

def test_help_shows_every_default_and_version(capsys):
    with pytest.raises(SystemExit):
        main(["lenet", "--help"])
    text = capsys.readouterr().out
    options = [line for line in text.split("options:")[1].splitlines() if line.lstrip().startswith("--")]
    for option in options:
        name = option.split()[0]
        block = text.split(option, 1)[1].split("\n  --", 1)[0]
        assert "default" in option + block, name
    assert "per process" in text and "fashion-mnist  d2l" in text  # torchrun's batch, the recipes
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("convtri ")


def test_python_dash_m_convtri():
    result = subprocess.run([sys.executable, "-m", "convtri", "--version"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("convtri "), result.stderr


def test_lenet_under_ddp_keeps_replicas_identical(tmp_path):
    # two CPU processes (gloo) under torchrun, each training on its share of the batches
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               "-m", "convtri", "lenet", "--dataset", "digits", "--limit", "64", "--epochs", "1",
               "--batch-size", "16", "--out", str(tmp_path / "ddp")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ddp: 2 ranks, largest parameter difference across ranks 0" in result.stdout
    assert result.stdout.count("final: ") == 1  # rank 0 alone prints
    assert "batch 16 per process" in result.stdout
    assert (tmp_path / "ddp" / "metrics.csv").exists()
