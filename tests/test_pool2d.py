"""max_pool2d, avg_pool2d, adaptive_avg_pool2d and their nn modules against torch (float64
references), on every device present."""
import math

import pytest
import torch
import torch.nn.functional as F

import convtri
from tolerances import assert_close

OPS = {  # name -> (ours, torch's)
    "max": (convtri.max_pool2d, F.max_pool2d),
    "avg": (convtri.avg_pool2d, F.avg_pool2d),
    "adaptive": (convtri.adaptive_avg_pool2d, F.adaptive_avg_pool2d),
}

# (op, input shape, kwargs), each picked for what it exercises
PARITY_CASES = [
    ("max", (2, 3, 8, 8), dict(kernel_size=2)),  # LeNet's 2x2/2 subsampling, stride defaulting to the kernel
    ("max", (2, 3, 9, 9), dict(kernel_size=3, stride=2, padding=1)),  # the classic 3x3/2 with padding 1, odd size
    ("max", (2, 3, 8, 7), dict(kernel_size=3, stride=2, ceil_mode=True)),  # ceil_mode: last window overhangs
    # ceil_mode drops the window that would start in the bottom padding (H=7: 4 rows, not 5)
    ("max", (1, 2, 7, 6), dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)),
    ("max", (2, 3, 9, 12), dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 0))),  # asymmetric kernel/stride/pad
    ("max", (2, 2, 10, 9), dict(kernel_size=3, dilation=2, padding=1)),  # dilation
    ("max", (2, 2, 9, 10), dict(kernel_size=(2, 3), stride=1, dilation=(3, 1), padding=1, ceil_mode=True)),
    # asymmetric dilation, stride 1: overlapping windows, one pixel the maximum of several
    ("max", (1, 2, 11, 10), dict(kernel_size=2, stride=[3])),  # stride > kernel: unread pixels; a one-element list
    ("avg", (2, 3, 8, 8), dict(kernel_size=2, stride=[])),  # LeNet's 2x2/2; stride=[] means the kernel, as torch
    ("avg", (2, 3, 9, 9), dict(kernel_size=3, stride=2, padding=1)),  # the classic 3x3/2 with padding 1
    ("avg", (2, 3, 9, 9), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),  # in-bounds divisor
    ("avg", (2, 3, 8, 8), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),  # ceil_mode overhang beyond
    # the padding: the last window's divisor counts its padding but not the overhang
    ("avg", (2, 3, 8, 7), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    # ceil_mode with count_include_pad=False
    ("avg", (2, 3, 7, 8), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, divisor_override=5)),
    # divisor_override wins over both counts
    ("avg", (2, 3, 9, 12), dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 0))),  # asymmetric kernel/stride/pad
    ("avg", (1, 2, 11, 10), dict(kernel_size=2, stride=3)),  # stride > kernel: unread pixels get zero gradient
    ("adaptive", (2, 3, 9, 10), dict(output_size=1)),  # global average pooling
    ("adaptive", (2, 3, 10, 9), dict(output_size=(4, 5))),  # non-divisible: unequal, overlapping windows
    ("adaptive", (2, 3, 8, 8), dict(output_size=4)),  # divisible: plain 2x2/2 windows
    ("adaptive", (2, 3, 5, 4), dict(output_size=(7, 6))),  # output larger than input: pixels repeat
    ("adaptive", (2, 3, 9, 10), dict(output_size=(None, 3))),  # None keeps the input's height
]


def window_area(op, x_shape, kwargs):
    """Length of the sums behind an output (and, bounded alike, behind an input gradient)."""
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
    if op == "adaptive":
        sizes = [s if s is not None else i for s, i in zip(pair(kwargs["output_size"]), x_shape[-2:])]
        return math.prod(math.ceil(i / s) + 1 for i, s in zip(x_shape[-2:], sizes))
    return math.prod(pair(kwargs["kernel_size"]))


def forward_backward(fn, x, dy, **kwargs):
    """(y, dx, indices or None) of one pooling op."""
    x = x.detach().requires_grad_()
    out = fn(x, **kwargs)
    y, idx = out if isinstance(out, tuple) else (out, None)
    (dx,) = torch.autograd.grad(y, x, dy)
    return y, dx, idx


def check_parity(op, x, **kwargs):
    """Our forward, indices and input gradient against torch's in float64 from the same inputs."""
    ours, ref_fn = OPS[op]
    if op == "max":
        kwargs = kwargs | dict(return_indices=True)
    x_ref = x.detach().double().cpu()
    out_ref = ref_fn(x_ref, **kwargs)
    dy = torch.randn((out_ref[0] if op == "max" else out_ref).shape, dtype=x.dtype, device=x.device)
    y, dx, idx = forward_backward(ours, x, dy, **kwargs)
    y_ref, dx_ref, idx_ref = forward_backward(ref_fn, x_ref, dy.double().cpu(), **kwargs)
    length = window_area(op, x.shape, kwargs)
    for got in (y, dx):
        assert got.dtype == x.dtype and got.device == x.device
    if op == "max":  # a maximum is exact in every dtype, and so are its indices
        assert idx.dtype == torch.int64 and idx.device == x.device
        torch.testing.assert_close(y.double().cpu(), y_ref, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(idx.cpu(), idx_ref)
    else:
        assert_close(y, y_ref, length)
    assert_close(dx, dx_ref, length)
    return y, dx, idx


@pytest.mark.parametrize("op, x_shape, kwargs", PARITY_CASES)
def test_parity_float64(op, x_shape, kwargs, device):
    x = torch.randn(x_shape, dtype=torch.float64, device=device)
    check_parity(op, x, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("op, kwargs", [
    ("max", dict(kernel_size=3, stride=2, padding=1)),  # overlapping windows: gradients add in fp32
    ("avg", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("adaptive", dict(output_size=(3, 4))),  # non-divisible windows
])
def test_parity_low_precision(dtype, op, kwargs, device):
    x = torch.randn(2, 3, 9, 10, dtype=dtype, device=device)
    check_parity(op, x, **kwargs)


def test_indices_feed_max_unpool2d(device):
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64, device=device)
    kwargs = dict(kernel_size=3, stride=2, padding=1)
    y, idx = convtri.max_pool2d(x, return_indices=True, **kwargs)
    y_ref, idx_ref = F.max_pool2d(x, return_indices=True, **kwargs)
    unpooled = F.max_unpool2d(y, idx, output_size=x.shape[-2:], **kwargs)
    assert torch.equal(unpooled, F.max_unpool2d(y_ref, idx_ref, output_size=x.shape[-2:], **kwargs))


def test_max_pool_without_indices(device):
    # without return_indices and without a graph to build, the kernel writes no indices
    # (SAVE=False); the maxima are the same, and asked-for indices still come
    x = torch.randn(2, 3, 8, 9, dtype=torch.float64, device=device)
    y_ref = F.max_pool2d(x.cpu(), 3, 2, 1)
    assert torch.equal(convtri.max_pool2d(x, 3, 2, 1).cpu(), y_ref)
    with torch.no_grad():
        assert torch.equal(convtri.max_pool2d(x.requires_grad_(), 3, 2, 1).cpu(), y_ref)
        _, idx = convtri.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert torch.equal(idx.cpu(), F.max_pool2d(x.detach().cpu(), 3, 2, 1, return_indices=True)[1])


# ----------------------------------------------------------------------------- gradcheck

@pytest.mark.parametrize("op, x_shape, kwargs, fast", [
    # tiny enough for the full (element by element) check through the interpreter
    ("max", (1, 2, 3, 4), dict(kernel_size=2, stride=(1, 2), padding=1), False),
    ("avg", (1, 2, 3, 4), dict(kernel_size=(2, 3), stride=2, padding=1, ceil_mode=True), False),
    ("adaptive", (1, 2, 3, 5), dict(output_size=(2, 3)), False),
    # every index path at a size where only fast mode (random projections) is cheap
    ("max", (1, 3, 7, 8), dict(kernel_size=(3, 2), stride=(2, 1), padding=1, dilation=(1, 2), ceil_mode=True), True),
    ("avg", (1, 3, 7, 8), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), True),
    ("avg", (1, 3, 7, 8), dict(kernel_size=(2, 3), stride=(1, 2), divisor_override=4), True),
    ("adaptive", (1, 3, 7, 8), dict(output_size=(3, 11)), True),
])
def test_gradcheck(op, x_shape, kwargs, fast, device):
    x = torch.randn(x_shape, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: OPS[op][0](x, **kwargs), (x,), fast_mode=fast)


# ----------------------------------------------------------------------------- special values

def test_max_pool_special_values(device):
    nan, inf = float("nan"), float("inf")
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    x[0, 0, 0, 0] = x[0, 0, 1, 1] = nan  # two NaNs in a window: NaN wins, the later one's index (as torch)
    x[0, 0, 4:, 5] = nan  # a NaN column shared by overlapping windows
    x[0, 1, 2:4, 2:4] = inf  # +inf beats everything but NaN
    x[0, 2] = -inf  # windows of -inf: the padding (-inf too) never wins; the first in-bounds tap's index
    x[1, 0] = 1.5  # all-equal windows: the first tap wins
    x[1, 1, ::2] = 0.25  # ties between rows only
    x[1, 2, :, :4] = -inf  # -inf beside finite values
    check_parity("max", x.to(device), kernel_size=3, stride=2, padding=1)


@pytest.mark.parametrize("op, kwargs", [
    ("avg", dict(kernel_size=3, stride=2, padding=1)),
    ("adaptive", dict(output_size=(3, 5))),
])
def test_avg_pool_special_values(op, kwargs, device):
    nan, inf = float("nan"), float("inf")
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    x[0, 0, 2, 2] = nan  # NaN spreads to every window that reads it
    x[0, 1, 1, 1] = inf  # +inf alone: an infinite mean
    x[0, 2, 0, 0], x[0, 2, 0, 1] = inf, -inf  # +inf and -inf in one window: NaN
    x[0, 2, 5:, 5:] = 2.0  # constant windows average exactly
    ours, ref_fn = OPS[op]
    dy = torch.randn(ref_fn(x, **kwargs).shape, dtype=torch.float64)
    y, dx, _ = forward_backward(ours, x.to(device), dy.to(device), **kwargs)
    y_ref, dx_ref, _ = forward_backward(ref_fn, x, dy, **kwargs)
    torch.testing.assert_close(y.cpu(), y_ref, equal_nan=True)
    assert_close(dx, dx_ref, 9)  # gradients do not depend on x: they stay finite


# ----------------------------------------------------------------------------- layouts

LAYOUT_CASES = [
    ("max", dict(kernel_size=3, stride=2, padding=1)),
    ("avg", dict(kernel_size=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("adaptive", dict(output_size=(3, 2))),
    ("adaptive", dict(output_size=1)),  # a 1x1 channels_last output has channels_last strides, as torch's
]


@pytest.mark.parametrize("op, kwargs", LAYOUT_CASES)
def test_channels_last(op, kwargs, device):
    # channels_last in -> channels_last out, and the input gradient too, as torch
    x = torch.randn(2, 5, 7, 9, dtype=torch.float64, device=device).to(memory_format=torch.channels_last)
    y, dx, _ = check_parity(op, x, **kwargs)
    out_ref = OPS[op][1](x, **kwargs)
    assert y.stride() == out_ref.stride()
    x_ref = x.detach().requires_grad_()  # torch's input gradient format, from the very same tensor
    (dx_ref,) = torch.autograd.grad(OPS[op][1](x_ref, **kwargs).sum(), x_ref)
    if kwargs.get("output_size") != 1:  # torch's global pooling is a mean, whose gradient takes dy's format
        assert dx.stride() == dx_ref.stride()
    assert dx.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("op, kwargs", LAYOUT_CASES[:3])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_strided_views(op, kwargs, layout, device):
    # sliced and stepped views are read through their strides; the output format follows torch's
    base = torch.randn(3, 8, 12, 14, dtype=torch.float64, device=device)
    if layout == "channels_last":
        base = base.to(memory_format=torch.channels_last)
    x = base[1:, 1::2, 1:10, ::2]
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    y, _, _ = check_parity(op, x, **kwargs)
    assert y.stride() == OPS[op][1](x, **kwargs).stride()


@pytest.mark.parametrize("op, kwargs", LAYOUT_CASES[:3])
def test_unbatched(op, kwargs, device):
    x = torch.randn(3, 7, 9, dtype=torch.float64, device=device)
    y, dx, idx = check_parity(op, x, **kwargs)
    assert y.dim() == 3 and dx.shape == x.shape
    if op == "max":
        assert idx.dim() == 3


@pytest.mark.parametrize("op, kwargs, batch", [case + (0,) for case in LAYOUT_CASES[:3]] + [
    ("adaptive", dict(output_size=0), 2),  # adaptive pooling to size 0, which torch allows
])
def test_empty(op, kwargs, batch, device):
    # an empty batch gives an empty result, and an empty (zero) input gradient
    x = torch.randn(batch, 3, 7, 9, device=device, requires_grad=True)
    y = OPS[op][0](x, **kwargs)
    assert y.shape == OPS[op][1](x.detach().cpu(), **kwargs).shape
    y.sum().backward()
    assert x.grad.shape == x.shape and torch.all(x.grad == 0)


def test_inputs_are_not_modified(device):
    x = torch.randn(2, 3, 7, 7, device=device, requires_grad=True)
    before = x.detach().clone()
    for op, kwargs in LAYOUT_CASES:
        y = OPS[op][0](x, **kwargs)
        dy = torch.randn_like(y)
        dy_before = dy.clone()
        y.backward(dy)
        assert torch.equal(x.detach(), before) and torch.equal(dy, dy_before)


def test_double_backward_is_refused(device):
    # our backward kernels are not differentiable: a derivative through them (here of dx with
    # respect to dy) is an error, not silently zero
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64, device=device, requires_grad=True)
    for op, kwargs in LAYOUT_CASES[:3]:
        y = OPS[op][0](x, **kwargs)
        dy = torch.randn_like(y, requires_grad=True)
        (dx,) = torch.autograd.grad(y, x, dy, create_graph=True)
        with pytest.raises(RuntimeError, match="differentiate twice"):
            dx.sum().backward()


def test_never_calls_torch_pooling(device, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("convtri called torch's pooling")
    for module, name in [(F, "max_pool2d"), (F, "max_pool2d_with_indices"), (F, "avg_pool2d"),
                         (F, "adaptive_avg_pool2d"), (F, "unfold"), (F, "fold"), (torch, "max_pool2d"),
                         (torch._C._nn, "max_pool2d_with_indices"), (torch._C._nn, "avg_pool2d"),
                         (torch._C._nn, "adaptive_avg_pool2d"), (torch._C._nn, "im2col"), (torch.Tensor, "unfold")]:
        monkeypatch.setattr(module, name, forbidden)
    x = torch.randn(1, 2, 6, 6, device=device, requires_grad=True)
    for op, kwargs in LAYOUT_CASES[:3]:
        OPS[op][0](x, **kwargs).sum().backward()
    for module in (convtri.nn.MaxPool2d(2), convtri.nn.AvgPool2d(2), convtri.nn.AdaptiveAvgPool2d(1)):
        module(x).sum().backward()


# ----------------------------------------------------------------------------- modules

MODULES = [  # (ours, torch's, constructor args, constructor kwargs)
    (convtri.nn.MaxPool2d, torch.nn.MaxPool2d, (3,), dict(stride=2, padding=1, dilation=(1, 2), ceil_mode=True)),
    (convtri.nn.MaxPool2d, torch.nn.MaxPool2d, (2,), dict(return_indices=True)),
    (convtri.nn.AvgPool2d, torch.nn.AvgPool2d, ((3, 2),),
     dict(stride=(2, 1), padding=(1, 0), ceil_mode=True, count_include_pad=False)),
    (convtri.nn.AvgPool2d, torch.nn.AvgPool2d, (2,), dict(divisor_override=3)),
    (convtri.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool2d, ((None, 3),), {}),
    (convtri.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool2d, (1,), {}),
]


@pytest.mark.parametrize("ours_cls, ref_cls, args, kwargs", MODULES, ids=lambda v: getattr(v, "__name__", None))
def test_modules(ours_cls, ref_cls, args, kwargs, device):
    ours, ref = ours_cls(*args, **kwargs), ref_cls(*args, **kwargs)
    assert isinstance(ours, ref_cls)
    assert repr(ours) == repr(ref) and ours.state_dict() == ref.state_dict() == {}
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64, device=device, requires_grad=True)
    x_ref = x.detach().cpu().requires_grad_()
    y, y_ref = ours(x), ref(x_ref)
    if isinstance(y_ref, tuple):
        assert torch.equal(y[1].cpu(), y_ref[1])
        y, y_ref = y[0], y_ref[0]
    assert_close(y, y_ref, 6)
    dy = torch.randn_like(y)
    y.backward(dy)
    y_ref.backward(dy.cpu())
    assert_close(x.grad, x_ref.grad, 6)


# ----------------------------------------------------------------------------- bad input

x4 = torch.randn(1, 2, 5, 5)
BAD_INPUT = [  # (description, op, args, kwargs, the words the message must hold)
    ("zero kernel", "max", (x4, 0), dict(stride=1), "kernel_size"),
    ("zero kernel, stride defaulting to it", "avg", (x4, 0), {}, "kernel_size"),  # torch names stride
    ("negative kernel", "avg", (x4, (2, -1)), dict(stride=1), "kernel_size"),
    ("zero stride", "max", (x4, 2), dict(stride=0), "stride"),
    ("negative stride", "avg", (x4, 2), dict(stride=(1, -1)), "stride"),
    ("zero dilation", "max", (x4, 2), dict(dilation=0), "dilation"),
    ("negative padding", "max", (x4, 2), dict(padding=-1), "padding"),
    ("padding above half the kernel", "max", (x4, 3), dict(padding=2), "padding"),
    ("padding above half the kernel, avg", "avg", (x4, (2, 4)), dict(padding=(1, 3)), "padding"),
    ("dilation does not raise the padding limit", "max", (x4, 2), dict(dilation=3, padding=2), "padding"),
    ("empty output", "max", (x4, 6), {}, "output size is too small"),
    ("empty output, avg", "avg", (x4, (2, 8)), {}, "output size is too small"),
    ("zero divisor_override", "avg", (x4, 2), dict(divisor_override=0), "divisor_override"),
    ("float divisor_override", "avg", (x4, 2), dict(divisor_override=2.0), "divisor_override"),
    ("three kernel sizes", "max", (x4, (2, 2, 2)), {}, "kernel_size"),
    ("three strides", "avg", (x4, 2), dict(stride=(1, 1, 1)), "stride"),
    ("three paddings", "max", (x4, 2), dict(padding=(1, 1, 1)), "padding"),
    ("float kernel", "max", (x4, 2.0), {}, "kernel_size"),
    ("bool kernel", "avg", (x4, True), {}, "kernel_size"),
    ("2-D input", "max", (torch.randn(5, 5), 2), {}, "input"),
    ("2-D input, avg", "avg", (torch.randn(5, 5), 2), {}, "input"),  # torch raises IndexError
    ("2-D input, adaptive", "adaptive", (torch.randn(5, 5), 2), {}, "input"),
    ("5-D input", "max", (torch.randn(1, 1, 1, 5, 5), 2), {}, "input"),
    ("5-D input, avg", "avg", (torch.randn(1, 1, 1, 5, 5), 2), {}, "input"),
    ("5-D input, adaptive", "adaptive", (torch.randn(1, 1, 1, 5, 5), 2), {}, "input"),
    ("no channels", "max", (torch.randn(1, 0, 4, 4), 2), {}, "input"),
    ("no rows, adaptive", "adaptive", (torch.randn(1, 2, 0, 4), 2), {}, "input"),
    ("three output sizes", "adaptive", (x4, (1, 2, 3)), {}, "output_size"),
    ("one output size in a list", "adaptive", (x4, [3]), {}, "output_size"),
    ("negative output size", "adaptive", (x4, -1), {}, "output_size"),
    ("float output size", "adaptive", (x4, 2.0), {}, "output_size"),
    ("input not a tensor", "max", ([[1.0]], 2), {}, "input"),
]


@pytest.mark.parametrize("description, op, args, kwargs, words", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_raises_like_torch(description, op, args, kwargs, words):
    ours, ref_fn = OPS[op]
    with pytest.raises((TypeError, RuntimeError, IndexError)) as torch_error:
        ref_fn(*args, **kwargs)
    with pytest.raises(torch_error.type, match=words):  # the same exception type as torch
        ours(*args, **kwargs)


@pytest.mark.parametrize("op", OPS)
def test_integer_dtype_is_refused(op):
    # torch pools integers on CPU (max and avg); we state plainly that we do not, with the
    # exception type torch raises for a dtype an op does not implement (as our convolutions)
    with pytest.raises(RuntimeError, match="input must have a floating-point dtype"):
        OPS[op][0](torch.ones(1, 1, 4, 4, dtype=torch.long), 2)
