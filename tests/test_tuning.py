"""A CUDA launch's first call, on CPU (issue 21): the GPU path runs for real down to Triton's
compile, which a jit_cache_hook intercepts (it records the compile's options and skips it), with
a driver that knows only its target and a do_bench that counts. What it shows: a launch whose
prune keeps one config times nothing; tuning results outlive the process in Triton's own autotune
cache, unless CONVTRI_TUNING_CACHE=0; every compile, tuned or not, traced or not, is given fp
fusion explicitly, whatever Triton's default."""
import contextlib
import os
import pathlib
import subprocess
import sys
import tempfile
from unittest import mock

import pytest
import torch
import triton
import triton.runtime.autotuner
from triton import knobs
from triton.runtime.driver import driver

from convtri import _launch
from convtri.kernels import conv2d as conv_kernels
from test_host_path import LAUNCHES

TESTS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS.parent / "perf"))
import precompile  # noqa: E402  (its driver of a target alone, and aot_report)
SM90 = (9, 0)


@contextlib.contextmanager
def gpu_path(cache_dir=None, capability=SM90):
    """Launch._bind and Launch._traced on CPU: ``compiles`` holds the options of every compile
    Triton's JIT would make (none is made), ``benchmarks`` the do_bench calls, ``traced`` the
    keyword arguments of every wrap_triton launch. Triton's cache folder is ``cache_dir``, by
    default a new one."""
    with contextlib.ExitStack() as stack:
        cache_dir = cache_dir or stack.enter_context(tempfile.TemporaryDirectory())
        stack.enter_context(mock.patch.dict(os.environ, TRITON_CACHE_DIR=str(cache_dir)))
        yield stack.enter_context(_gpu_path(capability))


@contextlib.contextmanager
def _gpu_path(capability):
    record = dict(compiles=[], benchmarks=0, traced=[])

    def hook(*, compile, **kwargs):
        record["compiles"].append(compile)
        return True  # skip the compile: the run returns no kernel

    def bench(kernel_call, quantiles=None):
        record["benchmarks"] += 1
        kernel_call()
        return [1.0, 1.0, 1.0]

    def wrap_triton(kernel):
        return _Traced(kernel, record["traced"])

    active = driver._active
    kernels = [conv_kernels.conv2d_fwd_kernel, conv_kernels.conv2d_dgrad_kernel, conv_kernels.conv2d_wgrad_kernel]
    _launch._autotuned.cache_clear()
    try:
        with (mock.patch.object(torch.cuda, "device", lambda index: contextlib.nullcontext()),
              mock.patch.object(torch.cuda, "get_device_capability", lambda index=None: capability),
              mock.patch.object(knobs.runtime, "jit_cache_hook", hook),
              mock.patch.object(_launch, "AUTOTUNE_BENCH", bench),
              mock.patch.object(_launch, "Bound", lambda *args: None),
              mock.patch.object(_launch, "wrap_triton", wrap_triton)):
            driver.set_active(precompile._TargetOnly(capability[0] * 10 + capability[1]))  # its target alone
            yield record
    finally:
        driver.set_active(active)
        _launch._autotuned.cache_clear()
        for kernel in kernels:
            kernel.device_caches.clear()  # their binders were made for this target


class OnCuda(torch.Tensor):
    """A meta tensor that says it is on a GPU, as torch.compile's tensors do where Launch._traced
    checks: its launches go to wrap_triton."""
    is_cuda = True


class _Traced:
    """wrap_triton's stand-in: records the keyword arguments of the launch it is given."""

    def __init__(self, kernel, calls):
        self.kernel, self.calls = kernel, calls

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((self.kernel, kwargs))


def bind(name="conv2d forward"):
    launch, tensors = LAUNCHES[name]()
    launch._bind(tensors, 0)
    return launch, tensors


def autotuner_runs(monkeypatch):
    runs = []
    run = triton.runtime.autotuner.Autotuner.run
    monkeypatch.setattr(triton.runtime.autotuner.Autotuner, "run",
                        lambda self, *a, **k: (runs.append(self), run(self, *a, **k))[1])
    return runs


# ----------------------------------------------------------------------------- one config

def test_a_launch_with_configs_to_time_times_each():
    # the conv2d forward of test_host_path's small layer: its prune keeps 4 configs on sm_90
    # (64x16x16 and 32x16x16 tiles at 3 and 4 stages), each timed once, then the best runs
    with gpu_path() as record:
        bind()
    assert record["benchmarks"] == 4 and len(record["compiles"]) == 5


@pytest.mark.parametrize("name, autotune", [
    ("conv2d forward", "0"),  # CONVTRI_AUTOTUNE=0 keeps one config per launch
    ("conv2d wgrad", "1"),  # 3 output channels, 2 input channels: one config fits (the smallest)
])
def test_one_kept_config_times_nothing(name, autotune, monkeypatch):
    """A launch whose prune keeps one config runs through Triton's JIT alone, not the autotuner,
    whose triton 3.6 run would time it (3.6 benchmarks whenever a kernel has several configs,
    however many its prune keeps; 3.9 does not)."""
    monkeypatch.setenv(_launch.AUTOTUNE_ENV, autotune)
    runs = autotuner_runs(monkeypatch)
    with gpu_path() as record:
        launch, tensors = bind(name)
    assert record["benchmarks"] == 0 and runs == []
    (compile,) = record["compiles"]
    configs, _, prune = launch.tuning
    named = dict(zip(launch.kernel.arg_names, (*tensors, *launch.scalars)))
    first = prune(SM90)(list(configs(SM90)), named, **launch.meta)[0]
    assert (compile["num_warps"], compile["num_stages"]) == (first.num_warps, first.num_stages)
    assert compile["constants"][(launch.kernel.arg_names.index("BLOCK_M"),)] == first.kwargs["BLOCK_M"]


# ----------------------------------------------------------------------------- across processes

SECOND_PROCESS = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
import test_tuning
with test_tuning.gpu_path(sys.argv[1]) as record:
    test_tuning.bind()
print(record["benchmarks"], len(record["compiles"]))
"""


def second_process(cache_dir, **env):
    result = subprocess.run([sys.executable, "-c", SECOND_PROCESS, str(cache_dir)], capture_output=True, text=True,
                            timeout=300, env={**os.environ, **env}, cwd=TESTS)
    assert result.returncode == 0, result.stderr
    return tuple(map(int, result.stdout.split()))


def test_tuning_is_remembered_across_processes(tmp_path, monkeypatch):
    """The first process times the launch's 4 configs and Triton writes the results to its
    cache folder; a second process reads them: no config timed, the best one compiled. With
    CONVTRI_TUNING_CACHE=0 a process times them again."""
    with gpu_path(tmp_path) as record:
        bind()
    assert record["benchmarks"] == 4
    (saved,) = tmp_path.glob("*/conv2d_fwd_kernel.autotune.json")
    assert second_process(tmp_path) == (0, 1)
    assert second_process(tmp_path, **{_launch.TUNING_CACHE_ENV: "0"}) == (4, 5)
    monkeypatch.setenv(_launch.TUNING_CACHE_ENV, "0")
    saved.unlink()
    with gpu_path(tmp_path) as record:
        bind()
    assert record["benchmarks"] == 4 and not list(tmp_path.glob("*/*.autotune.json"))  # nothing written


# ----------------------------------------------------------------------------- fp fusion

@pytest.mark.parametrize("name", ["conv2d forward", "conv2d wgrad", "avg_pool2d forward"])
@pytest.mark.parametrize("autotune", ["1", "0"])
def test_fp_fusion_is_given_to_every_compile(name, autotune, monkeypatch):
    """TRITON_DEFAULT_FP_FUSION=0 is triton 3.10's default: a compile that does not ask for fp
    fusion loses it. Ours ask: autotuned launches (each config timed), single-config and
    fixed-block (pooling) launches, and the launches torch.compile traces through wrap_triton.
    perf/precompile.py compiles with the same options (aot_report.launch_configs), so its
    binaries keep the keys the calls look up."""
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", "0")
    monkeypatch.setenv(_launch.AUTOTUNE_ENV, autotune)
    with gpu_path() as record:
        launch, tensors = bind(name)
        launch._traced([torch.Tensor._make_subclass(OnCuda, t) for t in tensors])
        single = launch._tuned(tensors, 0)[0] is None
        blocks = launch.tuning[0](SM90)[0].kwargs if launch.tuning else launch.blocks
        launch.kernel.run(*tensors, *launch.scalars, grid=(1,), warmup=False, **launch.meta, **blocks)  # the control
    *ours, control = record["compiles"]
    assert ours and all(compile["enable_fp_fusion"] is True for compile in ours)
    assert control["enable_fp_fusion"] is False
    ((traced, kwargs),) = record["traced"]
    assert kwargs["enable_fp_fusion"] is True
    assert (traced is launch.kernel) == single  # a single config: the kernel itself, else its autotuner

    target = precompile.aot_report.TARGETS[90]
    for kwargs in precompile.aot_report.launch_configs(launch, tensors, target):
        assert precompile.aot_report.bind(launch, tensors, kwargs, target).options["enable_fp_fusion"] is True


@pytest.mark.parametrize("name", ["conv2d forward", "conv2d wgrad", "avg_pool2d forward"])
def test_precompile_warms_up_what_a_call_compiles(name):
    """perf/precompile.py compiles each config through JITFunction.warmup with the keyword
    arguments of aot_report.launch_configs: the very compiles (signature, specialisation,
    constants and options, fp fusion included: what Triton's cache key is made of) that the
    launch's first call makes, so its binaries are cache hits."""
    def compiles():
        return {(str(c["signature"]), str(c["configs"]), str(sorted(c["constants"].items())), c["num_warps"],
                 c["num_ctas"], c["num_stages"], c["enable_fp_fusion"]) for c in record["compiles"]}
    with gpu_path() as record:
        launch, tensors = bind(name)
        called = compiles()
        record["compiles"].clear()
        for kwargs in precompile.aot_report.launch_configs(launch, tensors, precompile.aot_report.TARGETS[90]):
            launch.kernel.warmup(*tensors, *launch.scalars, grid=(1,), **kwargs)
        warmed = compiles()
    assert called and called == warmed
