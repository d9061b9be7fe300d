"""Every kernel config a GPU can launch, run through Triton's interpreter at its own block sizes
on small hand-picked problems and checked against torch in float64. perf/shipped_configs.py
holds the table (its problems, each commented with what it exercises) and the runner; the GPU
session's configs stage runs the same table natively.

num_warps and num_stages cannot matter here: the interpreter runs one program instance at a
time with numpy and ignores both, so a config is its block sizes, and each distinct one runs
once per launch (the GPU session runs every warp and stage count). The plans are built as on an
H100: its fixed blocks, its flags (EVEN_BLOCKS against every config's BLOCK_K), its split of
the weight gradient; only UPCAST and PRECISION are the interpreter's."""
import collections
import importlib
import math
import pkgutil
import sys

import pytest
import torch
from triton.runtime.jit import JITFunction

import convtri.kernels
from convtri import conv_launch
from convtri.kernels import conv2d as conv_kernels
from convtri.kernels import gpus
from convtri.kernels import pool2d as pool_kernels
from convtri.kernels import relayout
from test_perf import PERF

sys.path.insert(0, str(PERF))
import shipped_configs as table  # noqa: E402

CASES = table.cases(table.PROBLEMS, "cpu")


@pytest.mark.parametrize("problem, dtype", CASES, ids=[f"{p.name}-{d}" for p, d in CASES])
def test_every_config_matches_torch(problem, dtype):
    rows, executed = table.run_table([(problem, dtype)], "cpu")
    failed = [f"{r['round']}: {r['status']} {r['outputs']} {r['note']}" for r in rows if r["status"] != "ok"]
    assert not failed, "\n".join(failed)
    # it ran exactly what the problem's plan on an H100 (meta tensors) launches, each config of each launch
    assert executed[problem.name, dtype] == table.planned(problem, dtype)


@pytest.mark.parametrize("name", ["even_blocks", "masked_groups", "split_wgrad", "max3x3s2_nchw"])
def test_cpu_plans_are_the_gpus(name):
    """The interpreter runs an H100's plan: the launches a GPU makes (relayouts, wgrad's split and
    its sums), their fixed blocks, flags (EVEN_BLOCKS against MAX_BLOCK_K) and scalars, equal to
    those the plan on meta tensors makes; in float64 UPCAST and PRECISION agree too."""
    problem = table.problem_named(name)
    dtype = problem.dtypes[-1]
    tensors = problem.tensors(dtype, "cpu", torch.Generator().manual_seed(0))
    recorded = []
    with table.planned_as_on(table.CPU_TARGET), table.intercepting(lambda launch, _: recorded.append(launch)):
        leaves = [t.requires_grad_() for t in tensors]
        y = table.OPS[problem.op][0](*leaves, **problem.kwargs)
        torch.autograd.grad(y, leaves, torch.empty_like(y))  # nothing runs: the launches are recorded
    gpu = [launch for launch, _ in table.meta_launches(problem, dtype, table.CPU_TARGET, tf32=False)]
    fields = lambda launch: (launch.kernel.__name__, launch.scalars, launch.blocks, launch.meta)
    assert list(map(fields, recorded)) == list(map(fields, gpu))
    if name == "even_blocks":
        assert all(launch.meta["EVEN_BLOCKS"] for launch in recorded if "EVEN_BLOCKS" in launch.meta)


@pytest.fixture(scope="module")
def launches():
    """(dtype, Launch) of every problem's plan on an H100, from meta tensors."""
    return [(dtype, launch) for problem, dtype in CASES
            for launch, _ in table.meta_launches(problem, dtype, table.CPU_TARGET, tf32=False)]


def test_every_autotuned_config_is_forced(launches):
    """The block sizes of every config of every autotuned kernel, on every GPU kernels/gpus.py
    lists (GEMM pipelines shortened to its shared memory, as the prunes do), are forced by some
    problem: the GEMMs' and the direct depthwise kernels'."""
    forced, shipped = collections.defaultdict(set), {}
    for _, launch in launches:
        if launch.tuning is not None:
            name, configs = launch.kernel.__name__, launch.tuning[0]
            gemm = launch.kernel in table.GEMM_LIMITS
            forced[name] |= {table.label(config) for config in table.interpreter_configs(launch)}
            shipped[name] = {table.label(config) for capability in table.capabilities()
                             for config in configs(capability)
                             if not gemm or conv_kernels.within_shared_memory(config, gpus.gpu(capability), 2)}
    assert set(shipped) == {"conv2d_fwd_kernel", "conv2d_dgrad_kernel", "conv2d_wgrad_kernel", "depthwise_fwd_kernel",
                            "depthwise_dgrad_kernel", "depthwise_wgrad_kernel"}
    assert forced == shipped  # 15 GEMM tile shapes each (LARGE_SHAPES + SMALL_SHAPES: 16 with warps), the
    # depthwise SHAPES and WGRAD_SHAPES


def test_every_kernel_is_launched(launches):
    """Every kernel in kernels/ is launched by a problem of the table: a new kernel joins it with
    a problem (perf/shipped_configs.py's PROBLEMS) that launches it."""
    modules = [importlib.import_module(f"convtri.kernels.{module.name}")
               for module in pkgutil.iter_modules(convtri.kernels.__path__)]
    kernels = {name for module in modules for name, value in vars(module).items()
               if isinstance(value, JITFunction) and name.endswith("_kernel")}
    assert kernels - {launch.kernel.__name__ for _, launch in launches} == set()


def test_fixed_blocks_are_the_cuda_blocks(launches):
    """Launches with fixed blocks run at the blocks a GPU runs: every pooling kernel with a
    whole CUDA tile (CUDA_TILE_BYTES) in each element size and both tile forms, relayout's
    64 x 64 on rows that follow each other and rows that do not, the elementwise blocks."""
    whole = collections.defaultdict(set)
    for dtype, launch in launches:
        size, name, blocks = table.DTYPES[dtype].itemsize, launch.kernel.__name__, launch.blocks
        if (launch.tuning is None and "CHANNELS_LAST" in launch.meta
                and math.prod(blocks.values()) * size == pool_kernels.CUDA_TILE_BYTES):
            whole[name].add((size, launch.meta["CHANNELS_LAST"]))
        if name == "relayout_kernel":
            assert blocks == dict(BLOCK_P=relayout.BLOCK_PIXELS, BLOCK_C=relayout.BLOCK_CHANNELS)
            whole[name].add(launch.meta["FLAT_PIXELS"])
        if name in ("pad_fold_kernel", "conv2d_sum_splits_kernel"):
            assert blocks == dict(BLOCK=conv_launch.ELEMENTWISE_BLOCK_CUDA)
    pools = [name for name in whole if name != "relayout_kernel"]
    assert len(pools) == 6 and all(whole[name] == {(s, cl) for s in (2, 4, 8) for cl in (True, False)}
                                   for name in pools), dict(whole)
    assert whole["relayout_kernel"] == {True, False}


def test_a_wrong_config_is_named(monkeypatch):
    """A config whose output is off fails its own round, naming the output, and no other."""
    run_at = table.run_at

    def off_at_one_config(launch, config, tensors):
        result = run_at(launch, config, tensors)
        first = table.reference(table.interpreter_configs(launch))
        if launch.kernel.__name__ == "conv2d_dgrad_kernel" and table.label(config) != table.label(first):
            tensors[-1].view(-1)[0] += 1  # dx, the kernel's last tensor
        return result
    monkeypatch.setattr(table, "run_at", off_at_one_config)
    rows, _ = table.run_table([(table.problem_named("flat_taps"), "fp64")], "cpu", smoke=True)
    status = {row["kernel"]: (row["status"], row["outputs"]) for row in rows}
    assert status == {"(every launch)": ("ok", ""), "conv2d_fwd_kernel": ("ok", ""),
                      "conv2d_dgrad_kernel": ("mismatch", "dx"), "conv2d_wgrad_kernel": ("ok", "")}
