"""conv2d: argument handling, launchers for our Triton kernels, and the autograd Function."""
from dataclasses import dataclass

import torch
import triton
from torch.autograd.function import once_differentiable

from convtri import _args
from convtri._launch import (FLOAT_DTYPES, INTERPRETER_CHANNELS, INTERPRETER_TILE_NUMEL, block, check_device,
                             dot_precision, dot_upcast, empty, is_interpreted, launch, suggest_memory_format)
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
    pad_mode: int = kernels.PAD_ZEROS

    def output_size(self, h, w, r, s):
        top, bottom, left, right = self.padding
        p = (h + top + bottom - self.dilation[0] * (r - 1) - 1) // self.stride[0] + 1
        q = (w + left + right - self.dilation[1] * (s - 1) - 1) // self.stride[1] + 1
        return p, q


def _rows_block(rows, *widths):
    """The interpreter's block over a pixel axis, as long as tiles of ``widths`` columns allow."""
    return block(rows, INTERPRETER_TILE_NUMEL // max(widths))


def _flat_taps(channels_per_tap):
    return channels_per_tap <= FLAT_TAPS_MAX_CHANNELS


def _elementwise_block(t):
    return {"BLOCK": ELEMENTWISE_BLOCK_CPU if is_interpreted(t) else ELEMENTWISE_BLOCK_CUDA}


# ----------------------------------------------------------------------------- arguments

def parse_conv2d_args(input, weight, bias, stride, padding, dilation, groups, padding_mode="zeros"):
    """Validate conv2d's arguments as torch does and return its ConvGeometry."""
    _args.check_tensor(input, "input")
    _args.check_tensor(weight, "weight")
    if input.dim() not in (3, 4):
        raise RuntimeError(f"conv2d: expected input to be 3-D (C, H, W) or 4-D (N, C, H, W), "
                           f"got input of size {list(input.shape)}")
    if weight.dim() != 4:
        raise RuntimeError(f"conv2d: expected weight to be 4-D (K, C/groups, R, S), got weight of size "
                           f"{list(weight.shape)}")
    if bias is not None:
        _args.check_tensor(bias, "bias")
    _args.check_float_dtype(input, "input", FLOAT_DTYPES)
    tensors = {"input": input, "weight": weight} | ({} if bias is None else {"bias": bias})
    _args.check_same_dtype_and_device(tensors)
    check_device(input)

    stride = _args.pair(stride, "stride")
    dilation = _args.pair(dilation, "dilation")
    if not isinstance(groups, int) or isinstance(groups, bool):
        raise TypeError(f"conv2d: groups must be an int, got {type(groups).__name__}")
    if min(stride) <= 0:
        raise RuntimeError(f"conv2d: stride must be positive, got stride={stride}")
    if min(dilation) <= 0:
        raise RuntimeError(f"conv2d: dilation must be positive, got dilation={dilation}")
    if groups <= 0:
        raise RuntimeError(f"conv2d: groups must be positive, got groups={groups}")
    if padding_mode not in PAD_MODES:
        raise ValueError(f"conv2d: padding_mode must be one of {sorted(PAD_MODES)}, got {padding_mode!r}")

    k, c_per_group, r, s = weight.shape
    c, h, w = input.shape[-3:]
    if k % groups != 0:
        raise RuntimeError(f"conv2d: groups={groups} must divide the weight's output channels, got weight of "
                           f"size {list(weight.shape)}")
    if c != c_per_group * groups:
        raise RuntimeError(f"conv2d: given groups={groups} and weight of size {list(weight.shape)}, expected "
                           f"input to have {c_per_group * groups} channels, got {c} channels")
    if groups > MAX_GRID_YZ or stride[0] * stride[1] > MAX_GRID_YZ:
        raise RuntimeError(f"conv2d: groups={groups} and stride={stride} (its product) must not exceed "
                           f"{MAX_GRID_YZ}, a grid axis of our kernels")
    if bias is not None and tuple(bias.shape) != (k,):
        raise RuntimeError(f"conv2d: expected bias to be 1-D with {k} elements, got bias of size "
                           f"{list(bias.shape)}")
    padding = _parse_padding(padding, stride, dilation, (r, s))
    geom = ConvGeometry(stride, padding, dilation, groups, PAD_MODES[padding_mode])
    top, bottom, left, right = padding
    if h + top + bottom < dilation[0] * (r - 1) + 1 or w + left + right < dilation[1] * (s - 1) + 1:
        raise RuntimeError(f"conv2d: the (dilated) kernel of size ({dilation[0] * (r - 1) + 1} x "
                           f"{dilation[1] * (s - 1) + 1}) is larger than the padded input "
                           f"({h + top + bottom} x {w + left + right})")
    if geom.pad_mode == kernels.PAD_REFLECT and (max(top, bottom) >= h or max(left, right) >= w):
        raise RuntimeError(f"conv2d: reflect padding {padding} must be smaller than the input size ({h} x {w})")
    if geom.pad_mode == kernels.PAD_CIRCULAR and (max(top, bottom) > h or max(left, right) > w):
        raise RuntimeError(f"conv2d: circular padding {padding} must not exceed the input size ({h} x {w})")
    return geom


def _parse_padding(padding, stride, dilation, kernel_size):
    """torch's padding forms as (top, bottom, left, right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise RuntimeError(f"conv2d: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        if stride != (1, 1):
            raise RuntimeError(f"conv2d: padding='same' is not supported for strided convolutions, "
                               f"got stride={stride}")
        total = [d * (k - 1) for d, k in zip(dilation, kernel_size)]
        return (total[0] // 2, total[0] - total[0] // 2, total[1] // 2, total[1] - total[1] // 2)
    ph, pw = _args.pair(padding, "padding")
    if min(ph, pw) < 0:
        raise RuntimeError(f"conv2d: padding must be non-negative, got padding={(ph, pw)}")
    return (ph, ph, pw, pw)


# ----------------------------------------------------------------------------- launchers

def conv2d_forward(x, w, b, geom):
    """y = conv2d(x, w, b) for 4-D x, in x's (or w's) channels_last format if it has one."""
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    p, q = geom.output_size(h, wd, r, s)
    # torch's rule: channels_last if the input or the weight suggests it
    channels_last = torch.channels_last in (suggest_memory_format(x), suggest_memory_format(w))
    y = empty((n, k, p, q), torch.channels_last if channels_last else torch.contiguous_format, x)
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
           *x.stride(), *w.stride(), *y.stride(),
           *geom.stride, top, left, *geom.dilation,
           tensor=x, blocks=blocks,
           tuning=(kernels.conv2d_fwd_configs, kernels.CONV_KEY, kernels.conv2d_fwd_prune),
           HAS_BIAS=b is not None, PAD_MODE=geom.pad_mode, FLAT_TAPS=flat, PRECISION=dot_precision(x),
           UPCAST=dot_upcast(x))
    return y


def conv2d_dgrad(dy, w, x_shape, x_format, geom):
    """dx of conv2d for 4-D dy; zero padding directly, other padding modes through pad_fold."""
    if geom.pad_mode == kernels.PAD_ZEROS:
        return _dgrad_zero_padding(dy, w, x_shape, x_format, geom, dy.dtype)
    n, c, h, wd = x_shape
    top, bottom, left, right = geom.padding
    hp, wp = h + top + bottom, wd + left + right
    unpadded = ConvGeometry(geom.stride, (0, 0, 0, 0), geom.dilation, geom.groups)
    accumulator = torch.float64 if dy.dtype == torch.float64 else torch.float32
    dx_padded = _dgrad_zero_padding(dy, w, (n, c, hp, wp), torch.contiguous_format, unpadded, accumulator)
    dx = empty(x_shape, x_format, dy)
    # One program: BLOCK elements of dx, each summing the padded positions that map onto it.
    grid = lambda meta: (triton.cdiv(dx.numel(), meta["BLOCK"]),)
    launch(kernels.pad_fold_kernel, grid, dx_padded, dx, n, c, h, wd, hp, wp,
           *dx_padded.stride(), *dx.stride(), top, left,
           tensor=dy, blocks=_elementwise_block(dy), PAD_MODE=geom.pad_mode)
    return dx


def _dgrad_zero_padding(dy, w, x_shape, x_format, geom, dtype):
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
           dy, w, dx,
           n, c, h, wd, k, p, q, r, s, groups,
           *dy.stride(), *w.stride(), *dx.stride(),
           sh, sw, top, left, *geom.dilation,
           tensor=dy, blocks=blocks,
           tuning=(kernels.conv2d_dgrad_configs, kernels.CONV_KEY, kernels.conv2d_dgrad_prune),
           FLAT_TAPS=flat, PRECISION=dot_precision(dy), UPCAST=dot_upcast(dy))
    return dx


def _wgrad_splits(x, rows, weight_numel):
    """How many slices the N*P*Q reduction is cut into: one on CPU, enough on CUDA to fill
    the GPU. It depends only on shapes and device, so the result is deterministic."""
    if is_interpreted(x) or rows == 0:
        return 1
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    wanted = triton.cdiv(4 * sms * 64 * 64, max(weight_numel, 1))  # 4 waves of 64x64 tiles
    by_rows = max(1, rows // WGRAD_MIN_ROWS_PER_SPLIT)
    by_memory = max(1, WGRAD_MAX_PARTIAL_BYTES // (8 * max(weight_numel, 1)))
    return max(1, min(wanted, by_rows, by_memory, MAX_GRID_YZ))


def conv2d_wgrad(x, dy, w, geom, weight_grad, bias_grad):
    """(dw, db) of conv2d, each None unless asked for. Deterministic two-stage reduction:
    fp32 partials over N*P*Q slices, then a fixed-order sum."""
    n, c, h, wd = x.shape
    k, c_per_group, r, s = w.shape
    p, q = dy.shape[2:]
    groups = geom.groups
    top, _, left, _ = geom.padding
    rows = n * p * q
    splits = _wgrad_splits(x, rows, w.numel())
    accumulator = torch.float64 if x.dtype == torch.float64 else torch.float32
    dw_part = torch.empty((splits, k, c_per_group, r, s) if weight_grad else (0,), dtype=accumulator,
                          device=x.device)
    db_part = torch.empty((splits, k) if bias_grad else (0,), dtype=accumulator, device=x.device)
    flat = _flat_taps(c_per_group)
    # One program: a BLOCK_M (output channels) x BLOCK_N (input channels of one tap (r, s), or
    # with FLAT_TAPS columns over (r, s, c)) tile for one slice of N*P*Q and one group; the bias
    # alone needs one column tile.
    columns, taps = (c_per_group * r * s, 1) if flat else (c_per_group, r * s)
    grid = lambda meta: (triton.cdiv(k // groups, meta["BLOCK_M"])
                         * (taps * triton.cdiv(columns, meta["BLOCK_N"]) if weight_grad else 1), splits, groups)
    block_m, block_n = block(k // groups, INTERPRETER_CHANNELS), block(columns, INTERPRETER_CHANNELS)
    blocks = dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=_rows_block(rows, block_m, block_n))
    launch(kernels.conv2d_wgrad_kernel, grid,
           x, dy, dw_part, db_part,
           n, c, h, wd, k, p, q, r, s, groups, splits,
           *x.stride(), *dy.stride(),
           *geom.stride, top, left, *geom.dilation,
           tensor=x, blocks=blocks,
           tuning=(kernels.conv2d_wgrad_configs, kernels.CONV_KEY, kernels.conv2d_wgrad_prune),
           WEIGHT_GRAD=weight_grad, BIAS_GRAD=bias_grad, PAD_MODE=geom.pad_mode, FLAT_TAPS=flat,
           PRECISION=dot_precision(x), UPCAST=dot_upcast(x))
    dw = _sum_splits(dw_part, torch.empty_like(w, memory_format=torch.preserve_format)) if weight_grad else None
    db = _sum_splits(db_part, torch.empty(k, dtype=x.dtype, device=x.device)) if bias_grad else None
    return dw, db


def _sum_splits(part, out):
    """out = part.sum(0), deterministically, written through out's strides."""
    sizes = list(out.shape) + [1] * (4 - out.dim())
    strides = list(out.stride()) + [0] * (4 - out.dim())
    # One program: BLOCK elements of out, each summed over the splits in order.
    grid = lambda meta: (triton.cdiv(out.numel(), meta["BLOCK"]),)
    launch(kernels.conv2d_sum_splits_kernel, grid, part, out, part.shape[0], *sizes, *strides,
           tensor=out, blocks=_elementwise_block(out))
    return out


# ----------------------------------------------------------------------------- autograd

class Conv2dFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, w, b, geom):
        ctx.save_for_backward(x, w)
        ctx.geom = geom
        return conv2d_forward(x, w, b, geom)

    @staticmethod
    @once_differentiable  # our backward is not itself differentiable: say so rather than return zeros
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        needs_dx, needs_dw, needs_db, _ = ctx.needs_input_grad
        dx = dw = db = None
        if needs_dx:
            dx = conv2d_dgrad(dy, w, x.shape, suggest_memory_format(x), ctx.geom)
        if needs_dw or needs_db:
            dw, db = conv2d_wgrad(x, dy, w, ctx.geom, needs_dw, needs_db)
        return dx, dw, db, None


# ----------------------------------------------------------------------------- public ops

def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros"):
    """``torch.nn.functional.conv2d`` on convtri's Triton kernels.

    ``padding_mode`` (keyword only) adds nn.Conv2d's reflect, replicate and circular
    padding, folded into the kernels' index arithmetic instead of a padded copy.
    """
    geom = parse_conv2d_args(input, weight, bias, stride, padding, dilation, groups, padding_mode)
    if input.dim() == 3:
        return Conv2dFunction.apply(input.unsqueeze(0), weight, bias, geom).squeeze(0)
    return Conv2dFunction.apply(input, weight, bias, geom)


def corr2d(X, K):
    """The chapter's 2-D cross-correlation of one channel: Y[i, j] = sum_{a, b} X[i+a, j+b] K[a, b]."""
    _args.check_tensor(X, "X")
    _args.check_tensor(K, "K")
    if X.dim() != 2 or K.dim() != 2:
        raise RuntimeError(f"corr2d: expected 2-D X and K, got X of size {list(X.shape)} and K of size "
                           f"{list(K.shape)}")
    return conv2d(X[None, None], K[None, None])[0, 0]
