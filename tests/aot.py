"""Ahead-of-time compilation of our kernels for NVIDIA targets, on a machine without a GPU.

It catches code that only works in the interpreter, and reads tensor-core use and register
spills off the PTX and ptxas, as described in shared/NOTES.md.
"""
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas
TRITON_TYPE = {"fp16": "*fp16", "bf16": "*bf16", "fp32": "*fp32", "fp64": "*fp64", "i64": "*i64", "i8": "*i8"}


def compile_kernel(kernel, pointers: dict, constexprs: dict, capability: int, num_warps: int, num_stages: int,
                   divisible=()):
    """Compile ``kernel`` for sm_<capability>: pointer args get the element types in
    ``pointers`` (name -> 'fp16', ...), constexprs their values, every other arg is i32.

    As Triton does at run time, args named in ``divisible`` are known to be multiples of 16
    (aligned pointers, strides of channels_last tensors with C % 16 == 0), and int args
    equal to 1 belong in ``constexprs``."""
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in pointers:
            signature[name] = TRITON_TYPE[pointers[name]]
        else:
            signature[name] = "i32"
    attrs = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name in divisible}
    source = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", capability, 32),
                          options={"num_warps": num_warps, "num_stages": num_stages})


def uses_tensor_cores(compiled) -> bool:
    return re.search(r"\b(mma\.sync|wgmma\.mma_async)", compiled.asm["ptx"]) is not None


def spill_bytes(compiled, capability: int) -> int:
    """Spill stores plus loads that ptxas reports for the compiled PTX."""
    arch = f"sm_{capability}a" if capability == 90 else f"sm_{capability}"
    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "kernel.ptx")
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"])
        ptxas = get_ptxas(capability).path  # the ptxas that Triton itself uses for this target
        report = subprocess.run([ptxas, "-v", f"--gpu-name={arch}", ptx, "-o", os.path.join(tmp, "kernel.cubin")],
                                capture_output=True, text=True, check=True).stderr
    spills = [int(v) for v in re.findall(r"(\d+) bytes spill (?:stores|loads)", report)]
    assert spills, report
    return sum(spills)
