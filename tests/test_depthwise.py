"""Depthwise convolutions on the direct kernels (kernels/depthwise.py) against torch in float64:
conv2d with one input channel per group (any multiplier) and conv_transpose2d with one output
channel per group, forward and both gradients, every layout, padding mode and dtype; the
dispatch that sends them there (and the rest to the GEMMs); determinism."""
import pytest
import torch
import torch.nn.functional as F

import convtri
import parity
from convtri.depthwise_launch import is_direct
from convtri.kernels import depthwise
from test_conv2d import check_parity, reduction_lengths
from tolerances import assert_close

CL, NCHW = torch.channels_last, torch.contiguous_format
DIRECT = {depthwise.depthwise_fwd_kernel.__name__, depthwise.depthwise_dgrad_kernel.__name__,
          depthwise.depthwise_wgrad_kernel.__name__}

# (input shape, weight shape, conv2d kwargs, layout), each picked for what it exercises
CASES = [
    ((2, 6, 9, 8), (6, 1, 3, 3), dict(groups=6, padding=1), NCHW),  # multiplier 1, 3x3, row tiles
    ((2, 6, 9, 8), (6, 1, 3, 3), dict(groups=6, padding=1), CL),  # multiplier 1, pixel tiles along channels
    ((2, 5, 8, 9), (10, 1, 3, 3), dict(groups=5, padding=1), CL),  # multiplier 2; 5 and 10 channels: no multiple of 8
    ((2, 4, 9, 10), (4, 1, 3, 3), dict(groups=4, stride=2, padding=1), NCHW),  # stride 2: dgrad's taps skip pixels
    ((1, 4, 9, 10), (8, 1, 3, 3), dict(groups=4, dilation=2, padding=2), CL),  # dilation 2, multiplier 2
    ((2, 3, 7, 12), (3, 1, 1, 7), dict(groups=3, padding=(0, 3)), NCHW),  # 1x7: one row of taps
    ((1, 3, 12, 7), (3, 1, 7, 1), dict(groups=3, padding=(3, 0)), CL),  # 7x1: one column of taps
    ((1, 4, 10, 9), (4, 1, 7, 7), dict(groups=4, padding=3), CL),  # 7x7: a loop over kernel rows (49 taps)
    ((1, 4, 11, 10), (4, 1, 5, 5), dict(groups=4, stride=2, padding=2), NCHW),  # EfficientNet's 5x5/2
    ((2, 3, 4, 5), (3, 1, 2, 2), dict(groups=3, stride=2), CL),  # windows that do not overlap: one per pixel
    ((2, 3, 1, 1), (3, 1, 3, 3), dict(groups=3, padding=1), NCHW),  # a single-pixel output
    ((2, 3, 3, 3), (6, 1, 3, 3), dict(groups=3), CL),  # a single-pixel output, no padding, multiplier 2
    ((2, 4, 8, 7), (4, 1, 4, 4), dict(groups=4, padding="same"), NCHW),  # 'same', even kernel: pad bottom/right
    ((2, 8, 6, 6), (4, 2, 3, 3), dict(groups=4, padding=1), CL),  # one output channel per group (K_G = 1)
]


@pytest.mark.parametrize("x_shape, w_shape, kwargs, layout", CASES)
def test_parity_float64(x_shape, w_shape, kwargs, layout, device):
    x = torch.randn(x_shape, dtype=torch.float64, device=device).to(memory_format=layout)
    w = torch.randn(w_shape, dtype=torch.float64, device=device)
    check_parity(x, w, torch.randn(w_shape[0], dtype=torch.float64, device=device), **kwargs)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("layout", [NCHW, CL])
def test_padding_modes(mode, layout, device):
    # each mode folded into the taps' coordinates forward; dgrad into a padded buffer and folded
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64, device=device).to(memory_format=layout)
    w = torch.randn(8, 1, 3, 5, dtype=torch.float64, device=device)
    b = torch.randn(8, dtype=torch.float64, device=device)
    ours = lambda x, w, b: convtri.conv2d(x, w, b, padding=(1, 2), groups=4, padding_mode=mode)
    module = torch.nn.Conv2d(4, 8, (3, 5), padding=(1, 2), groups=4, padding_mode=mode, dtype=torch.float64)
    theirs = lambda x, w, b: torch.func.functional_call(module, {"weight": w, "bias": b}, (x,))
    parity.check_parity(ours, theirs, (x, w, b), lambda y: reduction_lengths(x, w, y, groups=4))


def test_channels_last_views(device):
    # a strided view of a channels_last tensor (every other channel, a window of rows) is read
    # where it lies; a channels_last weight of shape (K, 1, R, S) too
    base = torch.randn(2, 12, 10, 9, dtype=torch.float64, device=device).to(memory_format=CL)
    x = base[:, ::2, 1:-1]
    w = torch.randn(6, 1, 3, 3, dtype=torch.float64, device=device).to(memory_format=CL)
    y, *_ = check_parity(x, w, None, groups=6, padding=1)
    assert y.is_contiguous(memory_format=CL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", [NCHW, CL])
def test_parity_low_precision(dtype, layout, device):
    # 24 channels (16-byte vectors of fp16 with a masked tail of 8), multiplier 1, stride 2
    x = torch.randn(2, 24, 9, 10, dtype=dtype, device=device).to(memory_format=layout)
    w = torch.randn(24, 1, 3, 3, dtype=dtype, device=device)
    check_parity(x, w, torch.randn(24, dtype=dtype, device=device), groups=24, stride=2, padding=1)


@pytest.mark.parametrize("layout", [NCHW, CL])
def test_gradcheck(layout, device):
    # multiplier 2, stride 2, asymmetric padding, dilation: every index path of the three kernels
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, device=device).to(memory_format=layout).requires_grad_()
    w = torch.randn(4, 1, 3, 2, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, device=device, requires_grad=True)
    fn = lambda x, w, b: convtri.conv2d(x, w, b, stride=2, padding=(1, 2), dilation=(1, 2), groups=2)
    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_gradcheck_reflect_and_activation(device):
    x = torch.randn(1, 3, 5, 4, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
    fn = lambda x, w: convtri.conv2d(x, w, padding=1, groups=3, padding_mode="reflect", activation="silu")
    assert torch.autograd.gradcheck(fn, (x, w))


@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((2, 4, 5, 6), (4, 1, 3, 3), dict(groups=4, stride=2, padding=1, output_padding=1)),  # multiplier 1, stride 2
    ((2, 3, 5, 5), (3, 2, 3, 3), dict(groups=3, padding=1, dilation=2)),  # two outputs per input channel
])
def test_conv_transpose2d(x_shape, w_shape, kwargs, device, launches):
    # one output channel per group of the convolution it transposes: the direct kernels, bias too
    x = torch.randn(x_shape, dtype=torch.float64, device=device)
    w = torch.randn(w_shape, dtype=torch.float64, device=device)
    b = torch.randn(w_shape[1] * kwargs["groups"], dtype=torch.float64, device=device)
    c_in, c_out_per_group, r, s = w_shape
    lengths = lambda y: (c_in // kwargs["groups"] * r * s, c_out_per_group * r * s, x[:, 0].numel(), y[:, 0].numel())
    parity.check_parity(convtri.conv_transpose2d, F.conv_transpose2d, (x, w, b), lengths, **kwargs)
    assert {name for name, _ in launches} == DIRECT


def test_a_depthwise_call_launches_the_direct_kernels_and_no_gemm(launches):
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    w = torch.randn(16, 1, 3, 3, requires_grad=True)
    b = torch.randn(16, requires_grad=True)
    convtri.conv2d(x, w, b, padding=1, groups=8).sum().backward()
    assert [name for name, _ in launches] == [depthwise.depthwise_fwd_kernel.__name__,
                                              depthwise.depthwise_dgrad_kernel.__name__,
                                              depthwise.depthwise_wgrad_kernel.__name__]
    launches.clear()
    convtri.conv2d(x, torch.randn(8, 2, 3, 3), groups=4).sum().backward()  # 2 x 2 channels per group: GEMMs
    assert not DIRECT & {name for name, _ in launches}


@pytest.mark.parametrize("groups, c_per_group, k_per_group, direct", [
    (32, 1, 1, True),  # MobileNet's depthwise
    (32, 1, 2, True),  # a channel multiplier
    (16, 4, 1, True),  # a transposed depthwise with a multiplier
    (32, 4, 4, False),  # ResNeXt's 4 x 4 groups: GEMMs (the boundary's reason at is_direct)
    (1, 1, 6, False),  # one input channel, groups 1 (LeNet's C1): a GEMM over all its filters
])
def test_dispatch_boundary(groups, c_per_group, k_per_group, direct):
    assert is_direct(groups, c_per_group, k_per_group) == direct


def test_split_weight_gradient_is_deterministic(monkeypatch, device):
    # the weight gradient cut into 3 slices of the N*P*Q reduction, summed in a fixed order:
    # bitwise equal run to run, and equal to one slice's result within rounding
    import convtri.conv_launch
    x = torch.randn(3, 8, 9, 7, dtype=torch.float32, device=device)
    w = torch.randn(8, 1, 3, 3, dtype=torch.float32, device=device, requires_grad=True)

    def weight_grad():
        (dw,) = torch.autograd.grad(convtri.conv2d(x, w, padding=1, groups=8).square().sum(), [w])
        return dw
    single = weight_grad()
    monkeypatch.setattr(convtri.conv_launch, "_wgrad_splits", lambda x, *sizes: 3)
    convtri._dispatch.clear_plans()
    torch.use_deterministic_algorithms(True)
    try:
        first, second = weight_grad(), weight_grad()
    finally:
        torch.use_deterministic_algorithms(False)
        convtri._dispatch.clear_plans()
    assert torch.equal(first, second)
    assert_close(first, single.double(), 3 * 9 * 7)
