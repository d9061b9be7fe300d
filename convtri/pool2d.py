"""pool2d: max, average and adaptive average pooling: argument handling, launchers for our
Triton kernels, and the autograd Functions."""
from dataclasses import dataclass

import torch
import triton
from torch.autograd.function import once_differentiable

from convtri import _args
from convtri._launch import (FLOAT_DTYPES, INTERPRETER_CHANNELS, INTERPRETER_TILE_NUMEL, block, check_device,
                             empty, is_interpreted, launch, suggest_memory_format)
from convtri.kernels import pool2d as kernels

MAX_INT32 = 2 ** 31 - 1
# The kernels index the pixels of N*H*W (and N*OH*OW) in int32, a block past the last one included.
MAX_PIXELS = MAX_INT32 - INTERPRETER_TILE_NUMEL


@dataclass(frozen=True)
class PoolGeometry:
    """Everything about a 2-D pooling except its tensors. Adaptive pooling uses only the sizes."""
    input_size: tuple  # (H, W)
    output_size: tuple  # (OH, OW)
    kernel_size: tuple = (1, 1)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    count_include_pad: bool = True
    divisor_override: int | None = None
    adaptive: bool = False

    def window_bound(self):
        """Taps per axis that cover every window: the kernel, or the largest adaptive window,
        which spans at most ceil(in/out) + 1 input rows."""
        if not self.adaptive:
            return self.kernel_size
        return tuple(min(i, triton.cdiv(i, o) + 1) for i, o in zip(self.input_size, self.output_size))

    def cover_bound(self):
        """Output windows per axis that backward visits for one input pixel: one per kernel tap,
        or for adaptive windows at most ceil((out-1)/in) + 1 of them overlap."""
        if not self.adaptive:
            return self.kernel_size
        return tuple(triton.cdiv(o - 1, i) + 1 for i, o in zip(self.input_size, self.output_size))


def pooling_output_size(size, kernel, stride, pad, dilation, ceil_mode):
    """ATen's pooling_output_shape_pad_lr for one axis: under ceil_mode the last window must
    still start inside the input or its left padding."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _tile(t, rows, channels):
    """Blocks of a [pixels, channels] tile over ``rows`` pixels of ``t``, whose layout decides
    the shape on CUDA: channels_last tiles run along contiguous channels, NCHW tiles along pixels."""
    if is_interpreted(t):
        block_c = block(channels, INTERPRETER_CHANNELS)
        return dict(BLOCK_P=block(rows, INTERPRETER_TILE_NUMEL // block_c), BLOCK_C=block_c)
    block_c = block(channels, kernels.CUDA_CHANNELS) if t.stride(1) == 1 else 1
    tile_numel = kernels.cuda_tile_numel(t.element_size())
    block_p = block(rows, tile_numel // block_c)
    block_c = block(channels, tile_numel // block_p)  # few pixels: widen over channels
    return dict(BLOCK_P=block_p, BLOCK_C=block_c)


def _grid(rows, channels):
    return lambda meta: (triton.cdiv(rows, meta["BLOCK_P"]), triton.cdiv(channels, meta["BLOCK_C"]))


# ----------------------------------------------------------------------------- arguments

def _check_input(op, input, allow_empty_channels=False):
    """A 3-D (C, H, W) or 4-D (N, C, H, W) floating-point tensor; only N may be 0 (and C too
    where ``allow_empty_channels``, as torch's adaptive pooling allows)."""
    _args.check_tensor(input, "input")
    if input.dim() < 3 and op == "avg_pool2d":  # torch raises IndexError here (it indexes dim -3)
        raise IndexError(f"{op}: expected input to be 3-D (C, H, W) or 4-D (N, C, H, W), got input of size "
                         f"{list(input.shape)}")
    if input.dim() not in (3, 4):
        raise RuntimeError(f"{op}: expected input to be 3-D (C, H, W) or 4-D (N, C, H, W), got input of size "
                           f"{list(input.shape)}")
    _args.check_float_dtype(input, "input", FLOAT_DTYPES)
    check_device(input)
    c, h, w = input.shape[-3:]
    if h == 0 or w == 0 or (c == 0 and not allow_empty_channels):
        raise RuntimeError(f"{op}: expected input with non-zero sizes except for the batch dimension, got input "
                           f"of size {list(input.shape)}")


def _check_positive(op, **pairs):
    for name, value in pairs.items():
        if min(value) <= 0:
            raise RuntimeError(f"{op}: {name} must be greater than zero, got {name}={value}")


def _check_pixel_count(op, input, output_size):
    batch = input.shape[0] if input.dim() == 4 else 1
    if batch * max(input.shape[-2] * input.shape[-1], output_size[0] * output_size[1]) > MAX_PIXELS:
        raise RuntimeError(f"{op}: input of size {list(input.shape)} has more than {MAX_PIXELS} pixels")


def parse_pool2d_args(op, input, kernel_size, stride, padding, dilation, ceil_mode,
                      count_include_pad=True, divisor_override=None):
    """Validate max_pool2d's or avg_pool2d's arguments as torch does and return the PoolGeometry."""
    _check_input(op, input)
    kernel_size = _args.pair(kernel_size, "kernel_size")
    # torch: stride=None (or an empty list) means stride = kernel_size
    no_stride = stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0)
    stride = kernel_size if no_stride else _args.pair(stride, "stride")
    padding = _args.pair(padding, "padding")
    dilation = _args.pair(dilation, "dilation")
    _check_positive(op, kernel_size=kernel_size, stride=stride, dilation=dilation)
    if min(padding) < 0:
        raise RuntimeError(f"{op}: padding must be non-negative, got padding={padding}")
    if padding[0] > kernel_size[0] // 2 or padding[1] > kernel_size[1] // 2:
        raise RuntimeError(f"{op}: padding must be at most half of kernel_size, got padding={padding} and "
                           f"kernel_size={kernel_size}")
    if divisor_override is not None:
        if not isinstance(divisor_override, int) or isinstance(divisor_override, bool):
            raise TypeError(f"{op}: divisor_override must be an int or None, got {divisor_override!r}")
        if divisor_override == 0:
            raise RuntimeError(f"{op}: divisor_override must not be zero")
    h, w = input.shape[-2:]
    output_size = tuple(pooling_output_size(*axis, ceil_mode)
                        for axis in zip((h, w), kernel_size, stride, padding, dilation))
    if min(output_size) < 1:
        c = input.shape[-3]
        raise RuntimeError(f"{op}: output size is too small: input of size ({c}x{h}x{w}) gives an output of size "
                           f"({c}x{output_size[0]}x{output_size[1]})")
    _check_pixel_count(op, input, output_size)
    return PoolGeometry((h, w), output_size, kernel_size, stride, padding, dilation, count_include_pad,
                        divisor_override)


def parse_adaptive_avg_pool2d_args(input, output_size):
    """Validate adaptive_avg_pool2d's arguments; output_size is an int or a pair whose None
    entries keep the input's size. Returns the PoolGeometry."""
    op = "adaptive_avg_pool2d"
    _check_input(op, input, allow_empty_channels=True)
    h, w = input.shape[-2:]
    if isinstance(output_size, (list, tuple, torch.Size)):
        if len(output_size) != 2:
            raise RuntimeError(f"{op}: output_size must be an int or a pair, got output_size={list(output_size)}")
        output_size = tuple(size if size is not None else default for size, default in zip(output_size, (h, w)))
    output_size = _args.pair(output_size, "output_size")
    if min(output_size) < 0:
        raise RuntimeError(f"{op}: output_size must be non-negative, got output_size={output_size}")
    _check_pixel_count(op, input, output_size)
    if max(h * output_size[0], w * output_size[1]) > MAX_INT32:  # the adaptive window bounds o*in/out
        raise RuntimeError(f"{op}: input of size {list(input.shape)} with output_size={output_size} exceeds the "
                           f"int32 window arithmetic")
    return PoolGeometry((h, w), output_size, adaptive=True)


# ----------------------------------------------------------------------------- launchers

def max_pool2d_forward(x, geom, with_indices):
    """(y, indices) of max pooling for 4-D x, in x's memory format; indices is None unless
    ``with_indices``."""
    n, c, h, w = x.shape
    oh, ow = geom.output_size
    fmt = suggest_memory_format(x)
    y = empty((n, c, oh, ow), fmt, x)
    idx = empty((n, c, oh, ow), fmt, x, torch.int64) if with_indices else None
    if y.numel() == 0:
        return y, idx
    rows = n * oh * ow
    # One program: a BLOCK_P (output pixels) x BLOCK_C (channels) tile of y and of the indices.
    launch(kernels.max_pool2d_fwd_kernel, _grid(rows, c),
           x, y, idx if with_indices else y,
           n, c, h, w, oh, ow,
           *x.stride(), *y.stride(), *(idx if with_indices else y).stride(),
           *geom.kernel_size, *geom.stride, *geom.padding, *geom.dilation,
           tensor=x, blocks=_tile(x, rows, c), WITH_INDICES=with_indices)
    return y, idx


def max_pool2d_backward(dy, idx, x_shape, x_format, geom):
    """dx of max pooling: dy routed to the input pixels that the saved indices name."""
    n, c, h, w = x_shape
    oh, ow = geom.output_size
    dx = empty(x_shape, x_format, dy)
    if dx.numel() == 0:
        return dx
    rows = n * h * w
    # One program: a BLOCK_P (input pixels) x BLOCK_C (channels) tile of dx, gathered from the
    # windows that cover each pixel and chose it.
    launch(kernels.max_pool2d_bwd_kernel, _grid(rows, c),
           dy, idx, dx,
           n, c, h, w, oh, ow,
           *dy.stride(), *idx.stride(), *dx.stride(),
           *geom.kernel_size, *geom.stride, *geom.padding, *geom.dilation,
           tensor=dy, blocks=_tile(dx, rows, c))
    return dx


def _avg_params(geom):
    """The average-pooling kernels' pooling parameters and flags."""
    params = (*geom.window_bound(), *geom.stride, *geom.padding, geom.divisor_override or 1)
    flags = dict(COUNT_INCLUDE_PAD=geom.count_include_pad, DIVISOR_OVERRIDE=geom.divisor_override is not None,
                 ADAPTIVE=geom.adaptive)
    return params, flags


def avg_pool2d_forward(x, geom):
    """y of average pooling (fixed or adaptive windows) for 4-D x, in x's memory format."""
    n, c, h, w = x.shape
    oh, ow = geom.output_size
    y = empty((n, c, oh, ow), suggest_memory_format(x), x)
    if y.numel() == 0:
        return y
    rows = n * oh * ow
    params, flags = _avg_params(geom)
    # One program: a BLOCK_P (output pixels) x BLOCK_C (channels) tile of y.
    launch(kernels.avg_pool2d_fwd_kernel, _grid(rows, c),
           x, y, n, c, h, w, oh, ow, *x.stride(), *y.stride(), *params,
           tensor=x, blocks=_tile(x, rows, c), **flags)
    return y


def avg_pool2d_backward(dy, x_shape, x_format, geom):
    """dx of average pooling (fixed or adaptive windows), with forward's divisor rule."""
    n, c, h, w = x_shape
    oh, ow = geom.output_size
    if oh * ow == 0:  # no window: nothing flows back
        return empty(x_shape, x_format, dy).zero_()
    dx = empty(x_shape, x_format, dy)
    if dx.numel() == 0:
        return dx
    rows = n * h * w
    params, flags = _avg_params(geom)
    # One program: a BLOCK_P (input pixels) x BLOCK_C (channels) tile of dx, gathered from the
    # windows that cover each pixel.
    launch(kernels.avg_pool2d_bwd_kernel, _grid(rows, c),
           dy, dx, n, c, h, w, oh, ow, *dy.stride(), *dx.stride(), *params, *geom.cover_bound(),
           tensor=dy, blocks=_tile(dx, rows, c), **flags)
    return dx


# ----------------------------------------------------------------------------- autograd

class MaxPool2dFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, geom, with_indices):
        y, idx = max_pool2d_forward(x, geom, with_indices)
        if idx is not None:
            ctx.mark_non_differentiable(idx)
        ctx.save_for_backward(idx)
        ctx.geom = geom
        ctx.x_shape, ctx.x_format = x.shape, suggest_memory_format(x)
        return y, idx

    @staticmethod
    @once_differentiable  # our backward is not itself differentiable: say so rather than return zeros
    def backward(ctx, dy, _):
        (idx,) = ctx.saved_tensors
        dx = max_pool2d_backward(dy, idx, ctx.x_shape, ctx.x_format, ctx.geom) if ctx.needs_input_grad[0] else None
        return dx, None, None


class AvgPool2dFunction(torch.autograd.Function):
    """avg_pool2d and adaptive_avg_pool2d: the same sum over a window, divided by the same rule;
    only the windows differ (``PoolGeometry.adaptive``)."""

    @staticmethod
    def forward(ctx, x, geom):
        ctx.geom = geom
        ctx.x_shape, ctx.x_format = x.shape, suggest_memory_format(x)
        return avg_pool2d_forward(x, geom)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        dx = avg_pool2d_backward(dy, ctx.x_shape, ctx.x_format, ctx.geom) if ctx.needs_input_grad[0] else None
        return dx, None


class AdaptiveAvgPool2dFunction(AvgPool2dFunction):
    """adaptive_avg_pool2d: AvgPool2dFunction's kernels, with the adaptive windows of its geometry."""


# ----------------------------------------------------------------------------- public ops

def _batched(fn, input, *args):
    """Run ``fn`` on 4-D input; unbatched (C, H, W) input goes through as a batch of one."""
    if input.dim() == 4:
        return fn(input, *args)
    out = fn(input.unsqueeze(0), *args)
    return tuple(t if t is None else t.squeeze(0) for t in out) if isinstance(out, tuple) else out.squeeze(0)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """``torch.nn.functional.max_pool2d`` on convtri's Triton kernels. With ``return_indices``
    also the int64 flat (h*W + w) index of each maximum, as torch's (max_unpool2d takes them)."""
    geom = parse_pool2d_args("max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode)
    # indices are written only when returned or needed by backward
    with_indices = bool(return_indices) or (torch.is_grad_enabled() and input.requires_grad)
    y, idx = _batched(MaxPool2dFunction.apply, input, geom, with_indices)
    return (y, idx) if return_indices else y


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """``torch.nn.functional.avg_pool2d`` on convtri's Triton kernels."""
    geom = parse_pool2d_args("avg_pool2d", input, kernel_size, stride, padding, 1, ceil_mode,
                             bool(count_include_pad), divisor_override)
    return _batched(AvgPool2dFunction.apply, input, geom)


def adaptive_avg_pool2d(input, output_size):
    """``torch.nn.functional.adaptive_avg_pool2d`` on convtri's Triton kernels; output_size 1
    is global average pooling."""
    geom = parse_adaptive_avg_pool2d_args(input, output_size)
    return _batched(AdaptiveAvgPool2dFunction.apply, input, geom)
