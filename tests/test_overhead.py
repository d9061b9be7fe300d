"""perf/overhead.py: the CPU smoke run (meta tensors) end to end, and the launch count."""
import csv
import math
from types import SimpleNamespace

import torch

from test_perf import _load

overhead = _load("overhead")


def test_cpu_smoke_times_every_op_and_pass(tmp_path, capsys):
    out = tmp_path / "overhead.csv"
    rows = overhead.main(["--device", "cpu", "--smoke", "--out", str(out)])
    with open(out, newline="") as f:
        written = list(csv.DictReader(f))
    assert len(written) == len(rows) == len(overhead.CASES) * len(overhead.PASSES) * 2
    assert {(r["op"], r["pass"], r["provider"]) for r in written} == {
        (op, p, provider) for op in overhead.CASES for p in overhead.PASSES for provider in ("convtri", "torch")}
    for row in rows:
        assert row["mode"] == "meta" and row["device"] == "meta" and not row["note"], row
        assert 0 < row["us"] <= row["us_median"] and math.isfinite(row["us"]), row
        assert "smoke" in row["run"]
    pairs = {(r["op"], r["pass"]): {} for r in rows}
    for r in rows:
        pairs[(r["op"], r["pass"])][r["provider"]] = r
    for pair in pairs.values():  # the ratio is ours over torch's, from the same run
        assert pair["convtri"]["ratio"] == pair["convtri"]["us"] / pair["torch"]["us"]
    printed = capsys.readouterr().out
    assert "conv2d" in printed and "adaptive_avg_pool2d" in printed and "ratio" in printed


def test_a_failing_call_is_a_row(monkeypatch):
    """An op that raises leaves a row with a note, not a crash."""
    def broken(*args, **kwargs):
        raise RuntimeError("no such kernel")
    monkeypatch.setattr(overhead.convtri, "max_pool2d", broken)
    rows = overhead.measure("cpu", smoke=True, ops=["max_pool2d"])
    ours = [r for r in rows if r["provider"] == "convtri"]
    assert len(ours) == 3 and all("failed: RuntimeError: no such kernel" in r["note"] for r in ours)
    assert all(math.isnan(r["us"]) for r in ours)
    assert all(r["us"] > 0 for r in rows if r["provider"] == "torch")


def test_launch_counts_from_profiler_events():
    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU
    events = [SimpleNamespace(name=name, device_type=device) for name, device in [
        ("conv2d_fwd_kernel", cuda), ("conv2d_wgrad_kernel", cuda), ("Memset (Device)", cuda),
        ("cudaLaunchKernel", cpu), ("conv2d_fwd_kernel", cuda), ("Memcpy DtoD (Device -> Device)", cuda)]]
    assert overhead.launch_counts(events, calls=2) == (1.5, 1.0)
