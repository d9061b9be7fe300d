"""The GEMM kernels' paths that large layers take on a GPU, reached on CPU: small tiles, so
that every loop runs many steps (channel blocks within taps, a stride phase's taps, blocks of
output rows and columns in the weight gradient, split reductions); NCHW operands copied to
channels_last first; whole and masked channel blocks."""
import pytest
import torch
import torch.nn.functional as F

import convtri
import convtri.conv_launch
from convtri.kernels import gpus, relayout
from test_conv2d import check_parity

SMALL_TILE_CASES = [
    # 40 channels in blocks of 16: three blocks per tap, the last one masked, 3x3 taps
    ((2, 40, 7, 6), (24, 40, 3, 3), dict(padding=1)),
    # stride 2 with dilation 2: dgrad's phases hold every other tap (tap_step 1) or none
    ((2, 32, 9, 8), (32, 32, 3, 3), dict(stride=2, dilation=2, padding=2)),
    # stride 3, dilation 2: gcd 1, taps of a phase spaced by 3; 13 output columns: q blocks of 16
    ((1, 20, 13, 40), (20, 20, 3, 3), dict(stride=3, dilation=2, padding=1)),
    # groups of 32 channels, whole blocks of 16 (EVEN_BLOCKS), 1x1
    ((2, 64, 5, 7), (64, 32, 1, 1), dict(groups=2)),
    # asymmetric kernel and padding on a wide image: several q blocks per output row
    ((1, 24, 6, 37), (20, 24, 2, 5), dict(padding=(1, 2))),
]


@pytest.fixture
def small_tiles(monkeypatch, fresh_plans):
    """Interpreter tiles of 32 rows x 16 channels x 16 reduction steps instead of the largest
    Triton allows."""
    monkeypatch.setattr(convtri.conv_launch, "_rows_block", lambda rows, *widths: 32)
    monkeypatch.setattr(convtri.conv_launch, "INTERPRETER_CHANNELS", 16)
    monkeypatch.setattr(convtri.conv_launch, "INTERPRETER_REDUCTION", 16)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", SMALL_TILE_CASES)
def test_small_tiles_float64(x_shape, w_shape, kwargs, layout, small_tiles):
    x = torch.randn(x_shape, dtype=torch.float64).to(memory_format=layout)
    w = torch.randn(w_shape, dtype=torch.float64)
    check_parity(x, w, torch.randn(w_shape[0], dtype=torch.float64), **kwargs)


def test_split_reduction_with_small_tiles(monkeypatch, small_tiles):
    # the weight gradient's (image, p block, q block) steps cut into 3 slices, as on a GPU
    monkeypatch.setattr(convtri.conv_launch, "_wgrad_splits", lambda x, *sizes: 3)
    x = torch.randn(3, 20, 9, 11, dtype=torch.float64)
    w = torch.randn(18, 20, 3, 3, dtype=torch.float64)
    check_parity(x, w, torch.randn(18, dtype=torch.float64), padding=1, stride=(1, 2))


@pytest.mark.parametrize("conv, x_shape, w_shape, copied", [
    (convtri.conv2d, (2, 20, 6, 6), (24, 20, 3, 3), 7),  # (x, w -> y), (dy, w -> dx), (x): dy once for both
    (convtri.conv_transpose2d, (2, 20, 6, 6), (20, 24, 3, 3), 8),  # (x, w -> y), (dy, w -> dx), (dy, x)
])
def test_nchw_operands_are_copied_to_channels_last_once_each(conv, x_shape, w_shape, copied, launches):
    """More than 16 channels in NCHW: our relayout kernel copies the input and the weight to
    channels_last before each GEMM (dy too in the backward: once for conv2d's two gradient
    GEMMs), and the NCHW output (y, dx) back from the channels_last buffer the GEMM wrote;
    channels_last operands, and few channels (FLAT_TAPS reads them in place), are not copied."""
    x = torch.randn(x_shape, requires_grad=True)
    w = torch.randn(w_shape, requires_grad=True)
    y = conv(x, w)
    y.backward(torch.randn_like(y))
    copies = [name for name, _ in launches if name == relayout.relayout_kernel.__name__]
    gemms = [name for name, _ in launches if name != relayout.relayout_kernel.__name__]
    assert len(gemms) == 3 and len(copies) == copied
    launches.clear()
    x_cl = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    w_cl = w.detach().to(memory_format=torch.channels_last).requires_grad_()
    conv(x_cl, w_cl).backward(torch.randn_like(y).to(memory_format=torch.channels_last))
    conv(torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3) if conv is convtri.conv2d else torch.randn(3, 4, 3, 3))
    assert relayout.relayout_kernel.__name__ not in [name for name, _ in launches]


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_relayout_of_a_view(fmt, launches):
    # a strided view (every other channel, rows cut) is read where it lies, copied, and convolved
    base = torch.randn(2, 48, 9, 7, dtype=torch.float64).to(memory_format=fmt)
    x = base[:, ::2, 1:-1]
    w = torch.randn(8, 24, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(convtri.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1))
    assert relayout.relayout_kernel.__name__ in [name for name, _ in launches]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_pipelines_shortened_to_fit_shared_memory(dtype):
    # vgg16_28_512to512's forward on sm_90: 128x256x64 and 256x128x64 tiles of fp32 (tf32)
    # operands fit 227 KiB only at 2 stages, and are tried so; fp16 keeps every config as listed
    from convtri.kernels import conv2d as kernels
    configs = kernels.conv2d_fwd_configs((9, 0))
    named = dict(N=32, P=28, Q=28, K_G=512, C_G=512, x_ptr=torch.empty(0, dtype=dtype))
    kept = kernels.conv2d_fwd_prune((9, 0))(list(configs), named)
    shape = lambda c: (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_warps)
    stages = {}
    for c in kept:
        stages.setdefault(shape(c), []).append(c.num_stages)
        assert (sum(shape(c)[:2]) * shape(c)[2] * dtype.itemsize * c.num_stages <= gpus.GPUS[(9, 0)].shared_memory)
    assert len(set(map(lambda c: (shape(c), c.num_stages), kept))) == len(kept)  # no config twice
    if dtype == torch.float32:
        assert stages[(128, 256, 64, 8)] == stages[(256, 128, 64, 8)] == [2]
        assert stages[(128, 128, 64, 8)] == [3]  # its 4-stage twin shortened to the 3-stage one, kept once
    else:
        assert all(c in configs for c in kept)  # the listed objects themselves
        assert stages[(128, 256, 64, 8)] == [3, 4]
