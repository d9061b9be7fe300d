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


def test_plans_and_compiles_the_configs_table(tmp_path, monkeypatch):
    """--configs: the compiles of perf/shipped_configs.py's native runs come first, one per
    config at each warp and stage count the GPU's autotuner can pick, into the cache the configs
    stage then reads (with the keyword arguments it launches with: shipped_configs.launch_kwargs)."""
    units = precompile.table_plan(precompile.target_of(90))
    table = precompile.shipped_configs
    assert {(u.problem.name, u.dtype) for u in units} == {(p.name, d) for p, d in table.cases(table.PROBLEMS, "cuda")}
    fwd = {tuple(u.kwargs[name] for name in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages"))
           for u in units if (u.problem.name, u.dtype) == ("even_blocks", "fp16") and u.kwargs.get("GROUP_M")}
    assert len(fwd) == 32 and (128, 256, 64, 8, 4) in fwd and (32, 16, 16, 2, 3) in fwd  # 16 tiles x 3 and 4 stages
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))
    # global average pooling, NCHW: its two fixed-block kernels in fp16 and fp32
    first = precompile.precompile(None, arch=90, jobs=2, configs=["global_nchw"])
    assert first["finished"] and first["failed"] == 0, first["failures"]
    assert first["compiled"] == first["units"] == first["table_units"] == len(os.listdir(tmp_path / "cache")) == 4
