"""Where and how a kernel runs: compiled and autotuned on CUDA, interpreted on CPU, nothing
for meta and fake tensors, traced through ``wrap_triton`` under torch.compile.

A ``Launch`` is one kernel launch that an op's plan makes on every call: everything but the
tensors is fixed once per call signature, when the plan is built. On CUDA its first launch
goes through Triton's autotuner (or JIT) and binds the compiled kernel that ran; every later
launch calls that kernel's launcher directly, with no argument binding, specialisation or
autotuner lookup on the way.
"""
import contextlib
import dataclasses
import functools
import os

import numpy as np
import torch
import triton
import triton.testing
from torch._subclasses.fake_tensor import is_fake
from torch._subclasses.functional_tensor import FunctionalTensor
from torch.library import wrap_triton
from triton import knobs
from triton.runtime import interpreter
from triton.runtime.interpreter import InterpretedFunction, _patch_lang
from triton.runtime.jit import JITFunction

# Interpreter tiles: it runs one program at a time, and each tl op costs ~0.1 ms of Python
# before numpy starts, so few programs with tiles up to Triton's limit win.
INTERPRETER_TILE_NUMEL = 1 << 20  # Triton's maximum elements in one block
INTERPRETER_CHANNELS = 128  # channel columns of a tile

MAX_INT32 = 2 ** 31 - 1
# The kernels index the pixels of a GEMM's or a pooling's rows (N*P*Q, N*H*W) in int32, a
# tile past the last one included; tensor offsets are 64-bit.
MAX_PIXELS = MAX_INT32 - INTERPRETER_TILE_NUMEL
ALIGNMENT = 16  # bytes: Triton specialises pointers on this divisibility (16-byte vector loads)

LOW_PRECISION = (torch.float16, torch.bfloat16)
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def block(n, cap):
    """The power-of-two block covering n, at most cap."""
    return min(triton.next_power_of_2(max(n, 1)), cap)


def suggest_memory_format(t):
    """torch's Tensor.suggest_memory_format for a 4-D tensor: outputs and input gradients
    take this format, as torch's do."""
    return layout_of(t.shape, t.stride())


def layout_of(sizes, strides):
    """The memory format that c10's is_channels_last_strides_2d finds in 4-D sizes and strides."""
    if strides[1] == 0:
        return torch.contiguous_format
    smallest = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0 or strides[d] < smallest:
            return torch.contiguous_format
        if d == 0 and smallest == strides[1]:  # N111-like: ambiguous, NCHW by default
            return torch.contiguous_format
        smallest = strides[d] * sizes[d] if sizes[d] > 1 else strides[d]
    return torch.channels_last


def is_channels_last(*tensors):
    """Whether any of ``tensors`` suggests channels_last: torch's rule for a convolution's
    output; for one tensor, the format its gradient takes."""
    return torch.channels_last in [suggest_memory_format(t) for t in tensors]


def memory_format(channels_last):
    return torch.channels_last if channels_last else torch.contiguous_format


def format_strides(size, fmt):
    """The strides of ``torch.empty(size, memory_format=fmt)`` (c10's contiguous strides skip
    empty dimensions, its 4-D channels_last strides do not)."""
    if fmt == torch.channels_last:
        n, c, h, w = size
        return (h * w * c, 1, w * c, c)
    strides, step = [], 1
    for dim in reversed(size):
        strides.append(step)
        step *= max(dim, 1)
    return tuple(reversed(strides))


class Spec:
    """A tensor's sizes, strides, dtype and device without data: what a launch is built from
    (``torch.Tensor`` serves as well)."""
    __slots__ = ("shape", "strides", "dtype", "device")

    def __init__(self, shape, strides, dtype, device):
        self.shape, self.strides, self.dtype, self.device = torch.Size(shape), tuple(strides), dtype, device

    def stride(self, dim=None):
        return self.strides if dim is None else self.strides[dim]

    def element_size(self):
        return self.dtype.itemsize


class Output:
    """How a launch's output is allocated: its size and strides (those of memory format
    ``fmt`` unless given), dtype (``like``'s unless given), on ``like``'s device."""
    __slots__ = ("size", "stride", "dtype", "device")

    def __init__(self, size, fmt, like, dtype=None, stride=None):
        self.size = tuple(size)
        self.stride = tuple(stride) if stride is not None else format_strides(self.size, fmt)
        self.dtype, self.device = dtype or like.dtype, like.device

    def __call__(self):
        return torch.empty_strided(self.size, self.stride, dtype=self.dtype, device=self.device)

    @property
    def spec(self):
        return Spec(self.size, self.stride, self.dtype, self.device)

    @property
    def empty(self):
        return 0 in self.size


def memory_span(t):
    """How far apart, in elements, the first and last element of ``t`` lie in memory."""
    return sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()) if size > 0)


def is_interpreted(t: torch.Tensor) -> bool:
    """CPU tensors run our kernels through Triton's interpreter."""
    return t.device.type == "cpu"


def allows_tf32():
    """torch.backends.cudnn.allow_tf32, read without the Python around it (a plan's key holds it)."""
    return torch._C._get_cudnn_allow_tf32()


def dot_precision(t: torch.Tensor) -> str:
    """tf32 for fp32 exactly when cuDNN would use it, so both sides share numerics."""
    if t.dtype == torch.float32 and t.device.type == "cuda" and allows_tf32():
        return "tf32"
    return "ieee"


def dot_upcast(t: torch.Tensor) -> bool:
    """The interpreter's bf16 dot is wrong (NOTES.md); widening fp16/bf16 there is exact."""
    return is_interpreted(t) and t.dtype in LOW_PRECISION


@functools.cache
def _check_interpreter():
    triton_version = tuple(int(v) for v in triton.__version__.split(".")[:2])
    numpy_version = tuple(int(v) for v in np.__version__.split(".")[:2])
    if triton_version < (3, 8) and numpy_version >= (2, 4):
        raise RuntimeError(
            f"convtri runs CPU tensors through Triton's interpreter, which in triton {triton.__version__} "
            f"fails with numpy {np.__version__}; install numpy<2.4 or triton>=3.8")


def check_device(*tensors: torch.Tensor) -> None:
    """CUDA and CPU tensors run kernels; meta tensors (shape inference) run none."""
    for t in tensors:
        if t.device.type not in ("cpu", "cuda", "meta"):
            raise RuntimeError(f"convtri runs on CUDA, CPU and meta tensors, got a tensor on {t.device}")


@functools.cache
def _interpreted(fn):
    return InterpretedFunction(fn)


# CONVTRI_SANITIZE_OVERFLOW=1: the interpreter checks every int32 addition and multiplication for
# overflow (Triton's default there), which took about 40% of its time in our kernels; off by
# default, as on a GPU without debug. tests/test_hardening.py runs its 2^31-element views with it.
SANITIZE_ENV = "CONVTRI_SANITIZE_OVERFLOW"


@contextlib.contextmanager
def _overflow_checks(enabled):
    """The interpreter's int32 overflow checks on or off inside (its builder's option)."""
    builder = interpreter.interpreter_builder
    before = builder.options
    builder.options = dataclasses.replace(before, sanitize_overflow=enabled)
    try:
        yield
    finally:
        builder.options = before


@contextlib.contextmanager
def _interpreting(kernel=None):
    """Triton reads TRITON_INTERPRET once, when a function is decorated, so our kernels (and
    triton.language's own helpers such as tl.cdiv) are compiled-mode JITFunctions. Inside
    this context a call to any JITFunction from an interpreted kernel runs its interpreted
    body, as it would have under TRITON_INTERPRET=1. Outside, such a call is an error anyway.
    The interpreter's patches to triton.language are undone on exit, so that compiling for
    a GPU later in the process sees the real language. The launched ``kernel``'s language is
    patched first, so that it is restored last: each patch saves what it replaces, and a later
    patch of the same names saves the patched ones."""
    patches = {}
    if kernel is not None:
        patches[kernel] = _patch_lang(kernel)

    def call_interpreted(self, *args, **kwargs):
        if self.fn not in patches:  # what InterpretedFunction.__call__ does, but undone on exit
            patches[self.fn] = _patch_lang(self.fn)
        return _interpreted(self.fn).rewrite()(*args, **kwargs)

    original = JITFunction.__call__
    JITFunction.__call__ = call_interpreted
    try:
        yield
    finally:
        JITFunction.__call__ = original
        for scope in reversed(patches.values()):
            scope.restore()


# How the autotuner times each config. Triton's default (25 ms of warm-up, 100 ms of repeats)
# costs ~0.13 s a config: ~1.5 s per first call of a large layer, whose launch tries 8-14
# configs, and most of a GPU session's quick stage. 5 + 25 ms still repeats a 1 ms kernel 25
# times (the median is kept) and a 10 us one thousands; it should cut that tuning time about
# four-fold (not yet measured on a GPU).
AUTOTUNE_BENCH = functools.partial(triton.testing.do_bench, warmup=5, rep=25)


# CONVTRI_AUTOTUNE=0: each launch runs the first config its prune keeps (the largest tile that
# fits the problem) and compiles nothing else. For correctness runs (the GPU session's native
# tests), where compiling every config of every test shape would take most of the time and the
# configs not chosen never produce an output anyway.
AUTOTUNE_ENV = "CONVTRI_AUTOTUNE"

# CONVTRI_TUNING_CACHE=0: forget tuning results at the end of a process. By default each
# autotuner keeps them in Triton's own autotune cache (``cache_results``): a
# <kernel>.autotune.json per (Triton version, GPU target, kernel source, autotune key with the
# tensors' dtypes, configs left after the prune) in Triton's cache folder (TRITON_CACHE_DIR,
# by default ~/.triton/cache), so a later process calling a tuned layer again times nothing.
TUNING_CACHE_ENV = "CONVTRI_TUNING_CACHE"

# Compile options every CUDA launch of ours passes, so that Triton's defaults cannot change our
# numerics: fp fusion (a*b + c contracted into one FMA) is on by default up to triton 3.9 and off
# from 3.10 (3.9 warns of it), and our epilogues, FMA dots and average pooling were checked with it.
COMPILE_OPTIONS = {"enable_fp_fusion": True}


def first_config(prune):
    """``prune`` keeping only the first config it keeps."""
    return lambda configs, named_args, **kwargs: prune(configs, named_args, **kwargs)[:1]


@functools.cache
def _autotuned(kernel, capability, configs, key, prune):
    """The autotuned launcher of ``kernel`` on one GPU architecture, built once: ``configs``
    and ``prune`` are functions of the architecture."""
    prune = prune(capability)
    if os.environ.get(AUTOTUNE_ENV, "1") == "0":
        prune = first_config(prune)
    autotuner = triton.autotune(configs=list(configs(capability)), key=list(key),
                                prune_configs_by={"early_config_prune": prune}, do_bench=AUTOTUNE_BENCH)(kernel)
    autotuner.cache_results = os.environ.get(TUNING_CACHE_ENV, "1") != "0"  # TRITON_CACHE_AUTOTUNING aside
    return autotuner


_TUNING_RECORD = []


def autotune_record():
    """What the autotuner chose, one entry per (kernel, autotune key) tuned in this process:
    ``{"kernel", "key", "best", "timings_ms"}``, the timings being each tried config's median,
    measured here or, where an earlier process tuned the key, read from Triton's autotune cache.
    A launch whose prune keeps one config is not tuned and has no entry."""
    return list(_TUNING_RECORD)


def _record_tuning(autotuner, tuned_before):
    """Record the keys ``autotuner`` benchmarked since it held ``tuned_before`` keys."""
    timings = autotuner.configs_timings or {}
    for key in list(autotuner.cache)[tuned_before:]:
        _TUNING_RECORD.append(dict(
            kernel=autotuner.base_fn.__name__, key=[str(k) for k in key], best=str(autotuner.cache[key]),
            timings_ms={str(config): float(t[0] if isinstance(t, (list, tuple)) else t)
                        for config, t in timings.items()}))


class Launch:
    """One kernel launch of a plan: the kernel, its grid (a function of the meta-parameters,
    as Triton takes it) and every argument but the tensors, which a call passes and which
    are the kernel's leading pointer arguments. ``meta`` holds the constexpr flags.

    - CUDA: ``tuning`` = (configs, key, prune) autotunes the block sizes, else ``blocks`` are
      used. The first launch per device and pointer alignment runs through Triton, then binds
      the compiled kernel (``Bound``); later ones launch it directly.
    - CPU: Triton's interpreter, with ``blocks`` (large tiles: it runs one program at a time).
    - Meta and fake tensors, when torch computes only an op's output shapes: nothing.
    - Functional tensors (torch.compile tracing through the op, CUDA only): ``wrap_triton``,
      so that the graph holds the kernel itself.
    """
    __slots__ = ("kernel", "grid", "scalars", "blocks", "tuning", "meta", "bound")

    def __init__(self, kernel, grid, scalars, blocks, tuning=None, **meta):
        self.kernel, self.grid, self.scalars = kernel, grid, tuple(scalars)
        self.blocks, self.tuning, self.meta = blocks, tuning, meta
        self.bound = {}

    def __call__(self, *tensors):
        t = tensors[0]
        if type(t) is not torch.Tensor:
            if isinstance(t, FunctionalTensor):
                return self._traced(tensors)
            if is_fake(t):
                return None
        if t.is_cuda:
            return self._cuda(tensors)
        if t.is_meta:
            return None
        return self._interpret(tensors)

    def _cuda(self, tensors):
        index = tensors[0].get_device()
        pointers = 0
        for t in tensors:
            pointers |= t.data_ptr()
        # one bound kernel per device and per pointer alignment, which Triton specialises on
        key = index if pointers % ALIGNMENT == 0 else (index, tuple(t.data_ptr() % ALIGNMENT == 0 for t in tensors))
        bound = self.bound.get(key)
        if bound is None:
            self.bound[key] = self._bind(tensors, index)  # launches once
        elif index == torch._C._cuda_getDevice():
            bound(tensors, torch._C._cuda_getCurrentRawStream(index))
        else:
            with torch.cuda.device(index):
                bound(tensors, torch._C._cuda_getCurrentRawStream(index))

    def _tuned(self, tensors, index):
        """(autotuner, None) for a launch with configs to time on GPU ``index``; (None, config
        kwargs) for one with a single config: its fixed blocks, or the one config its prune
        keeps, which runs without the autotuner (triton 3.6's times a kernel of several
        configs even when its prune keeps one; 3.9's does not)."""
        if self.tuning is None:
            return None, self.blocks
        autotuner = _autotuned(self.kernel, torch.cuda.get_device_capability(index), *self.tuning)
        named = dict(zip(self.kernel.arg_names, (*tensors, *self.scalars)))
        kept = autotuner.early_config_prune(autotuner.configs, named, **self.meta)
        return (autotuner, None) if len(kept) > 1 else (None, kept[0].all_kwargs())

    def _bind(self, tensors, index):
        """Launch through Triton's autotuner or JIT, and bind the compiled kernel it ran."""
        with torch.cuda.device(index):
            autotuner, config = self._tuned(tensors, index)
            if autotuner is None:
                compiled = self.kernel[self.grid](*tensors, *self.scalars, **self.meta, **config, **COMPILE_OPTIONS)
            else:
                tuned_before = len(autotuner.cache)
                autotuner.configs_timings = None
                compiled = autotuner[self.grid](*tensors, *self.scalars, **self.meta, **COMPILE_OPTIONS)
                _record_tuning(autotuner, tuned_before)
                config = autotuner.best_config.kwargs
            return Bound(compiled, self.kernel.arg_names, tensors, self.scalars, {**self.meta, **config}, self.grid)

    def _traced(self, tensors):
        if not tensors[0].is_cuda:
            raise RuntimeError("convtri: CPU kernels run in Triton's interpreter and cannot be traced; "
                               "convtri ops on CPU stay whole in a compiled graph")
        with torch.cuda.device(tensors[0].device):
            autotuner, config = self._tuned(tensors, tensors[0].get_device())
            if autotuner is None:
                wrap_triton(self.kernel)[self.grid](*tensors, *self.scalars, **self.meta, **config, **COMPILE_OPTIONS)
            else:
                wrap_triton(autotuner)[self.grid](*tensors, *self.scalars, **self.meta, **COMPILE_OPTIONS)

    def _interpret(self, tensors):
        _check_interpreter()
        # IEEE arithmetic as on a GPU: inf and NaN propagate without numpy's warnings
        with (_interpreting(self.kernel.fn), np.errstate(all="ignore"),
              _overflow_checks(os.environ.get(SANITIZE_ENV, "0") == "1")):
            _interpreted(self.kernel.fn)[self.grid](*tensors, *self.scalars, **self.meta, **self.blocks)


class Bound:
    """A compiled kernel bound to its grid and every argument but the tensors: a call is the
    launch Triton's JIT makes after it has bound, specialised and looked up the kernel
    (``JITFunction.run`` in triton 3.6 to 3.9), with none of that work."""
    __slots__ = ("compiled", "run", "function", "packed", "grid", "rest")

    def __init__(self, compiled, arg_names, tensors, scalars, constexprs, grid):
        if hasattr(compiled, "result"):  # an asynchronous compile's future
            compiled = compiled.result()
        named = {**dict(zip(arg_names, (*tensors, *scalars))), **constexprs}
        grid = grid(named)
        self.compiled = compiled
        self.run = compiled.run  # loads the module on the current device
        self.function, self.packed = compiled.function, compiled.packed_metadata
        self.grid = (*grid, 1, 1)[:3]
        self.rest = tuple(named[name] for name in arg_names[len(tensors):])

    def __call__(self, tensors, stream):
        enter = knobs.runtime.launch_enter_hook
        metadata = None if enter is None else self.compiled.launch_metadata(self.grid, stream, *tensors, *self.rest)
        self.run(*self.grid, stream, self.function, self.packed, metadata, enter, knobs.runtime.launch_exit_hook,
                 *tensors, *self.rest)
