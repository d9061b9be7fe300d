"""The conv2d kernels' launches for one call signature: built once, called with tensors.

``Forward``, ``Dgrad`` and ``Wgrad`` each take a first call's tensors, from which they read
sizes, strides, dtype and device only, and fix every argument of their kernel launches;
calling one allocates its outputs and launches. conv2d and conv_transpose2d (convtri/conv2d.py,
convtri/conv_transpose2d.py) build their plans from them: a transposed convolution's forward
is conv2d's input gradient, and its gradients are conv2d's forward and weight gradient.
"""
import math
from dataclasses import dataclass

import torch
import triton

from convtri._launch import (INTERPRETER_CHANNELS, INTERPRETER_TILE_NUMEL, Launch, Output, block, dot_precision,
                             dot_upcast, format_strides, is_channels_last, is_interpreted, layout_of, memory_format)
from convtri.kernels import conv2d as kernels
from convtri.kernels.activations import NO_ACTIVATION, SAVES_PREACTIVATION
from convtri.kernels import relayout

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
# Slices enough for this many waves of 128x128 weight-gradient tiles over the GPU's SMs: a
# starting point, not a measurement (the split count is not autotuned).
WGRAD_WAVES, WGRAD_TILE = 2, 128 * 128
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


def _strides(t):
    """``t``'s strides as a GEMM kernel takes them: 0 along dimensions of size 1, where the index
    is always 0. A 1x1 weight's strides along R and S would be 1, which Triton makes a constant
    and which hides that a tap's channel vectors start 16-byte aligned; 0 is a multiple of 16
    (perf/results/aot/: rn50_14_1x1_1024to256's forward, 2-byte weight loads -> 16-byte ones)."""
    return tuple(0 if size == 1 else stride for size, stride in zip(t.shape, t.stride()))


def _even_blocks(t, channels, blocks):
    """Whether every channel block of the reduction is whole: BLOCK_K divides ``channels``,
    for the interpreter's block on CPU and for every autotune config on CUDA (their BLOCK_K
    are powers of two up to MAX_BLOCK_K)."""
    return channels % (blocks["BLOCK_K"] if is_interpreted(t) else kernels.MAX_BLOCK_K) == 0


def _gemm_blocks(t, rows, columns, reduction, **extra):
    """Interpreter tiles of a GEMM (CUDA autotunes them): as wide as Triton allows."""
    block_n, block_k = block(columns, INTERPRETER_CHANNELS), block(reduction, INTERPRETER_REDUCTION)
    return dict(BLOCK_M=_rows_block(rows, block_n, block_k), BLOCK_N=block_n, BLOCK_K=block_k, **extra)


class Relayout:
    """A copy of a tensor (like ``t``) in memory format ``fmt``, made by our relayout kernel;
    calling it on the tensor gives the copy."""

    def __init__(self, t, fmt):
        self.copy = Output(t.shape, fmt, t)
        n, c, h, w = t.shape
        # a row of pixels follows the previous one, on both sides
        flat = t.stride(2) == w * t.stride(3) and self.copy.stride[2] == w * self.copy.stride[3]
        blocks = (dict(BLOCK_P=block(h * w, INTERPRETER_TILE_NUMEL // INTERPRETER_CHANNELS),
                       BLOCK_C=block(c, INTERPRETER_CHANNELS)) if is_interpreted(t)
                  else dict(BLOCK_P=relayout.BLOCK_PIXELS, BLOCK_C=relayout.BLOCK_CHANNELS))
        # One program: a BLOCK_P (pixels of one image) x BLOCK_C (channels) tile of the copy.
        grid = lambda meta: (n * triton.cdiv(h * w, meta["BLOCK_P"]), triton.cdiv(c, meta["BLOCK_C"]))
        self.launch = Launch(relayout.relayout_kernel, grid, (n, c, h, w, *t.stride(), *self.copy.stride), blocks,
                             FLAT_PIXELS=flat)

    def __call__(self, t):
        copy = self.copy()
        self.launch(t, copy)
        return copy


class ChannelsLast:
    """An operand as the GEMM kernels read it best, with contiguous channels: the tensor itself
    when its channels are contiguous, or when ``needed`` is false (FLAT_TAPS gathers few
    channels in any layout); else a channels_last copy made by our relayout kernel, as cuDNN
    makes before its NHWC kernels. In the first H100 sweep our kernels took 2 to 7 times longer
    on NCHW than on channels_last inputs for VGG's layers (vgg16_56_256to256 wgrad 7.4 against
    1.2 ms, perf/results/nvidia-h100-80gb-hbm3/vgg.csv), where the copy moves the input twice
    (about 35 us for that layer at 3 TB/s). ``spec`` is what the GEMM's launch is built from;
    calling it gives the tensor to launch on."""

    def __init__(self, t, needed):
        self.spec, self.relayout = t, None
        if needed and t.stride(1) != 1 and t.numel() > 0:
            self.relayout = Relayout(t, torch.channels_last)
            self.spec = self.relayout.copy.spec

    def __call__(self, t):
        return t if self.relayout is None else self.relayout(t)


class GemmOutput:
    """Where a GEMM writes an output that torch wants in ``fmt``: there directly, or, for an
    NCHW output of a channels_last GEMM (``nhwc``), a channels_last buffer that our relayout
    kernel then copies into NCHW: stored straight from the accumulator, an NCHW tile of 128x256
    spills 6 KB per thread (sm_90, perf/aot_report.py), the copy moves the output twice."""

    def __init__(self, size, fmt, like, nhwc, dtype=None):
        self.final = Output(size, fmt, like, dtype)
        self.gemm, self.relayout = self.final, None
        if nhwc and fmt != torch.channels_last and not self.final.empty:
            self.gemm = Output(size, torch.channels_last, like, dtype)
            self.relayout = Relayout(self.gemm.spec, fmt)
            self.final = self.relayout.copy

    def __call__(self):
        """The tensor the GEMM writes."""
        return self.gemm()

    def result(self, written):
        """The output, from what the GEMM wrote."""
        return written if self.relayout is None else self.relayout(written)


class Forward:
    """y = conv2d(x, w, b) for 4-D x, channels_last if x or w is. conv_transpose2d's input
    gradient computes only the first ``out_hw`` rows and columns, in ``out_format``. With an
    activation whose backward reads its input (SAVES_PREACTIVATION), ``saving`` also writes z,
    the pre-activation, laid out as the kernel writes y (no copy to y's final layout)."""

    def __init__(self, x, w, b, geom, out_hw=None, out_format=None, activation=NO_ACTIVATION):
        n, c, h, wd = x.shape
        k, _, r, s = w.shape
        p, q = out_hw or geom.output_size(h, wd, r, s)
        nhwc = self.copies_operands(c // geom.groups)
        self.activation = activation
        self.y = GemmOutput((n, k, p, q), out_format or memory_format(is_channels_last(x, w)), x, nhwc)
        self.z = (Output(self.y.gemm.size, None, x, stride=self.y.gemm.stride)
                  if activation in SAVES_PREACTIVATION else None)
        self.x, self.w = ChannelsLast(x, nhwc), ChannelsLast(w, nhwc)
        self.launch = self.saving_launch = None
        if not self.y.final.empty:
            sizes = (n, c, h, wd, k, p, q, r, s)
            self.launch = self._launch(self.x.spec, self.w.spec, b, geom, sizes, activation, False)
            self.saving_launch = (self._launch(self.x.spec, self.w.spec, b, geom, sizes, activation, True)
                                  if self.z is not None else self.launch)

    @staticmethod
    def copies_operands(channels_per_tap):
        """Whether the GEMM reads channels_last copies of NCHW operands: with more than a few
        channels per tap (FLAT_TAPS gathers few channels in any layout)."""
        return not _flat_taps(channels_per_tap)

    def _launch(self, x, w, b, geom, sizes, activation, save):
        n, c, h, wd, k, p, q, r, s = sizes
        top, _, left, _ = geom.padding
        groups = geom.groups
        # One program: a BLOCK_M (output pixels) x BLOCK_N (output channels) tile of y, one group.
        grid = lambda meta: (triton.cdiv(n * p * q, meta["BLOCK_M"]) * triton.cdiv(k // groups, meta["BLOCK_N"]),
                             groups)
        flat = _flat_taps(c // groups)
        blocks = _gemm_blocks(x, n * p * q, k // groups, c // groups * (r * s if flat else 1), GROUP_M=1)
        scalars = (n, c // groups, h, wd, k // groups, p, q, r, s, groups, *_strides(x), *_strides(w),
                   *_strides(self.y.gemm.spec),
                   b.stride(0) if b is not None else 0, *geom.stride, top, left, *geom.dilation)
        return Launch(kernels.conv2d_fwd_kernel, grid, scalars, blocks,
                      (kernels.conv2d_fwd_configs, kernels.CONV_KEY, kernels.conv2d_fwd_prune),
                      HAS_BIAS=b is not None, PAD_MODE=geom.pad_mode, FLAT_TAPS=flat, PRECISION=dot_precision(x),
                      UPCAST=dot_upcast(x), EVEN_BLOCKS=not flat and _even_blocks(x, c // groups, blocks),
                      ACTIVATION=activation, SAVE_PREACTIVATION=save)

    def __call__(self, x, w, b):
        return self._run(self.launch, x, w, b, None)

    def saving(self, x, w, b):
        """(y, what the backward of the fused activation reads: y, or z for SiLU and GELU; None
        without an activation)."""
        if self.z is None:
            y = self(x, w, b)
            return y, (None if self.activation == NO_ACTIVATION else y)
        z = self.z()
        return self._run(self.saving_launch, x, w, b, z), z

    def _run(self, launch, x, w, b, z):
        y = self.y()
        if launch is not None:
            launch(self.x(x), self.w(w), b if b is not None else y, y, z if z is not None else y)
        return self.y.result(y)


def dgrad_reads_channels(w_shape, geom):
    """Whether conv2d's input-gradient GEMM reads dy (and y) tap by tap along channels, as
    channels_last copies when they are not (else FLAT_TAPS gathers them in any layout)."""
    return not _flat_taps(w_shape[0] // geom.groups)


def wgrad_reads_channels(w_shape, weight_grad):
    """Whether conv2d's weight-gradient GEMM reads x, dy (and y) along channels (as above)."""
    return weight_grad and not _flat_taps(w_shape[1])


class GradOperands:
    """conv2d's gradient dy and, with a fused activation, the forward's output y, as both
    gradient GEMMs (``needs``: dx, dw, db asked for) read them: where either reads along
    channels, one channels_last copy of each, made once for both. Calling it on (dy, y) gives
    the tensors to pass to Dgrad and Wgrad, which ``spec``'s specs were built from."""

    def __init__(self, dy, y, w_shape, geom, needs, direct=False):
        """``direct``: the gradients run on the direct depthwise kernels, which read any layout."""
        nhwc = not direct and ((needs[0] and dgrad_reads_channels(w_shape, geom))
                               or wgrad_reads_channels(w_shape, needs[1]))
        self.dy, self.y = ChannelsLast(dy, nhwc), ChannelsLast(y, nhwc) if y is not None else None
        self.spec = (self.dy.spec, self.y.spec if y is not None else None)

    def __call__(self, dy, y):
        return self.dy(dy), self.y(y) if y is not None else None


class Dgrad:
    """dx of conv2d for 4-D dy, plus ``bias`` per channel of dx (conv_transpose2d's forward);
    zero padding directly, other padding modes into a padded buffer that pad_fold folds.
    With an ``activation`` fused into the forward, a call also passes its output y."""

    copies_operands = staticmethod(dgrad_reads_channels)

    def __init__(self, dy, w, bias, x_size, x_format, geom, y=None, activation=NO_ACTIVATION):
        nhwc = self.copies_operands(w.shape, geom)
        self.dx = GemmOutput(x_size, x_format, dy, nhwc and geom.pad_mode == kernels.PAD_ZEROS)
        self.padded = self.fold = None
        self.dy, self.w = ChannelsLast(dy, nhwc), ChannelsLast(w, nhwc)
        self.y = ChannelsLast(y if y is not None else dy, nhwc and y is not None)
        dy, w, y = self.dy.spec, self.w.spec, self.y.spec
        if geom.pad_mode == kernels.PAD_ZEROS:
            self.launch = self._launch(dy, y, w, bias, self.dx.gemm, geom, activation)
            return
        n, c, h, wd = x_size
        top, bottom, left, right = geom.padding
        accumulator = torch.float64 if dy.dtype == torch.float64 else torch.float32
        # the GEMM writes channels_last where its operands are (pad_fold reads through strides)
        self.padded = Output((n, c, h + top + bottom, wd + left + right), torch.channels_last if nhwc else x_format,
                             dy, accumulator)
        unpadded = ConvGeometry(geom.stride, (0, 0, 0, 0), geom.dilation, geom.groups)
        self.launch = self._launch(dy, y, w, None, self.padded, unpadded, activation)
        if not self.dx.final.empty:
            # One program: BLOCK elements of dx, each summing the padded positions that map onto it.
            grid = lambda meta: (triton.cdiv(n * c * h * wd, meta["BLOCK"]),)
            self.fold = Launch(kernels.pad_fold_kernel, grid,
                               (n, c, h, wd, *self.padded.size[2:], *self.padded.stride, *self.dx.gemm.stride, top,
                                left),
                               _elementwise_block(dy), PAD_MODE=geom.pad_mode)

    @staticmethod
    def _launch(dy, y, w, bias, dx, geom, activation):
        if dx.empty:
            return None
        n, c, h, wd = dx.size
        k, _, r, s = w.shape
        p, q = dy.shape[2:]
        groups = geom.groups
        sh, sw = geom.stride
        top, _, left, _ = geom.padding
        rows = n * triton.cdiv(h, sh) * triton.cdiv(wd, sw)  # input pixels of one stride phase, at most
        # One program: a BLOCK_M (input pixels of one stride phase) x BLOCK_N (input channels) tile of dx.
        grid = lambda meta: (triton.cdiv(rows, meta["BLOCK_M"]) * triton.cdiv(c // groups, meta["BLOCK_N"]),
                             groups, sh * sw)
        flat = _flat_taps(k // groups)
        blocks = _gemm_blocks(dy, rows, c // groups, k // groups * (r * s if flat else 1))
        scalars = (n, c // groups, h, wd, k // groups, p, q, r, s, groups, *_strides(dy), *_strides(y), *_strides(w),
                   *_strides(dx.spec),
                   bias.stride(0) if bias is not None else 0, sh, sw, top, left, *geom.dilation,
                   *(stride // math.gcd(stride, dil) for stride, dil in zip(geom.stride, geom.dilation)))
        return Launch(kernels.conv2d_dgrad_kernel, grid, scalars, blocks,
                      (kernels.conv2d_dgrad_configs, kernels.DGRAD_KEY, kernels.conv2d_dgrad_prune),
                      HAS_BIAS=bias is not None, FLAT_TAPS=flat, PRECISION=dot_precision(dy), UPCAST=dot_upcast(dy),
                      EVEN_BLOCKS=not flat and _even_blocks(dy, k // groups, blocks), ACTIVATION=activation)

    def __call__(self, dy, w, bias=None, y=None):
        y = self.y(y) if y is not None else None
        dy, w = self.dy(dy), self.w(w)
        y = y if y is not None else dy
        dx = self.dx()
        if self.padded is None:
            if self.launch is not None:
                self.launch(dy, y, w, bias if bias is not None else dx, dx)
            return self.dx.result(dx)
        padded = self.padded()
        if self.launch is not None:
            self.launch(dy, y, w, padded, padded)
        if self.fold is not None:
            self.fold(padded, dx)
        return dx


def _wgrad_splits(x, rows, weight_numel, tile, min_rows):
    """How many slices the N*P*Q reduction is cut into: one on CPU, enough on CUDA for
    WGRAD_WAVES waves of programs that each cover ``tile`` weight elements, each slice at least
    ``min_rows`` rows. It depends only on shapes and device, so the result is deterministic."""
    if x.device.type != "cuda" or rows == 0:
        return 1
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    wanted = triton.cdiv(WGRAD_WAVES * sms * tile, max(weight_numel, 1))
    by_rows = max(1, rows // min_rows)
    by_memory = max(1, WGRAD_MAX_PARTIAL_BYTES // (8 * max(weight_numel, 1)))
    return max(1, min(wanted, by_rows, by_memory, MAX_GRID_YZ))


def strides_like(size, stride):
    """The strides ``torch.empty_like`` gives a tensor of ``size`` and ``stride``: its own
    when it is non-overlapping and dense, else those of its suggested memory format."""
    expected = 1
    for d in sorted((d for d in range(len(size)) if size[d] >= 2), key=lambda d: stride[d]):
        if stride[d] != expected:
            return format_strides(size, layout_of(size, stride))
        expected *= size[d]
    return tuple(stride)


class Wgrad:
    """The weight gradient (laid out as ``torch.empty_like(weight)``) and/or the bias gradient
    (the sum of dy per channel) of conv2d, each only if asked for. One slice of the N*P*Q
    reduction writes them directly; several (on CUDA, to fill the GPU) write fp32 partials
    that a fixed-order second pass sums: deterministic either way."""

    copies_operands = staticmethod(wgrad_reads_channels)

    def __init__(self, x, dy, w_size, w_stride, geom, weight_grad=True, bias_grad=False, y=None,
                 activation=NO_ACTIVATION):
        n, c, h, wd = x.shape
        k, p, q = dy.shape[1:]
        nhwc = self.copies_operands(w_size, weight_grad)
        self.x, self.dy = ChannelsLast(x, nhwc), ChannelsLast(dy, nhwc)
        self.y = ChannelsLast(y if y is not None else dy, nhwc and y is not None)
        x, dy, y = self.x.spec, self.dy.spec, self.y.spec
        self.dw = Output(w_size, None, x, stride=strides_like(w_size, w_stride)) if weight_grad else None
        self.db = Output((k,), torch.contiguous_format, x) if bias_grad else None
        self.splits = self._splits(x, n * p * q, w_size)
        accumulator = torch.float64 if x.dtype == torch.float64 else torch.float32
        self.parts = [Output((self.splits, *out.size), torch.contiguous_format, x, accumulator)
                      if out is not None and self.splits > 1 else None for out in (self.dw, self.db)]
        outputs = (*self._strides(self.dw, self.parts[0], 5), *self._strides(self.db, self.parts[1], 2))
        # an empty reduction (no rows) writes zeros
        self.launch = self._launch(x, dy, y, w_size, outputs, geom, weight_grad, bias_grad, activation)
        self.sums = [_sum_splits(part, out, x) if part is not None else None for part, out in zip(self.parts,
                                                                                                 (self.dw, self.db))]

    @staticmethod
    def _splits(x, rows, w_size):
        return _wgrad_splits(x, rows, math.prod(w_size), WGRAD_TILE, WGRAD_MIN_ROWS_PER_SPLIT)

    def _launch(self, x, dy, y, w_size, outputs, geom, weight_grad, bias_grad, activation):
        """The GEMM's launch; ``outputs``: the strides of dw's and db's slices (``_strides``)."""
        n, c, h, wd = x.shape
        k, p, q = dy.shape[1:]
        c_per_group, r, s = w_size[1:]
        groups = geom.groups
        top, _, left, _ = geom.padding
        rows = n * p * q
        flat = _flat_taps(c_per_group)
        # One program: a BLOCK_M (output channels) x BLOCK_N (input channels of one tap (r, s), or
        # with FLAT_TAPS columns over (r, s, c)) tile for one slice of N*P*Q and one group; the bias
        # alone needs one column tile.
        columns, taps = (c_per_group * r * s, 1) if flat else (c_per_group, r * s)
        tiles_w = weight_grad and columns > 0  # no input channel: dw is empty, db still sums dy
        splits = self.splits
        grid = lambda meta: (triton.cdiv(k // groups, meta["BLOCK_M"])
                             * (taps * triton.cdiv(columns, meta["BLOCK_N"]) if tiles_w else 1), splits, groups)
        block_m, block_n = block(k // groups, INTERPRETER_CHANNELS), block(columns, INTERPRETER_CHANNELS)
        blocks = dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=_rows_block(rows, block_m, block_n))
        scalars = (n, c // groups, h, wd, k // groups, p, q, r, s, groups, splits, *_strides(x), *_strides(dy),
                   *_strides(y), *outputs, *geom.stride, top, left, *geom.dilation)
        return Launch(
            kernels.conv2d_wgrad_kernel, grid, scalars, blocks,
            (kernels.conv2d_wgrad_configs, kernels.CONV_KEY, kernels.conv2d_wgrad_prune),
            WEIGHT_GRAD=tiles_w, BIAS_GRAD=bias_grad, PAD_MODE=geom.pad_mode, FLAT_TAPS=flat,
            PRECISION=dot_precision(x), UPCAST=dot_upcast(x), P_POW2=triton.next_power_of_2(p),
            Q_POW2=triton.next_power_of_2(q), ACTIVATION=activation)

    @staticmethod
    def _strides(out, part, dims):
        """(split stride, then the output's strides) for the kernel: 0 for an unsplit output."""
        if part is not None:
            return part.stride
        return (0, *out.stride) if out is not None else (0,) * dims

    def __call__(self, x, dy, y=None):
        """(dw, db), None for a gradient not asked for; ``y``: the forward's activated output."""
        dw = self.dw() if self.dw is not None else None
        db = self.db() if self.db is not None else None
        x, dy = self.x(x), self.dy(dy)
        y = self.y(y) if y is not None else dy
        if self.splits == 1:
            self.launch(x, dy, y, dw if dw is not None else db, db if db is not None else dw)
            return dw, db
        parts = [part() if part is not None else None for part in self.parts]
        placeholder = parts[0] if parts[0] is not None else parts[1]
        self.launch(x, dy, y, *[part if part is not None else placeholder for part in parts])
        for total, part, out in zip(self.sums, parts, (dw, db)):
            if total is not None:
                total(part, out)
        return dw, db


def _sum_splits(part, out, like):
    """out = part.sum(0), deterministically, written through out's strides."""
    sizes = list(out.size) + [1] * (4 - len(out.size))
    strides = list(out.stride) + [0] * (4 - len(out.size))
    numel = 1
    for size in out.size:
        numel *= size
    # One program: BLOCK elements of out, each summed over the splits in order.
    grid = lambda meta: (triton.cdiv(numel, meta["BLOCK"]),)
    return Launch(kernels.conv2d_sum_splits_kernel, grid, (part.size[0], *sizes, *strides),
                  _elementwise_block(like))
