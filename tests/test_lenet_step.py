"""perf/lenet_step.py: the CPU smoke run of the training-step benchmark, and its table of modes."""
import csv
import math

from test_perf import _load

lenet_step = _load("lenet_step")


def test_cpu_smoke_every_mode_and_variant(tmp_path):
    out = tmp_path / "lenet.csv"
    rows = lenet_step.main(["--device", "cpu", "--smoke", "--out", str(out)])
    with open(out, newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    got = {(r["mode"], r["variant"]): r for r in rows}
    assert set(got) == {(m, v) for m in lenet_step.MODES for v in ("d2l", "modern")}
    for (mode, variant), row in got.items():
        assert row["batch"] == lenet_step.SMOKE_BATCH and "not a measurement" in row["run"]
        if mode in lenet_step.NEEDS_CUDA:
            assert row["note"] == "skipped: no CUDA" and math.isnan(row["vs_torch_eager"])
            continue
        assert not row["note"].startswith("failed"), row["note"]
        assert row["examples_per_s"] > 0 and row["step_ms"] > 0
        eager = got[("torch-eager", variant)]["examples_per_s"]
        assert row["vs_torch_eager"] == row["examples_per_s"] / eager


def test_a_mode_is_one_entry(monkeypatch):
    """A new step builder in MODES is measured like the others; one that raises is a row."""
    monkeypatch.setitem(lenet_step.MODES, "twin-again", lenet_step.MODES["torch-eager"])
    monkeypatch.setitem(lenet_step.MODES, "broken", lambda setup: 1 / 0)
    rows = lenet_step.measure("cpu", smoke=True, modes=["torch-eager", "twin-again", "broken"], variants=["modern"])
    again, broken = rows[1], rows[2]
    assert again["mode"] == "twin-again" and again["examples_per_s"] > 0
    assert broken["note"] == "failed: ZeroDivisionError: division by zero"
