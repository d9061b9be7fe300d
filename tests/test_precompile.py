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
    # smoke_3x3 (4 -> 8 channels, 3x3, fp16 channels_last): the sweep's forward, dgrad, wgrad and
    # training-step points, each launch with the configs its autotuner would try on an H100
    small = dict(arch=90, names=["smoke_3x3"], jobs=2, dtypes=["fp16"], layouts=["nhwc"])
    first = precompile.precompile("smoke", **small)
    assert first["finished"] and first["failed"] == 0, first["failures"]
    assert first["compiled"] == first["units"] > 3
    entries = set(os.listdir(cache))
    assert len(entries) == first["units"]  # distinct units are distinct Triton compiles
    second = precompile.precompile("smoke", **small)
    assert second["compiled"] == first["units"] and set(os.listdir(cache)) == entries  # all cache hits


def test_stops_at_its_seconds(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))
    start = time.perf_counter()
    result = precompile.precompile("quick", arch=90, jobs=1, seconds=2)  # ~550 units: minutes on one core
    assert not result["finished"] and result["compiled"] < result["units"]
    assert time.perf_counter() - start < 20


def test_plans_what_the_sweep_launches():
    # the quick suite's vgg16_28_512to512 is timed forward only (fp16, bf16, fp32): no gradient
    # kernel is compiled for it; rn50_14_3x3_256's dgrad point also runs its untimed forward
    units = precompile.plan("quick", precompile.target_of(90))
    vgg = {u.op for u in units if u.shape.name == "vgg16_28_512to512"}
    assert vgg == {"fwd"}
    ops = {u.op for u in units if u.shape.name == "rn50_14_3x3_256"}
    assert ops <= {"fwd", "dgrad", "wgrad"} and "dgrad" in ops
    assert {u.op for u in units if u.shape.name == "rn50_stem_max3x3s2"} <= {"fwd", "bwd"}
