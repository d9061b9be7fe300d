"""conv1d and nn.Conv1d against torch (float64 references): a one-row view of conv2d, so the GEMM
and the direct depthwise kernels both serve it; Mamba's causal short convolution as one call."""
import pytest
import torch
import torch.nn.functional as F

import convtri
import parity
from tolerances import assert_close

# (input shape, weight shape, conv1d kwargs), each picked for what it exercises
CASES = [
    ((2, 6, 20), (6, 1, 4), dict(padding=3, groups=6)),  # Mamba's depthwise kernel 4, causal padding
    ((2, 6, 20), (12, 1, 3), dict(padding=1, groups=6, stride=2)),  # depthwise, multiplier 2, stride 2
    ((2, 5, 17), (4, 5, 3), dict(padding="same")),  # few channels: the GEMM's FLAT_TAPS
    ((2, 20, 11), (24, 20, 3), dict(padding="valid", dilation=2)),  # 20 channels: the GEMM tap by tap, dilation
    ((2, 6, 16), (6, 2, 5), dict(groups=3, padding=(2,), stride=(3,))),  # groups, 1-tuples
    ((3, 9), (4, 3, 2), dict()),  # unbatched (C, L)
]


def lengths_of(w, groups=1, **_):
    k, c_per_group, r = w.shape
    return lambda y: (c_per_group * r, k // groups * r, y[..., 0, :].numel() if y.dim() == 3 else y.shape[-1],
                      y[..., 0, :].numel() if y.dim() == 3 else y.shape[-1])


@pytest.mark.parametrize("x_shape, w_shape, kwargs", CASES)
def test_parity_float64(x_shape, w_shape, kwargs, device):
    x = torch.randn(x_shape, dtype=torch.float64, device=device)
    w = torch.randn(w_shape, dtype=torch.float64, device=device)
    b = torch.randn(w_shape[0], dtype=torch.float64, device=device)
    y, *_ = parity.check_parity(convtri.conv1d, F.conv1d, (x, w, b), lengths_of(w, **kwargs), **kwargs)
    assert y.stride() == F.conv1d(x, w, b, **kwargs).stride()  # contiguous in, contiguous out


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_mamba_short_convolution(dtype, device):
    # x held as (N, L, C), as Mamba holds it, transposed to (N, C, L): channels fastest, no copy;
    # the first L outputs of a depthwise kernel-4 convolution padded by 3, then SiLU, in one call
    n, length, channels = 2, 24, 16
    x = torch.randn(n, length, channels, dtype=dtype, device=device).transpose(1, 2)
    w = torch.randn(channels, 1, 4, dtype=dtype, device=device)
    b = torch.randn(channels, dtype=dtype, device=device)
    y = convtri.conv1d(x, w, b, padding=3, groups=channels, activation="silu")[..., :length]
    x64, w64, b64 = (t.double().cpu() for t in (x, w, b))
    expected = torch.zeros(n, channels, length, dtype=torch.float64)  # the plain formula, tap by tap
    for tap in range(4):
        shift = 3 - tap  # output l reads input l - 3 + tap
        expected[..., shift:] += x64[..., :length - shift] * w64[:, 0, tap, None]
    expected = F.silu(expected + b64[:, None])
    assert_close(y, expected, 4)
    assert y.stride(1) == 1  # channels fastest, as the input


def test_channels_fastest_output_follows_the_input(device):
    # conv2d's layout rule on the one-row view: a transposed (N, L, C) input gives an output with
    # contiguous channels too (cuDNN's; torch's CPU conv1d returns it contiguous), same values
    x = torch.randn(2, 12, 8, dtype=torch.float64, device=device).transpose(1, 2)
    w = torch.randn(5, 8, 3, dtype=torch.float64, device=device)
    y = convtri.conv1d(x, w, padding=1)
    assert y.stride() == (y.shape[2] * 5, 1, 5)
    assert_close(y, F.conv1d(x.cpu(), w.cpu(), padding=1), 8 * 3)


def test_gradcheck(device):
    x = torch.randn(1, 4, 7, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(4, 1, 3, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, device=device, requires_grad=True)
    fn = lambda x, w, b: convtri.conv1d(x, w, b, stride=2, padding=2, dilation=2, groups=4, activation="gelu")
    assert torch.autograd.gradcheck(fn, (x, w, b))


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_module_and_state_dict_interchange(mode, device):
    theirs = torch.nn.Conv1d(6, 6, 3, padding=2, dilation=2, groups=6, padding_mode=mode, dtype=torch.float64,
                             device=device)
    ours = convtri.nn.Conv1d(6, 6, 3, padding=2, dilation=2, groups=6, padding_mode=mode, dtype=torch.float64,
                             device=device, activation="relu6")
    ours.load_state_dict(theirs.state_dict())
    assert isinstance(ours, torch.nn.Conv1d) and list(ours.state_dict()) == list(theirs.state_dict())
    x = torch.randn(2, 6, 11, dtype=torch.float64, device=device)
    assert_close(ours(x), F.relu6(theirs(x)), 3)
    assert "activation='relu6'" in repr(ours)


def test_convert_maps_conv1d():
    model = torch.nn.Sequential(torch.nn.Conv1d(4, 8, 3, padding="same"), torch.nn.SiLU()).double()
    x = torch.randn(2, 4, 10, dtype=torch.float64)
    expected = model(x)
    weight = model[0].weight
    convtri.convert(model, fuse=True)
    assert type(model[0]) is convtri.nn.Conv1d and model[0].weight is weight and model[0].activation == "silu"
    assert_close(model(x), expected, 4 * 3)


@pytest.mark.parametrize("call, error, words", [
    (lambda: convtri.conv1d(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 1)), RuntimeError,
     "expected input to be 2-D \\(C, L\\) or 3-D \\(N, C, L\\)"),
    (lambda: convtri.conv1d(torch.randn(1, 2, 4), torch.randn(1, 2)), RuntimeError, "expected weight to be 3-D"),
    (lambda: convtri.conv1d(torch.randn(1, 2, 4), torch.randn(1, 2, 1), stride=(1, 2)), RuntimeError,
     "stride must be a single int or a list of 1 int"),
    (lambda: convtri.conv1d(torch.randn(1, 2, 4), torch.randn(1, 2, 1), padding=1.5), TypeError,
     "padding must be an int"),
    (lambda: convtri.conv1d(torch.randn(1, 2, 4), torch.randn(1, 2, 1), stride=2, padding="same"), RuntimeError,
     "padding='same' is not supported for strided convolutions"),
])
def test_errors(call, error, words):
    with pytest.raises(error, match=words):
        call()
