"""Launchers of the conv2d kernels: each allocates its outputs, computes the grid, and launches.

conv2d and conv_transpose2d (convtri/conv2d.py, convtri/conv_transpose2d.py) share them: a
transposed convolution's forward is conv2d's input gradient, and its gradients are conv2d's
forward and weight gradient.
"""
from dataclasses import dataclass

import torch
import triton

from convtri._launch import (INTERPRETER_CHANNELS, INTERPRETER_TILE_NUMEL, block, dot_precision, dot_upcast, empty,
                             is_channels_last, is_interpreted, launch, memory_format)
from convtri.kernels import conv2d as kernels

PAD_MODES = {"zeros": kernels.PAD_ZEROS, "reflect": kernels.PAD_REFLECT,
             "replicate": kernels.PAD_REPLICATE, "circular": kernels.PAD_CIRCULAR}
MAX_GRID_YZ = 65535  # CUDA's limit on grid axes 1 and 2
INTERPRETER_REDUCTION = 128  # reduction columns per dot
# At or below this many channels per tap, a reduction block spans several taps (FLAT_TAPS):
# a tensor-core step reduces 16 fp16 channels, and the interpreter runs far fewer steps.
FLAT_TAPS_MAX_CHANNELS = 16
ELEMENTWISE_BLOCK_CUDA = 512  # 4 warps x 4 elements; at 8, ptxas spills the 64-bit offsets (sm_90)
ELEMENTWISE_BLOCK_CPU = 1 << 16
WGRAD_MIN_ROWS_PER_SPLIT = 512  # an N*P*Q slice below this costs more in partials than it saves
WGRAD_MAX_PARTIAL_BYTES = 256 << 20  # bound on the fp32 partials of the split reduction


@dataclass(frozen=True)
class ConvGeometry:
    """Everything about a conv2d except its tensors. Padding is (top, bottom, left, right)."""
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    padding_mode: str = "zeros"

    @property
    def pad_mode(self):
        return PAD_MODES[self.padding_mode]

    def output_size(self, h, w, r, s):
        top, bottom, left, right = self.padding
        p = (h + top + bottom - self.dilation[0] * (r - 1) - 1) // self.stride[0] + 1
        q = (w + left + right - self.dilation[1] * (s - 1) - 1) // self.stride[1] + 1
        return p, q

    def op_args(self):
        """The geometry as the custom ops take it (convtri/conv2d.py): lists, ints and a string."""
        return list(self.stride), list(self.padding), list(self.dilation), self.groups, self.padding_mode


def _rows_block(rows, *widths):
    """The interpreter's block over a pixel axis, as long as tiles of ``widths`` columns allow."""
    return block(rows, INTERPRETER_TILE_NUMEL // max(widths))


def _flat_taps(channels_per_tap):
    return channels_per_tap <= FLAT_TAPS_MAX_CHANNELS


def _elementwise_block(t):
    return {"BLOCK": ELEMENTWISE_BLOCK_CPU if is_interpreted(t) else ELEMENTWISE_BLOCK_CUDA}


def conv2d_forward(x, w, b, geom, out_hw=None, out_format=None):
    """y = conv2d(x, w, b) for 4-D x, channels_last if x or w is. conv_transpose2d's input
    gradient computes only the first ``out_hw`` rows and columns, in ``out_format``."""
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    p, q = out_hw or geom.output_size(h, wd, r, s)
    out_format = out_format or memory_format(is_channels_last(x, w))
    y = empty((n, k, p, q), out_format, x)
    if y.numel() == 0:
        return y
    top, _, left, _ = geom.padding
    groups = geom.groups
    # One program: a BLOCK_M (output pixels) x BLOCK_N (output channels) tile of y, one group.
    grid = lambda meta: (triton.cdiv(n * p * q, meta["BLOCK_M"]) * triton.cdiv(k // groups, meta["BLOCK_N"]), groups)
    flat = _flat_taps(c // groups)
    block_n = block(k // groups, INTERPRETER_CHANNELS)
    block_k = block(c // groups * (r * s if flat else 1), INTERPRETER_REDUCTION)
    blocks = dict(BLOCK_M=_rows_block(n * p * q, block_n, block_k), BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=1)
    launch(kernels.conv2d_fwd_kernel, grid,
           x, w, b if b is not None else y, y,
           n, c, h, wd, k, p, q, r, s, groups,
           *x.stride(), *w.stride(), *y.stride(), b.stride(0) if b is not None else 0,
           *geom.stride, top, left, *geom.dilation,
           tensor=x, blocks=blocks,
           tuning=(kernels.conv2d_fwd_configs, kernels.CONV_KEY, kernels.conv2d_fwd_prune),
           HAS_BIAS=b is not None, PAD_MODE=geom.pad_mode, FLAT_TAPS=flat, PRECISION=dot_precision(x),
           UPCAST=dot_upcast(x))
    return y


def conv2d_dgrad(dy, w, x_shape, x_format, geom, bias=None):
    """dx of conv2d for 4-D dy, plus ``bias`` per channel of dx (conv_transpose2d's forward);
    zero padding directly, other padding modes through pad_fold."""
    if geom.pad_mode == kernels.PAD_ZEROS:
        return _dgrad_zero_padding(dy, w, bias, x_shape, x_format, geom, dy.dtype)
    if bias is not None:
        raise RuntimeError(f"conv2d_dgrad: a bias needs zero padding, got padding_mode={geom.padding_mode!r}")
    n, c, h, wd = x_shape
    top, bottom, left, right = geom.padding
    hp, wp = h + top + bottom, wd + left + right
    unpadded = ConvGeometry(geom.stride, (0, 0, 0, 0), geom.dilation, geom.groups)
    accumulator = torch.float64 if dy.dtype == torch.float64 else torch.float32
    dx_padded = _dgrad_zero_padding(dy, w, None, (n, c, hp, wp), x_format, unpadded, accumulator)
    dx = empty(x_shape, x_format, dy)
    # One program: BLOCK elements of dx, each summing the padded positions that map onto it.
    grid = lambda meta: (triton.cdiv(dx.numel(), meta["BLOCK"]),)
    launch(kernels.pad_fold_kernel, grid, dx_padded, dx, n, c, h, wd, hp, wp,
           *dx_padded.stride(), *dx.stride(), top, left,
           tensor=dy, blocks=_elementwise_block(dy), PAD_MODE=geom.pad_mode)
    return dx


def _dgrad_zero_padding(dy, w, bias, x_shape, x_format, geom, dtype):
    n, c, h, wd = x_shape
    k, _, r, s = w.shape
    p, q = dy.shape[2:]
    dx = empty(x_shape, x_format, dy, dtype)
    if dx.numel() == 0:
        return dx
    groups = geom.groups
    sh, sw = geom.stride
    top, _, left, _ = geom.padding
    rows = n * triton.cdiv(h, sh) * triton.cdiv(wd, sw)  # input pixels of one stride phase, at most
    # One program: a BLOCK_M (input pixels of one stride phase) x BLOCK_N (input channels) tile of dx.
    grid = lambda meta: (triton.cdiv(rows, meta["BLOCK_M"]) * triton.cdiv(c // groups, meta["BLOCK_N"]),
                         groups, sh * sw)
    flat = _flat_taps(k // groups)
    block_n = block(c // groups, INTERPRETER_CHANNELS)
    block_k = block(k // groups * (r * s if flat else 1), INTERPRETER_REDUCTION)
    blocks = dict(BLOCK_M=_rows_block(rows, block_n, block_k), BLOCK_N=block_n, BLOCK_K=block_k)
    launch(kernels.conv2d_dgrad_kernel, grid,
           dy, w, bias if bias is not None else dx, dx,
           n, c, h, wd, k, p, q, r, s, groups,
           *dy.stride(), *w.stride(), *dx.stride(), bias.stride(0) if bias is not None else 0,
           sh, sw, top, left, *geom.dilation,
           tensor=dy, blocks=blocks,
           tuning=(kernels.conv2d_dgrad_configs, kernels.DGRAD_KEY, kernels.conv2d_dgrad_prune),
           HAS_BIAS=bias is not None, FLAT_TAPS=flat, PRECISION=dot_precision(dy), UPCAST=dot_upcast(dy))
    return dx


def _wgrad_splits(x, rows, weight_numel):
    """How many slices the N*P*Q reduction is cut into: one on CPU, enough on CUDA to fill
    the GPU. It depends only on shapes and device, so the result is deterministic."""
    if x.device.type != "cuda" or rows == 0:
        return 1
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    wanted = triton.cdiv(4 * sms * 64 * 64, max(weight_numel, 1))  # 4 waves of 64x64 tiles
    by_rows = max(1, rows // WGRAD_MIN_ROWS_PER_SPLIT)
    by_memory = max(1, WGRAD_MAX_PARTIAL_BYTES // (8 * max(weight_numel, 1)))
    return max(1, min(wanted, by_rows, by_memory, MAX_GRID_YZ))


def conv2d_wgrad(x, dy, geom, dw=None, db=None):
    """Fill ``dw`` (the weight gradient, any layout) and/or ``db`` (the bias gradient, the sum
    of dy per channel) of conv2d. Deterministic two-stage reduction: fp32 partials over N*P*Q
    slices, then a fixed-order sum. Without ``dw`` only dy is read."""
    n, c, h, wd = x.shape
    k, p, q = dy.shape[1:]
    c_per_group, r, s = dw.shape[1:] if dw is not None else (c // geom.groups, 1, 1)
    groups = geom.groups
    top, _, left, _ = geom.padding
    rows = n * p * q
    splits = _wgrad_splits(x, rows, k * c_per_group * r * s)
    accumulator = torch.float64 if x.dtype == torch.float64 else torch.float32
    dw_part = torch.empty((splits, k, c_per_group, r, s) if dw is not None else (0,), dtype=accumulator,
                          device=x.device)
    db_part = torch.empty((splits, k) if db is not None else (0,), dtype=accumulator, device=x.device)
    flat = _flat_taps(c_per_group)
    # One program: a BLOCK_M (output channels) x BLOCK_N (input channels of one tap (r, s), or
    # with FLAT_TAPS columns over (r, s, c)) tile for one slice of N*P*Q and one group; the bias
    # alone needs one column tile.
    columns, taps = (c_per_group * r * s, 1) if flat else (c_per_group, r * s)
    grid = lambda meta: (triton.cdiv(k // groups, meta["BLOCK_M"])
                         * (taps * triton.cdiv(columns, meta["BLOCK_N"]) if dw is not None else 1), splits, groups)
    block_m, block_n = block(k // groups, INTERPRETER_CHANNELS), block(columns, INTERPRETER_CHANNELS)
    blocks = dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=_rows_block(rows, block_m, block_n))
    launch(kernels.conv2d_wgrad_kernel, grid,
           x, dy, dw_part, db_part,
           n, c, h, wd, k, p, q, r, s, groups, splits,
           *x.stride(), *dy.stride(),
           *geom.stride, top, left, *geom.dilation,
           tensor=x, blocks=blocks,
           tuning=(kernels.conv2d_wgrad_configs, kernels.CONV_KEY, kernels.conv2d_wgrad_prune),
           WEIGHT_GRAD=dw is not None, BIAS_GRAD=db is not None, PAD_MODE=geom.pad_mode, FLAT_TAPS=flat,
           PRECISION=dot_precision(x), UPCAST=dot_upcast(x))
    for part, out in ((dw_part, dw), (db_part, db)):
        if out is not None:
            _sum_splits(part, out)
    return dw, db


def _sum_splits(part, out):
    """out = part.sum(0), deterministically, written through out's strides."""
    sizes = list(out.shape) + [1] * (4 - out.dim())
    strides = list(out.stride()) + [0] * (4 - out.dim())
    # One program: BLOCK elements of out, each summed over the splits in order.
    grid = lambda meta: (triton.cdiv(out.numel(), meta["BLOCK"]),)
    launch(kernels.conv2d_sum_splits_kernel, grid, part, out, part.shape[0], *sizes, *strides,
           tensor=out, blocks=_elementwise_block(out))
