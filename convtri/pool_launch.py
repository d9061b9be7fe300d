"""The pooling kernels' launches for one call signature: built once, called with tensors.

Each class takes a first call's tensors, from which it reads sizes, strides, dtype and
device only, and fixes every argument of its launch; calling it allocates the output and
launches (convtri/pool2d.py builds the ops' plans from them).
"""
import math
from dataclasses import dataclass

import torch
import triton

from convtri._launch import (INTERPRETER_CHANNELS, INTERPRETER_TILE_NUMEL, MAX_PIXELS, Launch, Output, block,
                             is_interpreted, suggest_memory_format)
from convtri.kernels import pool2d as kernels

# What max pooling's forward writes beside the maxima (the custom op's ``indices`` argument)
NO_INDICES = "none"  # inference: nothing
WINDOW_OFFSETS = "offsets"  # for our backward alone: each maximum's tap kh*KW + kw in its window
FLAT_INDICES = "flat"  # torch's int64 h*W + w within each (n, c) plane: return_indices=True
INDICES = (NO_INDICES, WINDOW_OFFSETS, FLAT_INDICES)
# The narrowest integer type holding a window's taps (a window offset)
OFFSET_DTYPES = ((256, torch.uint8), (2 ** 15, torch.int16), (2 ** 31, torch.int32))
MAX_GRID_B = 65535  # CUDA's limit on a grid's second axis


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
        """Output windows per axis that backward visits for one input pixel: where windows do not
        overlap (stride >= the window's span) the one window a pixel lies in, else one per kernel
        tap; for adaptive windows at most ceil((out-1)/in) + 1 of them overlap."""
        if not self.adaptive:
            return tuple(1 if s >= d * (k - 1) + 1 else k
                         for k, s, d in zip(self.kernel_size, self.stride, self.dilation))
        return tuple(triton.cdiv(o - 1, i) + 1 for i, o in zip(self.input_size, self.output_size))

    def window(self, dilation=True):
        """The kernels' constexpr window: kernel (for adaptive windows, its bound), stride,
        padding and (with ``dilation``) dilation, per axis."""
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.window_bound(), self.stride, self.padding, self.dilation
        return dict(KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw, **(dict(DH=dh, DW=dw) if dilation else {}))

    def is_global(self):
        """One window that is the whole input: average pooling to 1 x 1 is its mean."""
        whole = self.kernel_size == self.input_size and self.padding == (0, 0) and self.divisor_override is None
        return self.output_size == (1, 1) and (self.adaptive or whole)

    def offset_dtype(self):
        """The narrowest integer type that holds a window offset kh*KW + kw (a byte up to 256 taps)."""
        taps = math.prod(self.kernel_size)
        return next(dtype for limit, dtype in OFFSET_DTYPES if taps <= limit)


def pooling_output_size(size, kernel, stride, pad, dilation, ceil_mode):
    """ATen's pooling_output_shape_pad_lr for one axis: under ceil_mode the last window must
    still start inside the input or its left padding."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _power_of_two(values):
    """The largest power of two, up to 16, that divides every one of ``values`` (Triton itself
    sees only what divides by 16)."""
    divisor = math.gcd(*map(int, values))  # int(): torch.compile's symbolic sizes
    return 16 if divisor == 0 else min(divisor & -divisor, 16)


def _align(channels_last, *tensors):
    """ALIGN of tensors, as (sizes, strides), in a tile form: what divides each one's strides
    along the tile's axis 0 and its extent along axis 1 (C in pixel tiles, the columns in row tiles)."""
    axis_a, axis_b = ((0, 2, 3), 1) if channels_last else ((0, 1, 2), 3)
    return _power_of_two([strides[d] for _, strides in tensors for d in axis_a] + [sizes[axis_b] for sizes, _ in tensors])


def _layout(t):
    return t.shape, t.stride()


def _tiling(t, sizes, strides):
    """The tile form, blocks and grid of a launch over a tensor of (N, C, ROWS, COLS) ``sizes``
    laid out with ``strides`` (the tensor it writes). Pixel tiles (CHANNELS_LAST) run along
    channels where they are closer in memory than columns, row tiles along columns otherwise,
    each unless its index space or grid is out of the kernels' range. ``t`` tells the device
    and element size. Returns (CHANNELS_LAST, blocks, grid)."""
    n, c, rows, cols = sizes
    forms = {True: (n * rows * cols, c), False: (n * c * rows, cols)}  # pixel / row tiles: (axis 0, axis 1)
    width, tile_numel = ((INTERPRETER_CHANNELS, INTERPRETER_TILE_NUMEL) if is_interpreted(t) else
                         (kernels.CUDA_COLUMNS, kernels.CUDA_TILE_BYTES // t.element_size()))

    def blocks(form):
        a, b = forms[form]
        block_b = block(b, width)
        block_a = block(a, tile_numel // block_b)
        return block_a, block(b, tile_numel // block_a)  # few rows: widen the tile along axis 1

    def fits(form):
        a, b = forms[form]
        return a <= MAX_PIXELS and triton.cdiv(b, blocks(form)[1]) <= MAX_GRID_B

    pixel_tiles = bool(strides[1] < strides[3])
    if not fits(pixel_tiles):
        pixel_tiles = not pixel_tiles
    block_a, block_b = blocks(pixel_tiles)
    a, b = forms[pixel_tiles]
    return pixel_tiles, dict(BLOCK_A=block_a, BLOCK_B=block_b), lambda meta: (triton.cdiv(a, meta["BLOCK_A"]),
                                                                               triton.cdiv(b, meta["BLOCK_B"]))


def _paired(x, geom, channels_last):
    """Whether row tiles read each window row as whole vectors: column stride 2 over adjacent,
    unit-stride columns (``column_pair``)."""
    return (not channels_last and not geom.adaptive and geom.stride[1] == 2 and geom.dilation[1] == 1
            and geom.kernel_size[1] >= 2 and x.stride(3) == 1)


def _paired_windows(geom, channels_last, blocks):
    """Whether a backward's row tiles take their windows as whole vectors, each window feeding
    the two columns it covers: windows two columns wide, column stride 2, no column padding
    (``column_windows``)."""
    return (not channels_last and not geom.adaptive and (geom.kernel_size[1], geom.stride[1]) == (2, 2)
            and geom.padding[1] == 0 and geom.dilation[1] == 1 and blocks["BLOCK_B"] >= 2)


class MaxForward:
    """(y, saved) of max pooling for 4-D x, in x's memory format: ``indices`` says what ``saved``
    holds: torch's int64 flat indices (FLAT_INDICES), window offsets (WINDOW_OFFSETS, for our
    backward), or nothing (NO_INDICES: saved is None)."""

    def __init__(self, x, geom, indices):
        if indices not in INDICES:
            raise ValueError(f"max_pool2d: indices must be one of {', '.join(map(repr, INDICES))}, got {indices!r}")
        n, c, h, w = x.shape
        oh, ow = geom.output_size
        fmt = suggest_memory_format(x)
        self.y = Output((n, c, oh, ow), fmt, x)
        self.saved = None
        if indices != NO_INDICES:
            self.saved = Output((n, c, oh, ow), fmt, x, torch.int64 if indices == FLAT_INDICES else geom.offset_dtype())
        self.launch = None
        if not self.y.empty:
            channels_last, blocks, grid = _tiling(x, self.y.size, self.y.stride)
            outputs = [(o.size, o.stride) for o in (self.y, self.saved) if o is not None]
            # One program: a tile of y (and saved), output pixels x channels or output rows x columns.
            self.launch = Launch(
                kernels.max_pool2d_fwd_kernel, grid,
                (n, c, h, w, oh, ow, *x.stride(), *self.y.stride, *(self.saved or self.y).stride), blocks,
                **geom.window(), SAVE=indices != NO_INDICES, FLAT_INDICES=indices == FLAT_INDICES,
                CHANNELS_LAST=channels_last, PAIRED=_paired(x, geom, channels_last),
                ALIGN_X=_align(channels_last, _layout(x)), ALIGN_Y=_align(channels_last, *outputs))

    def __call__(self, x):
        y = self.y()
        saved = self.saved() if self.saved is not None else None
        if self.launch is not None:
            self.launch(x, y, saved if saved is not None else y)
        return y, saved


class MaxBackward:
    """dx of max pooling: dy routed to the input pixels that the saved indices (torch's int64
    flat indices) or window offsets name."""

    def __init__(self, dy, saved, x_shape, x_format, geom):
        n, c, h, w = x_shape
        oh, ow = geom.output_size
        self.dx = Output(x_shape, x_format, dy)
        self.launch = None
        if not self.dx.empty:
            channels_last, blocks, grid = _tiling(dy, x_shape, self.dx.stride)
            cover_h, cover_w = geom.cover_bound()
            # One program: a tile of dx, input pixels x channels or input rows x columns, gathered
            # from the windows that cover each pixel and chose it.
            self.launch = Launch(
                kernels.max_pool2d_bwd_kernel, grid,
                (n, c, h, w, oh, ow, *dy.stride(), *saved.stride(), *self.dx.stride), blocks,
                **geom.window(), COVER_H=cover_h, COVER_W=cover_w, FLAT_INDICES=saved.dtype == torch.int64,
                CHANNELS_LAST=channels_last, PAIRED=_paired_windows(geom, channels_last, blocks), ALIGN_DY=_align(channels_last, _layout(dy), _layout(saved)),
                ALIGN_DX=_align(channels_last, (self.dx.size, self.dx.stride)))

    def __call__(self, dy, saved):
        dx = self.dx()
        if self.launch is not None:
            self.launch(dy, saved, dx)
        return dx


def _avg_flags(geom):
    """The average-pooling kernels' constexpr window and flags."""
    return dict(geom.window(dilation=False), COUNT_INCLUDE_PAD=geom.count_include_pad,
                DIVISOR_OVERRIDE=geom.divisor_override is not None, ADAPTIVE=geom.adaptive)


class AvgForward:
    """y of average pooling (fixed or adaptive windows) for 4-D x, in x's memory format; a window
    that is the whole input (``PoolGeometry.is_global``) is a reduction of its own."""

    def __init__(self, x, geom):
        n, c, h, w = x.shape
        oh, ow = geom.output_size
        self.y = Output((n, c, oh, ow), suggest_memory_format(x), x)
        self.launch = None
        if self.y.empty:
            return
        if geom.is_global():
            self.launch = _global_average(kernels.global_avg_pool2d_fwd_kernel, x, _layout(x), self.y.stride, True)
            return
        channels_last, blocks, grid = _tiling(x, self.y.size, self.y.stride)
        # One program: a tile of y, output pixels x channels or output rows x columns.
        self.launch = Launch(kernels.avg_pool2d_fwd_kernel, grid,
                             (n, c, h, w, oh, ow, *x.stride(), *self.y.stride, geom.divisor_override or 1), blocks,
                             **_avg_flags(geom), CHANNELS_LAST=channels_last, PAIRED=_paired(x, geom, channels_last),
                             ALIGN_X=_align(channels_last, _layout(x)),
                             ALIGN_Y=_align(channels_last, (self.y.size, self.y.stride)))

    def __call__(self, x):
        y = self.y()
        if self.launch is not None:
            self.launch(x, y)
        return y


def _global_average(kernel, t, planes, small, forward):
    """The launch of a global average pooling kernel: ``planes`` (sizes, strides) of the N x C x H
    x W tensor it reads or writes, ``small`` the strides of the N x C x 1 x 1 one; ``t`` tells
    the device and element size."""
    (n, c, h, w), strides = planes
    channels_last = bool(strides[1] < (strides[3] if w > 1 else strides[2]))  # channels closer than pixels
    if is_interpreted(t):
        block_c = block(c, INTERPRETER_CHANNELS)
        block_p = block(h * w, INTERPRETER_TILE_NUMEL // block_c)
    else:
        tile_numel = kernels.CUDA_TILE_BYTES // t.element_size()
        if channels_last:
            block_c = block(c, kernels.CUDA_COLUMNS)
            block_p = block(h * w, tile_numel // block_c)
        else:
            block_p = block(h * w, kernels.GLOBAL_PIXELS)
            block_c = block(c, tile_numel // block_p)
    # ALIGN over the strides but the contiguous one, and the extent of the contiguous axis
    other = (strides[0], strides[2], strides[3], c) if channels_last else (strides[0], strides[1], h * w)
    scalars = (*strides, *small[:2]) if forward else (*small[:2], *strides)
    # One program: BLOCK_C channels of one image, all its pixels.
    return Launch(kernel, lambda meta: (n, triton.cdiv(c, meta["BLOCK_C"])), (n, c, h, w, *scalars),
                  dict(BLOCK_P=block_p, BLOCK_C=block_c), FLAT_PLANES=h == 1 or strides[2] == w * strides[3],
                  CHANNELS_LAST=channels_last, ALIGN=_power_of_two(other))


class AvgBackward:
    """dx of average pooling (fixed or adaptive windows), with forward's divisor rule; of a
    window that is the whole input, dy spread over it."""

    def __init__(self, dy, x_shape, x_format, geom):
        n, c, h, w = x_shape
        oh, ow = geom.output_size
        self.dx = Output(x_shape, x_format, dy)
        self.no_window = oh * ow == 0  # nothing flows back
        self.launch = None
        if self.dx.empty or self.no_window:
            return
        if geom.is_global():
            self.launch = _global_average(kernels.global_avg_pool2d_bwd_kernel, dy, (x_shape, self.dx.stride),
                                          dy.stride(), False)
            return
        channels_last, blocks, grid = _tiling(dy, x_shape, self.dx.stride)
        cover_h, cover_w = geom.cover_bound()
        # One program: a tile of dx, input pixels x channels or input rows x columns, gathered
        # from the windows that cover each pixel.
        self.launch = Launch(kernels.avg_pool2d_bwd_kernel, grid,
                             (n, c, h, w, oh, ow, *dy.stride(), *self.dx.stride, geom.divisor_override or 1),
                             blocks, **_avg_flags(geom), COVER_H=cover_h, COVER_W=cover_w,
                             CHANNELS_LAST=channels_last, PAIRED=_paired_windows(geom, channels_last, blocks),
                             ALIGN_DY=_align(channels_last, _layout(dy)),
                             ALIGN_DX=_align(channels_last, (self.dx.size, self.dx.stride)))

    def __call__(self, dy):
        dx = self.dx()
        if self.no_window:
            return dx.zero_()
        if self.launch is not None:
            self.launch(dy, dx)
        return dx
