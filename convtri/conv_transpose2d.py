"""conv_transpose2d: the gradient of conv2d with respect to its input, as a layer.

Its forward is conv2d's input-gradient kernel (with a bias), its input gradient conv2d's
forward kernel, and its weight gradient conv2d's weight-gradient kernel: no GEMM of its own.
"""
from typing import Optional

import torch

from convtri import _args
from convtri._dispatch import Plans, eager_apply, exact, is_eager, tensor_key
from convtri._launch import allows_tf32, is_channels_last, memory_format, suggest_memory_format
from convtri._library import triton_op
from convtri.conv2d import ConvFunction, ConvPlan, check_conv2d, check_size, check_tensors, register_autograd
from convtri import depthwise_launch as launches
from convtri.conv_launch import ConvGeometry

OP = "conv_transpose2d"


def channel_sum(channels):
    """The bias gradient is the sum of grad_output per channel: a weight-gradient kernel's bias
    reduction over a depthwise 1x1 convolution of grad_output (the direct kernel's, but for
    one channel)."""
    return ConvGeometry((1, 1), (0, 0, 0, 0), (1, 1), channels)


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


# ----------------------------------------------------------------------------- plans

def backward_launches(dy, x, w, geom, needs):
    """The launches of conv_transpose2d's gradients: the input's is conv2d of grad_output (cut
    to the input's size where output_padding added rows), the weight's conv2d's weight
    gradient with grad_output in the role of its input, the bias's the sum of grad_output
    per channel (conv2d_wgrad's bias reduction over a 1x1 convolution of grad_output)."""
    dx = launches.forward(dy, w, None, geom, x.shape[2:], suggest_memory_format(x)) if needs[0] else None
    dw = launches.wgrad(dy, x, w.shape, w.stride(), geom) if needs[1] else None
    channels = dy.shape[1]
    db = (launches.wgrad(dy, dy, (channels, 1, 1, 1), (1, 1, 1, 1), channel_sum(channels), False, True)
          if needs[2] else None)
    return dx, dw, db


def run_backward(launches, dy, x, w):
    """(dx, dw, db) from ``backward_launches``, None for a gradient not asked for."""
    dx, dw, db = launches
    return (dx(dy, w, None) if dx is not None else None, dw(dy, x)[0] if dw is not None else None,
            db(dy, dy)[1] if db is not None else None)


class ConvTranspose2dPlan(ConvPlan):
    """Its forward launch is conv2d's input gradient."""

    def __init__(self, input, weight, bias, stride, padding, output_padding, groups, dilation):
        check_tensors(OP, dict(input=input, weight=weight, bias=bias))
        self.arguments = [list(stride), list(padding), list(output_padding), groups, list(dilation)]  # the op's
        self.geom, output_size = transposed_geometry(input.shape, weight, bias, stride, padding, output_padding,
                                                     groups, dilation)
        self.forward = launches.dgrad(input, weight, bias, output_size,
                                      memory_format(is_channels_last(input, weight)), self.geom)
        self.backwards = {}

    def backward_launches(self, dy, x, w, needs, y=None):
        return backward_launches(dy, x, w, self.geom, needs)

    @staticmethod
    def run_backward(launches, dy, x, w, y=None):
        return run_backward(launches, dy, x, w)

    def backward_ops(self, dy, x, w, needs):
        """(dx, dw, db) through the backward op, as a tracer sees it."""
        grads = iter(torch.ops.convtri.conv_transpose2d_backward(dy, x, w, *self.arguments, *needs))
        return tuple(next(grads) if need else None for need in needs)


_PLANS, _OP_PLANS, _BACKWARD_PLANS = Plans(), Plans(), Plans()


def _op_plan(input, weight, bias, stride, padding, output_padding, groups, dilation):
    key = (tensor_key(input), tensor_key(weight), tensor_key(bias), tuple(stride), tuple(padding),
           tuple(output_padding), groups, tuple(dilation), allows_tf32())
    return _OP_PLANS.get_or_build(key, ConvTranspose2dPlan, input, weight, bias, stride, padding, output_padding,
                                  groups, dilation)


# ----------------------------------------------------------------------------- custom ops

@triton_op(OP, low_precision_autocast=True)
def _conv_transpose2d_op(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: list[int],
                         padding: list[int], output_padding: list[int], groups: int,
                         dilation: list[int]) -> torch.Tensor:
    plan = _op_plan(input, weight, bias, stride, padding, output_padding, groups, dilation)
    return plan.forward(input, weight, bias)


@triton_op(f"{OP}_backward")
def _conv_transpose2d_backward_op(grad_output: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
                                  stride: list[int], padding: list[int], output_padding: list[int], groups: int,
                                  dilation: list[int], input_grad: bool, weight_grad: bool,
                                  bias_grad: bool) -> list[torch.Tensor]:
    """[input gradient, weight gradient, bias gradient], each only if asked for."""
    needs = (input_grad, weight_grad, bias_grad)
    key = (tensor_key(grad_output), tensor_key(input), tensor_key(weight), tuple(stride), tuple(padding),
           tuple(output_padding), groups, tuple(dilation), needs, allows_tf32())
    launches = _BACKWARD_PLANS.get_or_build(key, _build_backward, grad_output, input, weight, stride, padding,
                                            output_padding, groups, dilation, needs)
    return [grad for grad in run_backward(launches, grad_output, input, weight) if grad is not None]


def _build_backward(grad_output, input, weight, stride, padding, output_padding, groups, dilation, needs):
    check_tensors(f"{OP}_backward", dict(grad_output=grad_output, input=input, weight=weight))
    geom, output_size = transposed_geometry(input.shape, weight, None, stride, padding, output_padding, groups,
                                            dilation)
    check_size(grad_output, "grad_output", output_size, f"{OP}_backward")
    return backward_launches(grad_output, input, weight, geom, needs)


# ----------------------------------------------------------------------------- autograd

class ConvTranspose2dFunction(ConvFunction):
    pass


ConvTranspose2dPlan.apply = eager_apply(ConvTranspose2dFunction)
register_autograd(_conv_transpose2d_op, ConvTranspose2dFunction, _op_plan)


# ----------------------------------------------------------------------------- public op

def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """``torch.nn.functional.conv_transpose2d`` on convtri's Triton kernels."""
    if is_eager(input, weight, bias) and input.dim() == 4:
        key = (tensor_key(input), tensor_key(weight), tensor_key(bias), exact(stride), exact(padding),
               exact(output_padding), exact(groups), exact(dilation), allows_tf32())
        plan = _PLANS.get_or_build(key, _public_plan, input, weight, bias, stride, padding, output_padding, groups,
                                   dilation)
        return plan(input, weight, bias)
    stride, padding, output_padding, dilation = _public_args(weight, bias, stride, padding, output_padding, groups,
                                                             dilation)
    if is_eager(input, weight, bias):  # unbatched (or invalid) input
        op = lambda x: conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation)
    else:  # torch must see the op
        op = lambda x: torch.ops.convtri.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups,
                                                          dilation)
    return _args.batched(OP, op, input)


def _public_args(weight, bias, stride, padding, output_padding, groups, dilation):
    """torch's argument forms checked, the pairs as pairs."""
    _args.check_tensor(weight, "weight")
    if bias is not None:
        _args.check_tensor(bias, "bias")
    if not isinstance(groups, int) or isinstance(groups, bool):
        raise TypeError(f"{OP}: groups must be an int, got {groups!r} ({type(groups).__name__})")
    return [_args.pair(value, name) for name, value in (("stride", stride), ("padding", padding),
                                                        ("output_padding", output_padding), ("dilation", dilation))]


def _public_plan(input, weight, bias, stride, padding, output_padding, groups, dilation):
    stride, padding, output_padding, dilation = _public_args(weight, bias, stride, padding, output_padding, groups,
                                                             dilation)
    return ConvTranspose2dPlan(input, weight, bias, stride, padding, output_padding, groups, dilation)
