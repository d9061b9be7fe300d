"""Hardening: offsets past 2^31 elements and the limits beyond them, determinism, special
values, empty and odd shapes, devices and streams, no hidden copies, inputs never modified."""
import pytest
import torch
import torch.nn.functional as F

import convtri
import convtri.conv_launch
from convtri import _launch
from convtri._launch import MAX_INT32, MAX_PIXELS
import parity
from tolerances import assert_close

CL = torch.channels_last

# Every op with a small input of 2 x 4 x 7 x 9 (float64): (name, ours, torch's, tensors, kwargs),
# the tensors (input, then weight and bias) being what the op reads and gradients flow to.
def op_cases(device="cpu", dtype=torch.float64):
    new = lambda *shape: torch.randn(shape, dtype=dtype, device=device)
    return [
        ("conv2d", convtri.conv2d, F.conv2d, (new(2, 4, 7, 9), new(6, 2, 3, 3), new(6)),
         dict(stride=2, padding=1, groups=2)),
        ("conv2d reflect", lambda *a, **k: convtri.conv2d(*a, padding_mode="reflect", **k), None,
         (new(2, 4, 7, 9), new(6, 4, 3, 2), new(6)), dict(padding=(2, 1))),
        ("conv_transpose2d", convtri.conv_transpose2d, F.conv_transpose2d, (new(2, 4, 7, 9), new(4, 3, 3, 3), new(3)),
         dict(stride=2, padding=1, output_padding=1)),
        ("max_pool2d", convtri.max_pool2d, F.max_pool2d, (new(2, 4, 7, 9),), dict(kernel_size=3, stride=2, padding=1)),
        ("avg_pool2d", convtri.avg_pool2d, F.avg_pool2d, (new(2, 4, 7, 9),),
         dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
        ("adaptive_avg_pool2d", convtri.adaptive_avg_pool2d, F.adaptive_avg_pool2d, (new(2, 4, 7, 9),),
         dict(output_size=(3, 4))),
    ]


OP_NAMES = [case[0] for case in op_cases()]


def op_case(name, device="cpu", dtype=torch.float64):
    return next(case for case in op_cases(device, dtype) if case[0] == name)


def forward_backward(fn, tensors, kwargs, dy=None):
    """fn's output and the gradients of every tensor, for a fixed dy (random if not given)."""
    dy = torch.randn_like(fn(*tensors, **kwargs)) if dy is None else dy
    return parity.forward_and_grads(fn, tensors, dy, **kwargs), dy


# ----------------------------------------------------------------------------- past 2^31 elements

@pytest.fixture(scope="module")
def huge():
    """2^31 + 4096 fp16 elements (4 GiB) of address space. torch.empty touches no page of it,
    and each test writes only a few, so this costs megabytes of memory, not gigabytes."""
    return torch.empty(2 ** 31 + 4096, dtype=torch.float16)


def far_apart(buffer, shape, layout, offset):
    """A view of ``buffer`` filled with data, its images ("batch") or its channels
    ("channels", a single image) 2^31 + 64 or 2^30 elements apart, from ``offset`` on."""
    n, c, h, w = shape
    strides = (2 ** 31 + 64, h * w, w, 1) if layout == "batch" else (c * h * w, 2 ** 30, w, 1)
    view = buffer.as_strided(shape, strides, offset)
    view.copy_(torch.randn(shape))
    return view


HUGE_OPS = {  # name -> (ours, torch's, the other tensors for C input channels, kwargs)
    "conv2d": (convtri.conv2d, F.conv2d, lambda c: [torch.randn(3, c, 3, 3), torch.randn(3)], dict(padding=1)),
    "conv_transpose2d": (convtri.conv_transpose2d, F.conv_transpose2d,
                         lambda c: [torch.randn(c, 2, 3, 3), torch.randn(2)], dict(stride=2, padding=1)),
    # the direct kernels: depthwise (multiplier 1: dy's channels fit the buffer as x's do)
    "depthwise": (lambda x, w, b, **k: convtri.conv2d(x, w, b, groups=x.shape[1], **k),
                  lambda x, w, b, **k: F.conv2d(x, w, b, groups=x.shape[1], **k),
                  lambda c: [torch.randn(c, 1, 3, 3), torch.randn(c)], dict(padding=1)),
    "max_pool2d": (convtri.max_pool2d, F.max_pool2d, lambda c: [], dict(kernel_size=2)),
    "avg_pool2d": (convtri.avg_pool2d, F.avg_pool2d, lambda c: [], dict(kernel_size=3, stride=2, padding=1)),
    "adaptive_avg_pool2d": (convtri.adaptive_avg_pool2d, F.adaptive_avg_pool2d, lambda c: [],
                            dict(output_size=(2, 3))),
}


# batch: the second image 2^31 + 64 elements after the first (64-bit batch offsets);
# channels: channel 2 at 2^31, past int32 in a channel-times-stride product
@pytest.mark.parametrize("layout", ["batch", "channels"])
@pytest.mark.parametrize("name", HUGE_OPS)
def test_offsets_past_int32(huge, name, layout, monkeypatch):
    """An input and an output gradient whose elements lie more than 2^31 elements apart, read
    where they are: forward and every gradient against torch on float64 copies, with the
    interpreter checking every int32 addition and multiplication for overflow."""
    monkeypatch.setenv(_launch.SANITIZE_ENV, "1")
    ours, theirs, others, kwargs = HUGE_OPS[name]
    n, c = (2, 2) if layout == "batch" else (1, 3)
    x = far_apart(huge, (n, c, 4, 5), layout, offset=0)
    others = [t.half() for t in others(c)]
    y_ref = theirs(x.double(), *[t.double() for t in others], **kwargs)
    dy = far_apart(huge, y_ref.shape, layout, offset=1024)
    got, _ = forward_backward(ours, [x, *others], kwargs, dy)
    want, _ = forward_backward(theirs, [x.double(), *[t.double() for t in others]], kwargs, dy.double())
    for a, b in zip(got, want):
        assert_close(a, b, 2 * 4 * 5 * 9)


@pytest.mark.parametrize("call, words", [
    (lambda: convtri.conv2d(torch.empty(2 ** 16, 1, 256, 256, device="meta"), torch.empty(1, 1, 1, 1, device="meta")),
     "4294967296 pixels"),  # N*P*Q = 2^32: int32 row indices would wrap
    (lambda: convtri.conv_transpose2d(torch.empty(2 ** 16, 1, 256, 256, device="meta"),
                                      torch.empty(1, 1, 1, 1, device="meta")), "pixels"),
    (lambda: convtri.conv2d(torch.empty(1, 1, 4, 4, device="meta"),
                            torch.empty(2 ** 32, device="meta").as_strided((2, 1, 1, 1), (2 ** 31, 1, 1, 1))),
     "weight of size \\[2, 1, 1, 1\\] and strides \\[2147483648, 1, 1, 1\\] spans"),
    (lambda: convtri.max_pool2d(torch.empty(2 ** 16, 1, 256, 256, device="meta"), 2), "pixels"),
    (lambda: convtri.avg_pool2d(torch.empty(2 ** 16, 1, 256, 256, device="meta"), 2), "pixels"),
    (lambda: convtri.adaptive_avg_pool2d(torch.empty(2 ** 16, 1, 256, 256, device="meta"), 1), "pixels"),
], ids=["conv2d rows", "conv_transpose2d rows", "weight span", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"])
def test_beyond_the_limits_raise(call, words):
    # meta tensors: the checks run, no memory is needed and no kernel could fault
    with pytest.raises(RuntimeError, match=words):
        call()


def test_limits_are_int32():
    assert MAX_INT32 == 2 ** 31 - 1 and MAX_PIXELS < MAX_INT32


@pytest.mark.gpu
def test_more_than_2_pow_31_elements_on_gpu():
    # a real input and output of more than 2^31 elements (4.3 GB each in fp16), where memory allows
    if torch.cuda.mem_get_info()[0] < 24 * 2 ** 30:
        pytest.skip("needs 24 GiB of free GPU memory")
    x = torch.randn(2 ** 15 + 1, 64, 32, 32, dtype=torch.float16, device="cuda")
    assert x.numel() > 2 ** 31
    w = torch.randn(64, 64, 1, 1, dtype=torch.float16, device="cuda")
    y = convtri.conv2d(x, w)
    torch.testing.assert_close(y[-1:], F.conv2d(x[-1:], w), rtol=2e-2, atol=2e-2)  # the last image, past 2^31
    p = convtri.max_pool2d(x, 2)
    assert torch.equal(p[-1:], F.max_pool2d(x[-1:], 2))


# ----------------------------------------------------------------------------- determinism

@pytest.fixture
def deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # also fills torch.empty with NaN: unwritten outputs show
    yield
    torch.use_deterministic_algorithms(before)


@pytest.mark.parametrize("name", OP_NAMES)
def test_bitwise_repeatable(name, deterministic, device):
    _, ours, _, tensors, kwargs = op_case(name, device, torch.float32)
    first, dy = forward_backward(ours, tensors, kwargs)
    second, _ = forward_backward(ours, tensors, kwargs, dy)
    for a, b in zip(first, second):
        assert torch.equal(a, b) and not a.isnan().any()


def test_wgrad_split_reduction(monkeypatch, deterministic, fresh_plans):
    """On CPU the N*P*Q reduction of the weight gradient is one slice; force several, as on a
    GPU: correct, and bitwise repeatable through the fixed-order second stage."""
    monkeypatch.setattr(convtri.conv_launch, "_wgrad_splits", lambda x, *sizes: 5)
    _, ours, theirs, tensors, kwargs = op_case("conv2d")
    first, dy = forward_backward(ours, tensors, kwargs)
    second, _ = forward_backward(ours, tensors, kwargs, dy)
    want, _ = forward_backward(theirs, tensors, kwargs, dy)
    for a, b, c in zip(first, second, want):
        assert torch.equal(a, b)
        assert_close(a, c, 2 * 4 * 5)


# ----------------------------------------------------------------------------- special values

@pytest.mark.parametrize("name", ["conv2d", "conv_transpose2d"])
def test_convolutions_propagate_nan_and_inf_like_torch(name, device):
    _, ours, theirs, (x, w, b), kwargs = op_case(name)
    x = x.clone()
    x[0, 0, 1, 1] = float("nan")  # spreads to every output that reads it
    x[0, 1, 4, 4] = float("inf")  # +inf times weights of both signs: +-inf, NaN where they meet
    x[1, 2, 0, 0] = float("-inf")
    got, dy = forward_backward(ours, [t.to(device) for t in (x, w, b)], kwargs)
    want, _ = forward_backward(theirs, (x, w, b), kwargs, dy.cpu())
    for a, c in zip(got, want):
        assert torch.equal(a.isnan().cpu(), c.isnan()) and torch.equal(a.isinf().cpu(), c.isinf())
        finite = c.isfinite()
        assert_close(a.cpu()[finite], c[finite], 2 * 4 * 5 * 9)


@pytest.mark.parametrize("op", [convtri.avg_pool2d, convtri.adaptive_avg_pool2d])
def test_avg_pool_stays_finite_where_torch_does(op, device):
    # fp16 values near its largest, 65504: their sum overflows fp16, their mean does not
    x = torch.full((1, 2, 4, 4), 60000.0, dtype=torch.float16)
    ref = (F.avg_pool2d if op is convtri.avg_pool2d else F.adaptive_avg_pool2d)(x, 2)
    y = op(x.to(device), 2)
    assert ref.isfinite().all() and torch.equal(y.cpu(), ref)


# ----------------------------------------------------------------------------- empty, tiny, odd

def test_conv_transpose2d_empty_batch(device):
    x = torch.randn(0, 3, 4, 4, device=device, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, device=device, requires_grad=True)
    y = convtri.conv_transpose2d(x, w, stride=2)
    assert y.shape == F.conv_transpose2d(x.detach().cpu(), w.detach().cpu(), stride=2).shape
    y.sum().backward()
    assert x.grad.shape == x.shape and torch.all(w.grad == 0)


def test_conv2d_zero_channels_is_the_empty_sum(device):
    # a sum over no input channels: the bias everywhere. torch returns an N x 0 x P x Q tensor
    # here, whose channel count contradicts the weight's 3 filters; we return N x 3 x P x Q.
    b = torch.randn(3, device=device)
    y = convtri.conv2d(torch.randn(2, 0, 5, 5, device=device), torch.randn(3, 0, 3, 3, device=device), b)
    assert torch.equal(y, b[None, :, None, None].expand(2, 3, 3, 3))


def test_max_pool_window_wholly_in_padding(device):
    # found by the property test: width 1, padding 1 and dilation 2 put both taps of each
    # window outside the input. The maxima (-inf) and indices are torch's; the gradient of such
    # a window has no pixel to go to (torch's backward writes it at its out-of-window index).
    x = torch.randn(1, 1, 2, 1, dtype=torch.float64, device=device, requires_grad=True)
    kwargs = dict(kernel_size=2, padding=1, dilation=(1, 2), return_indices=True)
    y, idx = convtri.max_pool2d(x, **kwargs)
    y_ref, idx_ref = F.max_pool2d(x.detach().cpu(), **kwargs)
    assert torch.equal(y.detach().cpu(), y_ref) and torch.equal(idx.cpu(), idx_ref) and y_ref.isneginf().all()
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_adaptive_pool_zero_channels(device):
    x = torch.randn(2, 0, 5, 5, device=device)
    assert convtri.adaptive_avg_pool2d(x, 2).shape == F.adaptive_avg_pool2d(x.cpu(), 2).shape


@pytest.mark.parametrize("call", [
    lambda f: f.conv2d(torch.randn(2, 3, 5, 5), torch.randn(0, 3, 3, 3)),  # no filters
    lambda f: f.conv_transpose2d(torch.randn(2, 0, 5, 5), torch.randn(0, 3, 3, 3)),  # no input channels
    lambda f: f.max_pool2d(torch.randn(2, 0, 5, 5), 2),  # no channels
    lambda f: f.avg_pool2d(torch.randn(2, 0, 5, 5), 2),
], ids=["conv2d no filters", "conv_transpose2d no input channels", "max_pool2d no channels", "avg_pool2d no channels"])
def test_empty_channels_torch_refuses(call):
    with pytest.raises(RuntimeError):
        call(F)
    with pytest.raises(RuntimeError):
        call(convtri)


@pytest.mark.parametrize("name, x_shape, w_shape, kwargs", [
    ("conv2d", (2, 3, 1, 1), (4, 3, 1, 1), {}),  # a 1x1 image, 1x1 kernel
    ("conv2d", (2, 3, 1, 1), (4, 3, 3, 3), dict(padding=1)),  # a 1x1 image, all but the centre tap in padding
    ("conv2d", (3, 5, 7, 11), (13, 5, 3, 5), dict(stride=2)),  # prime sizes everywhere
    ("conv2d", (1, 2, 5, 3), (3, 2, 5, 3), {}),  # kernel equal to the input: one output pixel
    ("conv_transpose2d", (2, 3, 1, 1), (3, 4, 1, 1), {}),  # a 1x1 image
    ("conv_transpose2d", (3, 5, 7, 11), (5, 13, 3, 5), dict(stride=(2, 3))),  # prime sizes
    ("max_pool2d", (2, 3, 1, 1), None, dict(kernel_size=1)),  # a 1x1 image
    ("max_pool2d", (3, 5, 7, 11), None, dict(kernel_size=(7, 11))),  # kernel equal to the input
    ("avg_pool2d", (3, 5, 13, 7), None, dict(kernel_size=(3, 5), stride=(2, 3))),  # primes
    ("adaptive_avg_pool2d", (2, 3, 1, 1), None, dict(output_size=3)),  # a 1x1 image, up to 3x3
])
def test_tiny_and_odd_shapes(name, x_shape, w_shape, kwargs, device):
    ours, theirs = getattr(convtri, name), getattr(F, name)
    tensors = [torch.randn(x_shape, dtype=torch.float64)] + ([torch.randn(w_shape, dtype=torch.float64)]
                                                              if w_shape else [])
    got, dy = forward_backward(ours, [t.to(device) for t in tensors], kwargs)
    want, _ = forward_backward(theirs, tensors, kwargs, dy.cpu())
    for a, b in zip(got, want):
        assert_close(a, b, 13 * 15)


# ----------------------------------------------------------------------------- devices and streams

def test_tensors_on_different_devices_raise():
    with pytest.raises(RuntimeError, match="weight is on meta but input is on cpu"):
        convtri.conv_transpose2d(torch.randn(1, 2, 4, 4), torch.randn(2, 2, 3, 3, device="meta"))
    with pytest.raises(RuntimeError, match="bias is on meta but input is on cpu"):
        convtri.conv2d(torch.randn(1, 2, 4, 4), torch.randn(2, 2, 3, 3), torch.randn(2, device="meta"))


@pytest.mark.gpu
def test_cuda_and_cpu_tensors_raise():
    with pytest.raises(RuntimeError, match="weight is on cpu but input is on cuda"):
        convtri.conv_transpose2d(torch.randn(1, 2, 4, 4, device="cuda"), torch.randn(2, 2, 3, 3))


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("name", OP_NAMES)
def test_second_gpu(name):
    # with cuda:0 current, tensors on cuda:1 run there, and the result is right
    _, ours, theirs, tensors, kwargs = op_case(name, "cuda:1", torch.float32)
    got, dy = forward_backward(ours, tensors, kwargs)
    assert all(t.device == torch.device("cuda:1") for t in got) and torch.cuda.current_device() == 0
    want, _ = forward_backward(theirs or ours, [t.cpu().double() for t in tensors], kwargs, dy.cpu().double())
    for a, b in zip(got, want):
        torch.testing.assert_close(a.cpu().double(), b, rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("name", OP_NAMES)
def test_launches_on_the_current_stream(name):
    # a CUDA graph captures only work on the capturing stream: a launch elsewhere fails the
    # capture, and a replay recomputes from the new input in place
    _, ours, _, tensors, kwargs = op_case(name, "cuda", torch.float32)
    ours(*tensors, **kwargs)  # autotune and compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = ours(*tensors, **kwargs)
    tensors[0].copy_(torch.randn_like(tensors[0]))
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(y, ours(*tensors, **kwargs))


# ----------------------------------------------------------------------------- no hidden copies

def layouts(x):
    """The input in three layouts: contiguous, channels_last, and a strided view."""
    n, c, h, w = x.shape
    view = torch.randn(n, 2 * c, h + 2, w, dtype=x.dtype, device=x.device)[:, ::2, 1:-1]
    view.copy_(x)
    return {"contiguous": x, "channels_last": x.contiguous(memory_format=CL), "view": view}


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "view"])
@pytest.mark.parametrize("name", OP_NAMES)
def test_no_hidden_copies(name, layout, monkeypatch, launches):
    """The kernels read the caller's tensors where they lie: the input (and dy) reach a kernel
    with their own data pointer and strides, and no op calls .contiguous() or .clone()."""
    copies = []
    for method in ("contiguous", "clone"):
        original = getattr(torch.Tensor, method)
        monkeypatch.setattr(torch.Tensor, method, lambda self, *a, _m=method, _o=original, **k: (
            copies.append(_m), _o(self, *a, **k))[1])
    _, ours, _, tensors, kwargs = op_case(name)
    x = layouts(tensors[0])[layout]
    leaves = [x.requires_grad_()] + [t.requires_grad_() for t in tensors[1:]]
    dy = layouts(torch.randn(ours(*tensors, **kwargs).shape, dtype=x.dtype))[layout]
    launches.clear()
    copies.clear()
    ours(*leaves, **kwargs).backward(dy)
    assert not copies
    read = {(a.data_ptr, a.stride) for _, tensors in launches for a in tensors}
    assert (x.data_ptr(), x.stride()) in read and (dy.data_ptr(), dy.stride()) in read


@pytest.mark.gpu
@pytest.mark.parametrize("name", OP_NAMES)
def test_no_hidden_copies_gpu_memory(name):
    # a strided view of a large input: the forward allocates its output (and small buffers), never a
    # copy of the input
    _, ours, _, tensors, kwargs = op_case(name, "cuda", torch.float32)
    x = torch.randn(64, 8, 130, 128, device="cuda")[:, :4, 1:-1]
    tensors = (x, *tensors[1:])
    y = ours(*tensors, **kwargs)  # warm-up: autotuning allocates
    del y
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    y = ours(*tensors, **kwargs)
    extra = torch.cuda.max_memory_allocated() - before
    assert extra < y.numel() * y.element_size() + x.numel() * x.element_size() // 4, (extra, y.numel())


# ----------------------------------------------------------------------------- inputs unmodified

@pytest.mark.parametrize("name", OP_NAMES)
def test_inputs_are_never_modified(name, device):
    _, ours, _, tensors, kwargs = op_case(name, device)
    leaves = [t.requires_grad_() for t in tensors]
    before = [t.detach().clone() for t in leaves]
    y = ours(*leaves, **kwargs)
    dy = torch.randn_like(y)
    dy_before = dy.clone()
    y.backward(dy)
    for t, saved in zip(leaves + [dy], before + [dy_before]):
        assert torch.equal(bytes_of(t), bytes_of(saved))


def bytes_of(t):
    return t.detach().cpu().contiguous().view(torch.uint8)
