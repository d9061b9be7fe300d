"""The pooling kernels compile for sm_90 and sm_80 as real calls launch them, with 16-byte loads
(LDG.E.128) wherever a tile runs along contiguous, aligned memory, and no register spills. No GPU
needed: a training step runs on meta tensors, its launches are recorded and bound by Triton's
own binder, as JITFunction.run binds them (shared/NOTES.md, "Compile what really runs").

The compiles run in a process of their own, which has interpreted no kernel: an interpreted
launch leaves triton.language patched (tl.static_range, tl.multiple_of, tl.reduce, dtype.to_ir),
and a compile in that process fails (convtri/_launch.py's ``_interpreting`` restores the
interpreter's patches in the wrong order)."""
import concurrent.futures
import multiprocessing
import os
import re
import subprocess
import tempfile
from unittest import mock

import pytest
import torch
import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature

import convtri
from aot import spill_bytes
from convtri._dispatch import clear_plans
from convtri._launch import Launch

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "fp64": torch.float64}
CALLS = {  # name -> (op, input size, kwargs): perf/shapes.py's pooling layers
    "vgg_max2x2s2": (convtri.max_pool2d, (32, 64, 224, 224), dict(kernel_size=2, stride=2)),
    "rn50_stem_max3x3s2": (convtri.max_pool2d, (32, 64, 112, 112), dict(kernel_size=3, stride=2, padding=1)),
    "avg3x3s2": (convtri.avg_pool2d, (32, 64, 56, 56), dict(kernel_size=3, stride=2, padding=1)),
    "rn50_global_avg7x7": (convtri.adaptive_avg_pool2d, (64, 2048, 7, 7), dict(output_size=1)),
}


def training_launches(call, dtype, layout):
    """[(Launch, tensors)] of a forward and backward of ``call`` on meta tensors, which the
    plans tile as CUDA tensors (meta tensors sit at address 0: aligned, as the allocator's are)."""
    op, size, kwargs = CALLS[call]
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.empty(size, dtype=DTYPES[dtype], device="meta").contiguous(memory_format=fmt).requires_grad_()
    recorded = []
    clear_plans()
    try:
        with mock.patch.object(Launch, "__call__", lambda launch, *tensors: recorded.append((launch, tensors))):
            y = op(x, **kwargs)
            torch.autograd.grad(y, x, torch.empty_like(y))
    finally:
        clear_plans()
    return recorded


def compile_launch(launch, tensors, arch):
    """``launch`` compiled for sm_<arch> with the signature Triton's binder gives its arguments,
    with its blocks and Triton's default warps and stages."""
    backend = make_backend(GPUTarget("cuda", arch, 32))
    kernel = launch.kernel
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    kwargs = {**launch.meta, **launch.blocks}
    bound, specialization, options = binder(*tensors, *launch.scalars, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
    return triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32),
                          options=options.__dict__)


def accesses(compiled):
    """The kernel's global loads (LDG) and stores (STG) by width in bits: {("LDG", 128): n, ...}."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "kernel.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        sass = subprocess.run([knobs.nvidia.cuobjdump.path, "-sass", cubin], capture_output=True, text=True,
                              check=True).stdout
    counts = {}
    for op, modifiers in re.findall(r"\b(LDG|STG)((?:\.\w+)*)", sass):
        bits = next((int(m) for m in modifiers.split(".") if m.isdigit()), 32)
        bits = 8 if re.search(r"\.[US]8\b", modifiers) else 16 if re.search(r"\.[US]16\b", modifiers) else bits
        counts[op, bits] = counts.get((op, bits), 0) + 1
    return counts


def compiled_figures(call, dtype, layout, arch):
    """{kernel name: (global accesses by width, spill bytes)} of ``call``'s training step."""
    out = {}
    for launch, tensors in training_launches(call, dtype, layout):
        compiled = compile_launch(launch, tensors, arch)
        out[launch.kernel.__name__] = (accesses(compiled), spill_bytes(compiled, arch))
    return out


@pytest.fixture(scope="module")
def figures():
    """``compiled_figures``, run in a fresh process (see the module's docstring)."""
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield lambda *case: pool.submit(compiled_figures, *case).result()


# call -> {kernel: (LDG or STG, 16-byte ones per thread at least)}: the main loads of
# channels_last tiles, one vector per tap (forward), per window (backward) or per step of a
# reduction, and the stores of the global average's backward, which loads next to nothing
VECTORS = {
    "vgg_max2x2s2": dict(max_pool2d_fwd_kernel=("LDG", 4), max_pool2d_bwd_kernel=("LDG", 1)),  # bwd: elementwise
    "rn50_stem_max3x3s2": dict(max_pool2d_fwd_kernel=("LDG", 9), max_pool2d_bwd_kernel=("LDG", 9)),  # bwd: gather
    "avg3x3s2": dict(avg_pool2d_fwd_kernel=("LDG", 9)),
    "rn50_global_avg7x7": dict(global_avg_pool2d_fwd_kernel=("LDG", 1), global_avg_pool2d_bwd_kernel=("STG", 1)),
}


@pytest.mark.parametrize("call, dtype, arch", [
    ("vgg_max2x2s2", "fp16", 90), ("vgg_max2x2s2", "bf16", 80),
    ("rn50_stem_max3x3s2", "fp16", 90), ("rn50_stem_max3x3s2", "bf16", 80),
    ("avg3x3s2", "bf16", 90),
    ("rn50_global_avg7x7", "fp16", 90), ("rn50_global_avg7x7", "bf16", 80),
])
def test_channels_last_loads_are_16_bytes(call, dtype, arch, figures):
    compiled = figures(call, dtype, "channels_last", arch)
    for kernel, (widths, spills) in compiled.items():
        assert spills == 0, f"{call} {kernel} {dtype} sm_{arch}: spills {spills} bytes"
    for kernel, (op, vectors) in VECTORS[call].items():
        counts = compiled[kernel][0]
        assert counts.get((op, 128), 0) >= vectors, f"{call} {kernel} {dtype} sm_{arch}: {counts}"


@pytest.mark.parametrize("call, dtype, arch, layout", [
    ("vgg_max2x2s2", "fp16", 90, "nchw"),  # each row of 2 x 2 windows read as whole vectors, split in registers
    ("rn50_stem_max3x3s2", "bf16", 80, "nchw"),  # the aligned pair at the window's centre, the one before in halves
    ("avg3x3s2", "fp32", 90, "nchw"),
    ("rn50_global_avg7x7", "fp64", 80, "nchw"),  # 7 x 7 planes: no alignment to find
    ("rn50_stem_max3x3s2", "fp32", 90, "channels_last"),
    ("avg3x3s2", "fp64", 80, "channels_last"),
])
def test_other_dtypes_and_nchw_compile_without_spills(call, dtype, arch, layout, figures):
    compiled = figures(call, dtype, layout, arch)
    for kernel, (widths, spills) in compiled.items():
        assert spills == 0, f"{call} {kernel} {dtype} {layout} sm_{arch}: spills {spills} bytes"
    if call == "vgg_max2x2s2":
        assert compiled["max_pool2d_fwd_kernel"][0].get(("LDG", 128), 0) >= 4


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
@pytest.mark.parametrize("arch", [90, 80])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("call", list(CALLS))
def test_every_call_compiles_without_spills(call, dtype, arch, layout, figures):
    for kernel, (widths, spills) in figures(call, dtype, layout, arch).items():
        assert spills == 0, f"{call} {kernel} {dtype} {layout} sm_{arch}: spills {spills} bytes"
