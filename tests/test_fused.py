"""conv2d with a fused activation (issues 16 and 22): relu, sigmoid, silu, gelu (exact and tanh)
or relu6 in the forward's epilogue and its derivative in the backward kernels' loads of dy (from
the output, or for silu and gelu the saved pre-activation), against torch's conv followed by
the activation, on the GEMM and the direct depthwise kernels; nn.Conv2d carrying it, and
convert(fuse=True)."""
import contextlib

import pytest
import torch
import torch.nn.functional as F

import convtri
import parity
from convtri.kernels import relayout
from test_conv2d import reduction_lengths
from test_host_path import PassThrough

ACTIVATIONS = {"relu": F.relu, "sigmoid": torch.sigmoid, "silu": F.silu, "gelu": F.gelu,
               "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "relu6": F.relu6}

CL, NCHW = torch.channels_last, torch.contiguous_format
CASES = [
    ((2, 3, 9, 8), (4, 3, 3, 3), dict(stride=2, padding=1), NCHW),  # few channels (FLAT_TAPS), two stride phases
    ((2, 20, 7, 6), (24, 20, 3, 3), dict(padding=1), NCHW),  # tap by tap, NCHW copied to channels_last (y too)
    ((2, 20, 7, 6), (24, 20, 3, 3), dict(stride=2), CL),  # tap by tap on channels_last as it is
    ((4, 6, 14, 14), (16, 6, 5, 5), {}, NCHW),  # LeNet's C3
    ((2, 4, 7, 7), (6, 2, 3, 3), dict(groups=2, dilation=2, padding=2), CL),  # groups, dilation
    ((2, 6, 7, 6), (6, 1, 3, 3), dict(groups=6, padding=1), CL),  # depthwise: the direct kernels
    ((2, 5, 7, 6), (10, 1, 3, 3), dict(groups=5, stride=2), NCHW),  # depthwise, multiplier 2, row tiles
]


def reference(activation):
    return lambda x, w, b, **kwargs: ACTIVATIONS[activation](F.conv2d(x, w, b, **kwargs))


def check(x, w, b, activation, **kwargs):
    lengths = lambda y: reduction_lengths(x, w, y, **kwargs)
    ours = lambda *tensors, **k: convtri.conv2d(*tensors, activation=activation, **k)
    return parity.check_parity(ours, reference(activation), (x, w, b), lengths, **kwargs)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("x_shape, w_shape, kwargs, layout", CASES)
def test_parity_float64(x_shape, w_shape, kwargs, layout, activation, device):
    x = torch.randn(x_shape, dtype=torch.float64, device=device).to(memory_format=layout)
    w = torch.randn(w_shape, dtype=torch.float64, device=device)
    check(x, w, torch.randn(w_shape[0], dtype=torch.float64, device=device), activation, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_parity_low_precision(activation, dtype, device):
    # tensor-core sized channels, strided: the activation in the low-precision epilogue and loads
    x = torch.randn(2, 16, 9, 9, dtype=dtype, device=device)
    w = torch.randn(32, 16, 3, 3, dtype=dtype, device=device) / 4
    check(x, w, torch.randn(32, dtype=dtype, device=device), activation, stride=2, padding=1)


@pytest.mark.parametrize("needs", [(True, True), (True, False), (False, True)])
def test_nchw_backward_copies_dy_and_y_once(needs, launches):
    """NCHW with 20 and 24 channels: both gradient GEMMs read dy and the saved output y along
    channels, from channels_last copies; one copy of each serves both (each GEMM made its own
    before). The other copies: w for dgrad, x for wgrad, dgrad's channels_last dx back to NCHW."""
    x = torch.randn(2, 20, 7, 6, requires_grad=needs[0])
    w = torch.randn(24, 20, 3, 3, requires_grad=needs[1])
    y = convtri.conv2d(x, w, padding=1, activation="relu")
    dy = torch.randn_like(y)
    launches.clear()
    y.backward(dy)
    sources = [seen[0].data_ptr for name, seen in launches if name == relayout.relayout_kernel.__name__]
    assert sources.count(dy.data_ptr()) == 1 and sources.count(y.data_ptr()) == 1
    assert sources.count(w.data_ptr()) == needs[0] and sources.count(x.data_ptr()) == needs[1]
    assert len(sources) == 2 + 2 * needs[0] + needs[1]
    torch.testing.assert_close(x.grad if needs[0] else w.grad, torch.autograd.grad(
        F.relu(F.conv2d(x, w, padding=1)), x if needs[0] else w, dy)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck(activation, device):
    # reflect padding: the activation's derivative also reaches the padded buffer's fold
    x = torch.randn(1, 2, 4, 3, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(2, 2, 2, 2, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, device=device, requires_grad=True)
    fn = lambda x, w, b: convtri.conv2d(x, w, b, padding=1, padding_mode="reflect", activation=activation)
    assert torch.autograd.gradcheck(fn, (x, w, b))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_custom_op_route_agrees_bitwise(activation):
    # under a dispatch mode the op and its backward ops run: the output and the gradients are
    # the eager route's, bit for bit
    x, w, b = (torch.randn(2, 20, 6, 6, requires_grad=True), torch.randn(8, 20, 3, 3, requires_grad=True),
               torch.randn(8, requires_grad=True))
    results = []
    for mode in (None, PassThrough()):
        with mode or contextlib.nullcontext():
            y = convtri.conv2d(x, w, b, activation=activation)
            results.append([y, *torch.autograd.grad(y, (x, w, b), torch.ones_like(y))])
        if mode is not None:
            assert {"convtri::conv2d", "convtri::conv2d_dgrad", "convtri::conv2d_wgrad"} <= set(mode.ops)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("activation, groups", [("sigmoid", 1), ("relu", 3), ("silu", 1), ("gelu", 3)])
def test_opcheck(activation, groups):
    # the GEMM (groups 1) and the direct kernels (depthwise); silu and gelu's op returns their
    # pre-activation as its second output, which their gradient ops read
    x, w, b = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True), torch.randn(
        3, 3 // groups, 3, 3, dtype=torch.float64, requires_grad=True), torch.randn(3, dtype=torch.float64,
                                                                                    requires_grad=True)
    geometry = ([1, 1], [1, 1, 1, 1], [1, 1], groups, "zeros")
    torch.library.opcheck(torch.ops.convtri.conv2d, (x, w, b, *geometry, activation))
    y, z = torch.ops.convtri.conv2d(x.detach(), w.detach(), b.detach(), *geometry, activation)
    saved = z if activation in ("silu", "gelu") else y
    assert z.numel() == (y.numel() if activation in ("silu", "gelu") else 0)
    dy = torch.randn_like(y)
    torch.library.opcheck(torch.ops.convtri.conv2d_dgrad, (dy, w.detach(), list(x.shape), False, *geometry, saved,
                                                           activation))
    torch.library.opcheck(torch.ops.convtri.conv2d_wgrad, (x.detach(), dy, w.detach(), *geometry, True, True, saved,
                                                           activation))


@pytest.mark.parametrize("call, error, words", [
    (lambda: convtri.conv2d(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 1, 1), activation="tanh"), ValueError,
     "activation must be one of \\[None, 'relu', 'sigmoid', 'silu', 'gelu', 'gelu_tanh', 'relu6'\\], got 'tanh'"),
    (lambda: convtri.conv2d(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 1, 1), activation=torch.relu), TypeError,
     "activation must be None or a string"),
    (lambda: convtri.nn.Conv2d(1, 1, 1, activation="swish"), ValueError, "activation must be one of"),
    (lambda: convtri.nn.Conv1d(1, 1, 1, activation="GELU"), ValueError, "activation must be one of"),
    (lambda: torch.ops.convtri.conv2d_dgrad(torch.randn(1, 1, 3, 3), torch.randn(1, 1, 1, 1), [1, 1, 3, 3], False,
                                            [1, 1], [0, 0, 0, 0], [1, 1], 1, "zeros", None, "relu"), RuntimeError,
     "expected the forward's output \\(for silu and gelu its pre-activation\\) exactly with an activation"),
])
def test_bad_activation(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_convert_fuses_the_activations_modern_nets_use():
    # each by exact class, GELU by its approximation, Hardtanh only as ReLU6; Conv1d as Conv2d
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.Conv2d(4, 4, 1), nn.GELU(), nn.Conv2d(4, 4, 1),
                          nn.GELU(approximate="tanh"), nn.Conv2d(4, 4, 1), nn.ReLU6(), nn.Conv2d(4, 4, 1),
                          nn.Hardtanh(0., 6.), nn.Conv2d(4, 4, 1), nn.Hardtanh(-1., 1.),
                          nn.Sequential(nn.Conv1d(4, 4, 3), nn.SiLU())).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    run = lambda m: m[12](m[:12](x).flatten(2))
    expected = run(model)
    convtri.convert(model, fuse=True)
    assert [model[i].activation for i in (0, 2, 4, 6, 8, 10)] == ["silu", "gelu", "gelu_tanh", "relu6", "relu6", None]
    assert all(isinstance(model[i], nn.Identity) for i in (1, 3, 5, 7, 9)) and type(model[11]) is nn.Hardtanh
    assert type(model[12][0]) is convtri.nn.Conv1d and model[12][0].activation == "silu"
    torch.testing.assert_close(run(model), expected)


def test_convert_fuse_from_torch_layers():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(inplace=True), torch.nn.Sigmoid(),
                                torch.nn.Conv2d(4, 2, 1), torch.nn.Sigmoid())
    convtri.convert(model, fuse=True)
    assert type(model[0]) is convtri.nn.Conv2d and model[0].activation == "relu"
    assert type(model[2]) is torch.nn.Sigmoid  # one activation per convolution
    assert model[3].activation == "sigmoid" and isinstance(model[4], torch.nn.Identity)
    assert "activation='relu'" in repr(model[0])
