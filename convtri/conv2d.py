"""conv2d: argument handling, plans per call signature (convtri/_dispatch.py) on our kernels'
launches (convtri/conv_launch.py), the custom ops torch.ops.convtri.conv2d / conv2d_dgrad /
conv2d_wgrad, and the autograd Function."""
from typing import Optional

import torch

from convtri import _args
from convtri._dispatch import (Plans, eager_apply, exact, is_eager, other_backward, plain_backward, records_grad,
                               tensor_key)
from convtri._launch import (FLOAT_DTYPES, MAX_INT32, MAX_PIXELS, allows_tf32, check_device, is_channels_last,
                             memory_format, memory_span)
from convtri._library import triton_op
from convtri import depthwise_launch as launches
from convtri.conv_launch import MAX_GRID_YZ, PAD_MODES, ConvGeometry
from convtri.kernels import conv2d as kernels
from convtri.kernels import activations


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


OP_ACTIVATIONS = activations.NAMES  # the ops' names: "none", "relu", ...
ACTIVATIONS = {None: activations.NO_ACTIVATION, **{name: code for name, code in OP_ACTIVATIONS.items() if name != "none"}}
OP_ACTIVATION_NAMES = {code: name for name, code in OP_ACTIVATIONS.items()}


def activation_code(activation, names=ACTIVATIONS):
    """The kernels' code of an activation fused into conv2d: None or one of ACTIVATIONS' names."""
    if activation is not None and not isinstance(activation, str):
        raise TypeError(f"conv2d: activation must be None or a string, one of {list(names)}, got {activation!r} "
                        f"({type(activation).__name__})")
    if activation not in names:
        raise ValueError(f"conv2d: activation must be one of {list(names)}, got {activation!r}")
    return names[activation]


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


# ----------------------------------------------------------------------------- plans

class ConvPlan:
    """A checked convolution call signature (conv2d's, conv_transpose2d's): its ``forward``
    launch, and its backward launches per gradient layout and set of gradients asked for,
    built on first use. ``apply`` is its autograd Function's eager apply."""
    apply = None

    activation = activations.NO_ACTIVATION  # a fused activation, whose output or input the backward needs

    def forward_saving(self, input, weight, bias):
        """(the output, what the backward of a fused activation reads; None without one)."""
        return self.forward(input, weight, bias), None

    def __call__(self, input, weight, bias):
        """The eager call: through the autograd Function when autograd records it."""
        if records_grad(input, weight, bias):
            return self.apply(input, weight, bias, self)
        return self.forward(input, weight, bias)

    def backward(self, dy, x, w, needs, y=None):
        """(dx, dw, db) for ``needs`` = which of them are asked for (None for the others);
        ``y``: with a fused activation, what ``forward_saving`` saved for it."""
        key = (dy.stride(), needs)  # dy has y's dtype (autograd casts it)
        try:
            launches = self.backwards[key]
        except KeyError:
            launches = self.backwards[key] = self.backward_launches(dy, x, w, needs, y)
        return self.run_backward(launches, dy, x, w, y)


class Conv2dPlan(ConvPlan):

    def __init__(self, input, weight, bias, geom, activation=activations.NO_ACTIVATION):
        check_conv2d(input.shape, weight.shape, bias, geom)
        self.geom, self.activation = geom, activation
        self.forward = launches.forward(input, weight, bias, geom, activation=activation)
        self.backwards = {}

    def forward_saving(self, input, weight, bias):
        return self.forward.saving(input, weight, bias)

    def backward_launches(self, dy, x, w, needs, y):
        geom, act = self.geom, self.activation
        operands = launches.grad_operands(dy, y, w.shape, geom, needs)  # dy, y copied to channels_last once for both
        dy, y = operands.spec
        dgrad = launches.dgrad(dy, w, None, x.shape, memory_format(is_channels_last(x)), geom, y, act) if needs[0] \
            else None
        wgrad = (launches.wgrad(x, dy, w.shape, w.stride(), geom, needs[1], needs[2], y, act)
                 if needs[1] or needs[2] else None)
        return operands, dgrad, wgrad

    @staticmethod
    def run_backward(launches, dy, x, w, y):
        operands, dgrad, wgrad = launches
        dy, y = operands(dy, y)
        dx = dgrad(dy, w, None, y) if dgrad is not None else None
        dw, db = wgrad(x, dy, y) if wgrad is not None else (None, None)
        return dx, dw, db

    def backward_ops(self, dy, x, w, needs, y=None):
        """(dx, dw, db) through the backward ops, as a tracer sees them."""
        args = self.geom.op_args()
        act = OP_ACTIVATION_NAMES[self.activation]
        dx = dw = db = None
        if needs[0]:
            dx = torch.ops.convtri.conv2d_dgrad(dy, w, x.shape, is_channels_last(x), *args, y, act)
        if needs[1] or needs[2]:
            grads = iter(torch.ops.convtri.conv2d_wgrad(x, dy, w, *args, needs[1], needs[2], y, act))
            dw = next(grads) if needs[1] else None
            db = next(grads) if needs[2] else None
        return dx, dw, db


def _public_plan(input, weight, bias, stride, padding, dilation, groups, padding_mode, activation):
    """The plan of a public call on 4-D input, its arguments in torch's forms: checked as the custom op's."""
    geom = conv2d_geometry(weight, stride, padding, dilation, groups, padding_mode)
    activation = activation_code(activation)
    check_tensors("conv2d", dict(input=input, weight=weight, bias=bias))
    return Conv2dPlan(input, weight, bias, geom, activation)


def _op_plan(input, weight, bias, stride, padding, dilation, groups, padding_mode, activation="none"):
    key = (tensor_key(input), tensor_key(weight), tensor_key(bias), tuple(stride), tuple(padding), tuple(dilation),
           groups, padding_mode, activation, allows_tf32())
    return _OP_PLANS.get_or_build(key, _build_op_plan, input, weight, bias, stride, padding, dilation, groups,
                                  padding_mode, activation)


def _build_op_plan(input, weight, bias, stride, padding, dilation, groups, padding_mode, activation):
    check_tensors("conv2d", dict(input=input, weight=weight, bias=bias))
    return Conv2dPlan(input, weight, bias, geometry_from_op_args(stride, padding, dilation, groups, padding_mode),
                      activation_code(activation, OP_ACTIVATIONS))


_PLANS, _OP_PLANS, _DGRAD_PLANS, _WGRAD_PLANS = Plans(), Plans(), Plans(), Plans()


# ----------------------------------------------------------------------------- custom ops

@triton_op("conv2d", low_precision_autocast=True)
def _conv2d_op(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: list[int],
               padding: list[int], dilation: list[int], groups: int, padding_mode: str,
               activation: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """conv2d on 4-D input; ``padding`` is (top, bottom, left, right); ``activation`` one of
    OP_ACTIVATIONS, fused. Returns the output and, for an activation whose backward reads its
    input (SiLU, GELU), that pre-activation, else an empty tensor."""
    plan = _op_plan(input, weight, bias, stride, padding, dilation, groups, padding_mode, activation)
    y, saved = plan.forward_saving(input, weight, bias)
    return y, saved if plan.activation in activations.SAVES_PREACTIVATION else y.new_empty(0)


def _activation_output(output, activation, op):
    """The gradient ops' check that a fused activation comes with what its derivative reads."""
    code = activation_code(activation, OP_ACTIVATIONS)
    if (code != activations.NO_ACTIVATION) != (output is not None):
        raise RuntimeError(f"{op}: expected the forward's output (for silu and gelu its pre-activation) exactly "
                           f"with an activation, got activation={activation!r} and "
                           f"{'an' if output is not None else 'no'} output")
    return code


@triton_op("conv2d_dgrad")
def _conv2d_dgrad_op(grad_output: torch.Tensor, weight: torch.Tensor, input_size: list[int],
                     input_channels_last: bool, stride: list[int], padding: list[int], dilation: list[int],
                     groups: int, padding_mode: str, output: Optional[torch.Tensor] = None,
                     activation: str = "none") -> torch.Tensor:
    """The input gradient of conv2d, in channels_last if ``input_channels_last``; with an
    ``activation``, ``grad_output`` is the gradient of its output, and ``output`` that output
    (for SiLU and GELU their pre-activation, the forward op's second output)."""
    key = (tensor_key(grad_output), tensor_key(weight), tuple(input_size), input_channels_last, tuple(stride),
           tuple(padding), tuple(dilation), groups, padding_mode, tensor_key(output), activation, allows_tf32())
    dgrad = _DGRAD_PLANS.get_or_build(key, _build_dgrad, grad_output, weight, input_size, input_channels_last,
                                      stride, padding, dilation, groups, padding_mode, output, activation)
    return dgrad(grad_output, weight, None, output)


def _build_dgrad(grad_output, weight, input_size, input_channels_last, stride, padding, dilation, groups,
                 padding_mode, output, activation):
    check_tensors("conv2d_dgrad", dict(grad_output=grad_output, weight=weight, output=output))
    geom = geometry_from_op_args(stride, padding, dilation, groups, padding_mode)
    output_size = check_conv2d(input_size, weight.shape, None, geom)
    check_size(grad_output, "grad_output", output_size, "conv2d_dgrad")
    if output is not None:
        check_size(output, "output", output_size, "conv2d_dgrad")
    code = _activation_output(output, activation, "conv2d_dgrad")
    return launches.dgrad(grad_output, weight, None, tuple(input_size), memory_format(input_channels_last), geom,
                          output, code)


@triton_op("conv2d_wgrad")
def _conv2d_wgrad_op(input: torch.Tensor, grad_output: torch.Tensor, weight: torch.Tensor, stride: list[int],
                     padding: list[int], dilation: list[int], groups: int, padding_mode: str, weight_grad: bool,
                     bias_grad: bool, output: Optional[torch.Tensor] = None,
                     activation: str = "none") -> list[torch.Tensor]:
    """[weight gradient (laid out as ``weight``), bias gradient], each only if asked for; with
    an ``activation``, ``grad_output`` and ``output`` as conv2d_dgrad's."""
    key = (tensor_key(input), tensor_key(grad_output), tensor_key(weight), tuple(stride), tuple(padding),
           tuple(dilation), groups, padding_mode, weight_grad, bias_grad, tensor_key(output), activation, allows_tf32())
    wgrad = _WGRAD_PLANS.get_or_build(key, _build_wgrad, input, grad_output, weight, stride, padding, dilation,
                                      groups, padding_mode, weight_grad, bias_grad, output, activation)
    return [t for t in wgrad(input, grad_output, output) if t is not None]


def _build_wgrad(input, grad_output, weight, stride, padding, dilation, groups, padding_mode, weight_grad, bias_grad,
                 output, activation):
    check_tensors("conv2d_wgrad", dict(input=input, grad_output=grad_output, weight=weight, output=output))
    geom = geometry_from_op_args(stride, padding, dilation, groups, padding_mode)
    output_size = check_conv2d(input.shape, weight.shape, None, geom)
    check_size(grad_output, "grad_output", output_size, "conv2d_wgrad")
    if output is not None:
        check_size(output, "output", output_size, "conv2d_wgrad")
    code = _activation_output(output, activation, "conv2d_wgrad")
    return launches.wgrad(input, grad_output, weight.shape, weight.stride(), geom, weight_grad, bias_grad, output,
                          code)


# ----------------------------------------------------------------------------- autograd

class ConvFunction(torch.autograd.Function):
    """A convolution's autograd (conv2d's, conv_transpose2d's) on its plan: forward the plan's
    forward launch, backward its gradient launches for the gradients asked for. Eager calls
    apply it; its backward is also the autograd formula registered for the op, so both
    routes run it."""

    @staticmethod
    def forward(ctx, input, weight, bias, plan):
        y, saved = plan.forward_saving(input, weight, bias)
        save(ctx, plan, input, weight, saved)
        return y

    @staticmethod
    def backward(ctx, dy):
        if plain_backward(dy):
            x, w, *y = ctx.saved_tensors  # y: with a fused activation, what its derivative reads
            return *ctx.plan.backward(dy, x, w, ctx.needs_input_grad[:3], *y), None
        return *_other_backward(ctx, dy), None


def save(ctx, plan, input, weight, saved):
    """What a convolution's backward needs: its plan, input and weight, and with a fused
    activation what its derivative reads (``ConvPlan.forward_saving``)."""
    ctx.plan = plan
    if saved is None:
        ctx.save_for_backward(input, weight)
    else:
        ctx.save_for_backward(input, weight, saved)


@other_backward
def _other_backward(ctx, dy):
    """Through the plan's launches if the call is eager all the same (autograd records the
    backward), else through the backward ops, which the tracer (compiled autograd, a
    dispatch mode) sees."""
    x, w, *y = ctx.saved_tensors
    needs = ctx.needs_input_grad[:3]
    if is_eager(dy):
        return ctx.plan.backward(dy, x, w, needs, *y)
    return ctx.plan.backward_ops(dy, x, w, needs, *y)


def register_autograd(op, function, op_plan, saved_of=lambda plan, output: None):
    """``function``'s backward as the autograd formula of ``op`` (input, weight, bias, then its
    other arguments), whose ``op_plan`` gives the plan of the op's arguments and ``saved_of``
    what its backward reads of its output, beyond input and weight."""
    def setup_context(ctx, inputs, output):
        input, weight, bias, *arguments = inputs
        plan = op_plan(input, weight, bias, *arguments)
        save(ctx, plan, input, weight, saved_of(plan, output))
    op.register_autograd(
        lambda ctx, dy, *_: (*function.backward(ctx, dy)[:3], *[None] * (len(ctx.needs_input_grad) - 3)),
        setup_context=setup_context)


def _saved_of_conv2d(plan, output):
    """What conv2d's op output holds for its backward: (y, z for SiLU and GELU, else empty)."""
    if plan.activation == activations.NO_ACTIVATION:
        return None
    return output[1] if plan.activation in activations.SAVES_PREACTIVATION else output[0]


class Conv2dFunction(ConvFunction):
    pass


Conv2dPlan.apply = eager_apply(Conv2dFunction)
register_autograd(_conv2d_op, Conv2dFunction, _op_plan, _saved_of_conv2d)


# ----------------------------------------------------------------------------- public ops

def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros",
           activation=None):
    """``torch.nn.functional.conv2d`` on convtri's Triton kernels.

    ``padding_mode`` (keyword only) adds nn.Conv2d's reflect, replicate and circular
    padding, folded into the kernels' index arithmetic instead of a padded copy.
    ``activation`` (keyword only): ``"relu"``, ``"sigmoid"``, ``"silu"``, ``"gelu"`` (exact, with
    erf: torch's default), ``"gelu_tanh"`` (``approximate="tanh"``) or ``"relu6"``, applied in
    the kernel's epilogue, and its derivative in the backward kernels as they read the
    gradient: one pass each way instead of a convolution and an activation. ReLU, sigmoid and
    ReLU6 take their derivative from the output; SiLU and GELU from the pre-activation, which
    the forward then also writes and autograd keeps: one more tensor the size of the output
    written and held until the backward (as torch's unfused conv + activation holds it).
    Groups with one channel on a side (depthwise, any multiplier, and its transpose) run on
    direct kernels (kernels/depthwise.py), the others on implicit GEMMs (kernels/conv2d.py).
    """
    if is_eager(input, weight, bias) and input.dim() == 4:
        key = (tensor_key(input), tensor_key(weight), tensor_key(bias), exact(stride), exact(padding), exact(dilation),
               exact(groups), exact(padding_mode), exact(activation), allows_tf32())
        plan = _PLANS.get_or_build(key, _public_plan, input, weight, bias, stride, padding, dilation, groups,
                                   padding_mode, activation)
        return plan(input, weight, bias)
    _args.check_tensor(weight, "weight")
    if bias is not None:
        _args.check_tensor(bias, "bias")
    geom = conv2d_geometry(weight, stride, padding, dilation, groups, padding_mode)
    code = activation_code(activation)
    if is_eager(input, weight, bias):  # unbatched (or invalid) input
        op = lambda x: conv2d(x, weight, bias, stride, padding, dilation, groups, padding_mode=padding_mode,
                              activation=activation)
    else:  # torch must see the op
        name = OP_ACTIVATION_NAMES[code]
        op = lambda x: torch.ops.convtri.conv2d(x, weight, bias, *geom.op_args(), name)[0]
    return _args.batched("conv2d", op, input)


def corr2d(X, K):
    """The chapter's 2-D cross-correlation of one channel: Y[i, j] = sum_{a, b} X[i+a, j+b] K[a, b]."""
    _args.check_tensor(X, "X")
    _args.check_tensor(K, "K")
    if X.dim() != 2 or K.dim() != 2:
        raise RuntimeError(f"corr2d: expected 2-D X and K, got X of size {list(X.shape)} and K of size "
                           f"{list(K.shape)}")
    return conv2d(X[None, None], K[None, None])[0, 0]
