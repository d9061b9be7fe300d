"""pool2d: max, average and adaptive average pooling: argument handling, plans per call
signature (convtri/_dispatch.py) on our kernels' launches (convtri/pool_launch.py), the custom
ops torch.ops.convtri.{max,avg,adaptive_avg}_pool2d and their backward ops, and the autograd
Functions."""
from typing import Optional

import torch

from convtri import _args
from convtri._dispatch import (Plans, eager_apply, exact, is_eager, other_backward, plain_backward, records_grad,
                               tensor_key)
from convtri._launch import FLOAT_DTYPES, MAX_INT32, MAX_PIXELS, check_device, is_channels_last, memory_format
from convtri._library import triton_op
from convtri.pool_launch import (FLAT_INDICES, NO_INDICES, WINDOW_OFFSETS, AvgBackward, AvgForward, MaxBackward,
                                 MaxForward, PoolGeometry, pooling_output_size)

# ----------------------------------------------------------------------------- arguments

def pool2d_args(kernel_size, stride, padding, dilation):
    """torch's argument forms as pairs; stride=None (or an empty list) means the kernel size."""
    kernel_size = _args.pair(kernel_size, "kernel_size")
    no_stride = stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0)
    stride = kernel_size if no_stride else _args.pair(stride, "stride")
    return kernel_size, stride, _args.pair(padding, "padding"), _args.pair(dilation, "dilation")


def adaptive_output_size(output_size, input_size):
    """An int or a pair whose None entries keep the input's size, as a pair."""
    if isinstance(output_size, (list, tuple, torch.Size)):
        if len(output_size) != 2:
            raise RuntimeError(f"adaptive_avg_pool2d: output_size must be an int or a pair, got "
                               f"output_size={list(output_size)}")
        output_size = tuple(size if size is not None else default for size, default in zip(output_size, input_size))
    return _args.pair(output_size, "output_size")


def check_input(op, input, name="input"):
    """A 4-D floating-point tensor on a device we run on."""
    _args.check_dim(op, name, input, 4)
    _args.check_float_dtype(input, name, FLOAT_DTYPES)
    check_device(input)


def _check_input_size(op, input_size, allow_empty_channels=False):
    """Only N may be 0 (and C too where ``allow_empty_channels``, as torch's adaptive pooling allows)."""
    if len(input_size) != 4:
        raise RuntimeError(f"{op}: expected a 4-D input size, got {list(input_size)}")
    _, c, h, w = input_size
    if h == 0 or w == 0 or (c == 0 and not allow_empty_channels):
        raise RuntimeError(f"{op}: expected input with non-zero sizes except for the batch dimension, got input "
                           f"of size {list(input_size)}")


def _check_pixel_count(op, input_size, output_size):
    n, _, h, w = input_size
    if n * max(h * w, output_size[0] * output_size[1]) > MAX_PIXELS:
        raise RuntimeError(f"{op}: input of size {list(input_size)} has more than {MAX_PIXELS} pixels (N*H*W or "
                           f"N*OH*OW), the most our kernels index")


def pool2d_geometry(op, input_size, kernel_size, stride, padding, dilation, ceil_mode, count_include_pad=True,
                    divisor_override=None):
    """max_pool2d's or avg_pool2d's parameters (pairs) on an (N, C, H, W) input, checked as
    torch does, as a PoolGeometry."""
    _check_input_size(op, input_size)
    pairs = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation)
    for name, value in pairs.items():
        if len(value) != 2:
            raise RuntimeError(f"{op}: expected 2 values for {name}, got {name}={list(value)}")
    for name in ("kernel_size", "stride", "dilation"):
        if min(pairs[name]) <= 0:
            raise RuntimeError(f"{op}: {name} must be greater than zero, got {name}={tuple(pairs[name])}")
    if min(padding) < 0:
        raise RuntimeError(f"{op}: padding must be non-negative, got padding={tuple(padding)}")
    if padding[0] > kernel_size[0] // 2 or padding[1] > kernel_size[1] // 2:
        raise RuntimeError(f"{op}: padding must be at most half of kernel_size, got padding={tuple(padding)} and "
                           f"kernel_size={tuple(kernel_size)}")
    if divisor_override == 0:
        raise RuntimeError(f"{op}: divisor_override must not be zero, got divisor_override=0")
    _, c, h, w = input_size
    output_size = tuple(pooling_output_size(*axis, ceil_mode)
                        for axis in zip((h, w), kernel_size, stride, padding, dilation))
    if min(output_size) < 1:
        raise RuntimeError(f"{op}: output size is too small: input of size ({c}x{h}x{w}) gives an output of size "
                           f"({c}x{output_size[0]}x{output_size[1]})")
    _check_pixel_count(op, input_size, output_size)
    return PoolGeometry((h, w), output_size, *map(tuple, (kernel_size, stride, padding, dilation)),
                        count_include_pad, divisor_override)


def adaptive_geometry(input_size, output_size):
    """adaptive_avg_pool2d's output size (a pair) on an (N, C, H, W) input, checked, as a PoolGeometry."""
    op = "adaptive_avg_pool2d"
    _check_input_size(op, input_size, allow_empty_channels=True)
    if len(output_size) != 2 or min(output_size) < 0:
        raise RuntimeError(f"{op}: output_size must be a pair of non-negative ints, got output_size="
                           f"{list(output_size)}")
    _check_pixel_count(op, input_size, output_size)
    h, w = input_size[2:]
    if max(h * output_size[0], w * output_size[1]) > MAX_INT32:  # the adaptive window bounds o*in/out
        raise RuntimeError(f"{op}: input of size {list(input_size)} with output_size={tuple(output_size)} "
                           f"exceeds the int32 window arithmetic")
    return PoolGeometry((h, w), tuple(output_size), adaptive=True)


def _check_grad_output(op, grad_output, input_size, geom):
    check_input(op, grad_output, "grad_output")
    expected = (*input_size[:2], *geom.output_size)
    if tuple(grad_output.shape) != expected:
        raise RuntimeError(f"{op}: expected grad_output of size {list(expected)}, got {list(grad_output.shape)}")


# ----------------------------------------------------------------------------- plans

class PoolPlan:
    """A checked pooling call signature: its geometry, the op's other arguments (as the
    custom ops take them), and its launches, each built on first use: the forward's, and
    the backward's per gradient layout."""

    def __init__(self, input, geom, arguments):
        self.geom, self.arguments = geom, arguments
        self.input_size, self.channels_last = tuple(input.shape), is_channels_last(input)
        self.launches = {}

    def launch(self, key, build, *args):
        launch = self.launches.get(key)
        if launch is None:
            launch = self.launches[key] = build(*args)
        return launch


class MaxPool2dPlan(PoolPlan):
    def forward(self, input, indices):
        """(maxima, what ``indices`` names: FLAT_INDICES, WINDOW_OFFSETS, or None for NO_INDICES)"""
        return self.launch(indices, MaxForward, input, self.geom, indices)(input)

    def backward(self, dy, saved):
        """dx from the saved int64 flat indices or window offsets"""
        return self.launch((dy.stride(), saved.dtype), MaxBackward, dy, saved, self.input_size,
                           memory_format(self.channels_last), self.geom)(dy, saved)

    def __call__(self, input, return_indices):
        if records_grad(input):
            y, saved = _max_apply(input, self, return_indices)
        else:
            y, saved = self.forward(input, FLAT_INDICES if return_indices else NO_INDICES)
        return (y, saved) if return_indices else y


class AvgPool2dPlan(PoolPlan):
    """average pooling, fixed or adaptive windows"""

    def forward(self, input):
        return self.launch("forward", AvgForward, input, self.geom)(input)

    def backward(self, dy):
        return self.launch(dy.stride(), AvgBackward, dy, self.input_size,
                           memory_format(self.channels_last), self.geom)(dy)

    def __call__(self, input):
        if records_grad(input):
            return _avg_apply(input, self)
        return self.forward(input)


def _max_plan(input, kernel_size, stride, padding, dilation, ceil_mode):
    check_input("max_pool2d", input)
    geom = pool2d_geometry("max_pool2d", input.shape, kernel_size, stride, padding, dilation, ceil_mode)
    return MaxPool2dPlan(input, geom, [list(kernel_size), list(stride), list(padding), list(dilation), ceil_mode])


def _avg_plan(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    check_input("avg_pool2d", input)
    geom = pool2d_geometry("avg_pool2d", input.shape, kernel_size, stride, padding, (1, 1), ceil_mode,
                           count_include_pad, divisor_override)
    return AvgPool2dPlan(input, geom, [list(kernel_size), list(stride), list(padding), ceil_mode, count_include_pad,
                                       divisor_override])


def _adaptive_plan(input, output_size):
    check_input("adaptive_avg_pool2d", input)
    return AvgPool2dPlan(input, adaptive_geometry(input.shape, output_size), [])


_MAX_PLANS, _AVG_PLANS, _ADAPTIVE_PLANS, _BACKWARD_PLANS = Plans(), Plans(), Plans(), Plans()


def _plan(plans, build, input, *arguments):
    """The op route's plans, keyed by the custom op's own arguments (lists as tuples)."""
    key = (tensor_key(input), *(tuple(a) if isinstance(a, list) else a for a in arguments))
    return plans.get_or_build(key, build, input, *arguments)


# ----------------------------------------------------------------------------- custom ops

@triton_op("max_pool2d")
def _max_pool2d_op(input: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
                   dilation: list[int], ceil_mode: bool, indices: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(maxima, what ``indices`` asks for): "flat", torch's int64 flat h*W+w indices; "offsets",
    each maximum's tap kh*KW+kw in its window (a byte for windows of up to 256 taps), which is all
    max_pool2d_backward needs; "none", an empty int64 tensor."""
    plan = _plan(_MAX_PLANS, _max_plan, input, kernel_size, stride, padding, dilation, ceil_mode)
    y, saved = plan.forward(input, indices)
    return y, saved if saved is not None else input.new_empty((0,), dtype=torch.int64)


@triton_op("max_pool2d_backward")
def _max_pool2d_backward_op(grad_output: torch.Tensor, indices: torch.Tensor, input_size: list[int],
                            input_channels_last: bool, kernel_size: list[int], stride: list[int],
                            padding: list[int], dilation: list[int], ceil_mode: bool) -> torch.Tensor:
    key = ("max", tensor_key(grad_output), tensor_key(indices), tuple(input_size), input_channels_last,
           tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation), ceil_mode)
    launch = _BACKWARD_PLANS.get_or_build(key, _max_backward, grad_output, indices, input_size, input_channels_last,
                                          kernel_size, stride, padding, dilation, ceil_mode)
    return launch(grad_output, indices)


def _max_backward(grad_output, indices, input_size, input_channels_last, kernel_size, stride, padding, dilation,
                  ceil_mode):
    op = "max_pool2d_backward"
    geom = pool2d_geometry(op, input_size, kernel_size, stride, padding, dilation, ceil_mode)
    _check_grad_output(op, grad_output, input_size, geom)
    offsets = geom.offset_dtype()
    if (indices.dtype not in (torch.int64, offsets) or indices.shape != grad_output.shape
            or indices.device != grad_output.device):
        raise RuntimeError(f"{op}: expected int64 indices of size {list(grad_output.shape)} on {grad_output.device} "
                           f"(or {offsets} window offsets), got {indices.dtype} of size {list(indices.shape)} on "
                           f"{indices.device}")
    return MaxBackward(grad_output, indices, tuple(input_size), memory_format(input_channels_last), geom)


@triton_op("avg_pool2d")
def _avg_pool2d_op(input: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
                   ceil_mode: bool, count_include_pad: bool, divisor_override: Optional[int]) -> torch.Tensor:
    plan = _plan(_AVG_PLANS, _avg_plan, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                 divisor_override)
    return plan.forward(input)


@triton_op("avg_pool2d_backward")
def _avg_pool2d_backward_op(grad_output: torch.Tensor, input_size: list[int], input_channels_last: bool,
                            kernel_size: list[int], stride: list[int], padding: list[int], ceil_mode: bool,
                            count_include_pad: bool, divisor_override: Optional[int]) -> torch.Tensor:
    key = ("avg", tensor_key(grad_output), tuple(input_size), input_channels_last, tuple(kernel_size), tuple(stride),
           tuple(padding), ceil_mode, count_include_pad, divisor_override)
    launch = _BACKWARD_PLANS.get_or_build(key, _avg_backward, grad_output, input_size, input_channels_last,
                                          kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    return launch(grad_output)


def _avg_backward(grad_output, input_size, input_channels_last, kernel_size, stride, padding, ceil_mode,
                  count_include_pad, divisor_override):
    op = "avg_pool2d_backward"
    geom = pool2d_geometry(op, input_size, kernel_size, stride, padding, (1, 1), ceil_mode, count_include_pad,
                           divisor_override)
    _check_grad_output(op, grad_output, input_size, geom)
    return AvgBackward(grad_output, tuple(input_size), memory_format(input_channels_last), geom)


@triton_op("adaptive_avg_pool2d")
def _adaptive_avg_pool2d_op(input: torch.Tensor, output_size: list[int]) -> torch.Tensor:
    return _plan(_ADAPTIVE_PLANS, _adaptive_plan, input, output_size).forward(input)


@triton_op("adaptive_avg_pool2d_backward")
def _adaptive_avg_pool2d_backward_op(grad_output: torch.Tensor, input_size: list[int],
                                     input_channels_last: bool) -> torch.Tensor:
    key = ("adaptive", tensor_key(grad_output), tuple(input_size), input_channels_last)
    launch = _BACKWARD_PLANS.get_or_build(key, _adaptive_backward, grad_output, input_size, input_channels_last)
    return launch(grad_output)


def _adaptive_backward(grad_output, input_size, input_channels_last):
    op = "adaptive_avg_pool2d_backward"
    geom = adaptive_geometry(input_size, grad_output.shape[-2:])
    _check_grad_output(op, grad_output, input_size, geom)
    return AvgBackward(grad_output, tuple(input_size), memory_format(input_channels_last), geom)


# ----------------------------------------------------------------------------- autograd
# Each Function runs on a plan: eager calls apply it, and its backward is also its op's
# registered autograd formula, so both routes run it. In eager mode the backward launches the
# plan's kernels; otherwise (a tracer, a dispatch mode) the backward op, which torch sees;
# when autograd records the backward, once differentiable.

class MaxPool2dFunction(torch.autograd.Function):
    """(maxima, saved): saved is torch's int64 flat indices when they are returned, else the
    window offsets (a byte per output for windows of up to 256 taps), which backward reads."""

    @staticmethod
    def forward(ctx, input, plan, return_indices):
        y, saved = plan.forward(input, FLAT_INDICES if return_indices else WINDOW_OFFSETS)
        ctx.set_materialize_grads(False)  # no zeros made for the indices' (absent) gradient
        ctx.mark_non_differentiable(saved)
        ctx.save_for_backward(saved)
        ctx.plan = plan
        return y, saved

    @staticmethod
    def backward(ctx, dy, _):
        if dy is None:  # only the indices were used
            return None, None, None
        if plain_backward(dy):
            return ctx.plan.backward(dy, *ctx.saved_tensors), None, None
        return _max_other_backward(ctx, dy), None, None


class AvgPool2dFunction(torch.autograd.Function):
    """average pooling, fixed and adaptive windows"""

    @staticmethod
    def forward(ctx, input, plan):
        ctx.plan = plan
        return plan.forward(input)

    @staticmethod
    def backward(ctx, dy):
        if plain_backward(dy):
            return ctx.plan.backward(dy), None
        return _avg_other_backward(ctx, dy), None


@other_backward
def _max_other_backward(ctx, dy):
    (idx,) = ctx.saved_tensors
    plan = ctx.plan
    if is_eager(dy, idx):
        return plan.backward(dy, idx)
    return torch.ops.convtri.max_pool2d_backward(dy, idx, list(plan.input_size), plan.channels_last, *plan.arguments)


@other_backward
def _avg_other_backward(ctx, dy):
    plan = ctx.plan
    if is_eager(dy):
        return plan.backward(dy)
    if plan.geom.adaptive:
        return torch.ops.convtri.adaptive_avg_pool2d_backward(dy, list(plan.input_size), plan.channels_last)
    return torch.ops.convtri.avg_pool2d_backward(dy, list(plan.input_size), plan.channels_last, *plan.arguments)


_max_apply, _avg_apply = eager_apply(MaxPool2dFunction), eager_apply(AvgPool2dFunction)


def _max_setup(ctx, inputs, output):
    input, *arguments, _ = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])
    ctx.plan = _plan(_MAX_PLANS, _max_plan, input, *arguments)


def _avg_setup(ctx, inputs, output):
    ctx.plan = _plan(_AVG_PLANS, _avg_plan, *inputs)


def _adaptive_setup(ctx, inputs, output):
    ctx.plan = _plan(_ADAPTIVE_PLANS, _adaptive_plan, *inputs)


def _op_backward(function, arguments):
    """``function``'s backward as the formula of an op with ``arguments`` non-tensor arguments."""
    return lambda ctx, *grads: (function.backward(ctx, *grads)[0], *[None] * arguments)


_max_pool2d_op.register_autograd(_op_backward(MaxPool2dFunction, 6), setup_context=_max_setup)
_avg_pool2d_op.register_autograd(_op_backward(AvgPool2dFunction, 6), setup_context=_avg_setup)
_adaptive_avg_pool2d_op.register_autograd(_op_backward(AvgPool2dFunction, 1), setup_context=_adaptive_setup)


# ----------------------------------------------------------------------------- public ops

def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """``torch.nn.functional.max_pool2d`` on convtri's Triton kernels. With ``return_indices``
    also the int64 flat (h*W + w) index of each maximum, as torch's (max_unpool2d takes them);
    without, backward keeps each maximum's tap within its window, a byte for up to 256 taps."""
    if is_eager(input) and input.dim() == 4:
        key = (tensor_key(input), exact(kernel_size), exact(stride), exact(padding), exact(dilation), bool(ceil_mode))
        plan = _MAX_PLANS.get_or_build(key, _public_max_plan, input, kernel_size, stride, padding, dilation,
                                       ceil_mode)
        return plan(input, bool(return_indices))
    args = pool2d_args(kernel_size, stride, padding, dilation)
    if is_eager(input):  # unbatched (or invalid) input
        return _args.batched("max_pool2d", lambda x: max_pool2d(x, *args, ceil_mode, return_indices), input)
    # torch must see the op: torch's indices when returned, else window offsets when backward needs them
    if return_indices:
        indices = FLAT_INDICES
    elif torch.is_grad_enabled() and getattr(input, "requires_grad", False):
        indices = WINDOW_OFFSETS
    else:
        indices = NO_INDICES
    y, saved = _args.batched("max_pool2d", lambda x: torch.ops.convtri.max_pool2d(x, *args, bool(ceil_mode), indices),
                             input)
    return (y, saved) if return_indices else y


def _public_max_plan(input, kernel_size, stride, padding, dilation, ceil_mode):
    return _max_plan(input, *pool2d_args(kernel_size, stride, padding, dilation), bool(ceil_mode))


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """``torch.nn.functional.avg_pool2d`` on convtri's Triton kernels."""
    if is_eager(input) and input.dim() == 4:
        key = (tensor_key(input), exact(kernel_size), exact(stride), exact(padding), bool(ceil_mode),
               bool(count_include_pad), exact(divisor_override))
        plan = _AVG_PLANS.get_or_build(key, _public_avg_plan, input, kernel_size, stride, padding, ceil_mode,
                                       count_include_pad, divisor_override)
        return plan(input)
    args = _public_avg_args(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    if is_eager(input):  # unbatched (or invalid) input
        op = lambda x: avg_pool2d(x, *args)
    else:  # torch must see the op
        op = lambda x: torch.ops.convtri.avg_pool2d(x, *args)
    return _args.batched("avg_pool2d", op, input)


def _public_avg_args(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """torch's argument forms checked, as the custom op takes them."""
    if isinstance(input, torch.Tensor) and input.dim() < 3:  # torch raises IndexError here (it indexes dim -3)
        raise IndexError(f"avg_pool2d: expected input to be 3-D (C, H, W) or 4-D (N, C, H, W), got input of size "
                         f"{list(input.shape)}")
    kernel_size, stride, padding, _ = pool2d_args(kernel_size, stride, padding, 1)
    if divisor_override is not None and (not isinstance(divisor_override, int) or isinstance(divisor_override, bool)):
        raise TypeError(f"avg_pool2d: divisor_override must be an int or None, got {divisor_override!r}")
    return kernel_size, stride, padding, bool(ceil_mode), bool(count_include_pad), divisor_override


def _public_avg_plan(input, *arguments):
    return _avg_plan(input, *_public_avg_args(input, *arguments))


def adaptive_avg_pool2d(input, output_size):
    """``torch.nn.functional.adaptive_avg_pool2d`` on convtri's Triton kernels; output_size 1
    is global average pooling."""
    if is_eager(input) and input.dim() == 4:
        plan = _ADAPTIVE_PLANS.get_or_build((tensor_key(input), exact(output_size)), _public_adaptive_plan, input,
                                            output_size)
        return plan(input)
    _args.check_tensor(input, "input")
    if not isinstance(output_size, int) and input.dim() <= len(output_size):
        # torch's functional checks a sequence's length against the input first, with a ValueError
        raise ValueError(f"adaptive_avg_pool2d: expected input to be 3-D (C, H, W) or 4-D (N, C, H, W) for "
                         f"output_size={output_size!r}, got input of size {list(input.shape)}")
    output_size = adaptive_output_size(output_size, input.shape[-2:])
    if is_eager(input):  # unbatched (or invalid) input
        op = lambda x: adaptive_avg_pool2d(x, output_size)
    else:  # torch must see the op
        op = lambda x: torch.ops.convtri.adaptive_avg_pool2d(x, output_size)
    return _args.batched("adaptive_avg_pool2d", op, input)


def _public_adaptive_plan(input, output_size):
    return _adaptive_plan(input, adaptive_output_size(output_size, input.shape[-2:]))
