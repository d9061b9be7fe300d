"""Every kernel config a GPU can launch, forced one at a time on small problems and checked
against torch in float64: through Triton's interpreter on CPU, at the config's own block sizes
(tests/test_shipped_configs.py), and natively on a GPU at every warp and stage count its
autotuner can pick there (perf/gpu_session.py's configs stage).

    python perf/shipped_configs.py --device cuda --csv configs.csv       # a GPU: every config natively
    python perf/shipped_configs.py --device cpu --problems flat_taps     # CPU, the interpreter: minutes

One table, two runners. The table is ``PROBLEMS``: op calls, each a training step (forward,
then every gradient) of a small hand-picked layer, commented with what it exercises. Every
kernel launch that a problem's plan makes is forced in turn to each config of its own list
(``configs_of``):
- an autotuned launch (a ``Launch`` with ``tuning``): every config of its configs function on
  the GPU that its prune can keep for some problem size, that is: for GEMMs within the tile
  limits of the flags set (``FLAG_LIMITS`` of kernels/conv2d.py), each pipeline shortened to
  the GPU's shared memory as the prune shortens it;
- a launch with fixed CUDA blocks: those blocks, as the plan picks them on a GPU.
So every launch a plan makes is covered; a new kernel joins by being launched by a problem
(one entry in ``PROBLEMS``), and a new GEMM-style prune with flag limits and shared-memory
shortening by one line in ``GEMM_LIMITS``.

A round forces one autotuned launch to one config and every other to its reference config
(``reference``); every output and gradient is compared with torch's in float64 at the
tolerance of tests/tolerances.py, so a mismatch names one config. A first round runs every
launch at its reference config.

On CPU, the plans are built as on a GPU (``planned_as_on``): its fixed blocks, its flags
(EVEN_BLOCKS against every config's BLOCK_K, not the interpreter's), the weight gradient's
reduction split over its SMs; only UPCAST and PRECISION are what the interpreter needs. The
interpreter ignores num_warps and num_stages, so there a config is its block sizes and each
distinct one runs once. On a GPU every (blocks, num_warps, num_stages) its autotuner can pick
runs; ``native_units`` lists their compiles for perf/precompile.py, so that the configs stage
finds them in Triton's cache.
"""
import argparse
import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from unittest import mock

import torch
import torch.nn.functional as F
import triton

import convtri
from convtri import _launch
from convtri._launch import Launch
from convtri.kernels import conv2d as conv_kernels
from convtri.kernels import gpus

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
TESTS_DIR = os.path.join(os.path.dirname(PERF_DIR), "tests")
sys.path.insert(0, PERF_DIR)
sys.path.insert(0, TESTS_DIR)
import aot_report  # noqa: E402
from gpu_session import cuda_context_error, read_csv  # noqa: E402
import test_conv2d  # noqa: E402  (the tests' reduction lengths)
import test_conv_transpose2d  # noqa: E402
import test_pool2d  # noqa: E402
from parity import cpu64, forward_and_grads  # noqa: E402
from tolerances import assert_close  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "fp64": torch.float64}
NATIVE_DTYPES = ("fp16", "fp32")  # on a GPU: tensor-core operands of 2 and 4 bytes (fp32 as tf32)
NARROWEST_OPERAND = 2  # bytes: fp16/bf16 GEMM operands, whose pipelines fit the most stages
CPU_TARGET = aot_report.TARGETS[90]  # the GPU whose plans the CPU runner builds: H100, 132 SMs
COLUMNS = ["problem", "dtype", "round", "kernel", "config", "status", "outputs", "note", "seconds", "device", "gpu",
           "commit"]
SMOKE_PROBLEMS = ("flat_taps",)  # --smoke: the cheapest problem with all three GEMMs
STICKY_EXIT = 3  # the runner's exit status when its CUDA context is lost (perf/gpu_session.py restarts it)

# Autotuned GEMM kernels, whose prunes (kernels/conv2d.py's _prune) limit tiles per flag, leave
# out what spills with a flag set and shorten pipelines to shared memory: the GEMM of each.
GEMM_LIMITS = {
    conv_kernels.conv2d_fwd_kernel: "fwd",
    conv_kernels.conv2d_dgrad_kernel: "dgrad",
    conv_kernels.conv2d_wgrad_kernel: "wgrad",
}


# ----------------------------------------------------------------------------- the configs

def capabilities():
    """The GPUs kernels/gpus.py lists."""
    return sorted(gpus.GPUS)


def configs_of(launch, capability, element_size):
    """The configs (triton.Config) a GPU of ``capability`` can launch ``launch`` with, for
    operands of ``element_size`` bytes: its fixed blocks (Triton's default warps and stages),
    or what its autotuner's prune can keep for some problem size."""
    if launch.tuning is None:
        return [triton.Config(dict(launch.blocks))]
    configs = launch.tuning[0](capability)
    gemm = GEMM_LIMITS.get(launch.kernel)
    if gemm is None:  # a prune that only fits tiles to the problem
        return list(configs)
    gpu, kept = gpus.gpu(capability), {}
    for config in configs:
        shape = (*(config.kwargs[f"BLOCK_{axis}"] for axis in "MNK"), config.num_warps)
        if (conv_kernels.fits_flags(config, conv_kernels.FLAG_LIMITS[gemm], launch.meta)
                and not gpu.spills(gemm, shape, config.num_stages, launch.meta)):
            config = conv_kernels.within_shared_memory(config, gpu, element_size)
            if config is not None:
                kept.setdefault(label(config, options=True), config)
    return list(kept.values())


def interpreter_configs(launch):
    """The configs of ``launch`` on every GPU listed, one per distinct block sizes: all the
    interpreter can tell apart (it ignores num_warps and num_stages)."""
    distinct = {}
    for capability in capabilities():
        for config in configs_of(launch, capability, NARROWEST_OPERAND):
            distinct.setdefault(label(config), config)
    return list(distinct.values())


def label(config, options=False):
    """A config's block sizes ("128x256x64 GROUP_M=8", "BLOCK_A=16 BLOCK_B=64"), with
    ``options`` its warps and stages too."""
    blocks = config.kwargs
    gemm = all(f"BLOCK_{axis}" in blocks for axis in "MNK")
    text = (f"{blocks['BLOCK_M']}x{blocks['BLOCK_N']}x{blocks['BLOCK_K']}" if gemm else "")
    text = " ".join([text] * bool(text) + [f"{k}={v}" for k, v in sorted(blocks.items())
                                           if not (gemm and k in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))])
    return f"{text} w{config.num_warps} s{config.num_stages}" if options else text


def reference(configs):
    """The config a launch runs at while another is forced: the largest tile (the cheapest in
    the interpreter) of Triton's default 4 warps (on a GPU the least unusual), shallowest first."""
    tile = lambda c: math.prod(v for k, v in c.kwargs.items() if k.startswith("BLOCK"))
    return min(configs, key=lambda c: (c.num_warps != 4, -tile(c), c.num_stages))


# ----------------------------------------------------------------------------- the problems

ACTIVATIONS = {None: lambda y: y, "relu": F.relu, "sigmoid": torch.sigmoid, "silu": F.silu, "gelu": F.gelu,
               "gelu_tanh": lambda y: F.gelu(y, approximate="tanh"), "relu6": F.relu6}


def _torch_conv2d(x, w, b, activation=None, padding_mode="zeros", padding=0, **kwargs):
    if padding_mode != "zeros":
        x, padding = F.pad(x, (padding,) * 4, mode=padding_mode), 0
    return ACTIVATIONS[activation](F.conv2d(x, w, b, padding=padding, **kwargs))


def _max_pool(lib):
    """max_pool2d's maxima (its indices, when returned, are checked by tests/test_pool2d.py)."""
    return lambda x, **kwargs: lib.max_pool2d(x, **kwargs)[0] if kwargs.get("return_indices") else \
        lib.max_pool2d(x, **kwargs)


def _window_area(op):
    """The reduction lengths of a pooling (tests/test_pool2d.py's bound on a window's area), y's and dx's."""
    return lambda tensors, kwargs, y: (test_pool2d.window_area(op, tensors[0].shape, kwargs),) * 2


OPS = {  # name -> (ours, torch's, the reduction lengths behind each output from (tensors, kwargs, torch's y))
    "conv2d": (convtri.conv2d, _torch_conv2d, lambda t, kwargs, y: test_conv2d.reduction_lengths(*t[:2], y, **kwargs)),
    "conv_transpose2d": (convtri.conv_transpose2d, F.conv_transpose2d,
                         lambda t, kwargs, y: test_conv_transpose2d.reduction_lengths(*t[:2], y, **kwargs)),
    "max_pool2d": (_max_pool(convtri), _max_pool(F), _window_area("max")),
    "avg_pool2d": (convtri.avg_pool2d, F.avg_pool2d, _window_area("avg")),
    "adaptive_avg_pool2d": (convtri.adaptive_avg_pool2d, F.adaptive_avg_pool2d, _window_area("adaptive")),
}


@dataclass(frozen=True)
class Problem:
    """One op call, trained a step: ``shapes`` of its tensors (input, weight, bias; None for an
    absent one), its keyword arguments, the input's layout; ``dtypes`` on CPU."""
    name: str
    op: str
    shapes: tuple
    kwargs: dict = field(default_factory=dict, hash=False)
    channels_last: bool = False
    sliced: bool = False  # the input a column slice of a wider tensor: rows not dense
    dtypes: tuple = ("fp64",)

    def tensors(self, dtype, device, generator):
        """Random inputs; the input in its layout (or a slice)."""
        made = [None if s is None else torch.randn(s, dtype=DTYPES[dtype], generator=generator).to(device)
                for s in self.shapes]
        x = made[0]
        if self.sliced:
            wide = torch.randn(*x.shape[:3], x.shape[3] + 3, dtype=x.dtype, generator=generator).to(device)
            x = wide[..., 1:1 + x.shape[3]]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return [x] + made[1:]


CL = dict(channels_last=True)
PROBLEMS = [
    # EVEN_BLOCKS in the forward and dgrad (64 channels each side), channels_last as it is, bias, relu, two taps
    # (1x2): M = 17*16 = 272 output and 289 input pixels, full and partial row tiles for every BLOCK_M (16 to 256),
    # more than 8 row tiles of 32 (two GROUP_M groups); wgrad reduces 272 rows in blocks of 16 to 64
    Problem("even_blocks", "conv2d", ((1, 64, 17, 17), (64, 64, 1, 2), (64,)), dict(activation="relu"), **CL),
    # masked channel blocks (24 per group, 2 groups), 3x3 taps with stride 2 and dilation 2 (four dgrad phases
    # that skip taps), reflect padding (pad_fold); NCHW operands copied to channels_last by relayout (the input
    # a slice, its rows not dense) and the output copied back; M = 5*4 = 20 rows per group and phase: partial
    # tiles only
    Problem("masked_groups", "conv2d", ((1, 48, 9, 7), (48, 24, 3, 3), (48,)),
            dict(stride=2, dilation=2, padding=2, groups=2, padding_mode="reflect"), sliced=True),
    # FLAT_TAPS in all three GEMMs (3 input, 8 output channels), 5x5 taps, NCHW, bias, sigmoid: M = 3*4*4 = 48;
    # wgrad's blocks of rows span several images (P = Q = 4)
    Problem("flat_taps", "conv2d", ((3, 3, 8, 8), (8, 3, 5, 5), (8,)), dict(activation="sigmoid")),
    # the weight gradient split in 2 (N*P*Q = 1125 rows on 132 SMs; BLOCK_K = 16 takes 75 steps of 15 rows: 38
    # and 37), its fp32 partials summed by conv2d_sum_splits_kernel (dw: 576 elements, db: 24); 1x1 taps,
    # 24 channels, channels_last
    Problem("split_wgrad", "conv2d", ((5, 24, 15, 15), (24, 24, 1, 1), (24,)), **CL),
    # conv_transpose2d with a bias: dgrad's bias path (its forward), 24 -> 20 channels, stride 2 (four phases)
    Problem("transposed_bias", "conv_transpose2d", ((2, 24, 6, 5), (24, 20, 3, 3), (20,)), dict(stride=2, padding=1)),
    # The direct depthwise kernels (autotuned tiles of BLOCK_A x BLOCK_B up to 256 x 128):
    # 3x3, channels_last, 72 channels (a whole tile of 64 and a partial one; 8-wide tiles whole), 2*9*10 = 180
    # output pixels (whole and partial tiles up to 128), bias, silu (its pre-activation saved); the weight
    # gradient split over 132 SMs, its partials summed; fp16 too (16-byte vectors)
    Problem("depthwise_3x3", "conv2d", ((2, 72, 9, 10), (72, 1, 3, 3), (72,)), dict(groups=72, padding=1,
                                                                                 activation="silu"),
            dtypes=("fp64", "fp16"), **CL),
    # 7x7 (a loop over kernel rows; the weight gradient a row per program), NCHW row tiles of 70 columns (whole
    # and partial up to 64), multiplier 2, relu6
    Problem("depthwise_7x7", "conv2d", ((1, 3, 9, 70), (6, 1, 7, 7), (6,)), dict(groups=3, padding=3,
                                                                              activation="relu6")),
    # 5x5 with stride 2 and reflect padding: dgrad's windows skip pixels, into a padded fp32 buffer that pad_fold
    # folds; no bias
    Problem("depthwise_5x5s2", "conv2d", ((2, 16, 11, 12), (16, 1, 5, 5), None),
            dict(groups=16, stride=2, padding=2, padding_mode="reflect"), **CL),
    # conv_transpose2d with one output channel per group of the convolution it transposes (2 per input
    # channel here), stride 2, bias (the channel sum of the direct weight-gradient kernel)
    Problem("depthwise_transposed", "conv_transpose2d", ((2, 8, 6, 5), (8, 2, 3, 3), (16,)),
            dict(stride=2, padding=1, groups=8)),
]
# Pooling launches fixed CUDA tiles: CUDA_TILE_BYTES per element size, CUDA_COLUMNS wide along the contiguous axis
# (GLOBAL_PIXELS along NCHW planes for global averages). Each op runs in three element sizes and both layouts:
# channels_last with 72 channels (one tile of 64 and a partial one), NCHW with rows of over 64 output columns.
POOL_DTYPES = ("fp16", "fp32", "fp64")
POOL_INPUTS = {"nhwc": ((1, 72, 7, 7), CL), "nchw": ((2, 3, 6, 130), {})}
POOLS = [
    # 3x3/2 windows, padding 1: overlapping windows (gather backward), window offsets saved, NCHW rows read as
    # column pairs (PAIRED)
    ("max3x3s2", "max_pool2d", dict(kernel_size=3, stride=2, padding=1)),
    # 2x2/2 windows with torch's indices returned: the elementwise backward, NCHW windows as whole vectors
    ("max2x2", "max_pool2d", dict(kernel_size=2, return_indices=True)),
    # ceil_mode overhang and the in-bounds divisor
    ("avg3x3s2", "avg_pool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("adaptive", "adaptive_avg_pool2d", dict(output_size=(4, 5))),  # unequal, overlapping adaptive windows
    ("global", "adaptive_avg_pool2d", dict(output_size=1)),  # global average pooling: a reduction of its own
]
PROBLEMS += [Problem(f"{name}_{layout}", op, (shape,), kwargs, dtypes=POOL_DTYPES, **form)
             for name, op, kwargs in POOLS for layout, (shape, form) in POOL_INPUTS.items()]


def problem_named(name):
    return next(p for p in PROBLEMS if p.name == name)


# ----------------------------------------------------------------------------- forcing configs

@contextlib.contextmanager
def intercepting(launcher):
    """Every Launch called inside is handed to ``launcher(launch, tensors)`` instead."""
    with mock.patch.object(Launch, "__call__", lambda launch, *tensors: launcher(launch, tensors)):
        yield


def forced(launch, config, cuda):
    """``launch`` at ``config`` (a triton.Config: on a GPU with its warps and stages, in the
    interpreter its block sizes alone), or as it is (None, or a launch with fixed blocks)."""
    if config is None or launch.tuning is None:
        return launch
    blocks = config.all_kwargs() if cuda else dict(config.kwargs)
    return Launch(launch.kernel, launch.grid, launch.scalars, blocks, None, **launch.meta)


def run_at(launch, config, tensors):
    return RUN(forced(launch, config, tensors[0].is_cuda), *tensors)


RUN = Launch.__call__


@contextlib.contextmanager
def planned_as_on(target):
    """Plans built inside for CPU tensors choose what they would on ``target``'s GPU: its fixed
    blocks and flags, and its split of the weight gradient (every module that asks
    ``is_interpreted`` is told no; perf/aot_report.py's ``on_gpu`` answers for the device).
    UPCAST and PRECISION stay the interpreter's: they read the tensors themselves."""
    modules = [m for name, m in list(sys.modules.items()) if name.startswith("convtri.") and m is not _launch
               and getattr(m, "is_interpreted", None) is _launch.is_interpreted]
    with contextlib.ExitStack() as stack:
        stack.enter_context(aot_report.on_gpu(target, tf32=False))
        for module in modules:
            stack.enter_context(mock.patch.object(module, "is_interpreted", lambda t: False))
        yield


# ----------------------------------------------------------------------------- running a problem

@dataclass(frozen=True)
class Round:
    """One forced run: autotuned launch number ``index`` (in call order; None: every launch at
    its reference config) at ``config``."""
    index: object = None
    kernel: str = "(every launch)"
    config: object = None

    def name(self, options):
        """An id unique within a problem and dtype; ``options``: with warps and stages."""
        return "references" if self.index is None else f"#{self.index} {self.kernel} {label(self.config, options)}"


@dataclass
class Call:
    """A launch call of the reference round: which of its tensors it left alone (with their
    contents) and which it wrote (with what)."""
    launch: object
    read: list
    written: list

    @classmethod
    def of(cls, launch, tensors, run):
        """The call ``run()`` makes of ``launch`` on ``tensors``, run."""
        held = [t.clone() for t in tensors]
        run()
        changed = [not torch.equal(before, t) for before, t in zip(held, tensors)]
        return cls(launch, [(i, held[i]) for i, c in enumerate(changed) if not c],
                   [(i, tensors[i].clone()) for i, c in enumerate(changed) if c])

    def replay(self, launch, tensors):
        """Whether ``launch`` on ``tensors`` is this call again, its inputs holding what they held:
        if so, what it wrote is written again."""
        if launch is not self.launch or not all(torch.equal(tensors[i], held) for i, held in self.read):
            return False
        for i, wrote in self.written:
            tensors[i].copy_(wrote)
        return True


class Runner:
    """The rounds of one problem in one dtype on one device, each launch's configs from
    ``table(launch)``: inputs drawn and torch's float64 results computed once.

    With ``memo`` (the interpreter, where a launch costs seconds), a launch at its reference
    config whose inputs hold what they held in the reference round is not run again: its
    outputs are copied from that round. Our kernels write their outputs whole and never read
    them, so a tensor a launch changed is its output and the others its inputs."""

    def __init__(self, problem, dtype, device, table, memo=False, seed=0):
        self.problem, self.table, self.memo = problem, table, memo
        generator = torch.Generator().manual_seed(seed)
        self.tensors = problem.tensors(dtype, device, generator)
        ours, theirs, lengths = OPS[problem.op]
        self.ours = lambda *t: ours(*t, **problem.kwargs)
        y = theirs(*map(cpu64, self.tensors), **problem.kwargs)
        self.dy = torch.empty_like(y, dtype=DTYPES[dtype], device=device)  # in torch's output layout
        self.dy.copy_(torch.randn(y.shape, dtype=torch.float64, generator=generator))
        self.want = forward_and_grads(lambda *t: theirs(*t, **problem.kwargs), list(map(cpu64, self.tensors)),
                                      cpu64(self.dy))
        self.lengths = lengths(self.tensors, problem.kwargs, y)
        self.calls = None  # the reference round's, once it has run
        self.executed = set()  # (kernel, config label) run
        self.known = {}  # launch -> its configs

    @property
    def launches(self):
        return list({id(call.launch): call.launch for call in self.calls or []}.values())

    def configs(self, launch):
        if launch not in self.known:
            self.known[launch] = self.table(launch)
        return self.known[launch]

    @property
    def tuned(self):
        return [launch for launch in self.launches if launch.tuning is not None]

    def rounds(self, smoke=False):
        """The reference round, then each autotuned launch at each of its other configs (the
        plan's launches are known once the first round has run); ``smoke``: at one other config."""
        yield Round()
        for i, launch in enumerate(self.tuned):
            first = reference(self.configs(launch))
            others = [config for config in self.configs(launch) if config is not first]
            for config in others[:1] if smoke else others:
                yield Round(i, launch.kernel.__name__, config)

    def run(self, round_):
        """The problem with ``round_``'s config forced: ("ok" | "mismatch", the outputs off, a note)."""
        forced = None if round_.index is None else self.tuned[round_.index]
        calls = []

        def launcher(launch, tensors):
            config = round_.config if launch is forced else reference(self.configs(launch))
            self.executed.add((launch.kernel.__name__, label(config)))
            run = lambda: run_at(launch, config, tensors)
            if self.calls is None:  # the reference round: every call noted
                calls.append(Call.of(launch, tensors, run) if self.memo else Call(launch, [], []))
                if not self.memo:
                    run()
                return
            earlier = self.calls[len(calls)] if len(calls) < len(self.calls) else None
            calls.append(earlier)
            if not (self.memo and launch is not forced and earlier is not None and earlier.replay(launch, tensors)):
                run()
        with intercepting(launcher):
            got = forward_and_grads(self.ours, self.tensors, self.dy)
        if self.calls is None:
            self.calls = calls
        return compare(got, self.want, self.lengths)


def compare(got, want, lengths):
    """("ok" | "mismatch", names of the outputs off, the first one's error) at tests/tolerances.py's tolerance."""
    off, note = [], ""
    for name, ours, theirs, length in zip(("y", "dx", "dw", "db"), got, want, lengths):
        try:
            assert_close(ours, theirs, length)
        except AssertionError as e:
            off.append(name)
            note = note or f"{name}: " + "; ".join(line.strip() for line in str(e).splitlines()
                                                   if "Greatest" in line or "Mismatched" in line)
    return ("mismatch" if off else "ok"), off, note


# ----------------------------------------------------------------------------- the two runners

def interpreter_table(dtype):
    """Through the interpreter: each distinct block sizes of every GPU listed."""
    return interpreter_configs


def native_table(capability):
    """On a GPU of ``capability``: every config its autotuner can pick for a launch's operands."""
    return lambda dtype: lambda launch: configs_of(launch, capability, DTYPES[dtype].itemsize)


def cases(problems, device):
    """(problem, dtype) pairs: each problem's ``dtypes`` on CPU, NATIVE_DTYPES on a GPU."""
    return [(problem, dtype) for problem in problems
            for dtype in (NATIVE_DTYPES if device == "cuda" else problem.dtypes)]


def run_table(pairs, device, on_row=lambda row: None, should_stop=lambda: False, done=None, smoke=False,
              on_start=lambda ident: None):
    """Every round of each (problem, dtype) in ``pairs``: on CPU through the interpreter, with
    plans built as on CPU_TARGET; on "cuda" natively on the current GPU. ``on_row(row)`` gets
    each round's row as it ends and ``on_start(id)`` its id before it starts; ``should_stop()``
    is asked before each round. Rounds in ``done`` ({(problem, dtype, round): status}) are not
    run again, except the reference round, which finds the launches (a problem whose reference
    round failed is skipped). ``smoke``: the reference round and one other config per launch.
    Returns the rows and, per (problem, dtype), the (kernel, block sizes) run; raises
    ContextLost, after that round's row, when a kernel breaks the CUDA context."""
    cuda, done = device == "cuda", done or {}
    table = native_table(torch.cuda.get_device_capability()) if cuda else interpreter_table
    base = dict(device=device, gpu=torch.cuda.get_device_name() if cuda else "interpreter", commit=git_commit())
    rows, executed = [], {}
    with contextlib.nullcontext() if cuda else planned_as_on(CPU_TARGET):
        for problem, dtype in pairs:
            if done.get((problem.name, dtype, Round().name(cuda)), "ok") != "ok":
                continue
            runner = Runner(problem, dtype, device, table(dtype), memo=not cuda)
            executed[problem.name, dtype] = runner.executed
            for round_ in runner.rounds(smoke):
                ident = (problem.name, dtype, round_.name(cuda))
                if should_stop():
                    return rows, executed
                if ident in done and round_.index is not None:
                    continue
                on_start(" / ".join(ident))
                result, lost = run_round(runner, round_, cuda)
                row = dict(base, problem=problem.name, dtype=dtype, round=ident[2], kernel=round_.kernel,
                           config=label(round_.config, cuda) if round_.config else "", **result)
                rows.append(row)
                if ident not in done:
                    on_row(row)
                if lost:
                    raise ContextLost(row["note"])
    return rows, executed


def run_round(runner, round_, cuda):
    """``round_``'s fields (status, outputs off, note, seconds), and whether it lost the CUDA context."""
    start, lost = time.perf_counter(), False
    try:
        status, off, note = runner.run(round_)
    except Exception as e:  # a config that fails to compile or launch: its row says so
        status, off, note = "failed", [], f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        lost = cuda and cuda_context_error("cuda") is not None
        note += " (the CUDA context is lost)" if lost else ""
    return dict(status=status, outputs=" ".join(off), note=note, seconds=round(time.perf_counter() - start, 3)), lost


class ContextLost(RuntimeError):
    """A kernel left the CUDA context with a sticky error: every later launch would fail."""


def git_commit():
    import sweep
    return sweep.git_commit()


# ----------------------------------------------------------------------------- on meta tensors

def meta_like(t):
    """A meta tensor of ``t``'s sizes, strides and storage offset (Triton specialises on a
    pointer's alignment, and a meta tensor's sits at its offset from 0)."""
    if t is None:
        return None
    storage = torch.empty(t.untyped_storage().nbytes() // t.element_size(), dtype=t.dtype, device="meta")
    return storage.as_strided(t.shape, t.stride(), t.storage_offset())


def meta_launches(problem, dtype, target, tf32=True):
    """Every launch ``problem``'s training step makes on ``target``'s GPU, found on meta
    tensors as perf/aot_report.py finds a layer's: [(Launch, tensors), ...]."""
    tensors = [meta_like(t) for t in problem.tensors(dtype, "cpu", torch.Generator().manual_seed(0))]
    ours = OPS[problem.op][0]

    def step():
        leaves = [t if t is None else t.requires_grad_() for t in tensors]
        y = ours(*leaves, **problem.kwargs)
        torch.autograd.grad(y, [t for t in leaves if t is not None], torch.empty_like(y))
    return aot_report.launches_of(step, target, tf32)


def launch_kwargs(launch, config):
    """The keyword arguments ``launch`` is called with on a GPU at ``config``: what
    perf/precompile.py compiles ahead."""
    launch = forced(launch, config, cuda=True)
    return {**launch.meta, **launch.blocks}


def planned(problem, dtype, target=CPU_TARGET):
    """The (kernel, block sizes) the interpreter runs for ``problem`` in ``dtype``, from its plan on meta tensors."""
    return {(launch.kernel.__name__, label(config)) for launch, _ in meta_launches(problem, dtype, target, tf32=False)
            for config in interpreter_configs(launch)}


def native_units(target, tf32=True, problems=None):
    """Every compile of the table's native runs on ``target``: [(problem, dtype, launch number,
    kwargs)], one per distinct binding (perf/aot_report.py's check key)."""
    units = {}
    for problem, dtype in cases(problems or PROBLEMS, "cuda"):
        for i, (launch, tensors) in enumerate(meta_launches(problem, dtype, target, tf32)):
            for config in configs_of(launch, target.capability, DTYPES[dtype].itemsize):
                kwargs = launch_kwargs(launch, config)
                units.setdefault(aot_report.bind(launch, tensors, kwargs, target).key, (problem, dtype, i, kwargs))
    return list(units.values())


# ----------------------------------------------------------------------------- command line

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--problems", nargs="+", choices=[p.name for p in PROBLEMS], help="only these problems")
    parser.add_argument("--csv", help="write a row per round here")
    parser.add_argument("--resume", action="store_true", help="append to --csv, skipping the rounds it holds")
    parser.add_argument("--seconds", type=float, help="stop starting rounds after this long")
    parser.add_argument("--smoke", action="store_true", help=f"the reference round and one config per launch, of "
                                                             f"{', '.join(SMOKE_PROBLEMS)} unless --problems")
    args = parser.parse_args(argv)
    import sweep
    start = time.perf_counter()
    done = {(r["problem"], r["dtype"], r["round"]): r["status"] for r in (read_csv(args.csv) if args.resume else [])}
    names = args.problems or (SMOKE_PROBLEMS if args.smoke else None)
    problems = [problem_named(name) for name in names] if names else PROBLEMS
    stop = (lambda: time.perf_counter() - start > args.seconds) if args.seconds else (lambda: False)
    sink = sweep.CsvWriter(args.csv, COLUMNS, append=args.resume) if args.csv else None
    try:
        rows, _ = run_table(cases(problems, args.device), args.device, on_row=sink or (lambda row: None),
                            should_stop=stop, done=done, smoke=args.smoke,
                            on_start=lambda ident: print(f"@@round {ident}", flush=True))
    except ContextLost as e:
        print(f"@@lost {e}", flush=True)
        return STICKY_EXIT
    finally:
        if sink:
            sink.file.close()
    bad = [r for r in rows if r["status"] != "ok"]
    print(f"shipped configs: {len(rows)} rounds on {args.device}, {len(bad)} failed or mismatched, "
          f"{time.perf_counter() - start:.0f} s" + (", stopped at --seconds" if stop() else ""))
    for r in bad:
        print(f"  {r['status']}: {r['problem']} {r['dtype']} {r['round']}: {r['outputs']} {r['note']}")
    print("@@stopped" if stop() else "@@finished", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
