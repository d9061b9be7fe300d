"""perf/precompile.py: the quick suite's kernels compiled ahead, over processes, into Triton's
cache, through JITFunction.warmup (on this CPU for sm_90: a warm-up asks the driver only its target)."""
import os
import sys
import time

from test_perf import PERF

sys.path.insert(0, str(PERF))
import precompile  # noqa: E402  (by its own name: the spawned workers import it so)


def test_one_compile_per_binding_and_a_second_run_finds_them_cached(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("TRITON_CACHE_DIR", str(cache))  # the workers' Triton cache
    # smoke_3x3 (4 -> 8 channels, 3x3, fp16 channels_last): forward, dgrad and wgrad, each with
    # the configs its autotuner would try on an H100
    first = precompile.precompile("smoke", arch=90, names=["smoke_3x3"], jobs=2)
    assert first["finished"] and first["failed"] == 0, first["failures"]
    assert first["compiled"] == first["units"] > 3
    entries = set(os.listdir(cache))
    assert len(entries) == first["units"]  # distinct units are distinct Triton compiles
    second = precompile.precompile("smoke", arch=90, names=["smoke_3x3"], jobs=2)
    assert second["compiled"] == first["units"] and set(os.listdir(cache)) == entries  # all cache hits


def test_stops_at_its_seconds(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))
    start = time.perf_counter()
    result = precompile.precompile("quick", arch=90, jobs=1, seconds=2)  # ~770 units: minutes on one core
    assert not result["finished"] and result["compiled"] < result["units"]
    assert time.perf_counter() - start < 20
