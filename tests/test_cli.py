"""The `convtri` command end to end: demo, a small LeNet run with its outputs, and DDP."""
import csv
import subprocess
import sys

import pytest
import torch

from convtri.cli import main
from convtri.models import TorchLeNet

pytest.importorskip("sklearn")  # the offline default dataset


def test_demo(capsys):
    assert main(["demo", "--device", "cpu"]) == 0
    assert "chapter's answers: OK" in capsys.readouterr().out


def test_lenet_small_run_with_torch_twin(tmp_path, capsys):
    out = tmp_path / "run"
    # 64 examples per split, one epoch: the whole pipeline in seconds
    assert main(["lenet", "--dataset", "digits", "--limit", "64", "--epochs", "1", "--batch-size", "32",
                 "--out", str(out), "--compare-torch"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1].startswith("final: loss ") and "train_acc" in printed[-1] and "examples_per_s" in printed[-1]
    epoch_line = next(line for line in printed if line.startswith("epoch 1:"))
    assert "torch twin" in epoch_line and "largest parameter difference" in epoch_line
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    assert {"loss", "train_acc", "test_acc", "examples_per_s", "torch_loss", "max_param_diff"} <= set(rows[0])
    assert float(rows[0]["max_param_diff"]) < 1e-4  # our ops train like torch's from the same weights
    for image in ("curves.png", "filters.png"):
        assert (out / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    twin = TorchLeNet("modern")
    twin.load_state_dict(torch.load(out / "lenet.pt"))  # the checkpoint loads into plain torch.nn


def test_lenet_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        main(["lenet", "--epochs", "0"])
    with pytest.raises(SystemExit):
        main(["lenet", "--variant", "alexnet"])


def test_lenet_under_ddp_keeps_replicas_identical(tmp_path):
    # two CPU processes (gloo) under torchrun, each training on its share of the batches
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               "-m", "convtri.cli", "lenet", "--dataset", "digits", "--limit", "64", "--epochs", "1",
               "--batch-size", "16", "--out", str(tmp_path / "ddp")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ddp: 2 ranks, largest parameter difference across ranks 0" in result.stdout
    assert result.stdout.count("final: ") == 1  # rank 0 alone prints
    assert (tmp_path / "ddp" / "metrics.csv").exists()
