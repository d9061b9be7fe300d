"""Ahead-of-time compilation of our kernels for NVIDIA targets, on a machine without a GPU, as
real calls compile them: the machinery of perf/aot_report.py (shared/NOTES.md, "Compile what
really runs"), the calls the tests compile beyond perf/shapes.py's training steps, and what
every compile must show."""
import pathlib
import sys

import torch

import convtri

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "perf"))
import aot_report  # noqa: E402
import shapes  # noqa: E402

LAYERS = aot_report.LAYERS


def _meta(size, dtype, layout):
    t = torch.empty(size, dtype=aot_report.DTYPES[dtype], device="meta")
    if len(size) == 4:
        t = t.contiguous(memory_format=aot_report.sweep.LAYOUTS[layout])
    return t.requires_grad_()


def _train(op, inputs):
    y = op(*inputs)
    torch.autograd.grad(y, inputs, torch.empty_like(y))


def biased_step(shape, dtype, layout, padding_mode="zeros"):
    """A training step of conv layer ``shape`` with a bias (and ``padding_mode``)."""
    def step():
        inputs = [_meta(s, dtype, layout) for s in (shape.input_shape, shape.weight_shape, (shape.k,))]
        _train(lambda x, w, b: convtri.conv2d(x, w, b, shape.stride, shape.padding, 1, shape.groups,
                                              padding_mode=padding_mode), inputs)
    return step


def transposed_step(shape, dtype, layout):
    """A training step of the conv_transpose2d (with a bias) that maps ``shape``'s output back
    to its input: its forward is ``shape``'s dgrad."""
    def step():
        inputs = [_meta(s, dtype, layout) for s in (shape.output_shape, shape.weight_shape, (shape.c,))]
        _train(lambda x, w, b: convtri.conv_transpose2d(x, w, b, shape.stride, shape.padding, groups=shape.groups),
               inputs)
    return step


def avg_step_excluding_pad(shape, dtype, layout):
    """A training step of average-pooling layer ``shape`` with count_include_pad=False."""
    def step():
        _train(lambda x: convtri.avg_pool2d(x, shape.kernel, shape.stride, shape.padding, shape.ceil_mode,
                                            count_include_pad=False), [_meta(shape.input_shape, dtype, layout)])
    return step


CALLS = {  # how a test case calls its layer
    "layer": aot_report.training_step,  # as perf/sweep.py and the report call it
    "bias": biased_step,  # the forward's bias and the wgrad's bias gradient
    "transposed": transposed_step,  # dgrad with conv_transpose2d's bias
    "reflect": lambda shape, dtype, layout: biased_step(shape, dtype, layout, "reflect"),  # pad_fold's dgrad
    "exclude_pad": avg_step_excluding_pad,
}


def compiled_checks(call, layer, dtype, arch, layout, every=False, jobs=1, kernel=""):
    """[(Check, launch meta, figures)] of every launch the call makes on ``arch``'s GPU (of
    those whose kernel's name holds ``kernel``): its largest config, or ``every`` config it runs with."""
    step = CALLS[call](LAYERS[layer], dtype, layout)
    checks = [(check, meta) for check, meta in aot_report.checks_of(step, aot_report.TARGETS[arch], largest=not every)
              if kernel in check.name]
    figures = aot_report.compile_all([check for check, _ in checks], jobs)
    return [(check, meta, figures[check.key]) for check, meta in checks]


def check_compiled(check, meta, dtype, figures):
    """What every compile of ours must show: shared memory within the block's limit; for a
    fp16/bf16/tf32 GEMM, tensor cores in the main loop: HGMMA on sm_90 at 64 rows or more
    (a warpgroup's wgmma), mma.sync (HMMA) on sm_80. Spills are a figure of the report."""
    target = aot_report.TARGETS[check.arch]
    where = f"{check.name} {check.config} {dtype} sm_{check.arch}"
    assert figures["smem_bytes"] <= target.shared_memory, \
        f"{where}: {figures['smem_bytes']} bytes of shared memory, the limit is {target.shared_memory}"
    if not figures["dots"] or aot_report.operand_precision(dtype, meta) is None:
        return
    assert figures["hgmma"] + figures["hmma"] > 0, f"{where}: no tensor-core instruction in the main loop"
    if check.arch == 90 and check.tile[0] >= 64:
        assert figures["hgmma"] > 0, f"{where}: no HGMMA in the main loop ({figures['mma']})"
    if check.arch == 80:
        assert figures["hmma"] > 0, f"{where}: no HMMA in the main loop ({figures['mma']})"


def spill_bytes(compiled, arch):
    """Spill stores plus loads that ptxas reports for an already compiled kernel's PTX (the
    ptxas Triton itself uses for the target)."""
    import os
    import subprocess
    import tempfile
    from triton.backends.nvidia.compiler import get_ptxas
    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "kernel.ptx")
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"])
        report = subprocess.run([get_ptxas(arch).path, "-v", f"--gpu-name=sm_{arch}a" if arch == 90 else
                                 f"--gpu-name=sm_{arch}", ptx, "-o", os.path.join(tmp, "kernel.cubin")],
                                capture_output=True, text=True, check=True).stderr
    return aot_report.ptxas_figures(report)["spill_bytes"]
