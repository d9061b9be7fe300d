"""conv_transpose2d and nn.ConvTranspose2d against torch (float64 references), on every device present."""
import pytest
import torch
import torch.nn.functional as F

import convtri
import parity
from tolerances import assert_close

# (input shape, weight shape (C_in, C_out/groups, R, S), kwargs), each picked for what it exercises
PARITY_CASES = [
    ((2, 3, 5, 4), (3, 4, 3, 3), {}),  # stride 1: every input pixel reaches R x S outputs
    ((2, 4, 5, 6), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),  # the classic 2x upsampling
    ((1, 2, 4, 5), (2, 3, 2, 2), dict(stride=2)),  # kernel = stride: each output pixel from exactly one input
    ((2, 4, 5, 6), (4, 2, 3, 2), dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2))),  # asymmetric
    ((2, 4, 4, 5), (4, 1, 3, 3), dict(groups=2, dilation=2)),  # groups and dilation
    ((1, 2, 4, 4), (2, 3, 3, 3), dict(dilation=2, output_padding=1)),  # output_padding >= stride, < dilation:
    # the extra row has no input row behind it in the backward's convolution
    ((2, 6, 3, 3), (6, 1, 3, 3), dict(groups=6, stride=2, padding=1)),  # depthwise, strided
    ((2, 20, 3, 4), (20, 18, 2, 2), dict(stride=2)),  # more than 16 channels: tap-by-tap GEMMs
    ((1, 2, 1, 1), (2, 3, 4, 4), {}),  # a 1x1 input: the output is the kernel, scaled
]


def reduction_lengths(x, w, y, groups=1, **_):
    """Length of the sums behind y, dx, dw and db (bounds: a sum over taps and input channels)."""
    c_in, c_out_per_group, r, s = w.shape
    n_h_w, n_p_q = x.shape[0] * x.shape[2] * x.shape[3], y.shape[0] * y.shape[2] * y.shape[3]
    return c_in // groups * r * s, c_out_per_group * r * s, n_h_w, n_p_q


def check_parity(x, w, b, **kwargs):
    lengths = lambda y: reduction_lengths(x, w, y, **kwargs)
    return parity.check_parity(convtri.conv_transpose2d, F.conv_transpose2d, (x, w, b), lengths, **kwargs)


@pytest.mark.parametrize("x_shape, w_shape, kwargs", PARITY_CASES)
def test_parity_float64(x_shape, w_shape, kwargs, device):
    x = torch.randn(x_shape, dtype=torch.float64, device=device)
    w = torch.randn(w_shape, dtype=torch.float64, device=device)
    b = torch.randn(w_shape[1] * kwargs.get("groups", 1), dtype=torch.float64, device=device)
    check_parity(x, w, b, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_parity_low_precision(dtype, device):
    # tensor-core sized channels, the 2x upsampling of a decoder
    x = torch.randn(2, 16, 5, 5, dtype=dtype, device=device)
    w = torch.randn(16, 32, 3, 3, dtype=dtype, device=device)
    check_parity(x, w, torch.randn(32, dtype=dtype, device=device), stride=2, padding=1, output_padding=1)


def test_gradcheck(device):
    # stride 2, output_padding, groups: every index path, small enough for the full check
    x = torch.randn(1, 2, 3, 2, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(2, 1, 2, 3, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, device=device, requires_grad=True)
    fn = lambda x, w, b: convtri.conv_transpose2d(x, w, b, stride=2, padding=(0, 1), output_padding=1, groups=2)
    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_only_needed_gradients(device):
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, device=device)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, device=device)
    b = torch.randn(2, dtype=torch.float64, device=device, requires_grad=True)
    convtri.conv_transpose2d(x, w, b, stride=2).sum().backward()  # only the bias wants a gradient
    torch.testing.assert_close(b.grad, torch.full_like(b, 2 * 9 * 9))


@pytest.mark.parametrize("x_cl, w_cl", [(True, False), (False, True), (True, True)])
def test_memory_formats_follow_torch(x_cl, w_cl, device):
    fmt = lambda cl: torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, device=device).to(memory_format=fmt(x_cl))
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, device=device).to(memory_format=fmt(w_cl))
    y, dx, dw = check_parity(x, w, None, stride=2)
    y_ref = F.conv_transpose2d(x.cpu(), w.cpu(), stride=2)
    assert y.stride() == y_ref.stride()
    assert dx.stride() == x.stride() and dw.stride() == w.stride()  # as the leaves: no copy on accumulation


def test_strided_views(device):
    x = torch.randn(2, 6, 9, 5, dtype=torch.float64, device=device)[:, ::2, 1:8]
    w = torch.randn(3, 3, 4, 3, dtype=torch.float64, device=device).transpose(2, 3)
    assert not x.is_contiguous() and not w.is_contiguous()
    check_parity(x, w, None, stride=2, padding=1)


def test_strided_bias(device):
    # a bias that is a view with stride 3, read through its stride by the dgrad kernel
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, device=device)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, device=device)
    check_parity(x, w, torch.randn(6, dtype=torch.float64, device=device)[::3], stride=2)


def test_unbatched(device):
    x = torch.randn(3, 4, 5, dtype=torch.float64, device=device)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, device=device)
    y = convtri.conv_transpose2d(x, w, stride=2)
    assert y.shape == (2, 9, 11)
    assert_close(y, F.conv_transpose2d(x.cpu(), w.cpu(), stride=2), 27)


def test_never_calls_torch_conv(device, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("convtri called torch's convolution")
    for module, name in [(torch, "conv_transpose2d"), (torch, "conv2d"), (torch, "convolution"),
                         (F, "conv_transpose2d"), (F, "conv2d"), (torch.nn.grad, "conv2d_input"),
                         (torch.nn.grad, "conv2d_weight")]:
        monkeypatch.setattr(module, name, forbidden)
    x = torch.randn(1, 2, 4, 4, device=device, requires_grad=True)
    convtri.nn.ConvTranspose2d(2, 3, 3, stride=2).to(device)(x).sum().backward()


# ----------------------------------------------------------------------------- nn.ConvTranspose2d

def test_module_and_output_size(device):
    ours = convtri.nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1).double().to(device)
    ref = torch.nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1).double()
    ref.load_state_dict(ours.state_dict())
    assert isinstance(ours, torch.nn.ConvTranspose2d) and repr(ours) == repr(ref)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, device=device, requires_grad=True)
    for output_size in (None, [10, 10], (2, 3, 9, 10)):  # output_size picks the output padding
        y, y_ref = ours(x, output_size=output_size), ref(x.detach().cpu(), output_size=output_size)
        assert y.shape == y_ref.shape
        assert_close(y, y_ref, 4 * 9)


def test_convert_replaces_conv_transpose():
    model = torch.nn.Sequential(torch.nn.ConvTranspose2d(2, 3, 2, stride=2), torch.nn.ReLU())
    weight = model[0].weight
    convtri.convert(model)
    assert type(model[0]) is convtri.nn.ConvTranspose2d and model[0].weight is weight


# ----------------------------------------------------------------------------- bad input

x4 = lambda *s: torch.randn(*s)
BAD_INPUT = [  # (description, call, the word the message must name)
    ("2-D input", lambda f: f(x4(8, 8), x4(4, 2, 3, 3)), "input"),
    ("5-D input", lambda f: f(x4(1, 4, 2, 8, 8), x4(4, 2, 3, 3)), "input"),
    ("3-D weight", lambda f: f(x4(1, 4, 8, 8), x4(4, 2, 3)), "weight"),
    ("channel mismatch", lambda f: f(x4(1, 3, 8, 8), x4(4, 2, 3, 3)), "channels"),
    ("groups not dividing C_in", lambda f: f(x4(1, 4, 8, 8), x4(4, 2, 3, 3), groups=3), "groups"),
    ("output_padding too large", lambda f: f(x4(1, 4, 8, 8), x4(4, 2, 3, 3), stride=2, output_padding=2),
     "output_padding"),
    ("zero stride", lambda f: f(x4(1, 4, 8, 8), x4(4, 2, 3, 3), stride=0), "stride"),
    ("negative padding", lambda f: f(x4(1, 4, 8, 8), x4(4, 2, 3, 3), padding=-1), "padding"),
    ("bias shape", lambda f: f(x4(1, 4, 8, 8), x4(4, 2, 3, 3), x4(4)), "bias"),
    ("weight dtype", lambda f: f(x4(1, 4, 8, 8), x4(4, 2, 3, 3).double()), "dtype"),
    ("string padding", lambda f: f(x4(1, 4, 8, 8), x4(4, 2, 3, 3), padding="same"), "padding"),
    ("three strides", lambda f: f(x4(1, 4, 8, 8), x4(4, 2, 3, 3), stride=(1, 2, 3)), "stride"),
    ("input not a tensor", lambda f: f([[1.0]], x4(4, 2, 3, 3)), "input"),
]


@pytest.mark.parametrize("description, call, word", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_raises_like_torch(description, call, word):
    with pytest.raises((TypeError, RuntimeError, ValueError)) as torch_error:
        call(F.conv_transpose2d)
    with pytest.raises(torch_error.type, match=word):  # the same exception type as torch
        call(convtri.conv_transpose2d)
