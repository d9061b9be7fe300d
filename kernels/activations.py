"""Activations that the convolution kernels fuse: applied in a forward's epilogue, and their
derivatives in the backward kernels as they load the gradient of the activation's output.

ReLU, sigmoid and ReLU6 take their derivative from the activation's output y. SiLU and GELU
cannot (neither is monotonic), so their forward also writes z, the pre-activation, and the
backward reads it instead: one more output tensor written and kept for the backward.
Everything is computed in fp32 (fp64 for fp64) and rounded once to the tensor's dtype.
"""
import triton
import triton.language as tl

NO_ACTIVATION, RELU, SIGMOID, SILU, GELU, GELU_TANH, RELU6 = 0, 1, 2, 3, 4, 5, 6
# The activations whose backward reads the pre-activation z instead of the output y
SAVES_PREACTIVATION = (SILU, GELU, GELU_TANH)
NAMES = {"none": NO_ACTIVATION, "relu": RELU, "sigmoid": SIGMOID, "silu": SILU, "gelu": GELU, "gelu_tanh": GELU_TANH,
         "relu6": RELU6}

SQRT_HALF = tl.constexpr(0.7071067811865476)  # 1 / sqrt(2): GELU's erf(z / sqrt(2))
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)  # 1 / sqrt(2 pi): the normal density
TANH_SCALE = tl.constexpr(0.7978845608028654)  # sqrt(2 / pi): GELU's tanh approximation
TANH_CUBIC = tl.constexpr(0.044715)


@triton.jit
def _tanh(x):
    """tanh(x) = 2 sigmoid(2x) - 1, in x's dtype (libdevice's tanh is not in every triton)."""
    return 2. * tl.sigmoid(2. * x) - 1.


@triton.jit
def _gelu_tanh_inner(z):
    return (z + z * z * z * TANH_CUBIC) * TANH_SCALE  # tensors first: the interpreter's constexpr * tensor fails


@triton.jit
def activate(acc, ACTIVATION: tl.constexpr):
    """The activation applied to a forward's accumulator (fp32 or fp64)."""
    if ACTIVATION == 1:
        acc = tl.maximum(acc, 0.)
    elif ACTIVATION == 2:
        acc = tl.sigmoid(acc)
    elif ACTIVATION == 3:
        acc = acc * tl.sigmoid(acc)
    elif ACTIVATION == 4:
        acc = 0.5 * acc * (1. + tl.erf(acc * SQRT_HALF))
    elif ACTIVATION == 5:
        acc = 0.5 * acc * (1. + _tanh(_gelu_tanh_inner(acc)))
    elif ACTIVATION == 6:
        acc = tl.minimum(tl.maximum(acc, 0.), 6.)
    return acc


@triton.jit
def through_activation(dy, saved, ACTIVATION: tl.constexpr):
    """The gradient before the activation from dy, the gradient after it, and ``saved``: its
    output y (ReLU, sigmoid, ReLU6) or its input z (SAVES_PREACTIVATION). torch's derivatives:
    relu' = (y > 0), sigmoid' = y (1 - y), relu6' = (0 < y < 6), silu' = s (1 + z (1 - s)) with
    s = sigmoid(z), gelu' = Phi(z) + z phi(z), and the tanh form's derivative. Computed in fp32
    (fp64 for fp64); dy's dtype out."""
    if ACTIVATION == 1:
        dy = tl.where(saved > 0, dy, 0.)
    elif ACTIVATION == 6:
        dy = tl.where((saved > 0) & (saved < 6), dy, 0.)
    elif ACTIVATION != 0:
        GRAD_TYPE: tl.constexpr = tl.float64 if dy.dtype == tl.float64 else tl.float32
        v = saved.to(GRAD_TYPE)
        if ACTIVATION == 2:
            slope = v * (1. - v)
        elif ACTIVATION == 3:
            s = tl.sigmoid(v)
            slope = s * (1. + v * (1. - s))
        elif ACTIVATION == 4:
            slope = 0.5 * (1. + tl.erf(v * SQRT_HALF)) + v * INV_SQRT_2PI * tl.exp(-0.5 * v * v)
        else:
            t = _tanh(_gelu_tanh_inner(v))
            slope = 0.5 * (1. + t) + 0.5 * v * (1. - t * t) * TANH_SCALE * (1. + v * v * (3. * TANH_CUBIC))
        dy = (dy.to(GRAD_TYPE) * slope).to(dy.dtype)
    return dy
