"""conv_transpose2d: the gradient of conv2d with respect to its input, as a layer.

Its forward is conv2d's input-gradient kernel (with a bias), its input gradient conv2d's
forward kernel, and its weight gradient conv2d's weight-gradient kernel: no GEMM of its own.
"""
from typing import Optional

import torch
from torch.autograd.function import once_differentiable

from convtri import _args
from convtri._launch import is_channels_last, memory_format, suggest_memory_format
from convtri._library import triton_op
from convtri.conv2d import ConvFunction, check_conv2d, check_size, check_tensors
from convtri.conv_launch import ConvGeometry, conv2d_dgrad, conv2d_forward, conv2d_wgrad

OP = "conv_transpose2d"
# The bias gradient is the sum of grad_output per channel: conv2d_wgrad's bias reduction over
# a 1x1 convolution of grad_output.
CHANNEL_SUM = ConvGeometry((1, 1), (0, 0, 0, 0), (1, 1), 1)


def transposed_geometry(input_size, weight, bias, stride, padding, output_padding, groups, dilation):
    """Check conv_transpose2d's arguments (pairs and ints) as torch does. Returns the
    ConvGeometry of the convolution it transposes and the output size (N, C_out, H_out, W_out)."""
    for name, value in (("stride", stride), ("padding", padding), ("output_padding", output_padding),
                        ("dilation", dilation)):
        if len(value) != 2:
            raise RuntimeError(f"{OP}: expected 2 values for {name}, got {name}={list(value)}")
    if min(output_padding) < 0:
        raise RuntimeError(f"{OP}: output_padding must be non-negative, got output_padding={tuple(output_padding)}")
    if any(op >= max(s, d) for op, s, d in zip(output_padding, stride, dilation)):
        raise RuntimeError(f"{OP}: output_padding must be smaller than either stride or dilation, got "
                           f"output_padding={tuple(output_padding)}, stride={tuple(stride)}, "
                           f"dilation={tuple(dilation)}")
    geom = ConvGeometry(tuple(stride), (padding[0], padding[0], padding[1], padding[1]), tuple(dilation), groups)
    n, c_in, h, w = input_size
    k, c_out_per_group, r, s = weight.shape
    if groups <= 0 or k % groups:
        raise RuntimeError(f"{OP}: groups must be positive and divide the weight's input channels, got groups="
                           f"{groups} and weight of size {list(weight.shape)}")
    if c_out_per_group == 0:
        raise RuntimeError(f"{OP}: expected weight to have at least one output channel (dimension 1), got weight "
                           f"of size {list(weight.shape)}")
    if c_in != k:
        raise RuntimeError(f"{OP}: weight of size {list(weight.shape)} expects input with {k} channels, got input "
                           f"of size {list(input_size)}")
    out_hw = [(i - 1) * st - 2 * p + d * (kk - 1) + o + 1
              for i, st, p, d, kk, o in zip((h, w), stride, padding, dilation, (r, s), output_padding)]
    if min(out_hw) <= 0 and min(h, w) > 0:
        raise RuntimeError(f"{OP}: input of size {list(input_size)} gives a non-positive output size {out_hw}")
    output_size = (n, c_out_per_group * groups, *out_hw)
    # the convolution it transposes: input output_size, output input_size
    check_conv2d(output_size, weight.shape, None, geom, OP)
    if bias is not None and tuple(bias.shape) != (output_size[1],):
        raise RuntimeError(f"{OP}: expected bias to be 1-D with {output_size[1]} elements, got bias of size "
                           f"{list(bias.shape)}")
    return geom, output_size


# ----------------------------------------------------------------------------- custom ops

@triton_op(OP, low_precision_autocast=True)
def _conv_transpose2d_op(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: list[int],
                         padding: list[int], output_padding: list[int], groups: int,
                         dilation: list[int]) -> torch.Tensor:
    check_tensors(OP, dict(input=input, weight=weight, bias=bias))
    geom, output_size = transposed_geometry(input.shape, weight, bias, stride, padding, output_padding, groups,
                                            dilation)
    return conv2d_dgrad(input, weight, output_size, memory_format(is_channels_last(input, weight)), geom, bias)


@triton_op(f"{OP}_backward")
def _conv_transpose2d_backward_op(grad_output: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
                                  stride: list[int], padding: list[int], output_padding: list[int], groups: int,
                                  dilation: list[int], input_grad: bool, weight_grad: bool,
                                  bias_grad: bool) -> list[torch.Tensor]:
    """[input gradient, weight gradient, bias gradient], each only if asked for."""
    check_tensors(f"{OP}_backward", dict(grad_output=grad_output, input=input, weight=weight))
    geom, output_size = transposed_geometry(input.shape, weight, None, stride, padding, output_padding, groups,
                                            dilation)
    check_size(grad_output, "grad_output", output_size, f"{OP}_backward")
    grads = []
    if input_grad:  # conv2d of grad_output, cut to the input's size where output_padding added rows
        grads.append(conv2d_forward(grad_output, weight, None, geom, input.shape[2:], suggest_memory_format(input)))
    if weight_grad:  # conv2d's weight gradient, grad_output in the role of its input
        grads.append(conv2d_wgrad(grad_output, input, geom, dw=torch.empty_like(weight))[0])
    if bias_grad:
        db = torch.empty(output_size[1], dtype=grad_output.dtype, device=grad_output.device)
        grads.append(conv2d_wgrad(grad_output, grad_output, CHANNEL_SUM, db=db)[1])
    return grads


# ----------------------------------------------------------------------------- autograd

class ConvTranspose2dFunction(ConvFunction):
    """conv_transpose2d's autograd: forward torch.ops.convtri.conv_transpose2d, backward
    conv_transpose2d_backward for the gradients asked for; also that op's registered autograd."""

    @staticmethod
    def forward(input, weight, bias, stride, padding, output_padding, groups, dilation):
        return torch.ops.convtri.conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups,
                                                  dilation)

    @staticmethod
    @once_differentiable  # our backward is not itself differentiable: say so rather than return zeros
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        grads = iter(torch.ops.convtri.conv_transpose2d_backward(dy, x, w, *ctx.geometry, *needs))
        return *[next(grads) if need else None for need in needs], None, None, None, None, None


_conv_transpose2d_op.register_autograd(ConvTranspose2dFunction.backward,
                                       setup_context=ConvTranspose2dFunction.setup_context)


# ----------------------------------------------------------------------------- public op

def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """``torch.nn.functional.conv_transpose2d`` on convtri's Triton kernels."""
    _args.check_tensor(weight, "weight")
    if bias is not None:
        _args.check_tensor(bias, "bias")
    if not isinstance(groups, int) or isinstance(groups, bool):
        raise TypeError(f"{OP}: groups must be an int, got {groups!r} ({type(groups).__name__})")
    pairs = [_args.pair(value, name) for name, value in (("stride", stride), ("padding", padding),
                                                         ("output_padding", output_padding), ("dilation", dilation))]
    stride, padding, output_padding, dilation = pairs
    return _args.batched(OP, lambda x: torch.ops.convtri.conv_transpose2d(x, weight, bias, stride, padding,
                                                                         output_padding, groups, dilation), input)
