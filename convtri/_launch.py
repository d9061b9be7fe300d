"""Where and how a kernel runs: compiled and autotuned on CUDA, interpreted on CPU."""
import contextlib
import functools

import numpy as np
import torch
import triton
from torch._subclasses.fake_tensor import is_fake
from torch._subclasses.functional_tensor import FunctionalTensor
from torch.library import wrap_triton
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

LOW_PRECISION = (torch.float16, torch.bfloat16)
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def block(n, cap):
    """The power-of-two block covering n, at most cap."""
    return min(triton.next_power_of_2(max(n, 1)), cap)


def suggest_memory_format(t):
    """torch's Tensor.suggest_memory_format for a 4-D tensor (c10's is_channels_last_strides_2d):
    outputs and input gradients take this format, as torch's do."""
    sizes, strides = t.shape, t.stride()
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


def memory_span(t):
    """How far apart, in elements, the first and last element of ``t`` lie in memory."""
    return sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()) if size > 0)


def empty(shape, memory_format, like, dtype=None):
    """An uninitialised tensor on ``like``'s device, in its dtype unless ``dtype`` is given."""
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device, memory_format=memory_format)


def is_interpreted(t: torch.Tensor) -> bool:
    """CPU tensors run our kernels through Triton's interpreter."""
    return t.device.type == "cpu"


def dot_precision(t: torch.Tensor) -> str:
    """tf32 for fp32 exactly when cuDNN would use it, so both sides share numerics."""
    if t.dtype == torch.float32 and t.device.type == "cuda" and torch.backends.cudnn.allow_tf32:
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


@contextlib.contextmanager
def _interpreting():
    """Triton reads TRITON_INTERPRET once, when a function is decorated, so our kernels (and
    triton.language's own helpers such as tl.cdiv) are compiled-mode JITFunctions. Inside
    this context a call to any JITFunction from an interpreted kernel runs its interpreted
    body, as it would have under TRITON_INTERPRET=1. Outside, such a call is an error anyway.
    The interpreter's patches to triton.language are undone on exit, so that compiling for
    a GPU later in the process sees the real language."""
    patches = {}

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


@functools.cache
def _autotuned(kernel, capability, configs, key, prune):
    """The autotuned launcher of ``kernel`` on one GPU architecture, built once."""
    return triton.autotune(configs=list(configs(capability)), key=list(key),
                           prune_configs_by={"early_config_prune": prune})(kernel)


def launch(kernel, grid, *args, tensor, blocks, tuning=None, **meta):
    """Launch ``kernel`` over ``grid`` (a callable of the meta-parameters) on ``tensor``'s device.

    On CPU the interpreter runs it with ``blocks`` (large tiles: it runs one program at a time).
    On CUDA, ``tuning`` = (configs, key, prune) autotunes the block sizes; without it the
    kernel runs with ``blocks``. ``meta`` holds the constexpr flags.

    Inside our custom ops (convtri/_library.py) a launch also meets tensors without data:
    fake and meta tensors, when torch computes only an op's output shapes, run nothing; CUDA
    tensors being traced by torch.compile go through ``wrap_triton``, so that the graph holds
    the kernel itself.
    """
    if isinstance(tensor, FunctionalTensor):  # torch.compile tracing through the op
        if tensor.device.type != "cuda":
            raise RuntimeError("convtri: CPU kernels run in Triton's interpreter and cannot be traced; "
                               "convtri ops on CPU stay whole in a compiled graph")
    elif is_fake(tensor) or tensor.device.type == "meta":
        return
    elif is_interpreted(tensor):
        _check_interpreter()
        # IEEE arithmetic as on a GPU: inf and NaN propagate without numpy's warnings
        with _interpreting(), np.errstate(all="ignore"):
            _interpreted(kernel.fn)[grid](*args, **meta, **blocks)
        return
    with torch.cuda.device(tensor.device):
        if tuning is None:
            wrap_triton(kernel)[grid](*args, **meta, **blocks)
        else:
            capability = torch.cuda.get_device_capability(tensor.device)
            wrap_triton(_autotuned(kernel, capability, *tuning))[grid](*args, **meta)
