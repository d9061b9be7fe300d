"""Launchers of the pooling kernels: each allocates its outputs, computes the grid, and launches."""
from dataclasses import dataclass

import torch
import triton

from convtri._launch import (INTERPRETER_CHANNELS, INTERPRETER_TILE_NUMEL, block, empty, is_interpreted, launch,
                             suggest_memory_format)
from convtri.kernels import pool2d as kernels


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
