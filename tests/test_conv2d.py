"""conv2d, corr2d and nn.Conv2d against torch (float64 references), on every device present."""
import pytest
import torch
import torch.nn.functional as F

import convtri
import parity
from tolerances import assert_close

# (input shape, weight shape, conv kwargs), each picked for what it exercises
PARITY_CASES = [
    ((2, 3, 7, 9), (4, 3, 3, 3), {}),  # odd H and W, no padding
    ((2, 3, 9, 8), (4, 3, 3, 3), dict(stride=2, padding=1)),  # stride 2: two stride phases per axis in dgrad
    ((1, 2, 11, 10), (3, 2, 3, 3), dict(stride=3)),  # stride 3: trailing input rows no window reads
    ((2, 2, 10, 9), (3, 2, 3, 3), dict(dilation=2, padding=2)),  # dilation 2
    ((2, 3, 9, 12), (4, 3, 3, 2), dict(stride=(2, 3), padding=(2, 1))),  # asymmetric kernel, stride, padding
    ((2, 4, 8, 8), (6, 2, 3, 3), dict(groups=2, padding=1)),  # groups
    ((2, 5, 7, 7), (5, 1, 3, 3), dict(groups=5, padding=1, stride=2)),  # depthwise with stride 2
    ((2, 8, 5, 6), (16, 8, 1, 1), {}),  # 1x1 conv: a plain GEMM over channels
    ((2, 3, 8, 8), (4, 3, 4, 2), dict(padding=1)),  # even kernel sizes
    ((2, 3, 8, 7), (4, 3, 4, 4), dict(padding="same")),  # 'same', even kernel: extra pad bottom/right
    ((2, 3, 9, 9), (4, 3, 3, 3), dict(padding="same", dilation=(2, 1))),  # 'same' with dilation
    ((2, 3, 6, 6), (4, 3, 3, 3), dict(padding="valid")),  # 'valid'
    ((4, 1, 28, 28), (6, 1, 5, 5), dict(padding=2)),  # LeNet C1 (batch cut to 4)
    ((4, 6, 14, 14), (16, 6, 5, 5), {}),  # LeNet C3 (batch cut to 4)
    ((2, 3, 5, 5), (4, 3, 5, 5), {}),  # kernel as large as the input: 1x1 output
    ((2, 3, 6, 7), (4, 3, 3, 3), dict(stride=2, dilation=2, padding=3)),  # stride with dilation: phases skip taps
    ((3, 70, 4, 4), (20, 70, 3, 3), dict(padding=1)),  # 70 channels: several channel blocks, masked tail
    # more than 16 channels on both sides: every GEMM reduces tap by tap (not FLAT_TAPS), strided
    ((2, 20, 7, 6), (24, 20, 3, 3), dict(stride=2, padding=1)),
]


def reduction_lengths(x, w, y, groups=1, **_):
    """Length of the sums behind y, dx, dw and db."""
    k, c_per_group, r, s = w.shape
    n_p_q = y.shape[0] * y.shape[2] * y.shape[3]
    return c_per_group * r * s, k // groups * r * s, n_p_q, n_p_q


def check_parity(x, w, b, **kwargs):
    """Our forward and gradients against torch's in float64 from the same inputs."""
    lengths = lambda y: reduction_lengths(x, w, y, **kwargs)
    return parity.check_parity(convtri.conv2d, F.conv2d, (x, w, b), lengths, **kwargs)


@pytest.mark.parametrize("x_shape, w_shape, kwargs", PARITY_CASES)
def test_parity_float64(x_shape, w_shape, kwargs, device):
    x = torch.randn(x_shape, dtype=torch.float64, device=device)
    w = torch.randn(w_shape, dtype=torch.float64, device=device)
    b = torch.randn(w_shape[0], dtype=torch.float64, device=device)
    check_parity(x, w, b, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((2, 16, 9, 9), (32, 16, 3, 3), dict(padding=1, stride=2)),  # tensor-core sized channels, strided
    ((2, 6, 10, 10), (6, 2, 3, 3), dict(groups=3, dilation=2)),  # grouped, dilated, narrow
])
def test_parity_low_precision(dtype, x_shape, w_shape, kwargs, device):
    x = torch.randn(x_shape, dtype=dtype, device=device)
    w = torch.randn(w_shape, dtype=dtype, device=device)
    b = torch.randn(w_shape[0], dtype=dtype, device=device)
    check_parity(x, w, b, **kwargs)


def test_gradcheck(device):
    # stride 2, asymmetric padding, groups: every index path in a problem tiny enough for
    # the full (element by element) check through the interpreter
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(2, 1, 2, 2, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, device=device, requires_grad=True)
    fn = lambda x, w, b: convtri.conv2d(x, w, b, stride=2, padding=(1, 0), groups=2)
    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_gradcheck_larger(device):
    # the same paths at a size where only gradcheck's fast mode (random projections) is cheap
    x = torch.randn(1, 4, 5, 6, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(4, 2, 3, 2, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, device=device, requires_grad=True)
    fn = lambda x, w, b: convtri.conv2d(x, w, b, stride=2, padding=(1, 2), dilation=(1, 2), groups=2)
    assert torch.autograd.gradcheck(fn, (x, w, b), fast_mode=True)


def test_gradcheck_padding_modes(device):
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
    for mode in ("reflect", "replicate", "circular"):
        fn = lambda x, w: convtri.conv2d(x, w, padding=(1, 2), padding_mode=mode)
        assert torch.autograd.gradcheck(fn, (x, w), fast_mode=True)


def test_without_bias(device):
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64, device=device)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, device=device)
    check_parity(x, w, None, padding=1)


def test_only_needed_gradients(device):
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, device=device)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, device=device)
    b = torch.randn(4, dtype=torch.float64, device=device, requires_grad=True)
    convtri.conv2d(x, w, b).sum().backward()  # only the bias wants a gradient
    torch.testing.assert_close(b.grad, torch.full_like(b, 2 * 4 * 4))
    assert x.grad is None and w.grad is None
    x.requires_grad_()
    (dx,) = torch.autograd.grad(convtri.conv2d(x, w).sum(), [x])  # input gradient only
    x_ref = x.detach().cpu().requires_grad_()
    (dx_ref,) = torch.autograd.grad(F.conv2d(x_ref, w.cpu()).sum(), [x_ref])
    assert_close(dx, dx_ref, 4 * 9)


# ----------------------------------------------------------------------------- layouts

def test_channels_last(device):
    x = torch.randn(2, 8, 7, 9, dtype=torch.float64, device=device).to(memory_format=torch.channels_last)
    w = torch.randn(6, 8, 3, 3, dtype=torch.float64, device=device)
    b = torch.randn(6, dtype=torch.float64, device=device)
    y, dx, dw, db = check_parity(x, w, b, padding=1, stride=2)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert dx.is_contiguous(memory_format=torch.channels_last)
    # a channels_last weight alone also makes the output channels_last, as in torch
    y = convtri.conv2d(x.contiguous(), w.to(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert F.conv2d(x.contiguous(), w.to(memory_format=torch.channels_last)).is_contiguous(
        memory_format=torch.channels_last)


def test_strided_views(device):
    # sliced, stepped and transposed views are read through their strides
    base = torch.randn(3, 10, 12, 14, dtype=torch.float64, device=device)
    x = base[1:, ::2, 1:10, ::2]
    wbase = torch.randn(4, 5, 3, 3, dtype=torch.float64, device=device)
    w = wbase.transpose(2, 3)
    assert not x.is_contiguous() and not w.is_contiguous()
    check_parity(x, w, None, padding=1)


def test_strided_bias(device):
    # a bias that is a view with stride 2: the kernels once read it as contiguous
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, device=device)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, device=device)
    b = torch.randn(8, dtype=torch.float64, device=device)[::2]
    check_parity(x, w, b, padding=1)


def test_unbatched(device):
    x = torch.randn(3, 8, 7, dtype=torch.float64, device=device)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, device=device)
    y = convtri.conv2d(x, w, padding=1)
    assert y.shape == (4, 8, 7)
    assert_close(y, F.conv2d(x.cpu(), w.cpu(), padding=1), 27)


def test_empty_batch(device):
    x = torch.randn(0, 3, 8, 8, device=device, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
    b = torch.randn(4, device=device, requires_grad=True)
    y = convtri.conv2d(x, w, b)
    assert y.shape == (0, 4, 6, 6)
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.all(w.grad == 0) and torch.all(b.grad == 0)


def test_inputs_are_not_modified(device):
    x = torch.randn(2, 3, 7, 7, device=device, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
    b = torch.randn(4, device=device, requires_grad=True)
    before = [t.detach().clone() for t in (x, w, b)]
    dy = torch.randn(2, 4, 4, 4, device=device)
    dy_before = dy.clone()
    convtri.conv2d(x, w, b, stride=2, padding=1).backward(dy)
    for t, saved in zip((x, w, b, dy), before + [dy_before]):
        assert torch.equal(t.detach(), saved)


def test_deterministic(device):
    x = torch.randn(4, 8, 10, 10, device=device, requires_grad=True)
    w = torch.randn(8, 8, 3, 3, device=device, requires_grad=True)
    runs = []
    for _ in range(2):
        y = convtri.conv2d(x, w, padding=1)
        runs.append((y, *torch.autograd.grad(y, (x, w), torch.ones_like(y))))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_never_calls_torch_conv(device, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("convtri called torch's convolution")
    for module, name in [(torch, "conv2d"), (torch, "convolution"), (F, "conv2d"), (F, "unfold"),
                         (torch.nn.grad, "conv2d_input"), (torch.nn.grad, "conv2d_weight")]:
        monkeypatch.setattr(module, name, forbidden)
    x = torch.randn(1, 2, 6, 6, device=device, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, device=device, requires_grad=True)
    convtri.conv2d(x, w, padding=1, stride=2).sum().backward()
    convtri.nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect").to(device)(x).sum().backward()


# ----------------------------------------------------------------------------- the chapter

def test_corr2d_chapter_example():
    X = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])
    K = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    torch.testing.assert_close(convtri.corr2d(X, K), torch.tensor([[19.0, 25.0], [37.0, 43.0]]))


def test_corr2d_edge_detection():
    X = torch.ones(6, 8)
    X[:, 2:6] = 0  # a black stripe between white columns
    K = torch.tensor([[1.0, -1.0]])
    expected = torch.zeros(6, 7)
    expected[:, 1], expected[:, 5] = 1.0, -1.0  # white->black edge, black->white edge
    torch.testing.assert_close(convtri.corr2d(X, K), expected)
    torch.testing.assert_close(convtri.corr2d(X.t(), K), torch.zeros(8, 5))  # horizontal edges are invisible


def test_learn_edge_kernel():
    """The chapter's exercise: recover K = [1, -1] from X and Y by gradient descent."""
    X = torch.ones(6, 8)
    X[:, 2:6] = 0
    Y = convtri.corr2d(X, torch.tensor([[1.0, -1.0]]))
    conv = convtri.nn.Conv2d(1, 1, kernel_size=(1, 2), bias=False)
    for _ in range(20):
        loss = ((conv(X[None, None]) - Y) ** 2).sum()
        conv.zero_grad()
        loss.backward()
        conv.weight.data -= 3e-2 * conv.weight.grad
    torch.testing.assert_close(conv.weight.data.reshape(2), torch.tensor([1.0, -1.0]), atol=0.05, rtol=0)


def test_corr2d_is_differentiable():
    X = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    K = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(convtri.corr2d, (X, K), fast_mode=True)


# ----------------------------------------------------------------------------- nn.Conv2d

@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_module_padding_modes(padding_mode, device):
    # asymmetric padding (2, 1) and stride 2 so every border of the fold is exercised
    ours = convtri.nn.Conv2d(3, 4, (3, 2), stride=2, padding=(2, 1), padding_mode=padding_mode).double().to(device)
    ref = torch.nn.Conv2d(3, 4, (3, 2), stride=2, padding=(2, 1), padding_mode=padding_mode).double()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, device=device, requires_grad=True)
    x_ref = x.detach().cpu().requires_grad_()
    y, y_ref = ours(x), ref(x_ref)
    assert_close(y, y_ref, 18)
    dy = torch.randn_like(y)
    y.backward(dy)
    y_ref.backward(dy.cpu())
    assert_close(x.grad, x_ref.grad, 4 * 6)
    assert_close(ours.weight.grad, ref.weight.grad, y.numel() // 4)
    assert_close(ours.bias.grad, ref.bias.grad, y.numel() // 4)


@pytest.mark.parametrize("padding_mode", ["reflect", "circular"])
def test_module_same_padding_modes(padding_mode, device):
    # 'same' with an even kernel pads one more row at the bottom than at the top
    ours = convtri.nn.Conv2d(2, 3, 4, padding="same", padding_mode=padding_mode).double().to(device)
    ref = torch.nn.Conv2d(2, 3, 4, padding="same", padding_mode=padding_mode).double()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, device=device, requires_grad=True)
    x_ref = x.detach().cpu().requires_grad_()
    y, y_ref = ours(x), ref(x_ref)
    assert_close(y, y_ref, 32)
    y.sum().backward()
    y_ref.sum().backward()
    assert_close(x.grad, x_ref.grad, 48)


def test_module_state_dict_interchange():
    ref = torch.nn.Conv2d(3, 6, 5, stride=2, padding=1, groups=3)
    ours = convtri.nn.Conv2d(3, 6, 5, stride=2, padding=1, groups=3)
    ours.load_state_dict(ref.state_dict())
    back = torch.nn.Conv2d(3, 6, 5, stride=2, padding=1, groups=3)
    back.load_state_dict(ours.state_dict())
    assert isinstance(ours, torch.nn.Conv2d)
    assert repr(ours).endswith(repr(ref).split("(", 1)[1])
    for key, value in ref.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)
    x = torch.randn(2, 3, 11, 11)
    assert_close(ours(x), ref(x).detach().double(), 3 * 25 // 3)


# ----------------------------------------------------------------------------- bad input

x4 = lambda *s: torch.randn(*s)
BAD_INPUT = [  # (description, call, the word the message must name)
    ("2-D input", lambda f: f(x4(8, 8), x4(6, 4, 3, 3)), "input"),
    ("5-D input", lambda f: f(x4(1, 2, 4, 8, 8), x4(6, 4, 3, 3)), "input"),
    ("3-D weight", lambda f: f(x4(2, 4, 8, 8), x4(6, 4, 3)), "weight"),
    ("channel mismatch", lambda f: f(x4(2, 4, 8, 8), x4(6, 3, 3, 3)), "channels"),
    ("groups not dividing C", lambda f: f(x4(2, 4, 8, 8), x4(6, 4, 3, 3), groups=3), "groups"),
    ("groups not dividing K", lambda f: f(x4(2, 4, 8, 8), x4(5, 2, 3, 3), groups=2), "groups"),
    ("zero groups", lambda f: f(x4(2, 4, 8, 8), x4(6, 4, 3, 3), groups=0), "groups"),
    ("negative padding", lambda f: f(x4(2, 4, 8, 8), x4(6, 4, 3, 3), padding=-1), "padding"),
    ("zero stride", lambda f: f(x4(2, 4, 8, 8), x4(6, 4, 3, 3), stride=0), "stride"),
    ("negative stride", lambda f: f(x4(2, 4, 8, 8), x4(6, 4, 3, 3), stride=(1, -2)), "stride"),
    ("zero dilation", lambda f: f(x4(2, 4, 8, 8), x4(6, 4, 3, 3), dilation=0), "dilation"),
    ("kernel larger than padded input", lambda f: f(x4(2, 4, 8, 8), x4(6, 4, 9, 9)), "kernel"),
    ("'same' with stride 2", lambda f: f(x4(2, 4, 8, 8), x4(6, 4, 3, 3), padding="same", stride=2), "same"),
    ("unknown padding string", lambda f: f(x4(2, 4, 8, 8), x4(6, 4, 3, 3), padding="full"), "padding"),
    ("weight dtype", lambda f: f(x4(2, 4, 8, 8), x4(6, 4, 3, 3).double()), "dtype"),
    ("bias dtype", lambda f: f(x4(2, 4, 8, 8), x4(6, 4, 3, 3), x4(6).double()), "bias"),
    ("bias shape", lambda f: f(x4(2, 4, 8, 8), x4(6, 4, 3, 3), x4(5)), "bias"),
    ("three strides", lambda f: f(x4(2, 4, 8, 8), x4(6, 4, 3, 3), stride=(1, 2, 3)), "stride"),
    ("float stride", lambda f: f(x4(2, 4, 8, 8), x4(6, 4, 3, 3), stride=1.5), "stride"),
    ("float padding", lambda f: f(x4(2, 4, 8, 8), x4(6, 4, 3, 3), padding=1.0), "padding"),
    ("input not a tensor", lambda f: f([[1.0]], x4(6, 4, 3, 3)), "input"),
]


@pytest.mark.parametrize("description, call, word", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_raises_like_torch(description, call, word):
    with pytest.raises((TypeError, RuntimeError)) as torch_error:
        call(F.conv2d)
    with pytest.raises(torch_error.type, match=word):  # the same exception type as torch
        call(convtri.conv2d)


def test_integer_dtype_is_refused():
    # we state plainly that we compute no integer conv, with torch's exception type for a dtype
    # its conv does not implement (PyTorch's OpInfo error_inputs for conv2d and conv1d expect it)
    with pytest.raises(RuntimeError, match="input must have a floating-point dtype"):
        convtri.conv2d(torch.ones(1, 1, 4, 4, dtype=torch.long), torch.ones(1, 1, 3, 3, dtype=torch.long))


def test_device_mismatch_without_gpu():
    with pytest.raises(RuntimeError, match="weight is on meta"):
        convtri.conv2d(torch.randn(1, 1, 4, 4), torch.randn(1, 1, 3, 3, device="meta"))


def test_meta_tensors_give_shapes_like_torch():
    # meta tensors (shape inference, models built on the meta device) run no kernel and get
    # the output size and memory format of torch's real computation (torch's own meta kernel
    # returns NCHW for this channels_last input)
    x = torch.randn(2, 3, 9, 8).to(memory_format=torch.channels_last)
    w = torch.randn(4, 3, 3, 2)
    y = convtri.conv2d(x.to("meta"), w.to("meta"), stride=2, padding=1)
    y_ref = F.conv2d(x, w, stride=2, padding=1)
    assert y.device.type == "meta" and y.shape == y_ref.shape and y.stride() == y_ref.stride()


@pytest.mark.gpu
def test_device_mismatch():
    with pytest.raises(RuntimeError, match="weight is on"):
        convtri.conv2d(torch.randn(1, 1, 4, 4, device="cuda"), torch.randn(1, 1, 3, 3))


def test_bad_padding_mode():
    with pytest.raises(ValueError, match="padding_mode"):
        convtri.conv2d(x4(1, 1, 4, 4), x4(1, 1, 3, 3), padding_mode="mirror")
    with pytest.raises(RuntimeError, match="reflect padding"):
        convtri.conv2d(x4(1, 1, 4, 4), x4(1, 1, 3, 3), padding=4, padding_mode="reflect")
