"""pool2d: max, average and adaptive average pooling: argument handling, the custom ops
torch.ops.convtri.{max,avg,adaptive_avg}_pool2d and their backward ops on our kernels
(convtri/pool_launch.py), and the autograd Functions."""
from typing import Optional

import torch
from torch.autograd.function import once_differentiable

from convtri import _args
from convtri._launch import FLOAT_DTYPES, MAX_INT32, MAX_PIXELS, check_device, is_channels_last, memory_format
from convtri._library import triton_op
from convtri.pool_launch import (PoolGeometry, avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward,
                                 max_pool2d_forward, pooling_output_size)

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


# ----------------------------------------------------------------------------- custom ops

@triton_op("max_pool2d")
def _max_pool2d_op(input: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
                   dilation: list[int], ceil_mode: bool, with_indices: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(maxima, int64 flat h*W+w indices); the indices are an empty tensor unless ``with_indices``."""
    check_input("max_pool2d", input)
    geom = pool2d_geometry("max_pool2d", input.shape, kernel_size, stride, padding, dilation, ceil_mode)
    y, idx = max_pool2d_forward(input, geom, with_indices)
    return y, idx if idx is not None else input.new_empty((0,), dtype=torch.int64)


@triton_op("max_pool2d_backward")
def _max_pool2d_backward_op(grad_output: torch.Tensor, indices: torch.Tensor, input_size: list[int],
                            input_channels_last: bool, kernel_size: list[int], stride: list[int],
                            padding: list[int], dilation: list[int], ceil_mode: bool) -> torch.Tensor:
    op = "max_pool2d_backward"
    geom = pool2d_geometry(op, input_size, kernel_size, stride, padding, dilation, ceil_mode)
    _check_grad_output(op, grad_output, input_size, geom)
    if indices.dtype != torch.int64 or indices.shape != grad_output.shape or indices.device != grad_output.device:
        raise RuntimeError(f"{op}: expected int64 indices of size {list(grad_output.shape)} on {grad_output.device}, "
                           f"got {indices.dtype} of size {list(indices.shape)} on {indices.device}")
    return max_pool2d_backward(grad_output, indices, tuple(input_size), memory_format(input_channels_last), geom)


@triton_op("avg_pool2d")
def _avg_pool2d_op(input: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
                   ceil_mode: bool, count_include_pad: bool, divisor_override: Optional[int]) -> torch.Tensor:
    check_input("avg_pool2d", input)
    geom = pool2d_geometry("avg_pool2d", input.shape, kernel_size, stride, padding, (1, 1), ceil_mode,
                           count_include_pad, divisor_override)
    return avg_pool2d_forward(input, geom)


@triton_op("avg_pool2d_backward")
def _avg_pool2d_backward_op(grad_output: torch.Tensor, input_size: list[int], input_channels_last: bool,
                            kernel_size: list[int], stride: list[int], padding: list[int], ceil_mode: bool,
                            count_include_pad: bool, divisor_override: Optional[int]) -> torch.Tensor:
    op = "avg_pool2d_backward"
    geom = pool2d_geometry(op, input_size, kernel_size, stride, padding, (1, 1), ceil_mode, count_include_pad,
                           divisor_override)
    _check_grad_output(op, grad_output, input_size, geom)
    return avg_pool2d_backward(grad_output, tuple(input_size), memory_format(input_channels_last), geom)


@triton_op("adaptive_avg_pool2d")
def _adaptive_avg_pool2d_op(input: torch.Tensor, output_size: list[int]) -> torch.Tensor:
    check_input("adaptive_avg_pool2d", input)
    return avg_pool2d_forward(input, adaptive_geometry(input.shape, output_size))


@triton_op("adaptive_avg_pool2d_backward")
def _adaptive_avg_pool2d_backward_op(grad_output: torch.Tensor, input_size: list[int],
                                     input_channels_last: bool) -> torch.Tensor:
    op = "adaptive_avg_pool2d_backward"
    geom = adaptive_geometry(input_size, grad_output.shape[-2:])
    _check_grad_output(op, grad_output, input_size, geom)
    return avg_pool2d_backward(grad_output, tuple(input_size), memory_format(input_channels_last), geom)


# ----------------------------------------------------------------------------- autograd
# Each Function's forward is its op, its backward the backward op, and it is that op's
# registered autograd formula too, so both paths are this one.

class MaxPool2dFunction(torch.autograd.Function):

    @staticmethod
    def forward(input, kernel_size, stride, padding, dilation, ceil_mode, with_indices):
        return torch.ops.convtri.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, with_indices)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, *geometry, _ = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])
        ctx.input = (input.shape, is_channels_last(input))
        ctx.geometry = geometry

    @staticmethod
    @once_differentiable  # our backward is not itself differentiable: say so rather than return zeros
    def backward(ctx, dy, _):
        (idx,) = ctx.saved_tensors
        dx = torch.ops.convtri.max_pool2d_backward(dy, idx, *ctx.input, *ctx.geometry)
        return dx, None, None, None, None, None, None


class AvgPool2dFunction(torch.autograd.Function):

    @staticmethod
    def forward(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        return torch.ops.convtri.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                            divisor_override)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, *geometry = inputs
        ctx.input = (input.shape, is_channels_last(input))
        ctx.geometry = geometry

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        return torch.ops.convtri.avg_pool2d_backward(dy, *ctx.input, *ctx.geometry), *[None] * len(ctx.geometry)


class AdaptiveAvgPool2dFunction(torch.autograd.Function):

    @staticmethod
    def forward(input, output_size):
        return torch.ops.convtri.adaptive_avg_pool2d(input, output_size)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.input = (inputs[0].shape, is_channels_last(inputs[0]))

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        return torch.ops.convtri.adaptive_avg_pool2d_backward(dy, *ctx.input), None


for _op, _function in ((_max_pool2d_op, MaxPool2dFunction), (_avg_pool2d_op, AvgPool2dFunction),
                       (_adaptive_avg_pool2d_op, AdaptiveAvgPool2dFunction)):
    _op.register_autograd(_function.backward, setup_context=_function.setup_context)


# ----------------------------------------------------------------------------- public ops

def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """``torch.nn.functional.max_pool2d`` on convtri's Triton kernels. With ``return_indices``
    also the int64 flat (h*W + w) index of each maximum, as torch's (max_unpool2d takes them)."""
    args = pool2d_args(kernel_size, stride, padding, dilation)
    # indices are written only when returned or needed by backward
    with_indices = bool(return_indices) or (torch.is_grad_enabled() and getattr(input, "requires_grad", False))
    y, idx = _args.batched("max_pool2d", lambda x: torch.ops.convtri.max_pool2d(x, *args, bool(ceil_mode),
                                                                                 with_indices), input)
    return (y, idx) if return_indices else y


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """``torch.nn.functional.avg_pool2d`` on convtri's Triton kernels."""
    if isinstance(input, torch.Tensor) and input.dim() < 3:  # torch raises IndexError here (it indexes dim -3)
        raise IndexError(f"avg_pool2d: expected input to be 3-D (C, H, W) or 4-D (N, C, H, W), got input of size "
                         f"{list(input.shape)}")
    kernel_size, stride, padding, _ = pool2d_args(kernel_size, stride, padding, 1)
    if divisor_override is not None and (not isinstance(divisor_override, int) or isinstance(divisor_override, bool)):
        raise TypeError(f"avg_pool2d: divisor_override must be an int or None, got {divisor_override!r}")
    return _args.batched("avg_pool2d", lambda x: torch.ops.convtri.avg_pool2d(
        x, kernel_size, stride, padding, bool(ceil_mode), bool(count_include_pad), divisor_override), input)


def adaptive_avg_pool2d(input, output_size):
    """``torch.nn.functional.adaptive_avg_pool2d`` on convtri's Triton kernels; output_size 1
    is global average pooling."""
    _args.check_tensor(input, "input")
    output_size = adaptive_output_size(output_size, input.shape[-2:])
    return _args.batched("adaptive_avg_pool2d",
                         lambda x: torch.ops.convtri.adaptive_avg_pool2d(x, output_size), input)
