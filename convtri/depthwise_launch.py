"""The direct kernels' launches (kernels/depthwise.py) for convolutions whose groups hold one
channel on a side, and the rule that sends a call to them.

``DepthwiseForward``, ``DepthwiseDgrad`` and ``DepthwiseWgrad`` are conv_launch's Forward,
Dgrad and Wgrad with the direct kernels' launches in place of the GEMMs': the same outputs and
layouts, the same padded buffer and fold for non-zero padding modes, the same split reduction
and fixed-order sum. ``forward``, ``dgrad`` and ``wgrad`` pick between them, so that every plan
(conv2d's, conv_transpose2d's, the gradient ops') routes a call the same way.
"""
import triton

from convtri._launch import INTERPRETER_CHANNELS, Launch, block
from convtri.conv_launch import WGRAD_MIN_ROWS_PER_SPLIT, Dgrad, Forward, GradOperands, Wgrad, _wgrad_splits
from convtri.kernels import depthwise as kernels
from convtri.pool_launch import _align, _layout, _power_of_two, _tiling


def is_direct(groups, c_per_group, k_per_group):
    """Whether a convolution runs on the direct kernels: grouped (groups > 1) with one channel
    per group on a side. Depthwise layers (one input channel per group, any multiplier) are
    GEMMs with a reduction of R*S and N the multiplier, and their transposes (one output
    channel per group) GEMMs with N = 1: a tensor-core step of 16 x 16 multiplies mostly zeros
    there (0.02-0.10x cuDNN in the first H100 sweep, perf/results/nvidia-h100-80gb-hbm3/
    depthwise.csv), while the direct kernels move each byte once. groups == 1 stays a GEMM,
    whose N is every output channel. Small groups on both sides (ResNeXt's 4 x 4) stay GEMMs:
    there a direct kernel reads a group's input channels as scalars (no 16-byte loads) and does
    C_G x R x S FMAs per output. Compiled for sm_90 (fp16, channels_last, rnx50_g32_128_56:
    perf/results/aot/depthwise-resnext-direct.md) its forward issues 178-271 SASS
    instructions per output, spilling from 64 x 64 tiles, against the GEMM's 257 with its
    reduction on tensor cores: no clear win to move them for, until a GPU measures both."""
    return groups > 1 and min(c_per_group, k_per_group) == 1


def _window(geom, r, s):
    """The direct kernels' constexpr window: kernel, stride, padding (top, left), dilation."""
    top, _, left, _ = geom.padding
    return dict(R=r, S=s, SH=geom.stride[0], SW=geom.stride[1], PH=top, PW=left, DH=geom.dilation[0],
                DW=geom.dilation[1])


def _tiles(t, size, strides, configs, prune):
    """(CHANNELS_LAST, interpreter blocks, grid, tuning) of a tile over a tensor of ``size`` and
    ``strides`` (the one a kernel writes), as the pooling kernels tile it; on CUDA the tile
    is autotuned among ``configs``."""
    channels_last, blocks, grid = _tiling(t, size, strides)
    return channels_last, blocks, grid, (configs, kernels.KEY, prune)


def _reads_any_layout(*_):
    """The direct kernels read every operand where it lies: no channels_last copies."""
    return False


class DepthwiseForward(Forward):
    """y = conv2d(x, w, b) on the direct forward kernel (conv_launch.Forward's interface)."""

    copies_operands = staticmethod(_reads_any_layout)

    def _launch(self, x, w, b, geom, sizes, activation, save):
        n, c, h, wd, k, p, q, r, s = sizes
        y = self.y.gemm
        channels_last, blocks, _, tuning = _tiles(x, y.size, y.stride, kernels.depthwise_fwd_configs,
                                                  kernels.depthwise_fwd_prune)
        # RUN output columns (channels_last) or rows (NCHW) per tile row: a config's, on CPU the
        # last the launch can take
        blocks["RUN"] = kernels.run_choices(dict(CHANNELS_LAST=channels_last, R=r, S=s, P=p, Q=q))[-1]
        rows = ((lambda run: n * p * triton.cdiv(q, run)) if channels_last else
                (lambda run: n * k * triton.cdiv(p, run)))
        width = k if channels_last else q
        # One program: a tile of y, output pixels (or runs of output columns) x channels, or
        # output rows (or runs of them) x columns.
        grid = lambda meta: (triton.cdiv(rows(meta["RUN"]), meta["BLOCK_A"]), triton.cdiv(width, meta["BLOCK_B"]))
        return Launch(kernels.depthwise_fwd_kernel, grid,
                      (n, c, h, wd, k, p, q, *x.stride(), *w.stride(), *y.stride, b.stride(0) if b is not None else 0),
                      blocks, tuning, **_window(geom, r, s), C_G=c // geom.groups, K_G=k // geom.groups,
                      HAS_BIAS=b is not None, PAD_MODE=geom.pad_mode, ACTIVATION=activation, SAVE_PREACTIVATION=save,
                      CHANNELS_LAST=channels_last, ALIGN_X=_align(channels_last, _layout(x)),
                      ALIGN_Y=_align(channels_last, (y.size, y.stride)))


class DepthwiseDgrad(Dgrad):
    """dx of conv2d on the direct gather kernel (conv_launch.Dgrad's interface)."""
    copies_operands = staticmethod(_reads_any_layout)

    @staticmethod
    def _launch(dy, y, w, bias, dx, geom, activation):
        if dx.empty:
            return None
        n, c, h, wd = dx.size
        k, c_per_group, r, s = w.shape
        p, q = dy.shape[2:]
        channels_last, blocks, grid, tuning = _tiles(dy, dx.size, dx.stride, kernels.depthwise_dgrad_configs,
                                                     kernels.depthwise_dgrad_prune)
        window = _window(geom, r, s)
        cover = [1 if st >= d * (kk - 1) + 1 else kk for kk, st, d in zip((r, s), geom.stride, geom.dilation)]
        # One program: a tile of dx, input pixels x channels or input rows x columns, gathered
        # from the output pixels whose taps land on each pixel.
        return Launch(kernels.depthwise_dgrad_kernel, grid,
                      (n, c, h, wd, k, p, q, *dy.stride(), *y.stride(), *w.stride(), *dx.stride,
                       bias.stride(0) if bias is not None else 0),
                      blocks, tuning, **window, COVER_H=cover[0], COVER_W=cover[1], C_G=c_per_group,
                      K_G=k // geom.groups, HAS_BIAS=bias is not None, ACTIVATION=activation,
                      CHANNELS_LAST=channels_last, ALIGN_DY=_align(channels_last, _layout(dy), _layout(y)),
                      ALIGN_DX=_align(channels_last, (dx.size, dx.stride)))


INTERPRETER_WGRAD_NUMEL = 1 << 16  # a weight-gradient tile in the interpreter: one of up to 16 tap tiles

# The weight gradient's slices: enough for WGRAD_WAVES waves of programs that each cover about
# this many weight elements (64 channels x 16 taps over the several programs an SM runs at
# once), and no slice shorter than this many rows (its fp32 partials, R*S per channel, then
# cost at most an eighth of the bytes it reads). Starting points, not measurements.
DEPTHWISE_WGRAD_TILE = 1024
DEPTHWISE_WGRAD_MIN_ROWS = WGRAD_MIN_ROWS_PER_SPLIT // 8


class DepthwiseWgrad(Wgrad):
    """dw and/or db of conv2d on the direct weight-gradient kernel (conv_launch.Wgrad's interface)."""
    copies_operands = staticmethod(_reads_any_layout)

    @staticmethod
    def _splits(x, rows, w_size):
        return _wgrad_splits(x, rows, triton.cdiv(w_size[0] * w_size[1], 64) * 64 * w_size[2] * w_size[3],
                             DEPTHWISE_WGRAD_TILE, DEPTHWISE_WGRAD_MIN_ROWS)

    def _launch(self, x, dy, y, w_size, outputs, geom, weight_grad, bias_grad, activation):
        n, c, h, wd = x.shape
        k, p, q = dy.shape[1:]
        c_per_group, r, s = w_size[1:]
        # the tile runs along dy's contiguous axis: channels where they are closer than pixels
        channels_last = bool(dy.stride(1) < dy.stride(3)) if q > 1 else bool(dy.stride(1) < dy.stride(2))
        flat_planes = all(p == 1 or t.stride(2) == q * t.stride(3) for t in (dy, y))
        rows = k * c_per_group
        # the interpreter's tile: as wide as its tuple of tap tiles allows (CUDA autotunes it)
        block_b = block(rows, INTERPRETER_CHANNELS)
        blocks = dict(BLOCK_A=block(p * q, INTERPRETER_WGRAD_NUMEL // block_b), BLOCK_B=block_b)
        tuning = (kernels.depthwise_wgrad_configs, kernels.KEY, kernels.depthwise_wgrad_prune)
        tap_rows = min(r, max(1, kernels.WGRAD_MAX_TAPS // s)) if weight_grad else 1
        tap_groups = triton.cdiv(r, tap_rows) if weight_grad else 1
        splits = self.splits
        # One program: BLOCK_B rows (k, j) of dw for TAP_ROWS kernel rows, over one slice of N*P*Q.
        grid = lambda meta: (triton.cdiv(rows, meta["BLOCK_B"]) * tap_groups, splits)
        # ALIGN_DY over the strides but the contiguous one, and the contiguous axis' extent (C or P*Q)
        other = [extent for t in (dy, y) for extent in ((t.stride(0), t.stride(2), t.stride(3), k) if channels_last
                                                         else (t.stride(0), t.stride(1), p * q))]
        return Launch(kernels.depthwise_wgrad_kernel, grid,
                      (n, c, h, wd, k, p, q, splits, *x.stride(), *dy.stride(), *y.stride(), *outputs), blocks,
                      tuning,
                      **_window(geom, r, s), C_G=c_per_group, K_G=k // geom.groups, TAP_ROWS=tap_rows,
                      WEIGHT_GRAD=weight_grad, BIAS_GRAD=bias_grad, PAD_MODE=geom.pad_mode, ACTIVATION=activation,
                      FLAT_PLANES=flat_planes, CHANNELS_LAST=channels_last,
                      ALIGN_X=_align(channels_last, _layout(x)), ALIGN_DY=_power_of_two(other))


# ----------------------------------------------------------------------------- the route

def forward(x, w, b, geom, out_hw=None, out_format=None, activation=0):
    direct = is_direct(geom.groups, x.shape[1] // geom.groups, w.shape[0] // geom.groups)
    return (DepthwiseForward if direct else Forward)(x, w, b, geom, out_hw, out_format, activation)


def dgrad(dy, w, bias, x_size, x_format, geom, y=None, activation=0):
    direct = is_direct(geom.groups, w.shape[1], w.shape[0] // geom.groups)
    return (DepthwiseDgrad if direct else Dgrad)(dy, w, bias, x_size, x_format, geom, y, activation)


def grad_operands(dy, y, w_shape, geom, needs):
    """conv2d's dy and y as its gradient launches read them (conv_launch.GradOperands)."""
    direct = is_direct(geom.groups, w_shape[1], w_shape[0] // geom.groups)
    return GradOperands(dy, y, w_shape, geom, needs, direct)


def wgrad(x, dy, w_size, w_stride, geom, weight_grad=True, bias_grad=False, y=None, activation=0):
    direct = is_direct(geom.groups, w_size[1], w_size[0] // geom.groups)
    return (DepthwiseWgrad if direct else Wgrad)(x, dy, w_size, w_stride, geom, weight_grad, bias_grad, y,
                                                  activation)
