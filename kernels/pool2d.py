"""pool2d kernels: max pooling and average pooling (fixed and adaptive windows), forward and backward.

Every program owns a tile of BLOCK_P pixels x BLOCK_C channels, and every tensor is read and
written through its four strides, so NCHW, channels_last and sliced views need no copy.
Windows follow torch: output pixel (oh, ow) of a fixed window reads input rows
``oh * pool_stride_h - pad_h + kh * dil_h`` for kh < KH (likewise columns); an adaptive window
reads rows floor(oh*H/OH) to ceil((oh+1)*H/OH). Backward kernels gather: a program owns a
tile of the input gradient and visits every output window that can cover each of its
pixels, so no atomics are needed. Sums accumulate in fp32 (fp64 for fp64 tensors).
"""
import triton
import triton.language as tl

# Block sizes on CUDA (no autotuning: these kernels are memory-bound and simple).
CUDA_TILE_NUMEL = 512  # elements per program: 4 warps x 32 threads x 4; at 8 per thread ptxas spills (sm_90)
CUDA_CHANNELS = 64  # channel columns of a channels_last tile: 128 contiguous bytes of fp16 per pixel


def cuda_tile_numel(element_size):
    """Elements per program on CUDA. ptxas does not spill monotonically in the tile size:
    for fp64, 128, 256 and 512 each spill 8-24 bytes in one kernel (sm_80 or sm_90) and 1024
    in none, while 1024 spills in 16/32-bit ones (tests/test_aot.py checks them all)."""
    return 2 * CUDA_TILE_NUMEL if element_size == 8 else CUDA_TILE_NUMEL


@triton.jit
def pixel_channel_tile(N, ROWS, COLS, C, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's tile: BLOCK_P pixels of the logical (N, ROWS, COLS) index (grid axis 0)
    x BLOCK_C channels (grid axis 1). Returns (n, row, col) per pixel, the channels, and the
    tile's [BLOCK_P, BLOCK_C] mask."""
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    pix_ok = offs_p < N * ROWS * COLS
    n = offs_p // (ROWS * COLS)
    row = (offs_p // COLS) % ROWS
    col = offs_p % COLS
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    return n, row, col, c, pix_ok[:, None] & c_ok[None, :]


@triton.jit
def tile_ptrs(ptr, n, row, col, c, stride_n, stride_c, stride_h, stride_w):
    """[pixels, channels] pointers to ptr[n, c, row, col] for the pixels (n, row, col) and
    channels c of a tile, with int64 offsets."""
    pix = n.to(tl.int64) * stride_n + row.to(tl.int64) * stride_h + col.to(tl.int64) * stride_w
    return ptr + pix[:, None] + c.to(tl.int64)[None, :] * stride_c


@triton.jit
def first_tap(start, dil):
    """The first of start, start + dil, start + 2*dil, ... that is >= 0."""
    return start + tl.cdiv(tl.maximum(-start, 0), dil) * dil


@triton.jit
def pool_window(o, in_size, out_size, k, pool_stride, pad, ADAPTIVE: tl.constexpr):
    """The input range [start, end) that output coordinate o averages (clipped to the input),
    and ``span``, the window's extent clipped to the padded input [-pad, in_size + pad)
    instead (the count of count_include_pad)."""
    if ADAPTIVE:  # torch: start = floor(o*in/out), end = ceil((o+1)*in/out); all terms >= 0
        start = (o * in_size) // out_size
        end = tl.cdiv((o + 1) * in_size, out_size)
        span = end - start
    else:
        start = o * pool_stride - pad
        end = tl.minimum(start + k, in_size + pad)  # ceil_mode's overhang beyond the padding never counts
        span = end - start
        start = tl.maximum(start, 0)
        end = tl.minimum(end, in_size)
    return start, end, span


@triton.jit
def avg_window(oh, ow, H, W, OH, OW, KH, KW, pool_stride_h, pool_stride_w, pad_h, pad_w, divisor_override,
               COUNT_INCLUDE_PAD: tl.constexpr, DIVISOR_OVERRIDE: tl.constexpr, ADAPTIVE: tl.constexpr):
    """Rows [h0, h1) and columns [w0, w1) of the input that output pixel (oh, ow) averages, and
    torch's divisor of their sum: divisor_override if given, else the window's area clipped to
    the padded input (COUNT_INCLUDE_PAD) or to the input. The one divisor rule of forward and backward."""
    h0, h1, span_h = pool_window(oh, H, OH, KH, pool_stride_h, pad_h, ADAPTIVE)
    w0, w1, span_w = pool_window(ow, W, OW, KW, pool_stride_w, pad_w, ADAPTIVE)
    if DIVISOR_OVERRIDE:
        divisor = tl.zeros_like(h0) + divisor_override
    elif COUNT_INCLUDE_PAD:
        divisor = span_h * span_w
    else:
        divisor = (h1 - h0) * (w1 - w0)
    return h0, h1, w0, w1, divisor


@triton.jit
def covering_window(i, j, in_size, out_size, k, pool_stride, pad, dil, ADAPTIVE: tl.constexpr):
    """The j-th output coordinate whose window can cover input coordinate i, and whether it does.

    Fixed windows: the window whose tap j lands on i, o = (i + pad - j*dil) / pool_stride when
    that division is exact (j < k). Adaptive windows: o = floor(i*out/in) + j, kept while the
    window of o still starts at or before i (j < ceil((out-1)/in) + 1).
    """
    if ADAPTIVE:
        o = (i * out_size) // in_size + j
        ok = (o < out_size) & (o * in_size < (i + 1) * out_size)  # floor(o*in/out) <= i
    else:
        lift = pool_stride * (k - 1) * dil  # a multiple of pool_stride >= j*dil: keeps % and // on numbers >= 0
        num = i + pad - j * dil + lift
        o = num // pool_stride - (k - 1) * dil
        ok = (num % pool_stride == 0) & (o >= 0) & (o < out_size)
    return o, ok


@triton.jit
def max_pool2d_fwd_kernel(
    x_ptr, y_ptr, idx_ptr,
    # sizes
    N, C, H, W, OH, OW,
    # strides
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_yn, stride_yc, stride_yh, stride_yw,
    stride_in, stride_ic, stride_ih, stride_iw,
    # pooling parameters
    KH, KW, pool_stride_h, pool_stride_w, pad_h, pad_w, dil_h, dil_w,
    # flags
    WITH_INDICES: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """y[n, c, oh, ow] = max of x over the window of (oh, ow); idx = the flat h*W + w of that maximum.

    As torch: padding is -inf, a NaN wins (a later NaN over an earlier one), among equal values
    the first tap wins, and a window of -inf keeps the index of its first in-bounds tap.
    One program computes a BLOCK_P (output pixels) x BLOCK_C (channels) tile of y (and idx
    when WITH_INDICES). Grid: (cdiv(N*OH*OW, BLOCK_P), cdiv(C, BLOCK_C)).
    x: (N, C, H, W), y: (N, C, OH, OW), idx: (N, C, OH, OW) int64.
    """
    n, oh, ow, c, tile_ok = pixel_channel_tile(N, OH, OW, C, BLOCK_P, BLOCK_C)
    h_start = oh * pool_stride_h - pad_h
    w_start = ow * pool_stride_w - pad_w
    x_img = x_ptr + n.to(tl.int64)[:, None] * stride_xn + c.to(tl.int64)[None, :] * stride_xc
    # compared in fp32 (fp64 for fp64), as torch does; exact, and safe for bf16 in the interpreter
    CMP_TYPE = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    best = tl.full((BLOCK_P, BLOCK_C), float("-inf"), CMP_TYPE)
    first = first_tap(h_start, dil_h).to(tl.int64) * W + first_tap(w_start, dil_w)
    best_idx = tl.broadcast_to(first[:, None], (BLOCK_P, BLOCK_C))
    for kh in range(0, KH):
        h = h_start + kh * dil_h
        h_ok = (h >= 0) & (h < H)
        x_row = x_img + (h.to(tl.int64) * stride_xh)[:, None]
        for kw in range(0, KW):
            w = w_start + kw * dil_w
            w_ok = (w >= 0) & (w < W)
            tap_ok = tile_ok & (h_ok & w_ok)[:, None]
            v = tl.load(x_row + (w.to(tl.int64) * stride_xw)[:, None], mask=tap_ok, other=float("-inf"))
            v = v.to(CMP_TYPE)
            take = (v > best) | (v != v)  # v != v: NaN
            best = tl.where(take, v, best)
            best_idx = tl.where(take, (h.to(tl.int64) * W + w)[:, None], best_idx)

    y_ptrs = tile_ptrs(y_ptr, n, oh, ow, c, stride_yn, stride_yc, stride_yh, stride_yw)
    tl.store(y_ptrs, best.to(y_ptr.dtype.element_ty), mask=tile_ok)
    if WITH_INDICES:
        tl.store(tile_ptrs(idx_ptr, n, oh, ow, c, stride_in, stride_ic, stride_ih, stride_iw), best_idx, mask=tile_ok)


@triton.jit
def max_pool2d_bwd_kernel(
    dy_ptr, idx_ptr, dx_ptr,
    # sizes
    N, C, H, W, OH, OW,
    # strides
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_in, stride_ic, stride_ih, stride_iw,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    # pooling parameters
    KH, KW, pool_stride_h, pool_stride_w, pad_h, pad_w, dil_h, dil_w,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dx[n, c, h, w] = sum of dy[n, c, oh, ow] over the windows (oh, ow) that cover (h, w)
    and whose saved index idx[n, c, oh, ow] is h*W + w.

    Gather form: for each kernel tap (kh, kw), the window whose tap lands on (h, w), if any.
    One program computes a BLOCK_P (input pixels) x BLOCK_C (channels) tile of dx.
    Grid: (cdiv(N*H*W, BLOCK_P), cdiv(C, BLOCK_C)).
    dy: (N, C, OH, OW), idx: (N, C, OH, OW) int64, dx: (N, C, H, W).
    """
    n, h, w, c, tile_ok = pixel_channel_tile(N, H, W, C, BLOCK_P, BLOCK_C)
    here = (h.to(tl.int64) * W + w)[:, None]
    ACC_TYPE = tl.float64 if dy_ptr.dtype.element_ty == tl.float64 else tl.float32
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC_TYPE)
    for kh in range(0, KH):
        oh, oh_ok = covering_window(h, kh, H, OH, KH, pool_stride_h, pad_h, dil_h, False)
        for kw in range(0, KW):
            ow, ow_ok = covering_window(w, kw, W, OW, KW, pool_stride_w, pad_w, dil_w, False)
            win_ok = tile_ok & (oh_ok & ow_ok)[:, None]
            saved = tl.load(tile_ptrs(idx_ptr, n, oh, ow, c, stride_in, stride_ic, stride_ih, stride_iw),
                            mask=win_ok, other=-1)
            hit = win_ok & (saved == here)
            g = tl.load(tile_ptrs(dy_ptr, n, oh, ow, c, stride_dyn, stride_dyc, stride_dyh, stride_dyw),
                        mask=hit, other=0.)
            acc += g.to(ACC_TYPE)
    dx_ptrs = tile_ptrs(dx_ptr, n, h, w, c, stride_dxn, stride_dxc, stride_dxh, stride_dxw)
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=tile_ok)


@triton.jit
def avg_pool2d_fwd_kernel(
    x_ptr, y_ptr,
    # sizes
    N, C, H, W, OH, OW,
    # strides
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_yn, stride_yc, stride_yh, stride_yw,
    # pooling parameters (adaptive windows use none but KH, KW)
    KH, KW, pool_stride_h, pool_stride_w, pad_h, pad_w, divisor_override,
    # flags
    COUNT_INCLUDE_PAD: tl.constexpr, DIVISOR_OVERRIDE: tl.constexpr, ADAPTIVE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """y[n, c, oh, ow] = sum of x over the window of (oh, ow) / the window's divisor (``avg_window``).

    Fixed windows are KH x KW; adaptive windows (ADAPTIVE) vary, and KH x KW bounds them.
    One program computes a BLOCK_P (output pixels) x BLOCK_C (channels) tile of y.
    Grid: (cdiv(N*OH*OW, BLOCK_P), cdiv(C, BLOCK_C)).
    x: (N, C, H, W), y: (N, C, OH, OW).
    """
    n, oh, ow, c, tile_ok = pixel_channel_tile(N, OH, OW, C, BLOCK_P, BLOCK_C)
    h0, h1, w0, w1, divisor = avg_window(oh, ow, H, W, OH, OW, KH, KW, pool_stride_h, pool_stride_w, pad_h, pad_w,
                                         divisor_override, COUNT_INCLUDE_PAD, DIVISOR_OVERRIDE, ADAPTIVE)
    x_img = x_ptr + n.to(tl.int64)[:, None] * stride_xn + c.to(tl.int64)[None, :] * stride_xc
    ACC_TYPE = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC_TYPE)
    for kh in range(0, KH):
        h = h0 + kh
        h_ok = h < h1
        x_row = x_img + (h.to(tl.int64) * stride_xh)[:, None]
        for kw in range(0, KW):
            w = w0 + kw
            w_ok = w < w1
            v = tl.load(x_row + (w.to(tl.int64) * stride_xw)[:, None], mask=tile_ok & (h_ok & w_ok)[:, None],
                        other=0.)
            acc += v.to(ACC_TYPE)
    y = acc / divisor.to(ACC_TYPE)[:, None]
    y_ptrs = tile_ptrs(y_ptr, n, oh, ow, c, stride_yn, stride_yc, stride_yh, stride_yw)
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=tile_ok)


@triton.jit
def avg_pool2d_bwd_kernel(
    dy_ptr, dx_ptr,
    # sizes
    N, C, H, W, OH, OW,
    # strides
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    # pooling parameters (adaptive windows use none but KH, KW), then the windows visited per axis
    KH, KW, pool_stride_h, pool_stride_w, pad_h, pad_w, divisor_override, COVER_H, COVER_W,
    # flags
    COUNT_INCLUDE_PAD: tl.constexpr, DIVISOR_OVERRIDE: tl.constexpr, ADAPTIVE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dx[n, c, h, w] = sum of dy[n, c, oh, ow] / divisor(oh, ow) over the windows (oh, ow) covering (h, w).

    Gather form: per axis, the COVER candidates of ``covering_window`` (fixed windows: one per
    kernel tap, COVER = KH; adaptive: COVER bounds how many windows overlap at one pixel).
    One program computes a BLOCK_P (input pixels) x BLOCK_C (channels) tile of dx.
    Grid: (cdiv(N*H*W, BLOCK_P), cdiv(C, BLOCK_C)).
    dy: (N, C, OH, OW), dx: (N, C, H, W).
    """
    n, h, w, c, tile_ok = pixel_channel_tile(N, H, W, C, BLOCK_P, BLOCK_C)
    ACC_TYPE = tl.float64 if dy_ptr.dtype.element_ty == tl.float64 else tl.float32
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC_TYPE)
    for jh in range(0, COVER_H):
        oh, oh_ok = covering_window(h, jh, H, OH, KH, pool_stride_h, pad_h, 1, ADAPTIVE)
        for jw in range(0, COVER_W):
            ow, ow_ok = covering_window(w, jw, W, OW, KW, pool_stride_w, pad_w, 1, ADAPTIVE)
            win_ok = oh_ok & ow_ok
            _, _, _, _, divisor = avg_window(oh, ow, H, W, OH, OW, KH, KW, pool_stride_h, pool_stride_w, pad_h,
                                             pad_w, divisor_override, COUNT_INCLUDE_PAD, DIVISOR_OVERRIDE, ADAPTIVE)
            divisor = tl.where(win_ok, divisor, 1)  # windows that do not exist may compute 0
            g = tl.load(tile_ptrs(dy_ptr, n, oh, ow, c, stride_dyn, stride_dyc, stride_dyh, stride_dyw),
                        mask=tile_ok & win_ok[:, None], other=0.)
            acc += g.to(ACC_TYPE) / divisor.to(ACC_TYPE)[:, None]
    dx_ptrs = tile_ptrs(dx_ptr, n, h, w, c, stride_dxn, stride_dxc, stride_dxh, stride_dxw)
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=tile_ok)
