"""The pooling kernels' specialisations against torch (float64 references): what max pooling saves
for its backward (window offsets against torch's indices), the backward's elementwise pass for
windows that do not overlap and its gather for windows that do, NCHW rows read as whole vectors
(stride-2 windows), global average pooling, tiles of every form spread over many programs, and
the launches a backward makes."""
import pytest
import torch
import torch.nn.functional as F

import convtri
from convtri import pool_launch
from convtri.pool_launch import FLAT_INDICES, WINDOW_OFFSETS, MaxForward, PoolGeometry
from tolerances import assert_close
from test_pool2d import OPS, forward_backward, window_area

CL = torch.channels_last
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def layout(x, name):
    """x in layout ``name``: nchw, channels_last, or a strided view: every other column of a
    wider channels_last tensor (view), or an NCHW tensor's window that starts 1 row and 3
    columns in (nchw_view: unit column stride, rows and data unaligned)."""
    n, c, h, w = x.shape
    if name == "channels_last":
        return x.contiguous(memory_format=CL)
    if name == "view":
        wide = torch.zeros(n, c, h, 2 * w, dtype=x.dtype, device=x.device).contiguous(memory_format=CL)
        wide[..., ::2] = x
        return wide[..., ::2]
    if name == "nchw_view":
        wide = torch.zeros(n, c, h + 1, w + 3, dtype=x.dtype, device=x.device)
        wide[..., 1:, 3:] = x
        return wide[..., 1:, 3:]
    return x.contiguous()


def check_gradient(op, x, **kwargs):
    """Our y and dx (max pooling: through its window offsets, no indices asked for) against
    torch's in float64 from the same inputs; y and dx take torch's layouts."""
    ours, ref_fn = OPS[op]
    x_ref = x.detach().double().cpu()
    y_ref = ref_fn(x_ref, **kwargs)
    dy = torch.randn(y_ref.shape, dtype=x.dtype, device=x.device)
    y, dx, _ = forward_backward(ours, x, dy, **kwargs)
    _, dx_ref, _ = forward_backward(ref_fn, x_ref, dy.double().cpu(), **kwargs)
    length = window_area(op, x.shape, kwargs)
    if op == "max":  # a maximum is exact in every dtype
        torch.testing.assert_close(y.double().cpu(), y_ref, rtol=0, atol=0, equal_nan=True)
    else:
        assert_close(y, y_ref, length)
    assert_close(dx, dx_ref, length)
    assert y.stride() == ref_fn(x.detach(), **kwargs).stride()
    return y, dx


# (op, input size, kwargs): each a path of the kernels
PATHS = [
    # windows that do not overlap: the backward is one elementwise pass
    ("max", (2, 3, 8, 12), dict(kernel_size=2)),  # 2x2/2: NCHW rows read as whole vectors
    ("max", (2, 3, 9, 11), dict(kernel_size=2)),  # odd sizes: the last row and column are in no window
    ("max", (2, 3, 9, 11), dict(kernel_size=2, ceil_mode=True)),  # ceil_mode: edge windows overhang the input
    ("max", (1, 4, 7, 10), dict(kernel_size=2, padding=1, ceil_mode=True)),  # padding: edge windows in it
    ("max", (2, 3, 10, 11), dict(kernel_size=3, stride=3, padding=1)),  # 3x3/3
    ("max", (2, 2, 11, 13), dict(kernel_size=2, stride=(3, 4), dilation=(2, 3))),  # dilated taps, gaps between
    ("max", (2, 3, 8, 10), dict(kernel_size=(1, 2), stride=(1, 2))),  # windows along rows only
    # windows that overlap: the gather
    ("max", (2, 3, 9, 11), dict(kernel_size=3, stride=2, padding=1)),  # the ResNet stem: pairs before the centre
    ("max", (2, 3, 10, 12), dict(kernel_size=4, stride=2, padding=2)),  # two pairs per row
    ("max", (2, 2, 11, 13), dict(kernel_size=5, stride=2, padding=2, ceil_mode=True)),  # three pairs, one tap unused
    ("max", (2, 3, 7, 9), dict(kernel_size=3, stride=1, padding=1)),  # stride 1
    ("max", (2, 3, 9, 10), dict(kernel_size=2, stride=2, dilation=2)),  # dilation makes stride-2 windows overlap
    ("avg", (2, 3, 8, 12), dict(kernel_size=2)),  # 2x2/2: rows as whole vectors, elementwise backward
    ("avg", (2, 3, 9, 11), dict(kernel_size=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("avg", (2, 3, 9, 11), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),  # overlapping, pairs
    ("avg", (2, 3, 9, 11), dict(kernel_size=(3, 4), stride=2, padding=(1, 2), divisor_override=7)),
]


@pytest.mark.parametrize("op, size, kwargs", PATHS)
@pytest.mark.parametrize("fmt", ["nchw", "channels_last", "view", "nchw_view"])
def test_paths(op, size, kwargs, fmt, device):
    check_gradient(op, layout(torch.randn(size, dtype=torch.float64, device=device), fmt), **kwargs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op, size, kwargs", [PATHS[0], PATHS[2], PATHS[7], PATHS[12], PATHS[14]])
@pytest.mark.parametrize("fmt", ["nchw", "channels_last"])
def test_paths_in_every_dtype(op, size, kwargs, fmt, dtype, device):
    check_gradient(op, layout(torch.randn(size, dtype=dtype, device=device), fmt), **kwargs)


# ----------------------------------------------------------------------------- what max pooling saves

def window_offsets(idx, x_size, kernel_size, stride, padding, dilation):
    """torch's flat indices as window offsets kh*KW + kw, and which windows have a tap in the input."""
    (kh_, kw_), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    height, width = x_size[-2:]
    oh = torch.arange(idx.shape[-2])[:, None]
    ow = torch.arange(idx.shape[-1])[None, :]
    kh = (idx // width - (oh * sh - ph)) // dh
    kw = (idx % width - (ow * sw - pw)) // dw
    rows = [[any(0 <= o * sh - ph + t * dh < height for t in range(kh_)) for o in range(idx.shape[-2])]]
    cols = [[any(0 <= o * sw - pw + t * dw < width for t in range(kw_)) for o in range(idx.shape[-1])]]
    return kh * kw_ + kw, torch.tensor(rows).T & torch.tensor(cols)


@pytest.mark.parametrize("size, kernel_size, stride, padding, dilation, ceil_mode, dtype", [
    ((2, 3, 9, 11), (2, 2), (2, 2), (0, 0), (1, 1), True, torch.uint8),  # 2x2/2 with edge windows
    ((2, 3, 9, 11), (3, 3), (2, 2), (1, 1), (1, 1), False, torch.uint8),  # overlapping
    ((1, 2, 9, 10), (3, 2), (2, 1), (1, 1), (2, 3), True, torch.uint8),  # dilation
    ((1, 2, 17, 18), (16, 16), (1, 2), (0, 0), (1, 1), False, torch.uint8),  # 256 taps: the last byte
    ((1, 2, 17, 18), (17, 16), (1, 1), (0, 8), (1, 1), False, torch.int16),  # 272 taps: two bytes
])
@pytest.mark.parametrize("fmt", ["nchw", "channels_last"])
def test_window_offsets_are_torch_indices(size, kernel_size, stride, padding, dilation, ceil_mode, dtype, fmt, device):
    """The max_pool2d op's window offsets, what backward keeps when indices are not returned,
    name the very taps torch's indices name; its int64 indices are torch's."""
    x = layout(torch.randn(size, dtype=torch.float64, device=device), fmt)
    x[0, 0, 0, :3] = x[0, 0, 1, :3] = 7.0  # a tie: the first tap
    x[0, 1, 1, 1] = float("nan")  # a NaN wins
    args = (list(kernel_size), list(stride), list(padding), list(dilation), ceil_mode)
    y, offsets = torch.ops.convtri.max_pool2d(x, *args, WINDOW_OFFSETS)
    y_flat, idx = torch.ops.convtri.max_pool2d(x, *args, FLAT_INDICES)
    y_ref, idx_ref = F.max_pool2d(x.cpu(), kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
    assert offsets.dtype == dtype and offsets.stride() == y.stride() and torch.equal(idx.cpu(), idx_ref)
    want, has_taps = window_offsets(idx_ref, size, kernel_size, stride, padding, dilation)
    assert torch.equal(offsets.cpu().long()[..., has_taps], want[..., has_taps])
    for got in (y, y_flat):
        torch.testing.assert_close(got.cpu(), y_ref, rtol=0, atol=0, equal_nan=True)


def test_backward_takes_indices_or_offsets(device):
    # the backward op reads either form; both give torch's gradient
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64, device=device)
    args = ([3, 3], [2, 2], [1, 1], [1, 1], True)
    y, offsets = torch.ops.convtri.max_pool2d(x, *args, WINDOW_OFFSETS)
    _, idx = torch.ops.convtri.max_pool2d(x, *args, FLAT_INDICES)
    dy = torch.randn_like(y)
    x_ref = x.cpu().requires_grad_()
    (dx_ref,) = torch.autograd.grad(F.max_pool2d(x_ref, 3, 2, 1, ceil_mode=True), x_ref, dy.cpu())
    for saved in (offsets, idx):
        dx = torch.ops.convtri.max_pool2d_backward(dy, saved, list(x.shape), False, *args)
        assert_close(dx, dx_ref, 9)  # a pixel may be the maximum of several windows: sums
    with pytest.raises(RuntimeError, match=r"\(or torch.uint8 window offsets\)"):
        torch.ops.convtri.max_pool2d_backward(dy, idx.int(), list(x.shape), False, *args)
    with pytest.raises(ValueError, match="indices must be one of"):
        torch.ops.convtri.max_pool2d(x, *args, "int64")


def test_what_max_pooling_saves(device):
    # a byte per output when indices are not returned; torch's int64 indices when they are;
    # average pooling saves nothing
    x = torch.randn(2, 3, 8, 8, device=device, requires_grad=True)
    (saved,) = convtri.max_pool2d(x, 2).grad_fn.saved_tensors
    assert saved.dtype == torch.uint8 and saved.shape == (2, 3, 4, 4)
    y, idx = convtri.max_pool2d(x, 2, return_indices=True)
    (saved,) = y.grad_fn.saved_tensors
    assert saved.dtype == torch.int64 and torch.equal(saved, idx)
    for y in (convtri.avg_pool2d(x, 2), convtri.adaptive_avg_pool2d(x, 1)):
        assert y.grad_fn.saved_tensors == ()


# ----------------------------------------------------------------------------- global average pooling

@pytest.mark.parametrize("size, fmt, call", [
    ((2, 5, 7, 7), "nchw", dict(output_size=1)),  # ResNet's head: planes of 49 pixels
    ((2, 5, 7, 7), "channels_last", dict(output_size=1)),
    ((3, 4, 6, 9), "view", dict(output_size=(1, 1))),  # rows that do not follow each other
    ((2, 6, 5, 1), "nchw", dict(output_size=1)),  # one column
    ((2, 3, 7, 6), "nchw", dict(kernel_size=(7, 6))),  # avg_pool2d with a window of the whole input
    ((2, 3, 7, 6), "channels_last", dict(kernel_size=(7, 6), count_include_pad=False)),
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_global_average(size, fmt, call, dtype, device, launches):
    op = "adaptive" if "output_size" in call else "avg"
    check_gradient(op, layout(torch.randn(size, dtype=dtype, device=device), fmt), **call)
    assert [name for name, _ in launches] == ["global_avg_pool2d_fwd_kernel", "global_avg_pool2d_bwd_kernel"]


# ----------------------------------------------------------------------------- tiles and launches

@pytest.mark.parametrize("op, kwargs", [
    ("max", dict(kernel_size=3, stride=2, padding=1)),
    ("max", dict(kernel_size=2, ceil_mode=True)),
    ("avg", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ("adaptive", dict(output_size=(4, 3))),
    ("adaptive", dict(output_size=1)),
])
@pytest.mark.parametrize("fmt", ["nchw", "channels_last", "view"])
def test_small_tiles(op, kwargs, fmt, monkeypatch, fresh_plans):
    # the interpreter's tiles shrunk, as a GPU's are small: several programs along both axes
    # of every tile form, partial tiles at the edges, rows of pairs split between programs
    monkeypatch.setattr(pool_launch, "INTERPRETER_TILE_NUMEL", 64)
    monkeypatch.setattr(pool_launch, "INTERPRETER_CHANNELS", 4)
    check_gradient(op, layout(torch.randn(1, 5, 9, 13, dtype=torch.float64), fmt), **kwargs)


BACKWARD_KERNELS = dict(max="max_pool2d_bwd_kernel", avg="avg_pool2d_bwd_kernel",
                        adaptive="global_avg_pool2d_bwd_kernel")


@pytest.mark.parametrize("op, kwargs", [
    ("max", dict(kernel_size=2)),  # windows that do not overlap
    ("max", dict(kernel_size=3, stride=2, padding=1)),  # windows that do
    ("avg", dict(kernel_size=2)),
    ("adaptive", dict(output_size=1)),
])
@pytest.mark.parametrize("fmt", ["nchw", "channels_last"])
def test_backward_is_one_launch(op, kwargs, fmt, launches):
    # every element of dx is written by the one kernel: no zero-fill, no second pass
    x = layout(torch.randn(2, 3, 8, 8), fmt).requires_grad_()
    y = OPS[op][0](x, **kwargs)
    dy = torch.ones_like(y)
    launches.clear()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        y.backward(dy)
    assert [name for name, _ in launches] == [BACKWARD_KERNELS[op]]
    assert not [e.name for e in profile.events() if e.name in ("aten::zero_", "aten::fill_", "aten::zeros")]


@pytest.mark.parametrize("make_x, x_align, y_align", [
    (lambda: torch.empty(2, 64, 112, 112), 16, 8),  # NCHW rows of 112 and 56 elements
    (lambda: torch.empty(2, 24, 56, 56).contiguous(memory_format=CL), 8, 8),  # 24 channels: 8-element runs
    (lambda: torch.empty(2, 6, 28, 28).contiguous(memory_format=CL), 2, 2),  # LeNet's 6 channels
    (lambda: torch.empty(2, 3, 9, 11), 1, 1),
    (lambda: torch.empty(2, 64, 112, 114)[..., :112], 2, 8),  # rows 114 apart
    (lambda: torch.empty(2, 64, 113, 112)[:, :, 1:], 16, 8),  # rows start 112 elements in
])
def test_alignment_hints_divide_what_they_claim(make_x, x_align, y_align):
    # ALIGN tells Triton that offsets along a tile's axis 0 and its extent along axis 1 are
    # multiples of it; a claim that does not hold would make vector loads wrong on a GPU,
    # which the interpreter cannot show
    with torch.device("meta"):
        x = make_x()
    size = x.shape[2:]
    forward = MaxForward(x, PoolGeometry(size, (size[0] // 2, size[1] // 2), (2, 2), (2, 2)), WINDOW_OFFSETS)
    launch = forward.launch
    assert (launch.meta["ALIGN_X"], launch.meta["ALIGN_Y"]) == (x_align, y_align)
    axis_a, axis_b = ((0, 2, 3), 1) if launch.meta["CHANNELS_LAST"] else ((0, 1, 2), 3)
    for (sizes, strides), align in (((x.shape, x.stride()), x_align), ((forward.y.size, forward.y.stride), y_align),
                                    ((forward.saved.size, forward.saved.stride), y_align)):
        assert all(strides[d] % align == 0 for d in axis_a) and sizes[axis_b] % align == 0


@pytest.mark.parametrize("op, kwargs, fmt, forward, backward", [
    # (op, kwargs, layout, forward kernel and flags, backward kernel and flags) of a training step
    ("max", dict(kernel_size=2), "nchw", ("max_pool2d_fwd_kernel", dict(CHANNELS_LAST=False, PAIRED=True)),
     ("max_pool2d_bwd_kernel", dict(CHANNELS_LAST=False, PAIRED=True, COVER_H=1, COVER_W=1))),
    ("max", dict(kernel_size=3, stride=2, padding=1), "nchw", ("max_pool2d_fwd_kernel", dict(PAIRED=True)),
     ("max_pool2d_bwd_kernel", dict(PAIRED=False, COVER_H=3, COVER_W=3))),
    ("max", dict(kernel_size=2), "channels_last", ("max_pool2d_fwd_kernel", dict(CHANNELS_LAST=True, PAIRED=False)),
     ("max_pool2d_bwd_kernel", dict(CHANNELS_LAST=True, COVER_H=1, COVER_W=1, FLAT_INDICES=False))),
    ("avg", dict(kernel_size=2, ceil_mode=True), "nchw", ("avg_pool2d_fwd_kernel", dict(PAIRED=True)),
     ("avg_pool2d_bwd_kernel", dict(PAIRED=True, COVER_H=1, COVER_W=1))),
    ("adaptive", dict(output_size=1), "channels_last", ("global_avg_pool2d_fwd_kernel", dict(CHANNELS_LAST=True)),
     ("global_avg_pool2d_bwd_kernel", dict(CHANNELS_LAST=True))),
    ("adaptive", dict(output_size=1), "nchw", ("global_avg_pool2d_fwd_kernel", dict(FLAT_PLANES=True)),
     ("global_avg_pool2d_bwd_kernel", dict(CHANNELS_LAST=False, FLAT_PLANES=True))),
])
def test_paths_taken(op, kwargs, fmt, forward, backward, monkeypatch):
    # which kernel and specialisation each layer's training step launches (meta tensors: the
    # plans of a GPU, no launch)
    taken = []
    monkeypatch.setattr(pool_launch.Launch, "__call__", lambda launch, *tensors: taken.append(launch))
    x = layout(torch.empty(4, 64, 56, 56, device="meta"), fmt).requires_grad_()
    y = OPS[op][0](x, **kwargs)
    y.backward(torch.empty_like(y))
    for launch, (kernel, flags) in zip(taken, (forward, backward), strict=True):
        assert launch.kernel.__name__ == kernel and {k: launch.meta[k] for k in flags} == flags
