"""What our kernels compile to on sm_90 and sm_80, compiled as real layers call them, on a
machine without a GPU.

    python perf/aot_report.py --csv report.csv                  # every suite, kernel, config (long)
    python perf/aot_report.py --suites vgg --kernels conv2d_fwd --archs 90 --dtypes fp16 --largest

How a check gets its signature: every layer of perf/shapes.py runs one training step (forward,
then the gradients of its input and weight) through convtri's public op on meta tensors,
called as perf/sweep.py calls it, and each kernel launch the op makes is recorded: kernel,
tensors, scalars, constexpr flags. Meta tensors launch nothing; the plans treat them as GPU
tensors, except where a plan asks the device itself (the SM count that splits wgrad's
reduction, the tf32 of fp32 GEMMs), which ``on_gpu`` answers as the target GPU would. Each
launch is then bound by Triton's own binder, as JITFunction.run binds it: ints equal to 1
become constants, ints and pointers divisible by 16 are marked so (meta tensors sit at
address 0, as 16-byte aligned as the caching allocator's blocks). A launch compiles once per
config the autotuner would try on that GPU (its configs after the launch-time prune), or with
its fixed blocks; layers whose launches bind identically form a class and compile once.

Per (kernel, config, layer class): registers and spill bytes (ptxas -v), shared memory,
tensor-core and global-load instructions of the main loop, its length, and the issue/tensor
ratio. perf/README.md explains the columns.
"""
import argparse
import collections
import concurrent.futures
import contextlib
import csv
import functools
import gzip
import importlib
import io
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
import types
import warnings
from dataclasses import dataclass
from unittest import mock

import torch
import triton
from tqdm import tqdm
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature

import convtri
from convtri import conv_launch, depthwise_launch
from convtri._dispatch import clear_plans
from convtri._launch import COMPILE_OPTIONS, Launch
from convtri.kernels import gpus

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, PERF_DIR)
import shapes  # noqa: E402
import sweep  # noqa: E402  (the sweep's call of each shape, so that we compile what it times)

warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION is unset")  # triton 3.9 says it per compile

DTYPES = {**sweep.DTYPES, "fp64": torch.float64}
LAYERS = {shape.name: shape for suite in shapes.SUITES.values() for shape in suite}
ISSUE_PER_CLOCK = 4  # instructions an SM issues per clock: 4 schedulers (H100 and A100)


@dataclass(frozen=True)
class Target:
    """A GPU we compile for: what its plans and its issue/tensor ratio depend on."""
    arch: int  # compute capability as Triton writes it: 90 for 9.0
    sms: int  # wgrad splits its reduction to fill them
    shared_memory: int  # bytes one block may use
    tensor_flop_per_clock: dict  # dense tensor-core FLOP per clock per SM, by operand precision

    @property
    def capability(self):
        return (self.arch // 10, self.arch % 10)


def _target(arch, sms, tensor_flop_per_clock=None):
    return Target(arch, sms, gpus.GPUS[(arch // 10, arch % 10)].shared_memory, tensor_flop_per_clock or {})


TARGETS = {  # the GPUs of convtri/kernels/gpus.py, each as one of its models (its SM count)
    # H100 SXM: 989 TFLOP/s dense fp16 (495 tf32) at 1.83 GHz over 132 SMs
    90: _target(90, 132, {"fp16": 4096, "bf16": 4096, "tf32": 2048}),
    # A100: 312 TFLOP/s dense fp16 (156 tf32) at 1.41 GHz over 108 SMs
    80: _target(80, 108, {"fp16": 2048, "bf16": 2048, "tf32": 1024}),
    86: _target(86, 84),  # RTX 3090 Ti (issue/tensor ratios only for the two above)
    89: _target(89, 142),  # L40S
    100: _target(100, 148),  # B200
    120: _target(120, 170),  # RTX 5090
}
TENSOR_CORE_OPS = ("HGMMA", "HMMA", "DMMA", "IMMA")


# ----------------------------------------------------------------------------- real calls

class MetaCase(sweep.Case):
    """perf/sweep.py's case (``shape``, ``op``) on meta tensors of ``dtype``: the same op call and
    layouts, no data."""

    def __init__(self, shape, op, dtype):
        self.shape, self.op = shape, op
        meta = lambda size: torch.empty(size, dtype=DTYPES[dtype], device="meta")
        self.tensors = [meta(shape.input_shape)] + ([meta(shape.weight_shape)] if shape.kind == "conv" else [])
        self.dy = meta(shape.output_shape)
        self.wrt = self.gradients(op, len(self.tensors))


def sweep_call(shape, op, dtype, layout):
    """A function that runs what perf/sweep.py's point runs, on meta tensors: for a gradient
    alone (dgrad, wgrad, bwd), the untimed forward it differentiates, then the timed call."""
    case = MetaCase(shape, op, dtype)
    forward = case.forward(convtri)
    return lambda: case.callable(forward, layout)()


def training_step(shape, dtype, layout):
    """The call to record for a layer: a function that runs its training step on meta tensors."""
    return sweep_call(shape, "fwdbwd", dtype, layout)


@contextlib.contextmanager
def on_gpu(target, tf32=True):
    """Plans built inside treat meta tensors as tensors on ``target``'s GPU where they ask the
    device: wgrad splits its reduction over ``target.sms``, fp32 GEMMs use tf32 when ``tf32``
    (torch.backends.cudnn.allow_tf32, set here). Plans are rebuilt on entry and forgotten on exit."""
    on_cuda = lambda t: types.SimpleNamespace(dtype=t.dtype, device=torch.device("cuda", 0))
    properties = types.SimpleNamespace(multi_processor_count=target.sms)
    splits, precision = conv_launch._wgrad_splits, conv_launch.dot_precision
    allow_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = tf32
    clear_plans()
    try:
        with (mock.patch.object(torch.cuda, "get_device_properties", lambda device: properties),
              mock.patch.object(conv_launch, "_wgrad_splits", lambda x, *sizes: splits(on_cuda(x), *sizes)),
              mock.patch.object(conv_launch, "dot_precision", lambda t: precision(on_cuda(t)))):
            yield
    finally:
        clear_plans()
        torch.backends.cudnn.allow_tf32 = allow_tf32


def launches_of(call, target, tf32=True):
    """Every kernel launch ``call`` makes on ``target``'s GPU: [(Launch, tensors), ...]."""
    recorded = []
    with on_gpu(target, tf32), mock.patch.object(Launch, "__call__", lambda launch, *t: recorded.append((launch, t))):
        call()
    return recorded


# ----------------------------------------------------------------------------- Triton's binding

def launch_configs(launch, tensors, target):
    """The configs ``launch`` runs with on ``target``: those its autotuner tries there (after the
    launch-time prune), else its fixed blocks with Triton's default warps and stages. Each as
    the keyword arguments the kernel is called with, the compile options every launch passes
    (convtri._launch.COMPILE_OPTIONS) included, so that a compile here has a real call's key."""
    if launch.tuning is None:
        return [{**launch.meta, **launch.blocks, **COMPILE_OPTIONS}]
    configs, _, prune = launch.tuning
    named = dict(zip(launch.kernel.arg_names, (*tensors, *launch.scalars)))
    return [{**launch.meta, **config.all_kwargs(), **COMPILE_OPTIONS}
            for config in prune(target.capability)(list(configs(target.capability)), named, **launch.meta)]


@functools.cache
def _binder(kernel, arch):
    backend = make_backend(GPUTarget("cuda", arch, 32))
    return backend, create_function_from_signature(kernel.signature, kernel.params, backend)


@dataclass(frozen=True)
class Check:
    """One compile: ``kernel`` bound as JITFunction.run binds it, for one target and config.
    ``key`` is equal for calls that compile identically."""
    kernel: str  # "module:name" of the JITFunction
    arch: int
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict

    @property
    def key(self):
        return repr((self.kernel, self.arch, self.signature, sorted(self.constexprs.items()),
                     sorted(self.attrs.items()), sorted(self.options.items())))

    @property
    def name(self):
        return self.kernel.split(":")[1].removesuffix("_kernel")

    def constexpr(self, name):
        """The constant value of argument ``name``; None where it is not one (or not an argument)."""
        if name not in self.signature:
            return None
        return self.constexprs.get((list(self.signature).index(name),))

    @property
    def tile(self):
        """(BLOCK_M, BLOCK_N, BLOCK_K) of a GEMM, else the block sizes."""
        return tuple(self.constexpr(n) for n in self.signature if n.startswith("BLOCK") and self.constexpr(n))

    @property
    def config(self):
        run = f" r{self.constexpr('RUN')}" if (self.constexpr("RUN") or 1) > 1 else ""  # a depthwise forward in runs
        return f"{'x'.join(map(str, self.tile))}{run} w{self.options['num_warps']} s{self.options['num_stages']}"

    def specialisation(self):
        """The int arguments that Triton made constants (=1) and those it marks divisible by 16."""
        names = list(self.signature)
        ints = [n for n in names if self.signature[n][0] != "*"]
        ones = [n for n in ints if self.signature[n] == "constexpr" and self.constexpr(n) == 1
                and n not in self.declared_constexprs]
        sixteen = [n for n in ints if self.attrs.get((names.index(n),))]
        return f"1: {' '.join(ones)} | 16: {' '.join(sixteen)}"

    @property
    def declared_constexprs(self):
        return {p.name for p in resolve(self.kernel).params if p.is_constexpr}


def bind(launch, tensors, kwargs, target):
    """``launch`` with ``tensors`` and the config in ``kwargs``, specialised by Triton's binder."""
    kernel = launch.kernel
    backend, binder = _binder(kernel, target.arch)
    bound, specialization, options = binder(*tensors, *launch.scalars, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
    return Check(f"{kernel.fn.__module__}:{kernel.fn.__name__}", target.arch, signature, constexprs, attrs,
                 dict(options.__dict__))


def resolve(name):
    module, function = name.split(":")
    return getattr(importlib.import_module(module), function)


def checks_of(call, target, tf32=True, largest=False):
    """[(Check, launch meta), ...] for every launch of ``call`` and every config it runs with;
    with ``largest``, only the largest config of each launch."""
    checks = []
    for launch, tensors in launches_of(call, target, tf32):
        configs = launch_configs(launch, tensors, target)
        if largest:
            configs = [max(configs, key=_tile_size)]
        checks += [(bind(launch, tensors, kwargs, target), launch.meta) for kwargs in configs]
    return checks


def _tile_size(kwargs):
    size = 1
    for name, value in kwargs.items():
        if name.startswith("BLOCK"):
            size *= value
    return size, kwargs.get("num_warps", 4), kwargs.get("num_stages", 3)


# ----------------------------------------------------------------------------- compile and read

def compile_check(check):
    """Compile ``check`` and read its figures: ptxas's registers and spills (Triton's own ptxas
    run, whose -v log it prints when asked), shared memory, and the SASS's main loop."""
    log = io.StringIO()
    start = time.perf_counter()
    with knobs.compilation.scope(), knobs.nvidia.scope(), contextlib.redirect_stdout(log):
        knobs.compilation.always_compile = True  # no cache: ptxas runs and logs every time
        knobs.nvidia.dump_ptxas_log = True
        source = ASTSource(resolve(check.kernel), check.signature, check.constexprs, check.attrs)
        compiled = triton.compile(source, target=GPUTarget("cuda", check.arch, 32), options=check.options)
    figures = dict(compile_s=time.perf_counter() - start, smem_bytes=compiled.metadata.shared,
                   dots=len(re.findall(r"= tt\.dot ", compiled.asm["ttir"])))  # GEMMs left after constexprs
    figures.update(ptxas_figures(log.getvalue()))
    figures.update(sass_figures(disassemble(compiled.asm["cubin"])))
    return figures


def ptxas_figures(log):
    """Registers and spill bytes (stores plus loads) from ``ptxas -v``."""
    registers = re.search(r"Used (\d+) registers", log)
    spills = re.findall(r"(\d+) bytes spill (?:stores|loads)", log)
    if registers is None or not spills:
        raise RuntimeError(f"no ptxas -v figures in Triton's ptxas log:\n{log}")
    return dict(regs=int(registers.group(1)), spill_bytes=sum(map(int, spills)))


def disassemble(cubin):
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([knobs.nvidia.cuobjdump.path, "-sass", f.name], capture_output=True, text=True,
                              check=True).stdout


# "/*1f10*/   @!P0 BRA 0x15d0 ;": address, opcode, operands
INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][\w.]*)([^;]*);")


def sass_figures(sass):
    """The main loop of a kernel's SASS and what it holds.

    Loops are found by their backward branches: a BRA to a lower address closes a loop from
    that address to the branch. The main loop is the innermost loop holding tensor-core
    instructions, or for a kernel without them, the innermost holding global loads (LDG,
    LDGSTS, UTMALDG). Counts are over the main loop, or the whole kernel where it has none;
    global stores (an epilogue's) over the whole kernel."""
    instructions = [(int(a, 16), op, args) for a, op, args in INSTRUCTION.findall(sass)]
    loops = []
    for address, op, args in instructions:
        target = re.search(r"0x([0-9a-f]+)", args)
        if op.split(".")[0] == "BRA" and target and int(target.group(1), 16) < address:
            loops.append((int(target.group(1), 16), address))
    main = None
    for kinds in (TENSOR_CORE_OPS, ("LDG", "LDGSTS", "UTMALDG")):
        holding = [loop for loop in loops if any(lo_op(op) in kinds for a, op, _ in within(instructions, loop))]
        if holding:
            main = min(holding, key=lambda loop: loop[1] - loop[0])
            break
    body = [op for _, op, _ in (within(instructions, main) if main else instructions)]
    count = lambda base: sum(lo_op(op) == base for op in body)
    widths = lambda base: collections.Counter(_bits(op) for op in body if lo_op(op) == base)
    loads = " ".join(f"{base}.{bits}*{n}" for base in ("LDG", "LDGSTS", "UTMALDG")
                     for bits, n in sorted(widths(base).items()))
    mma = collections.Counter(op for op in body if lo_op(op) in TENSOR_CORE_OPS)
    store_widths = collections.Counter(_bits(op) for _, op, _ in instructions if lo_op(op) == "STG")
    return dict(instructions=len(instructions), stg128=store_widths[128], stores=" ".join(f"STG.{bits}*{n}" for bits, n in sorted(store_widths.items())),
                hgmma=count("HGMMA"), hmma=count("HMMA"), mma=" ".join(f"{op}*{n}" for op, n in sorted(mma.items())),
                ldg=count("LDG"), ldg128=widths("LDG")[128], ldgsts=count("LDGSTS"), ldgsts128=widths("LDGSTS")[128],
                utmaldg=count("UTMALDG"), loads=loads, local_in_loop=count("LDL") + count("STL") if main else None,
                loop_instructions=len(body) if main else None,
                loop=f"{main[0]:#06x}-{main[1]:#06x}" if main else "")


def lo_op(op):
    """An opcode without its modifiers: LDG.E.128 -> LDG."""
    return op.split(".")[0]


def within(instructions, loop):
    return [i for i in instructions if loop[0] <= i[0] <= loop[1]]


def _bits(op):
    """The width of a load: LDG.E.128 -> 128, LDG.E.U16 -> 16, LDG.E -> 32."""
    modifiers = op.split(".")[1:]
    for bits, names in ((256, ("256",)), (128, ("128",)), (64, ("64",)), (16, ("U16", "S16")), (8, ("U8", "S8"))):
        if any(m in names for m in modifiers):
            return bits
    return 32


def operand_precision(dtype, meta):
    """The tensor-core operands of a GEMM launch (one with a PRECISION flag; whether its dots
    survive the constexprs is the compile's ``dots``): fp16, bf16 or tf32; None for other
    launches and for fp32 without tf32 or fp64 GEMMs."""
    if "PRECISION" not in meta:
        return None
    if dtype in ("fp16", "bf16"):
        return dtype
    return "tf32" if dtype == "fp32" and meta["PRECISION"] == "tf32" else None


def issue_tensor_ratio(figures, check, precision, target):
    """Cycles the main loop takes to issue over the cycles its tensor-core work takes, per SM:
    (loop instructions x warps / 4) / (2*BM*BN*BK / tensor FLOP per clock). Above 1 the loop
    cannot feed the tensor cores. None without tensor cores in the loop or a GEMM tile."""
    if (not (figures["hgmma"] or figures["hmma"]) or precision is None or len(check.tile) != 3
            or precision not in target.tensor_flop_per_clock):
        return None
    bm, bn, bk = check.tile
    issue = figures["loop_instructions"] * check.options["num_warps"] / ISSUE_PER_CLOCK
    return issue / (2 * bm * bn * bk / target.tensor_flop_per_clock[precision])


# ----------------------------------------------------------------------------- the report

COLUMNS = ["kernel", "config", "layer", "dtype", "arch", "layout", "regs", "spill_bytes", "smem_bytes", "hgmma",
           "hmma", "ldg128", "loop_instructions", "issue_tensor_ratio", "precision", "dots", "smem_limit", "mma", "ldg",
           "ldgsts", "ldgsts128", "utmaldg", "loads", "local_in_loop", "loop", "num_warps", "num_stages", "tile",
           "class_layers", "specialisation", "compile_s", "triton", "commit", "stg128", "stores", "traffic_ratio",
           "instructions", "fwd_instructions_per_output"]


@dataclass
class Member:
    """A (kernel, config, layer class) of the report before it is compiled."""
    check: Check
    precision: str
    dtype: str
    layout: str
    layers: list


def plan_report(layers, archs, dtypes, layouts, tf32=True, largest=False, kernels=None):
    """The report's rows before compiling: layer classes per (arch, dtype, layout, kernel, config)."""
    members = {}
    for arch in archs:
        for dtype in dtypes:
            for layout in layouts:
                for shape in layers:
                    for check, meta in checks_of(training_step(shape, dtype, layout), TARGETS[arch], tf32, largest):
                        if kernels and not any(k in check.name for k in kernels):
                            continue
                        member = members.setdefault((dtype, layout, check.key), Member(
                            check, operand_precision(dtype, meta), dtype, layout, []))
                        if shape.name not in member.layers:
                            member.layers.append(shape.name)
    return list(members.values())


def compile_all(checks, jobs):
    """{check.key: figures} for unique checks, compiled over ``jobs`` processes."""
    unique = list({check.key: check for check in checks}.values())
    if jobs <= 1:
        return {check.key: compile_check(check) for check in unique}
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = {pool.submit(compile_check, check): check.key for check in unique}
        done = concurrent.futures.as_completed(futures)
        return {futures[f]: f.result() for f in tqdm(done, "compiling", len(futures), file=sys.stderr, disable=None)}


def _span(outputs, stride, kernel, dilation, size):
    """Input coordinates along one axis that ``outputs`` consecutive outputs read, at most ``size``."""
    return min(size, (outputs - 1) * stride + (kernel - 1) * dilation + 1)


def _covered(inputs, stride, kernel, dilation, size):
    """Outputs along one axis whose windows cover ``inputs`` consecutive input coordinates, at most ``size``."""
    return min(size, (inputs - 1 + (kernel - 1) * dilation) // stride + 1)


def traffic_ratio(check, shape):
    """For the direct depthwise kernels, the DRAM bytes one program's tile moves per element it
    writes (or, for the weight gradient, per dy element it reduces), counting its window's halo
    as read again, over the layer's minimum (every tensor moved once); None for other kernels.
    A tile of BLOCK_A consecutive pixels (channels_last, and the weight gradient; BLOCK_A x RUN
    for a forward in runs) or rows (NCHW) of one plane, starting at a row's start; halos shared
    with other programs through L2 count for each."""
    if not check.name.startswith("depthwise") or shape.kind != "conv":
        return None
    c = check.constexpr
    window = [(c("SH"), c("R"), c("DH")), (c("SW"), c("S"), c("DW"))]
    (p, q), (h, w) = shape.out_hw, (shape.h, shape.w)
    a, b = c("BLOCK_A"), c("BLOCK_B")
    if check.name == "depthwise_dgrad":  # writes dx tiles, reads the dy that covers them
        out_hw, in_hw, reach = (h, w), (p, q), _covered
    else:  # writes y (reduces dy) tiles, reads the x under their windows
        out_hw, in_hw, reach = (p, q), (h, w), _span
    a *= c("RUN") or 1  # a forward in runs: BLOCK_A runs of RUN output columns, consecutive
    if c("CHANNELS_LAST") or check.name == "depthwise_wgrad":
        rows, cols = -(-min(a, out_hw[0] * out_hw[1]) // out_hw[1]), min(a, out_hw[1])
    else:
        rows, cols = min(a, out_hw[0]), min(b, out_hw[1])
    read = reach(rows, *window[0], in_hw[0]) * reach(cols, *window[1], in_hw[1])
    written = min(rows * cols, out_hw[0] * out_hw[1])
    return round((read / written + 1) / (in_hw[0] * in_hw[1] / (out_hw[0] * out_hw[1]) + 1), 3)


def forward_instructions_per_output(check, figures, shape):
    """For a forward kernel (the GEMM's or the direct depthwise one): SASS instructions a thread
    issues per output it writes, the main loop counted once per iteration the layer makes it run
    (the GEMM's reduction steps, the depthwise kernel's kernel rows when it loops over them).
    An SM issues 4 x 32 thread-instructions per clock. None for other kernels."""
    c = check.constexpr
    if check.name not in ("conv2d_fwd", "depthwise_fwd") or shape.kind != "conv":
        return None
    c_per_group = shape.c // shape.groups
    if check.name == "conv2d_fwd":
        bm, bn, bk = c("BLOCK_M"), c("BLOCK_N"), c("BLOCK_K")
        steps = (-(-c_per_group * shape.r * shape.s // bk) if c("FLAT_TAPS")
                 else shape.r * shape.s * -(-c_per_group // bk))
        tile = bm * bn
    else:
        steps = shape.r if figures["loop_instructions"] else 1  # a loop over kernel rows, else all unrolled
        tile = c("BLOCK_A") * c("BLOCK_B") * (c("RUN") or 1)  # RUN output columns per row of the tile
    per_thread = figures["instructions"] + (figures["loop_instructions"] or 0) * (steps - 1)
    return round(per_thread / (tile / (32 * check.options["num_warps"])), 1)


def rows_of(members, figures, commit):
    rows = []
    for m in members:
        f, check, target = figures[m.check.key], m.check, TARGETS[m.check.arch]
        precision = m.precision if f["dots"] else None
        ratio = issue_tensor_ratio(f, check, precision, target)
        traffic = traffic_ratio(check, LAYERS[m.layers[0]])
        per_output = forward_instructions_per_output(check, f, LAYERS[m.layers[0]])
        rows.append({**f, "traffic_ratio": traffic, "fwd_instructions_per_output": per_output, "kernel": check.name, "config": check.config, "layer": m.layers[0],
                     "dtype": m.dtype,
                     "arch": f"sm_{check.arch}", "layout": m.layout, "precision": precision or "",
                     "issue_tensor_ratio": round(ratio, 3) if ratio is not None else None,
                     "smem_limit": target.shared_memory, "num_warps": check.options["num_warps"],
                     "num_stages": check.options["num_stages"], "tile": "x".join(map(str, check.tile)),
                     "class_layers": " ".join(m.layers), "specialisation": check.specialisation(),
                     "compile_s": round(f["compile_s"], 2), "triton": triton.__version__, "commit": commit})
    return sorted(rows, key=lambda r: (r["kernel"], r["arch"], r["dtype"], r["layout"], r["layer"], r["config"]))


PRINTED = [("kernel", 14), ("config", 15), ("layer", 34), ("dtype", 5), ("arch", 5), ("layout", 6), ("regs", 4),
           ("spill_bytes", 6), ("smem_bytes", 7), ("hgmma", 5), ("hmma", 4), ("ldgsts128", 9), ("ldg128", 6),
           ("stg128", 6), ("loop_instructions", 5), ("issue_tensor_ratio", 6), ("traffic_ratio", 7),
           ("fwd_instructions_per_output", 7)]
HEADINGS = {"spill_bytes": "spill", "smem_bytes": "smem", "ldgsts128": "ldgsts128", "loop_instructions": "loop",
            "issue_tensor_ratio": "i/t", "traffic_ratio": "traffic", "fwd_instructions_per_output": "i/out"}


def print_table(rows):
    print(" ".join(f"{HEADINGS.get(name, name):>{width}}" for name, width in PRINTED))
    for row in rows:
        layer = row["layer"] + (f" +{len(row['class_layers'].split()) - 1}" if " " in row["class_layers"] else "")
        cells = {**row, "layer": layer}
        print(" ".join(f"{_cell(cells[name]):>{width}}" for name, width in PRINTED))


def _cell(value):
    return "" if value is None else str(value)


def write_markdown(rows, path, command):
    """The printed columns as a markdown table, each class with all its layers, under the command."""
    names = [name for name, _ in PRINTED]
    commits = sorted({row["commit"] for row in rows})
    lines = [f"`{command}`", "", f"triton {triton.__version__}, commit {', '.join(commits)}; columns: perf/README.md", "",
             "| " + " | ".join(HEADINGS.get(name, name) for name in names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(_cell(row["class_layers"] if name == "layer" else row[name]) for name in names) + " |"
              for row in rows]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def write_csv(rows, path):
    """The rows as CSV, gzipped when ``path`` ends in .gz."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with (gzip.open if path.endswith(".gz") else open)(path, "wt", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: _cell(row[k]) for k in COLUMNS} for row in rows)


# ----------------------------------------------------------------------------- command line

ROUTES = {"auto": None, "gemm": lambda groups, c_per_group, k_per_group: False,
          "direct": lambda groups, c_per_group, k_per_group: groups > 1}


def parse_args(argv):
    suites = [name for name in shapes.SUITES if name not in ("smoke", "all")]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suites", type=sweep._choices(suites + ["all"]), nargs="+", default=[["all"]],
                   help="shape suites of perf/shapes.py (default: all but smoke)")
    p.add_argument("--shapes", nargs="+", help="only these shape names")
    p.add_argument("--kernels", nargs="+", help="only kernels whose name holds one of these (conv2d_fwd, dgrad, "
                                                "pool2d, ...)")
    p.add_argument("--archs", type=sweep._choices([str(a) for a in TARGETS]), nargs="+", default=[["90", "80"]])
    p.add_argument("--dtypes", type=sweep._choices(list(DTYPES)), nargs="+", default=[["fp16", "bf16", "fp32"]])
    p.add_argument("--layouts", type=sweep._choices(list(sweep.LAYOUTS)), nargs="+", default=[list(sweep.LAYOUTS)])
    p.add_argument("--tf32", choices=["on", "off"], default="on",
                   help="torch.backends.cudnn.allow_tf32 (fp32 GEMMs in tf32; default on, torch's default)")
    p.add_argument("--largest", action="store_true", help="only the largest config of each launch")
    p.add_argument("--route", choices=list(ROUTES), default="auto",
                   help="gemm: grouped layers with one channel per group on a side on the GEMMs, as before the "
                        "direct depthwise kernels; direct: every grouped layer on the direct kernels (what decides "
                        "convtri/depthwise_launch.py's is_direct); default: the route calls take")
    p.add_argument("--jobs", type=int, default=2, help="compiling processes (default 2)")
    p.add_argument("--csv", help="also write the rows to this CSV (gzipped if it ends in .gz)")
    p.add_argument("--markdown", help="also write the printed columns to this markdown file")
    args = p.parse_args(argv)
    args.suites, args.archs = sweep._flat(args.suites), [int(a) for a in sweep._flat(args.archs)]
    args.dtypes, args.layouts = sweep._flat(args.dtypes), sweep._flat(args.layouts)
    return args


def select_layers(suites, names=None):
    layers = [shape for suite in suites for _, shape in shapes.suite_members(suite)]
    if names:
        unknown = set(names) - {shape.name for shape in layers}
        if unknown:
            raise SystemExit(f"no shape named {', '.join(sorted(unknown))} in suites {', '.join(suites)}")
        layers = [shape for shape in layers if shape.name in names]
    return list({shape.name: shape for shape in layers}.values())


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    start = time.perf_counter()
    layers = select_layers(args.suites, args.shapes)
    route = ROUTES[args.route]
    with mock.patch.object(depthwise_launch, "is_direct", route) if route else contextlib.nullcontext():
        members = plan_report(layers, args.archs, args.dtypes, args.layouts, args.tf32 == "on", args.largest,
                              args.kernels)
    figures = compile_all([m.check for m in members], args.jobs)
    rows = rows_of(members, figures, sweep.git_commit())
    print_table(rows)
    if args.csv:
        write_csv(rows, args.csv)
    if args.markdown:
        write_markdown(rows, args.markdown, " ".join(["python", "perf/aot_report.py", *argv]))
    print(f"{len(rows)} rows, {len(figures)} compiles, {time.perf_counter() - start:.0f} s "
          f"(triton {triton.__version__}, {args.jobs} processes)")
    return rows


if __name__ == "__main__":
    main()
