"""conv2d: argument handling, the custom ops torch.ops.convtri.conv2d / conv2d_dgrad /
conv2d_wgrad on our kernels (convtri/conv_launch.py), and the autograd Function."""
from typing import Optional

import torch
from torch.autograd.function import once_differentiable

from convtri import _args
from convtri._launch import (FLOAT_DTYPES, MAX_INT32, MAX_PIXELS, check_device, is_channels_last, memory_format,
                             memory_span)
from convtri._library import triton_op
from convtri.conv_launch import (MAX_GRID_YZ, PAD_MODES, ConvGeometry, conv2d_dgrad, conv2d_forward,
                                 conv2d_wgrad)
from convtri.kernels import conv2d as kernels


# ----------------------------------------------------------------------------- arguments

def conv2d_geometry(weight, stride, padding, dilation, groups, padding_mode="zeros"):
    """torch's argument forms (ints, pairs, 'same', 'valid') as a ConvGeometry; the values are
    checked with the tensors, by ``check_conv2d``."""
    stride = _args.pair(stride, "stride")
    dilation = _args.pair(dilation, "dilation")
    if not isinstance(groups, int) or isinstance(groups, bool):
        raise TypeError(f"conv2d: groups must be an int, got {groups!r} ({type(groups).__name__})")
    if not isinstance(padding_mode, str):
        raise TypeError(f"conv2d: padding_mode must be a string, got {padding_mode!r} ({type(padding_mode).__name__})")
    _args.check_dim("conv2d", "weight", weight, 4)  # 'same' padding needs its kernel size
    return ConvGeometry(stride, _parse_padding(padding, stride, dilation, weight.shape[-2:]), dilation, groups,
                        padding_mode)


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
    return (ph, ph, pw, pw)


def geometry_from_op_args(stride, padding, dilation, groups, padding_mode):
    """The ConvGeometry that an op's arguments describe (lengths checked)."""
    for name, value, length in (("stride", stride, 2), ("padding", padding, 4), ("dilation", dilation, 2)):
        if len(value) != length:
            raise RuntimeError(f"conv2d: expected {length} values for {name}, got {name}={list(value)}")
    return ConvGeometry(tuple(stride), tuple(padding), tuple(dilation), groups, padding_mode)


def check_tensors(op, tensors: dict):
    """The named tensors (None skipped): 4-D, a bias 1-D; floating-point, of one dtype and
    device; a weight or bias spanning less than 2^31 elements, which the kernels index in int32."""
    tensors = {name: t for name, t in tensors.items() if t is not None}
    for name, t in tensors.items():
        _args.check_dim(op, name, t, 1 if name == "bias" else 4)
        if name in ("weight", "bias") and memory_span(t) > MAX_INT32:
            raise RuntimeError(f"{op}: {name} of size {list(t.shape)} and strides {list(t.stride())} spans "
                               f"{memory_span(t)} elements in memory; at most {MAX_INT32} are supported")
    first = next(iter(tensors))
    _args.check_float_dtype(tensors[first], first, FLOAT_DTYPES)
    _args.check_same_dtype_and_device(tensors)
    check_device(tensors[first])


def check_conv2d(input_size, weight_size, bias, geom, op="conv2d"):
    """The geometry and the sizes of conv2d's input, weight and bias, checked as torch does.
    Returns the output size (N, K, P, Q)."""
    stride, padding, dilation, groups = geom.stride, geom.padding, geom.dilation, geom.groups
    if min(stride) <= 0:
        raise RuntimeError(f"{op}: stride must be positive, got stride={stride}")
    if min(dilation) <= 0:
        raise RuntimeError(f"{op}: dilation must be positive, got dilation={dilation}")
    if min(padding) < 0:
        raise RuntimeError(f"{op}: padding must be non-negative, got padding={padding}")
    if groups <= 0:
        raise RuntimeError(f"{op}: groups must be positive, got groups={groups}")
    if geom.padding_mode not in PAD_MODES:
        raise ValueError(f"{op}: padding_mode must be one of {sorted(PAD_MODES)}, got {geom.padding_mode!r}")
    n, c, h, w = input_size
    k, c_per_group, r, s = weight_size
    if k == 0:
        raise RuntimeError(f"{op}: expected weight to have at least one filter (dimension 0), got weight of size "
                           f"{list(weight_size)}")
    if k % groups != 0:
        raise RuntimeError(f"{op}: groups={groups} must divide the weight's output channels, got weight of "
                           f"size {list(weight_size)}")
    if c != c_per_group * groups:
        raise RuntimeError(f"{op}: given groups={groups} and weight of size {list(weight_size)}, expected "
                           f"input to have {c_per_group * groups} channels, got {c} channels")
    if groups > MAX_GRID_YZ or stride[0] * stride[1] > MAX_GRID_YZ:
        raise RuntimeError(f"{op}: groups={groups} and stride={stride} (its product) must not exceed "
                           f"{MAX_GRID_YZ}, a grid axis of our kernels")
    if bias is not None and tuple(bias.shape) != (k,):
        raise RuntimeError(f"{op}: expected bias to be 1-D with {k} elements, got bias of size {list(bias.shape)}")
    top, bottom, left, right = padding
    if h + top + bottom < dilation[0] * (r - 1) + 1 or w + left + right < dilation[1] * (s - 1) + 1:
        raise RuntimeError(f"{op}: the (dilated) kernel of size ({dilation[0] * (r - 1) + 1} x "
                           f"{dilation[1] * (s - 1) + 1}) is larger than the padded input "
                           f"({h + top + bottom} x {w + left + right})")
    if geom.pad_mode == kernels.PAD_REFLECT and (max(top, bottom) >= h or max(left, right) >= w):
        raise RuntimeError(f"{op}: reflect padding {padding} must be smaller than the input size ({h} x {w})")
    if geom.pad_mode == kernels.PAD_CIRCULAR and (max(top, bottom) > h or max(left, right) > w):
        raise RuntimeError(f"{op}: circular padding {padding} must not exceed the input size ({h} x {w})")
    p, q = geom.output_size(h, w, r, s)
    rows = max(n * p * q, n * -(-h // stride[0]) * -(-w // stride[1]))  # forward and wgrad; dgrad per phase
    if rows > MAX_PIXELS:
        raise RuntimeError(f"{op}: input of size {list(input_size)} gives {rows} pixels in a GEMM's rows (N*P*Q or "
                           f"N*H*W/stride); at most {MAX_PIXELS} are supported")
    return (n, k, p, q)


def check_size(t, name, expected, op):
    if tuple(t.shape) != tuple(expected):
        raise RuntimeError(f"{op}: expected {name} of size {list(expected)}, got {list(t.shape)}")


# ----------------------------------------------------------------------------- custom ops

@triton_op("conv2d", low_precision_autocast=True)
def _conv2d_op(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: list[int],
               padding: list[int], dilation: list[int], groups: int, padding_mode: str) -> torch.Tensor:
    """conv2d on 4-D input; ``padding`` is (top, bottom, left, right)."""
    check_tensors("conv2d", dict(input=input, weight=weight, bias=bias))
    geom = geometry_from_op_args(stride, padding, dilation, groups, padding_mode)
    check_conv2d(input.shape, weight.shape, bias, geom)
    return conv2d_forward(input, weight, bias, geom)


@triton_op("conv2d_dgrad")
def _conv2d_dgrad_op(grad_output: torch.Tensor, weight: torch.Tensor, input_size: list[int],
                     input_channels_last: bool, stride: list[int], padding: list[int], dilation: list[int],
                     groups: int, padding_mode: str) -> torch.Tensor:
    """The input gradient of conv2d, in channels_last if ``input_channels_last``."""
    check_tensors("conv2d_dgrad", dict(grad_output=grad_output, weight=weight))
    geom = geometry_from_op_args(stride, padding, dilation, groups, padding_mode)
    check_size(grad_output, "grad_output", check_conv2d(input_size, weight.shape, None, geom), "conv2d_dgrad")
    return conv2d_dgrad(grad_output, weight, tuple(input_size), memory_format(input_channels_last), geom)


@triton_op("conv2d_wgrad")
def _conv2d_wgrad_op(input: torch.Tensor, grad_output: torch.Tensor, weight: torch.Tensor, stride: list[int],
                     padding: list[int], dilation: list[int], groups: int, padding_mode: str, weight_grad: bool,
                     bias_grad: bool) -> list[torch.Tensor]:
    """[weight gradient (laid out as ``weight``), bias gradient], each only if asked for."""
    check_tensors("conv2d_wgrad", dict(input=input, grad_output=grad_output, weight=weight))
    geom = geometry_from_op_args(stride, padding, dilation, groups, padding_mode)
    check_size(grad_output, "grad_output", check_conv2d(input.shape, weight.shape, None, geom), "conv2d_wgrad")
    dw = torch.empty_like(weight) if weight_grad else None
    db = torch.empty(weight.shape[0], dtype=input.dtype, device=input.device) if bias_grad else None
    return [t for t in conv2d_wgrad(input, grad_output, geom, dw, db) if t is not None]


# ----------------------------------------------------------------------------- autograd

class ConvFunction(torch.autograd.Function):
    """What a convolution's backward needs (conv2d's and conv_transpose2d's): its input and
    weight, and the op's geometry arguments, which follow (input, weight, bias)."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, _, *geometry = inputs
        ctx.save_for_backward(input, weight)
        ctx.geometry = geometry


class Conv2dFunction(ConvFunction):
    """conv2d's autograd: forward torch.ops.convtri.conv2d, backward conv2d_dgrad and
    conv2d_wgrad, computing only the gradients asked for. It is also that op's registered
    autograd formula, so both paths are this one."""

    @staticmethod
    def forward(input, weight, bias, stride, padding, dilation, groups, padding_mode):
        return torch.ops.convtri.conv2d(input, weight, bias, stride, padding, dilation, groups, padding_mode)

    @staticmethod
    @once_differentiable  # our backward is not itself differentiable: say so rather than return zeros
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        needs_dx, needs_dw, needs_db = ctx.needs_input_grad[:3]
        dx = dw = db = None
        if needs_dx:
            dx = torch.ops.convtri.conv2d_dgrad(dy, w, x.shape, is_channels_last(x), *ctx.geometry)
        if needs_dw or needs_db:
            grads = iter(torch.ops.convtri.conv2d_wgrad(x, dy, w, *ctx.geometry, needs_dw, needs_db))
            dw = next(grads) if needs_dw else None
            db = next(grads) if needs_db else None
        return dx, dw, db, None, None, None, None, None


_conv2d_op.register_autograd(Conv2dFunction.backward, setup_context=Conv2dFunction.setup_context)


# ----------------------------------------------------------------------------- public ops

def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros"):
    """``torch.nn.functional.conv2d`` on convtri's Triton kernels.

    ``padding_mode`` (keyword only) adds nn.Conv2d's reflect, replicate and circular
    padding, folded into the kernels' index arithmetic instead of a padded copy.
    """
    _args.check_tensor(weight, "weight")
    if bias is not None:
        _args.check_tensor(bias, "bias")
    geom = conv2d_geometry(weight, stride, padding, dilation, groups, padding_mode)
    return _args.batched("conv2d", lambda x: torch.ops.convtri.conv2d(x, weight, bias, *geom.op_args()), input)


def corr2d(X, K):
    """The chapter's 2-D cross-correlation of one channel: Y[i, j] = sum_{a, b} X[i+a, j+b] K[a, b]."""
    _args.check_tensor(X, "X")
    _args.check_tensor(K, "K")
    if X.dim() != 2 or K.dim() != 2:
        raise RuntimeError(f"corr2d: expected 2-D X and K, got X of size {list(X.shape)} and K of size "
                           f"{list(K.shape)}")
    return conv2d(X[None, None], K[None, None])[0, 0]
