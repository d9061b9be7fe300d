"""pool2d kernels: max pooling and average pooling (fixed and adaptive windows), forward and backward,
and global average pooling (to 1 x 1) forward and backward.

A program owns a 2-D tile of one tensor's (N, C, rows, columns) index space, in one of two forms
(``tile_coords``), chosen per call from the layout so that the tile's second axis runs along
contiguous memory and loads and stores are 16-byte vectors:
- pixel tiles (CHANNELS_LAST): axis 0 holds pixels (n, row, column), axis 1 channels;
- row tiles: axis 0 holds rows (n, c, row), axis 1 columns; where windows have column stride 2
  (PAIRED), each window row is read as whole contiguous vectors and split in registers.
Every tensor is read and written through its four strides, so other layouts and sliced views
need no copy. Each tensor's ALIGN (ALIGN_X, ALIGN_Y, ...: the largest power of two, up to 16,
that divides its strides along the tile's axis 0 and its extent along axis 1) tells Triton what
it cannot see when those are not multiples of 16: that offsets and masks are uniform over
vectors of ALIGN elements. The pooling window (kernel, stride, padding, dilation) is constexpr:
one compile per pooling layer, taps unrolled, and the backward's divisions by the stride are
shifts for powers of two.

Windows follow torch: output pixel (oh, ow) of a fixed window reads input rows
``oh * SH - PH + kh * DH`` for kh < KH (likewise columns); an adaptive window reads rows
floor(oh*H/OH) to ceil((oh+1)*H/OH). Backward kernels gather: a program owns a tile of the input
gradient and visits each output window that can cover each of its pixels, so no atomics are
needed, and windows that do not overlap (stride >= span) are one window per pixel: an
elementwise pass. Sums accumulate in fp32 (fp64 for fp64 tensors).
"""
import triton
import triton.language as tl

# Tiles on CUDA (no autotuning: these kernels are memory-bound and simple). A program's tile of
# the tensor it writes holds 4 warps x 32 threads x 16 bytes, one 16-byte vector per thread.
CUDA_TILE_BYTES = 2048
CUDA_COLUMNS = 64  # width of a tile's contiguous axis (channels or columns): 8 threads x 16 bytes of fp16
GLOBAL_PIXELS = 256  # pixels of a global-average tile along contiguous planes (NCHW): 4 KB of fp16 per row of planes


@triton.jit
def below(i, size, ALIGN: tl.constexpr):
    """i < size, for size a multiple of ALIGN: written so that Triton sees the mask uniform over
    aligned runs of ALIGN indices (which vector loads and stores need)."""
    return i // ALIGN < size // ALIGN


@triton.jit
def tile_coords(N, C, ROWS, COLS, CHANNELS_LAST: tl.constexpr, ALIGN: tl.constexpr, BLOCK_A: tl.constexpr,
                BLOCK_B: tl.constexpr):
    """This program's tile of the (N, C, ROWS, COLS) index space: coordinates n, c, row, col of
    shape [BLOCK_A, 1] or [1, BLOCK_B], and the masks of axis 0 ([BLOCK_A, 1]) and axis 1
    ([1, BLOCK_B]). Pixel tiles (CHANNELS_LAST): axis 0 (grid axis 0) holds pixels (n, row,
    col), axis 1 (grid axis 1) channels. Row tiles: axis 0 holds rows (n, c, row), axis 1
    columns. ALIGN: the tiled tensor's."""
    a = tl.program_id(0) * BLOCK_A + tl.arange(0, BLOCK_A)
    b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    if CHANNELS_LAST:
        n, row, col = a // (ROWS * COLS), (a // COLS) % ROWS, a % COLS
        return (n[:, None], b[None, :], row[:, None], col[:, None], (a < N * ROWS * COLS)[:, None],
                below(b, C, ALIGN)[None, :])
    else:
        n, c, row = a // (C * ROWS), (a // ROWS) % C, a % ROWS
        return (n[:, None], c[:, None], row[:, None], b[None, :], (a < N * C * ROWS)[:, None],
                below(b, COLS, ALIGN)[None, :])


@triton.jit
def offsets(n, c, row, col, stride_n, stride_c, stride_h, stride_w, ALIGN: tl.constexpr, CHANNELS_LAST: tl.constexpr):
    """int64 offsets of the elements (n, c, row, col) of a tile (``tile_coords``): the part along
    axis 0, a multiple of ALIGN, plus the part along axis 1."""
    return shifted_offsets(n, c, row, col, 0, 0, stride_n, stride_c, stride_h, stride_w, ALIGN, CHANNELS_LAST)


@triton.jit
def shifted_offsets(n, c, row, col, d_row, d_col, stride_n, stride_c, stride_h, stride_w, ALIGN: tl.constexpr,
                    CHANNELS_LAST: tl.constexpr):
    """``offsets`` of (n, c, row + d_row, col + d_col) for scalar shifts (a convolution's taps):
    the shift is one scalar offset per axis, added to the tile's own, which its taps share."""
    if CHANNELS_LAST:
        along_a = (n.to(tl.int64) * stride_n + row.to(tl.int64) * stride_h + col.to(tl.int64) * stride_w
                   + (d_row * stride_h + d_col * stride_w))
        along_b = c.to(tl.int64) * stride_c
    else:
        along_a = (n.to(tl.int64) * stride_n + c.to(tl.int64) * stride_c + row.to(tl.int64) * stride_h
                   + d_row * stride_h)
        along_b = col.to(tl.int64) * stride_w + d_col * stride_w
    return tl.multiple_of(along_a, [ALIGN, ALIGN]) + along_b


@triton.jit
def column_pair(x_ptr, along_a, row_ok, W, Q: tl.constexpr, other, ALIGN: tl.constexpr, BLOCK_B: tl.constexpr):
    """Row tiles of a window with column stride 2 (no dilation, unit column stride): input
    columns 2*(ow + Q) and 2*(ow + Q) + 1 of this program's output columns ow, loaded as one
    contiguous vector and split into the two: the window's taps kw = 2Q + PW and 2Q + PW + 1.
    ``along_a``: the rows' offsets [BLOCK_A, 1]; ``row_ok``: their mask; ALIGN: x's."""
    cols = 2 * (tl.program_id(1) * BLOCK_B + Q) + tl.arange(0, 2 * BLOCK_B)
    ok = row_ok & ((cols >= 0) & below(cols, W, ALIGN))[None, :]
    v = tl.load(x_ptr + along_a + cols[None, :], mask=ok, other=other)
    return tl.split(tl.reshape(v, (v.shape[0], BLOCK_B, 2)))


@triton.jit
def column_windows(OW, ALIGN: tl.constexpr, BLOCK_B: tl.constexpr):
    """Row tiles of windows two columns wide with column stride 2 and no column padding: the
    windows ow [1, BLOCK_B / 2] whose columns 2*ow and 2*ow + 1 this program's BLOCK_B columns
    are, and which exist. ALIGN: the windows' tensors'."""
    ow = tl.program_id(1) * (BLOCK_B // 2) + tl.arange(0, BLOCK_B // 2)
    return ow[None, :], below(ow, OW, ALIGN)[None, :]


@triton.jit
def pool_window(o, in_size, out_size, K: tl.constexpr, S: tl.constexpr, P: tl.constexpr, ADAPTIVE: tl.constexpr):
    """The input range [start, end) that output coordinate o averages (clipped to the input),
    and ``span``, the window's extent clipped to the padded input [-P, in_size + P) instead (the
    count of count_include_pad)."""
    if ADAPTIVE:  # torch: start = floor(o*in/out), end = ceil((o+1)*in/out); all terms >= 0
        start = (o * in_size) // out_size
        end = tl.cdiv((o + 1) * in_size, out_size)
        span = end - start
    else:
        start = o * S - P
        end = tl.minimum(start + K, in_size + P)  # ceil_mode's overhang beyond the padding never counts
        span = end - start
        start = tl.maximum(start, 0)
        end = tl.minimum(end, in_size)
    return start, end, span


@triton.jit
def avg_divisor(oh, ow, H, W, OH, OW, divisor_override, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr,
                SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr, COUNT_INCLUDE_PAD: tl.constexpr,
                DIVISOR_OVERRIDE: tl.constexpr, ADAPTIVE: tl.constexpr):
    """Rows [h0, h1) and columns [w0, w1) of the input that output pixel (oh, ow) averages, and
    torch's divisor of their sum: divisor_override if given, else the window's area clipped to
    the padded input (COUNT_INCLUDE_PAD) or to the input. The one divisor rule of forward and backward."""
    h0, h1, span_h = pool_window(oh, H, OH, KH, SH, PH, ADAPTIVE)
    w0, w1, span_w = pool_window(ow, W, OW, KW, SW, PW, ADAPTIVE)
    if DIVISOR_OVERRIDE:
        divisor = tl.zeros_like(h0 * w0) + divisor_override
    elif COUNT_INCLUDE_PAD:
        divisor = span_h * span_w
    else:
        divisor = (h1 - h0) * (w1 - w0)
    return h0, h1, w0, w1, divisor


@triton.jit
def covering_window(i, j, in_size, out_size, K: tl.constexpr, S: tl.constexpr, P: tl.constexpr,
                    D: tl.constexpr, COVER: tl.constexpr, ADAPTIVE: tl.constexpr):
    """The j-th output coordinate o whose window can cover input coordinate i, the tap of that
    window which lands on i, and whether it does (j < COVER).

    - Adaptive windows: o = floor(i*out/in) + j, kept while window o starts at or before i.
    - COVER == 1, windows that do not overlap (S >= D*(K-1) + 1): the one window o = (i+P) // S,
      whose tap (i + P - o*S) / D lands on i when that division is exact and below K.
    - Otherwise the window whose tap j lands on i, o = (i + P - j*D) / S when that is exact.
    """
    if ADAPTIVE:
        o = (i * out_size) // in_size + j
        ok = (o < out_size) & (o * in_size < (i + 1) * out_size)  # floor(o*in/out) <= i
        tap = j
    elif COVER == 1:
        o = (i + P) // S
        step = i + P - o * S
        tap = step // D
        ok = (step % D == 0) & (tap < K) & (o < out_size)
    else:
        LIFT: tl.constexpr = S * (K - 1) * D  # a multiple of S >= j*D: keeps % and // on numbers >= 0
        num = i + P - j * D + LIFT
        o = num // S - (K - 1) * D
        ok = (num % S == 0) & (o >= 0) & (o < out_size)
        tap = j
    return o, tap, ok


@triton.jit
def take_max(v, best, best_tap, tap):
    """The running maximum and its tap after tap ``tap`` of value v: as torch, a NaN wins (a later
    NaN over an earlier one) and among equal values the first tap stays."""
    v = v.to(best.dtype)
    take = (v > best) | (v != v)
    return tl.where(take, v, best), tl.where(take, tap, best_tap)


@triton.jit
def max_pool2d_fwd_kernel(
    x_ptr, y_ptr, saved_ptr,
    # sizes
    N, C, H, W, OH, OW,
    # strides
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_yn, stride_yc, stride_yh, stride_yw,
    stride_sn, stride_sc, stride_sh, stride_sw,
    # pooling window: kernel, stride, padding, dilation
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr,
    # flags
    SAVE: tl.constexpr, FLAT_INDICES: tl.constexpr, CHANNELS_LAST: tl.constexpr, PAIRED: tl.constexpr,
    ALIGN_X: tl.constexpr, ALIGN_Y: tl.constexpr,  # ALIGN_Y: y's and saved's
    BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
):
    """y[n, c, oh, ow] = max of x over the window of (oh, ow), and where SAVE, what backward needs
    to route its gradient: the maximum's tap kh*KW + kw in its window (one byte for up to 256
    taps), or with FLAT_INDICES torch's int64 flat h*W + w.

    As torch: padding is -inf, a NaN wins (a later NaN over an earlier one), among equal values
    the first tap wins, and a window of -inf keeps its first in-bounds tap.
    One program computes a [BLOCK_A, BLOCK_B] tile of y (and saved): output pixels x channels
    (CHANNELS_LAST) or output rows x columns. Grid: (cdiv(N*OH*OW, BLOCK_A), cdiv(C, BLOCK_B))
    or (cdiv(N*C*OH, BLOCK_A), cdiv(OW, BLOCK_B)). PAIRED (row tiles, column stride 2, no
    column dilation, unit column stride): each row of the windows is read as whole contiguous
    vectors (``column_pair``). x: (N, C, H, W); y and saved: (N, C, OH, OW).
    """
    n, c, oh, ow, a_ok, b_ok = tile_coords(N, C, OH, OW, CHANNELS_LAST, ALIGN_Y, BLOCK_A, BLOCK_B)
    tile_ok = a_ok & b_ok
    h_start = oh * SH - PH
    w_start = ow * SW - PW
    # compared in fp32 (fp64 for fp64), as torch does; exact, and safe for bf16 in the interpreter
    CMP_TYPE: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    best = tl.full((BLOCK_A, BLOCK_B), float("-inf"), CMP_TYPE)
    first_h = h_start + tl.cdiv(tl.maximum(-h_start, 0), DH) * DH  # the first rows and columns >= 0
    first_w = w_start + tl.cdiv(tl.maximum(-w_start, 0), DW) * DW
    # the first in-bounds tap (any tap of a window wholly in the padding: no pixel is its tap)
    first_tap = tl.minimum((first_h - h_start) // DH, KH - 1) * KW + tl.minimum((first_w - w_start) // DW, KW - 1)
    best_tap = tl.broadcast_to(first_tap, (BLOCK_A, BLOCK_B))
    for kh in tl.static_range(KH):
        h = h_start + kh * DH
        row_ok = a_ok & (h >= 0) & (h < H)
        if PAIRED:
            along_a = tl.multiple_of(n.to(tl.int64) * stride_xn + c.to(tl.int64) * stride_xc
                                     + h.to(tl.int64) * stride_xh, [ALIGN_X, ALIGN_X])
            for q in tl.static_range(-((PW + 1) // 2), (KW - 1 - PW) // 2 + 1):  # the pairs holding taps
                even, odd = column_pair(x_ptr, along_a, row_ok, W, q, float("-inf"), ALIGN_X, BLOCK_B)
                if 2 * q + PW >= 0:
                    best, best_tap = take_max(even, best, best_tap, kh * KW + 2 * q + PW)
                if 2 * q + PW + 1 < KW:
                    best, best_tap = take_max(odd, best, best_tap, kh * KW + 2 * q + PW + 1)
        else:
            for kw in tl.static_range(KW):
                w = w_start + kw * DW
                ok = row_ok & b_ok & (w >= 0) & (w < W)
                x_ptrs = x_ptr + offsets(n, c, h, w, stride_xn, stride_xc, stride_xh, stride_xw, ALIGN_X, CHANNELS_LAST)
                v = tl.load(x_ptrs, mask=ok, other=float("-inf"))
                best, best_tap = take_max(v, best, best_tap, kh * KW + kw)

    y_ptrs = y_ptr + offsets(n, c, oh, ow, stride_yn, stride_yc, stride_yh, stride_yw, ALIGN_Y, CHANNELS_LAST)
    tl.store(y_ptrs, best.to(y_ptr.dtype.element_ty), mask=tile_ok)
    if SAVE:
        if FLAT_INDICES:
            # torch's index: a window that took no tap keeps (first_h, first_w), even outside it
            flat = ((h_start + best_tap // KW * DH) * W + w_start + best_tap % KW * DW).to(tl.int64)
            saved = tl.where(best == float("-inf"), (first_h * W + first_w).to(tl.int64), flat)
        else:
            saved = best_tap
        s_ptrs = saved_ptr + offsets(n, c, oh, ow, stride_sn, stride_sc, stride_sh, stride_sw, ALIGN_Y, CHANNELS_LAST)
        tl.store(s_ptrs, saved.to(saved_ptr.dtype.element_ty), mask=tile_ok)


@triton.jit
def max_pool2d_bwd_kernel(
    dy_ptr, saved_ptr, dx_ptr,
    # sizes
    N, C, H, W, OH, OW,
    # strides
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_sn, stride_sc, stride_sh, stride_sw,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    # pooling window: kernel, stride, padding, dilation; the windows visited per axis
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr, COVER_H: tl.constexpr, COVER_W: tl.constexpr,
    # flags
    FLAT_INDICES: tl.constexpr, CHANNELS_LAST: tl.constexpr, PAIRED: tl.constexpr,
    ALIGN_DY: tl.constexpr, ALIGN_DX: tl.constexpr,  # ALIGN_DY: dy's and saved's
    BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
):
    """dx[n, c, h, w] = sum of dy[n, c, oh, ow] over the windows (oh, ow) that cover (h, w) and
    whose saved maximum is there: saved[n, c, oh, ow] == h*W + w (FLAT_INDICES, torch's int64
    indices) or == the tap kh*KW + kw of that window that lands on (h, w) (window offsets).

    Gather form over ``covering_window``'s COVER_H x COVER_W candidates: one per tap where
    windows overlap, the single window of each pixel where they do not (an elementwise pass).
    One program computes a [BLOCK_A, BLOCK_B] tile of dx: input pixels x channels
    (CHANNELS_LAST) or input rows x columns. Grid: (cdiv(N*H*W, BLOCK_A), cdiv(C, BLOCK_B)) or
    (cdiv(N*C*H, BLOCK_A), cdiv(W, BLOCK_B)). PAIRED (row tiles of windows two columns wide,
    column stride 2, no column padding or dilation): the program's BLOCK_B / 2 windows per row
    are read as whole vectors and each feeds its two columns (``column_windows``).
    dy and saved: (N, C, OH, OW), dx: (N, C, H, W).
    """
    n, c, h, w, a_ok, b_ok = tile_coords(N, C, H, W, CHANNELS_LAST, ALIGN_DX, BLOCK_A, BLOCK_B)
    tile_ok = a_ok & b_ok
    ACC_TYPE: tl.constexpr = tl.float64 if dy_ptr.dtype.element_ty == tl.float64 else tl.float32
    acc = tl.zeros((BLOCK_A, BLOCK_B), dtype=ACC_TYPE)
    if PAIRED:
        pair_ow, pair_ok = column_windows(OW, ALIGN_DY, BLOCK_B)
        acc_even = tl.zeros((BLOCK_A, BLOCK_B // 2), dtype=ACC_TYPE)  # columns 2*ow and 2*ow + 1
        acc_odd = tl.zeros((BLOCK_A, BLOCK_B // 2), dtype=ACC_TYPE)
    for jh in tl.static_range(COVER_H):
        oh, kh, oh_ok = covering_window(h, jh, H, OH, KH, SH, PH, DH, COVER_H, False)
        if PAIRED:
            pair_win_ok = a_ok & oh_ok & pair_ok
            pair_saved = tl.load(saved_ptr + offsets(n, c, oh, pair_ow, stride_sn, stride_sc, stride_sh, stride_sw,
                                                     ALIGN_DY, False), mask=pair_win_ok, other=0)
            pair_g = tl.load(dy_ptr + offsets(n, c, oh, pair_ow, stride_dyn, stride_dyc, stride_dyh, stride_dyw,
                                              ALIGN_DY, False), mask=pair_win_ok, other=0.).to(ACC_TYPE)
            if FLAT_INDICES:
                even = h.to(tl.int64) * W + 2 * pair_ow
            else:
                even = kh * KW + tl.zeros_like(pair_ow)
                pair_saved = pair_saved.to(tl.int32)
            acc_even += tl.where(pair_saved == even, pair_g, 0.)
            acc_odd += tl.where(pair_saved == even + 1, pair_g, 0.)
        for jw in tl.static_range(0 if PAIRED else COVER_W):
            ow, kw, ow_ok = covering_window(w, jw, W, OW, KW, SW, PW, DW, COVER_W, False)
            win_ok = tile_ok & oh_ok & ow_ok
            s_ptrs = saved_ptr + offsets(n, c, oh, ow, stride_sn, stride_sc, stride_sh, stride_sw, ALIGN_DY,
                                         CHANNELS_LAST)
            saved = tl.load(s_ptrs, mask=win_ok, other=0)
            if FLAT_INDICES:
                hit = saved == h.to(tl.int64) * W + w
            else:
                hit = saved.to(tl.int32) == kh * KW + kw
            # read whole vectors of dy (its mask uniform over them), keep the hits
            dy_ptrs = dy_ptr + offsets(n, c, oh, ow, stride_dyn, stride_dyc, stride_dyh, stride_dyw, ALIGN_DY,
                                       CHANNELS_LAST)
            g = tl.load(dy_ptrs, mask=win_ok, other=0.)
            acc += tl.where(hit, g.to(ACC_TYPE), 0.)
    if PAIRED:
        acc = tl.reshape(tl.join(acc_even, acc_odd), (BLOCK_A, BLOCK_B))
    dx_ptrs = dx_ptr + offsets(n, c, h, w, stride_dxn, stride_dxc, stride_dxh, stride_dxw, ALIGN_DX, CHANNELS_LAST)
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=tile_ok)


@triton.jit
def avg_pool2d_fwd_kernel(
    x_ptr, y_ptr,
    # sizes
    N, C, H, W, OH, OW,
    # strides
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_yn, stride_yc, stride_yh, stride_yw,
    divisor_override,
    # pooling window: kernel (for adaptive windows, a bound on them), stride, padding
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    # flags
    COUNT_INCLUDE_PAD: tl.constexpr, DIVISOR_OVERRIDE: tl.constexpr, ADAPTIVE: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, PAIRED: tl.constexpr, ALIGN_X: tl.constexpr, ALIGN_Y: tl.constexpr,
    BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
):
    """y[n, c, oh, ow] = sum of x over the window of (oh, ow) / the window's divisor (``avg_divisor``).

    Fixed windows are KH x KW taps, in-bounds ones summed; adaptive windows (ADAPTIVE) vary, and
    KH x KW bounds them. One program computes a [BLOCK_A, BLOCK_B] tile of y: output pixels x
    channels (CHANNELS_LAST) or output rows x columns. Grid: (cdiv(N*OH*OW, BLOCK_A),
    cdiv(C, BLOCK_B)) or (cdiv(N*C*OH, BLOCK_A), cdiv(OW, BLOCK_B)). PAIRED as in
    ``max_pool2d_fwd_kernel``. x: (N, C, H, W), y: (N, C, OH, OW).
    """
    n, c, oh, ow, a_ok, b_ok = tile_coords(N, C, OH, OW, CHANNELS_LAST, ALIGN_Y, BLOCK_A, BLOCK_B)
    h0, h1, w0, w1, divisor = avg_divisor(oh, ow, H, W, OH, OW, divisor_override, KH, KW, SH, SW, PH, PW,
                                          COUNT_INCLUDE_PAD, DIVISOR_OVERRIDE, ADAPTIVE)
    if not ADAPTIVE:  # the taps of a fixed window, from its start in the padding
        h0, w0 = oh * SH - PH, ow * SW - PW
        h1, w1 = H, W
    ACC_TYPE: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    acc = tl.zeros((BLOCK_A, BLOCK_B), dtype=ACC_TYPE)
    for kh in tl.range(KH, loop_unroll_factor=1 if ADAPTIVE else KH):  # fixed windows: every tap unrolled
        h = h0 + kh
        row_ok = a_ok & (h >= 0) & (h < h1)
        if PAIRED:
            along_a = tl.multiple_of(n.to(tl.int64) * stride_xn + c.to(tl.int64) * stride_xc
                                     + h.to(tl.int64) * stride_xh, [ALIGN_X, ALIGN_X])
            for q in tl.static_range(-((PW + 1) // 2), (KW - 1 - PW) // 2 + 1):
                even, odd = column_pair(x_ptr, along_a, row_ok, W, q, 0., ALIGN_X, BLOCK_B)
                if 2 * q + PW >= 0:
                    acc += even.to(ACC_TYPE)
                if 2 * q + PW + 1 < KW:
                    acc += odd.to(ACC_TYPE)
        else:
            for kw in tl.range(KW, loop_unroll_factor=1 if ADAPTIVE else KW):
                w = w0 + kw
                ok = row_ok & b_ok & (w >= 0) & (w < w1)
                x_ptrs = x_ptr + offsets(n, c, h, w, stride_xn, stride_xc, stride_xh, stride_xw, ALIGN_X,
                                         CHANNELS_LAST)
                acc += tl.load(x_ptrs, mask=ok, other=0.).to(ACC_TYPE)
    y = acc / divisor.to(ACC_TYPE)
    y_ptrs = y_ptr + offsets(n, c, oh, ow, stride_yn, stride_yc, stride_yh, stride_yw, ALIGN_Y, CHANNELS_LAST)
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=a_ok & b_ok)


@triton.jit
def avg_pool2d_bwd_kernel(
    dy_ptr, dx_ptr,
    # sizes
    N, C, H, W, OH, OW,
    # strides
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    divisor_override,
    # pooling window: kernel (for adaptive windows, a bound on them), stride, padding; the windows visited per axis
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    COVER_H: tl.constexpr, COVER_W: tl.constexpr,
    # flags
    COUNT_INCLUDE_PAD: tl.constexpr, DIVISOR_OVERRIDE: tl.constexpr, ADAPTIVE: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, PAIRED: tl.constexpr, ALIGN_DY: tl.constexpr, ALIGN_DX: tl.constexpr,
    BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
):
    """dx[n, c, h, w] = sum of dy[n, c, oh, ow] / divisor(oh, ow) over the windows (oh, ow) covering (h, w).

    Gather form over ``covering_window``'s COVER_H x COVER_W candidates (fixed windows: one per
    tap where they overlap, one in all where they do not; adaptive: a bound on how many
    overlap at one pixel). One program computes a [BLOCK_A, BLOCK_B] tile of dx: input pixels x
    channels (CHANNELS_LAST) or input rows x columns. Grid: (cdiv(N*H*W, BLOCK_A),
    cdiv(C, BLOCK_B)) or (cdiv(N*C*H, BLOCK_A), cdiv(W, BLOCK_B)). PAIRED as in
    ``max_pool2d_bwd_kernel``. dy: (N, C, OH, OW), dx: (N, C, H, W).
    """
    n, c, h, w, a_ok, b_ok = tile_coords(N, C, H, W, CHANNELS_LAST, ALIGN_DX, BLOCK_A, BLOCK_B)
    tile_ok = a_ok & b_ok
    ACC_TYPE: tl.constexpr = tl.float64 if dy_ptr.dtype.element_ty == tl.float64 else tl.float32
    acc = tl.zeros((BLOCK_A, BLOCK_B), dtype=ACC_TYPE)
    if PAIRED:
        pair_ow, pair_ok = column_windows(OW, ALIGN_DY, BLOCK_B)
        acc_pair = tl.zeros((BLOCK_A, BLOCK_B // 2), dtype=ACC_TYPE)  # what columns 2*ow and 2*ow + 1 get
    for jh in tl.range(COVER_H, loop_unroll_factor=1 if ADAPTIVE else COVER_H):
        oh, tap_h, oh_ok = covering_window(h, jh, H, OH, KH, SH, PH, 1, COVER_H, ADAPTIVE)
        if PAIRED:
            pair_divisor = avg_divisor(oh, pair_ow, H, W, OH, OW, divisor_override, KH, KW, SH, SW, PH, PW,
                                       COUNT_INCLUDE_PAD, DIVISOR_OVERRIDE, ADAPTIVE)[4]
            pair_win_ok = a_ok & oh_ok & pair_ok
            pair_g = tl.load(dy_ptr + offsets(n, c, oh, pair_ow, stride_dyn, stride_dyc, stride_dyh, stride_dyw,
                                              ALIGN_DY, False), mask=pair_win_ok, other=0.)
            acc_pair += pair_g.to(ACC_TYPE) / tl.where(pair_win_ok, pair_divisor, 1).to(ACC_TYPE)
        for jw in tl.range(0 if PAIRED else COVER_W, loop_unroll_factor=1 if ADAPTIVE else COVER_W):
            ow, tap_w, ow_ok = covering_window(w, jw, W, OW, KW, SW, PW, 1, COVER_W, ADAPTIVE)
            h0, h1, w0, w1, divisor = avg_divisor(oh, ow, H, W, OH, OW, divisor_override, KH, KW, SH, SW, PH, PW,
                                                  COUNT_INCLUDE_PAD, DIVISOR_OVERRIDE, ADAPTIVE)
            win_ok = oh_ok & ow_ok
            divisor = tl.where(win_ok, divisor, 1)  # windows that do not exist may compute 0
            dy_ptrs = dy_ptr + offsets(n, c, oh, ow, stride_dyn, stride_dyc, stride_dyh, stride_dyw, ALIGN_DY,
                                       CHANNELS_LAST)
            g = tl.load(dy_ptrs, mask=tile_ok & win_ok, other=0.)
            acc += g.to(ACC_TYPE) / divisor.to(ACC_TYPE)
    if PAIRED:
        acc = tl.reshape(tl.join(acc_pair, acc_pair), (BLOCK_A, BLOCK_B))
    dx_ptrs = dx_ptr + offsets(n, c, h, w, stride_dxn, stride_dxc, stride_dxh, stride_dxw, ALIGN_DX, CHANNELS_LAST)
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=tile_ok)


@triton.jit
def plane_tile(n, p, c, C, H, W, stride_n, stride_c, stride_h, stride_w, FLAT_PLANES: tl.constexpr,
               CHANNELS_LAST: tl.constexpr, ALIGN: tl.constexpr):
    """[pixels, channels] offsets (int64) of the pixels p (h*W + w) of channels c of image n, and
    their mask: channels run along contiguous memory in CHANNELS_LAST, pixels otherwise, and
    ALIGN divides the other strides and the contiguous axis' extent (C or H*W). FLAT_PLANES: a
    plane's rows follow each other (stride_h == W * stride_w), so pixels are one axis of stride stride_w."""
    if FLAT_PLANES:
        along_p = p.to(tl.int64)[:, None] * stride_w
    else:
        along_p = (p // W).to(tl.int64)[:, None] * stride_h + (p % W).to(tl.int64)[:, None] * stride_w
    along_c = c.to(tl.int64)[None, :] * stride_c
    if CHANNELS_LAST:
        return (tl.multiple_of(n * stride_n + along_p, [ALIGN, ALIGN]) + along_c,
                (p < H * W)[:, None] & below(c, C, ALIGN)[None, :])
    else:
        return (tl.multiple_of(n * stride_n + along_c, [ALIGN, ALIGN]) + along_p,
                below(p, H * W, ALIGN)[:, None] & (c < C)[None, :])


@triton.jit
def global_avg_pool2d_fwd_kernel(
    x_ptr, y_ptr,
    # sizes
    N, C, H, W,
    # strides
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_yn, stride_yc,
    # flags
    FLAT_PLANES: tl.constexpr, CHANNELS_LAST: tl.constexpr, ALIGN: tl.constexpr,  # x's, as ``plane_tile`` takes them
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """y[n, c] = mean of x[n, c] over its H*W pixels (average pooling to 1 x 1).

    One program reduces BLOCK_C channels of one image: it reads [BLOCK_P pixels, BLOCK_C
    channels] tiles along contiguous memory (``plane_tile``) into fp32 (fp64) partial sums, and
    sums those once at the end. Grid: (N, cdiv(C, BLOCK_C)). x: (N, C, H, W), y: (N, C, 1, 1).
    """
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    ACC_TYPE: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC_TYPE)
    for p0 in range(0, H * W, BLOCK_P):
        x_offsets, ok = plane_tile(n, p0 + tl.arange(0, BLOCK_P), c, C, H, W, stride_xn, stride_xc, stride_xh,
                                   stride_xw, FLAT_PLANES, CHANNELS_LAST, ALIGN)
        acc += tl.load(x_ptr + x_offsets, mask=ok, other=0.).to(ACC_TYPE)
    y = tl.sum(acc, axis=0) / (H * W)
    tl.store(y_ptr + n * stride_yn + c.to(tl.int64) * stride_yc, y.to(y_ptr.dtype.element_ty), mask=c < C)


@triton.jit
def global_avg_pool2d_bwd_kernel(
    dy_ptr, dx_ptr,
    # sizes
    N, C, H, W,
    # strides
    stride_dyn, stride_dyc,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    # flags
    FLAT_PLANES: tl.constexpr, CHANNELS_LAST: tl.constexpr, ALIGN: tl.constexpr,  # dx's, as ``plane_tile`` takes them
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dx[n, c, h, w] = dy[n, c] / (H*W) (the gradient of average pooling to 1 x 1).

    One program writes BLOCK_C channels of one image, [BLOCK_P pixels, BLOCK_C channels] tiles
    along contiguous memory (``plane_tile``) at a time. Grid: (N, cdiv(C, BLOCK_C)).
    dy: (N, C, 1, 1), dx: (N, C, H, W).
    """
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    ACC_TYPE: tl.constexpr = tl.float64 if dy_ptr.dtype.element_ty == tl.float64 else tl.float32
    g = tl.load(dy_ptr + n * stride_dyn + c.to(tl.int64) * stride_dyc, mask=c < C, other=0.).to(ACC_TYPE)
    dx = tl.broadcast_to((g / (H * W)).to(dx_ptr.dtype.element_ty)[None, :], (BLOCK_P, BLOCK_C))
    for p0 in range(0, H * W, BLOCK_P):
        dx_offsets, ok = plane_tile(n, p0 + tl.arange(0, BLOCK_P), c, C, H, W, stride_dxn, stride_dxc, stride_dxh,
                                    stride_dxw, FLAT_PLANES, CHANNELS_LAST, ALIGN)
        tl.store(dx_ptr + dx_offsets, dx, mask=ok)
