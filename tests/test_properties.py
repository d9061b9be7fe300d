"""Property-based parity with torch (hypothesis): random configurations of every op, forward
and gradients in float64 on CPU through the interpreter, against torch in float64.

Invalid configurations are not filtered out: torch decides, and ours must raise the same
kind of error. Profiles (tests/conftest.py): "ci" by default, a fixed budget of examples and a
deadline; ``pytest tests/test_properties.py --hypothesis-profile=long`` runs thousands.
"""
import torch
import torch.nn.functional as F
from hypothesis import assume, given, note
from hypothesis import strategies as st

import convtri
from tolerances import assert_close

CL = torch.channels_last
LAYOUTS = ("contiguous", "channels_last", "sliced", "transposed")
ERRORS = (RuntimeError, ValueError, TypeError, IndexError)


def pairs(low, high):
    """An int or a pair of ints, as torch accepts them."""
    return st.one_of(st.integers(low, high), st.tuples(st.integers(low, high), st.integers(low, high)))


def tensor(shape, layout):
    """A float64 tensor of ``shape`` in ``layout``: contiguous, channels_last, a sliced view of a
    larger tensor (every other channel and column, one row off), or a transposed view."""
    n, c, h, w = shape
    if layout == "channels_last":
        return torch.randn(shape, dtype=torch.float64).to(memory_format=CL)
    if layout == "sliced":
        return torch.randn(n, 2 * c, h + 1, 2 * w, dtype=torch.float64)[:, ::2, 1:, ::2]
    if layout == "transposed":
        return torch.randn(n, c, w, h, dtype=torch.float64).transpose(2, 3)
    return torch.randn(shape, dtype=torch.float64)


def bias(draw, k):
    kind = draw(st.sampled_from([None, "contiguous", "strided"]))
    if kind is None:
        return None
    return torch.randn(k, dtype=torch.float64) if kind == "contiguous" else torch.randn(2 * k, dtype=torch.float64)[::2]


def run(fn, inputs, grads_of):
    """fn(*inputs) and the gradients of its first output with respect to inputs[i] for i in
    ``grads_of``, under a fixed random dy: (outputs, gradients), or the exception raised."""
    leaves = [t.detach().clone(memory_format=torch.preserve_format).requires_grad_(i in grads_of)
              if isinstance(t, torch.Tensor) else t for i, t in enumerate(inputs)]
    try:
        out = fn(*leaves)
        outs = out if isinstance(out, tuple) else (out,)
        dy = torch.randn(outs[0].shape, dtype=outs[0].dtype, generator=torch.Generator().manual_seed(0))
        grads = torch.autograd.grad(outs[0], [leaves[i] for i in grads_of], dy) if grads_of else ()
    except ERRORS as e:
        return e
    return [t.detach() for t in outs], list(grads)


def check_against_torch(ours, theirs, inputs, grads_of, lengths):
    """The same exception type as torch, or the same outputs (indices exactly) and gradients
    within the float64 tolerance; ``lengths(y)`` gives the reduction lengths behind each output
    and gradient from torch's output y."""
    want = run(theirs, inputs, grads_of)
    got = run(ours, inputs, grads_of)
    if isinstance(want, Exception):
        note(f"torch raised {want!r}")
        assert isinstance(got, type(want)), f"torch raised {want!r}, we gave {got!r}"
        return
    assert not isinstance(got, Exception), f"torch succeeded, we raised {got!r}"
    for a, b, length in zip(got[0] + got[1], want[0] + want[1], lengths(want[0][0])):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
        if b.dtype == torch.int64:  # max pooling's indices
            assert torch.equal(a, b)
        else:
            assert_close(a, b, length)


def which(x, w, b):
    """The inputs that take a gradient: x, w and b if present."""
    return [0, 1] + ([2] if b is not None else [])


# ----------------------------------------------------------------------------- convolutions

def conv_operands(draw, max_size, transposed):
    """(input, weight, bias or None, groups) of a convolution, each tensor in a random layout;
    a transposed convolution's weight is (C_in, C_out/groups, R, S)."""
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    shape = (draw(st.integers(1, 2)), c_in, draw(st.integers(1, max_size)), draw(st.integers(1, max_size)))
    x = tensor(shape, draw(st.sampled_from(LAYOUTS)))
    w_channels = (c_in, c_out // groups) if transposed else (c_out, c_in // groups)
    w = tensor((*w_channels, draw(st.integers(1, 4)), draw(st.integers(1, 4))), draw(st.sampled_from(LAYOUTS)))
    return x, w, bias(draw, c_out), groups


@st.composite
def conv2d_cases(draw):
    x, w, b, groups = conv_operands(draw, max_size=9, transposed=False)
    kwargs = dict(stride=draw(pairs(1, 3)), padding=draw(st.one_of(st.sampled_from(["same", "valid"]), pairs(0, 3))),
                  dilation=draw(pairs(1, 2)), groups=groups)
    return x, w, b, kwargs, draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))


def torch_conv2d(mode, kwargs, weight):
    """torch's conv2d with ``padding_mode``: F.conv2d for zeros, and for the other modes
    torch.nn.Conv2d's forward (which pads with F.pad, then convolves). None if nn.Conv2d's
    constructor refuses the arguments: a module's rule, not the op's."""
    if mode == "zeros":
        return lambda x, w, b: F.conv2d(x, w, b, **kwargs)
    k, c_per_group, r, s = weight.shape
    try:
        module = torch.nn.Conv2d(c_per_group * kwargs["groups"], k, (r, s), padding_mode=mode, dtype=torch.float64,
                                 **kwargs)
    except ERRORS:
        return None
    return lambda x, w, b: torch.func.functional_call(module, {"weight": w, "bias": b}, (x,))


@given(conv2d_cases())
def test_conv2d_matches_torch(case):
    x, w, b, kwargs, mode = case
    note(f"x {tuple(x.shape)} strides {x.stride()}, w {tuple(w.shape)} strides {w.stride()}, bias {b is not None}")
    theirs = torch_conv2d(mode, kwargs, w)
    assume(theirs is not None)
    k, c_per_group, r, s = w.shape
    lengths = lambda y: (c_per_group * r * s, k // kwargs["groups"] * r * s, *[y[:, 0].numel()] * 2)
    ours = lambda x, w, b: convtri.conv2d(x, w, b, padding_mode=mode, **kwargs)
    check_against_torch(ours, theirs, (x, w, b), which(x, w, b), lengths)


ACTIVATION_NAMES = [None, "relu", "sigmoid", "silu", "gelu", "gelu_tanh", "relu6"]
TORCH_ACTIVATIONS = {None: lambda t: t, "relu": F.relu, "sigmoid": torch.sigmoid, "silu": F.silu, "gelu": F.gelu,
                     "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "relu6": F.relu6}


@st.composite
def depthwise_cases(draw):
    """Depthwise conv2d (the direct kernels): groups = channels, a multiplier of 1 to 3, windows
    up to 7x7, every padding mode, layout and activation."""
    c, multiplier = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    shape = (draw(st.integers(1, 2)), c, draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    x = tensor(shape, draw(st.sampled_from(LAYOUTS)))
    w = tensor((c * multiplier, 1, draw(st.integers(1, 7)), draw(st.integers(1, 7))), draw(st.sampled_from(LAYOUTS)))
    kwargs = dict(stride=draw(pairs(1, 3)), padding=draw(st.one_of(st.sampled_from(["same", "valid"]), pairs(0, 3))),
                  dilation=draw(pairs(1, 2)), groups=c)
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    return x, w, bias(draw, c * multiplier), kwargs, mode, draw(st.sampled_from(ACTIVATION_NAMES))


@given(depthwise_cases())
def test_depthwise_conv2d_matches_torch(case):
    x, w, b, kwargs, mode, activation = case
    note(f"x {tuple(x.shape)} strides {x.stride()}, w {tuple(w.shape)} strides {w.stride()}, bias {b is not None}, "
         f"{kwargs}, {mode}, {activation}")
    conv = torch_conv2d(mode, kwargs, w)
    assume(conv is not None)
    theirs = lambda x, w, b: TORCH_ACTIVATIONS[activation](conv(x, w, b))
    k, _, r, s = w.shape
    lengths = lambda y: (r * s, k // kwargs["groups"] * r * s, *[y[:, 0].numel()] * 2)
    ours = lambda x, w, b: convtri.conv2d(x, w, b, padding_mode=mode, activation=activation, **kwargs)
    check_against_torch(ours, theirs, (x, w, b), which(x, w, b), lengths)


@st.composite
def conv1d_cases(draw):
    """conv1d in every layout (contiguous, channels fastest, a strided view), groups (depthwise
    included), padding forms and modes."""
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    n, length = draw(st.integers(1, 2)), draw(st.integers(1, 12))
    layout = draw(st.sampled_from(["contiguous", "channels_fastest", "sliced"]))
    if layout == "channels_fastest":
        x = torch.randn(n, length, c_in, dtype=torch.float64).transpose(1, 2)
    elif layout == "sliced":
        x = torch.randn(n, 2 * c_in, 2 * length, dtype=torch.float64)[:, ::2, ::2]
    else:
        x = torch.randn(n, c_in, length, dtype=torch.float64)
    w = torch.randn(c_out, c_in // groups, draw(st.integers(1, 5)), dtype=torch.float64)
    kwargs = dict(stride=draw(st.integers(1, 3)), dilation=draw(st.integers(1, 2)), groups=groups,
                  padding=draw(st.one_of(st.sampled_from(["same", "valid"]), st.integers(0, 3))))
    return x, w, bias(draw, c_out), kwargs, draw(st.sampled_from(["zeros", "zeros", "reflect", "circular"]))


@given(conv1d_cases())
def test_conv1d_matches_torch(case):
    x, w, b, kwargs, mode = case
    note(f"x {tuple(x.shape)} strides {x.stride()}, w {tuple(w.shape)}, bias {b is not None}, {kwargs}, {mode}")
    k, c_per_group, r = w.shape
    if mode == "zeros":
        theirs = lambda x, w, b: F.conv1d(x, w, b, **kwargs)
    else:
        try:
            module = torch.nn.Conv1d(c_per_group * kwargs["groups"], k, r, padding_mode=mode, dtype=torch.float64,
                                     **kwargs)
        except ERRORS:
            assume(False)
        theirs = lambda x, w, b: torch.func.functional_call(module, {"weight": w, "bias": b}, (x,))
    lengths = lambda y: (c_per_group * r, k // kwargs["groups"] * r, *[y[:, 0].numel()] * 2)
    ours = lambda x, w, b: convtri.conv1d(x, w, b, padding_mode=mode, **kwargs)
    check_against_torch(ours, theirs, (x, w, b), which(x, w, b), lengths)


@st.composite
def conv_transpose2d_cases(draw):
    x, w, b, groups = conv_operands(draw, max_size=6, transposed=True)
    kwargs = dict(stride=draw(pairs(1, 3)), padding=draw(pairs(0, 2)), output_padding=draw(pairs(0, 2)),
                  groups=groups, dilation=draw(pairs(1, 2)))
    return x, w, b, kwargs


@given(conv_transpose2d_cases())
def test_conv_transpose2d_matches_torch(case):
    x, w, b, kwargs = case
    note(f"x {tuple(x.shape)} strides {x.stride()}, w {tuple(w.shape)} strides {w.stride()}, bias {b is not None}")
    c_in, c_out_per_group, r, s = w.shape
    n_h_w = x.shape[0] * x.shape[2] * x.shape[3]
    lengths = lambda y: (c_in // kwargs["groups"] * r * s, c_out_per_group * r * s, n_h_w, y[:, 0].numel())
    check_against_torch(lambda x, w, b: convtri.conv_transpose2d(x, w, b, **kwargs),
                        lambda x, w, b: F.conv_transpose2d(x, w, b, **kwargs), (x, w, b), which(x, w, b), lengths)


# ----------------------------------------------------------------------------- pooling

def pool_input(draw, max_size=9):
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, max_size)),
             draw(st.integers(1, max_size)))
    return tensor(shape, draw(st.sampled_from(LAYOUTS)))


def as_pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def has_empty_window(x, kernel_size, stride, padding, dilation, ceil_mode, **_):
    """Whether a window lies wholly in the padding (dilation can skip over the input). torch
    returns -inf there with an index outside the window, and its backward writes dy there,
    out of the plane for the last row (tests/test_hardening.py shows ours)."""
    stride = as_pair(stride or kernel_size)
    for size, k, s, p, d in zip(x.shape[2:], as_pair(kernel_size), stride, as_pair(padding), as_pair(dilation)):
        out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (out - 1) * s >= size + p:
            out -= 1
        if any(all(not 0 <= o * s - p + t * d < size for t in range(k)) for o in range(max(out, 0))):
            return True
    return False


def max_pool_case(draw, return_indices):
    x = pool_input(draw)
    kwargs = dict(kernel_size=draw(pairs(1, 4)), stride=draw(st.one_of(st.none(), pairs(1, 3))),
                  padding=draw(pairs(0, 2)), dilation=draw(pairs(1, 2)), ceil_mode=draw(st.booleans()),
                  return_indices=return_indices)
    note(f"x {tuple(x.shape)} strides {x.stride()}, {kwargs}")
    assume(not has_empty_window(x, **kwargs))
    return x, kwargs


@given(st.data())
def test_max_pool2d_matches_torch(data):
    x, kwargs = max_pool_case(data.draw, return_indices=True)
    # a maximum is exact: the gradient routes dy, a sum of at most kernel-many terms
    check_against_torch(lambda x: convtri.max_pool2d(x, **kwargs), lambda x: F.max_pool2d(x, **kwargs), (x,), [0],
                        lambda y: (1, 1, 16))


@given(st.data())
def test_max_pool2d_window_offsets_route_like_torch(data):
    # without returned indices, backward reads each maximum's tap within its window
    x, kwargs = max_pool_case(data.draw, return_indices=False)
    check_against_torch(lambda x: convtri.max_pool2d(x, **kwargs), lambda x: F.max_pool2d(x, **kwargs), (x,), [0],
                        lambda y: (1, 16))


@given(st.data())
def test_avg_pool2d_matches_torch(data):
    draw = data.draw
    x = pool_input(draw)
    kwargs = dict(kernel_size=draw(pairs(1, 4)), stride=draw(st.one_of(st.none(), pairs(1, 3))),
                  padding=draw(pairs(0, 2)), ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()),
                  divisor_override=draw(st.one_of(st.none(), st.integers(-3, 9))))
    note(f"x {tuple(x.shape)} strides {x.stride()}, {kwargs}")
    check_against_torch(lambda x: convtri.avg_pool2d(x, **kwargs), lambda x: F.avg_pool2d(x, **kwargs), (x,), [0],
                        lambda y: (16, 16))


@given(st.data())
def test_adaptive_avg_pool2d_matches_torch(data):
    draw = data.draw
    x = pool_input(draw, max_size=12)
    size = st.one_of(st.none(), st.integers(0, 13))
    output_size = draw(st.one_of(st.integers(0, 13), st.tuples(size, size)))
    note(f"x {tuple(x.shape)} strides {x.stride()}, output_size {output_size}")
    bound = (x.shape[2] + 1) * (x.shape[3] + 1)  # the largest window
    sizes = as_pair(output_size)
    # an empty output's gradient is zero for us, an error for torch's backward: forward only
    grads_of = [] if 0 in sizes else [0]
    check_against_torch(lambda x: convtri.adaptive_avg_pool2d(x, output_size),
                        lambda x: F.adaptive_avg_pool2d(x, output_size), (x,), grads_of, lambda y: (bound, bound))
