"""The pooling kernels' launches for one call signature: built once, called with tensors.

Each class takes a first call's tensors, from which it reads sizes, strides, dtype and
device only, and fixes every argument of its launch; calling it allocates the output and
launches (convtri/pool2d.py builds the ops' plans from them).
"""
from dataclasses import dataclass

import torch
import triton

from convtri._launch import (INTERPRETER_CHANNELS, INTERPRETER_TILE_NUMEL, Launch, Output, block, is_interpreted,
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


def _tile(t, rows, channels, channel_stride):
    """Blocks of a [pixels, channels] tile over ``rows`` pixels, whose layout (the stride of
    its channels) decides the shape on CUDA: channels_last tiles run along contiguous
    channels, NCHW tiles along pixels. ``t`` tells the device and element size."""
    if is_interpreted(t):
        block_c = block(channels, INTERPRETER_CHANNELS)
        return dict(BLOCK_P=block(rows, INTERPRETER_TILE_NUMEL // block_c), BLOCK_C=block_c)
    block_c = block(channels, kernels.CUDA_CHANNELS) if channel_stride == 1 else 1
    tile_numel = kernels.cuda_tile_numel(t.element_size())
    block_p = block(rows, tile_numel // block_c)
    block_c = block(channels, tile_numel // block_p)  # few pixels: widen over channels
    return dict(BLOCK_P=block_p, BLOCK_C=block_c)


def _grid(rows, channels):
    return lambda meta: (triton.cdiv(rows, meta["BLOCK_P"]), triton.cdiv(channels, meta["BLOCK_C"]))


class MaxForward:
    """(y, indices) of max pooling for 4-D x, in x's memory format; the int64 indices only
    ``with_indices`` (else None)."""

    def __init__(self, x, geom, with_indices):
        n, c, h, w = x.shape
        oh, ow = geom.output_size
        fmt = suggest_memory_format(x)
        self.y = Output((n, c, oh, ow), fmt, x)
        self.idx = Output((n, c, oh, ow), fmt, x, torch.int64) if with_indices else None
        rows = n * oh * ow
        # One program: a BLOCK_P (output pixels) x BLOCK_C (channels) tile of y and of the indices.
        self.launch = None if self.y.empty else Launch(
            kernels.max_pool2d_fwd_kernel, _grid(rows, c),
            (n, c, h, w, oh, ow, *x.stride(), *self.y.stride, *(self.idx or self.y).stride,
             *geom.kernel_size, *geom.stride, *geom.padding, *geom.dilation),
            _tile(x, rows, c, x.stride(1)), WITH_INDICES=with_indices)

    def __call__(self, x):
        y = self.y()
        idx = self.idx() if self.idx is not None else None
        if self.launch is not None:
            self.launch(x, y, idx if idx is not None else y)
        return y, idx


class MaxBackward:
    """dx of max pooling: dy routed to the input pixels that the saved indices name."""

    def __init__(self, dy, idx, x_shape, x_format, geom):
        n, c, h, w = x_shape
        oh, ow = geom.output_size
        self.dx = Output(x_shape, x_format, dy)
        rows = n * h * w
        # One program: a BLOCK_P (input pixels) x BLOCK_C (channels) tile of dx, gathered from the
        # windows that cover each pixel and chose it.
        self.launch = None if self.dx.empty else Launch(
            kernels.max_pool2d_bwd_kernel, _grid(rows, c),
            (n, c, h, w, oh, ow, *dy.stride(), *idx.stride(), *self.dx.stride,
             *geom.kernel_size, *geom.stride, *geom.padding, *geom.dilation),
            _tile(dy, rows, c, self.dx.stride[1]))

    def __call__(self, dy, idx):
        dx = self.dx()
        if self.launch is not None:
            self.launch(dy, idx, dx)
        return dx


def _avg_params(geom):
    """The average-pooling kernels' pooling parameters and flags."""
    params = (*geom.window_bound(), *geom.stride, *geom.padding, geom.divisor_override or 1)
    flags = dict(COUNT_INCLUDE_PAD=geom.count_include_pad, DIVISOR_OVERRIDE=geom.divisor_override is not None,
                 ADAPTIVE=geom.adaptive)
    return params, flags


class AvgForward:
    """y of average pooling (fixed or adaptive windows) for 4-D x, in x's memory format."""

    def __init__(self, x, geom):
        n, c, h, w = x.shape
        oh, ow = geom.output_size
        self.y = Output((n, c, oh, ow), suggest_memory_format(x), x)
        self.launch = None
        if not self.y.empty:
            rows = n * oh * ow
            params, flags = _avg_params(geom)
            # One program: a BLOCK_P (output pixels) x BLOCK_C (channels) tile of y.
            self.launch = Launch(kernels.avg_pool2d_fwd_kernel, _grid(rows, c),
                                 (n, c, h, w, oh, ow, *x.stride(), *self.y.stride, *params),
                                 _tile(x, rows, c, x.stride(1)), **flags)

    def __call__(self, x):
        y = self.y()
        if self.launch is not None:
            self.launch(x, y)
        return y


class AvgBackward:
    """dx of average pooling (fixed or adaptive windows), with forward's divisor rule."""

    def __init__(self, dy, x_shape, x_format, geom):
        n, c, h, w = x_shape
        oh, ow = geom.output_size
        self.dx = Output(x_shape, x_format, dy)
        self.no_window = oh * ow == 0  # nothing flows back
        self.launch = None
        if not (self.dx.empty or self.no_window):
            rows = n * h * w
            params, flags = _avg_params(geom)
            # One program: a BLOCK_P (input pixels) x BLOCK_C (channels) tile of dx, gathered from the
            # windows that cover each pixel.
            self.launch = Launch(kernels.avg_pool2d_bwd_kernel, _grid(rows, c),
                                 (n, c, h, w, oh, ow, *dy.stride(), *self.dx.stride, *params, *geom.cover_bound()),
                                 _tile(dy, rows, c, self.dx.stride[1]), **flags)

    def __call__(self, dy):
        dx = self.dx()
        if self.no_window:
            return dx.zero_()
        if self.launch is not None:
            self.launch(dy, dx)
        return dx
