"""Direct kernels for convolutions whose groups hold one channel on a side: depthwise (one input
channel per group, ``C_G == 1``, any channel multiplier ``K_G``) and its transpose (one output
channel per group, ``K_G == 1``). No tensor cores: fp32 FMAs (fp64 for fp64), each element of
the tensor a program reads loaded once from DRAM, its halo from cache.

A depthwise layer does about 2*R*S FLOP per byte it moves, where an implicit GEMM would pad its
N dimension (the multiplier, usually 1) and its reduction (R*S) to tensor-core steps of 16: the
first H100 sweep measured the GEMM path at 0.02-0.10x cuDNN there
(perf/results/nvidia-h100-80gb-hbm3/depthwise.csv). These kernels belong at memory bandwidth.

Group g holds input channels g*C_G .. g*C_G + C_G - 1 and output channels g*K_G .. g*K_G + K_G - 1:
output channel k reads input channels (k // K_G) * C_G + j for j < C_G with weights w[k, j, r, s].
The window (R, S, stride, padding, dilation) and C_G, K_G are compile-time constants, so taps
unroll and the divisions by stride and group sizes fold. Tiles follow the pooling kernels'
(kernels/pool2d.py: ``tile_coords``, ``offsets``): pixels x channels in channels_last, so loads
and stores are 16-byte vectors along C; rows x columns of channel planes in NCHW, vectors along W.
The forward can compute runs of outputs along the other axis, sharing the input lines their
windows read (``_forward_runs``). Padding modes map coordinates through ``padded_index`` as the
GEMM kernels do.
"""
import triton
import triton.language as tl

from convtri.kernels.activations import activate, through_activation
from convtri.kernels.conv2d import padded_index
from convtri.kernels.pool2d import below, covering_window, offsets, plane_tile, shifted_offsets, tile_coords


@triton.jit
def tap_pixel(o, tap, size, CONV_STRIDE: tl.constexpr, PAD: tl.constexpr, DIL: tl.constexpr,
              PAD_MODE: tl.constexpr):
    """The input coordinate that output coordinate ``o`` reads at kernel tap ``tap`` along one
    axis, mapped into the input by the padding mode, and whether it holds data."""
    return padded_index(o * CONV_STRIDE - PAD + tap * DIL, size, PAD_MODE)


@triton.jit
def tap_offsets(n, c, p, q, r, s, H, W, stride_n, stride_c, stride_h, stride_w, SH: tl.constexpr,
                SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                PAD_MODE: tl.constexpr, ALIGN: tl.constexpr, CHANNELS_LAST: tl.constexpr):
    """Offsets of the input pixels that output pixels (p, q) read at tap (r, s), and whether
    they hold data. With zero padding a tap is a scalar shift of the window's corner, shared
    by the tile (``shifted_offsets``); other padding modes map each coordinate."""
    if PAD_MODE == 0:
        h0 = p * SH - PH
        w0 = q * SW - PW
        h = h0 + r * DH
        w = w0 + s * DW
        ok = (h >= 0) & (h < H) & (w >= 0) & (w < W)
        return shifted_offsets(n, c, h0, w0, r * DH, s * DW, stride_n, stride_c, stride_h, stride_w, ALIGN,
                               CHANNELS_LAST), ok
    else:
        h, h_ok = tap_pixel(p, r, H, SH, PH, DH, PAD_MODE)
        w, w_ok = tap_pixel(q, s, W, SW, PW, DW, PAD_MODE)
        return offsets(n, c, h, w, stride_n, stride_c, stride_h, stride_w, ALIGN, CHANNELS_LAST), h_ok & w_ok


# Windows of up to this many taps unroll whole; larger ones (5x5, 7x7) loop over kernel rows, with
# each row's taps unrolled: compiled for sm_90, a fully unrolled 7x7 forward hoists its 49 taps'
# loads and spills 27 KB (cnxt_dw7_96_56, fp16, 64x64 tiles).
UNROLLED_TAPS = tl.constexpr(16)


@triton.jit
def group_channel(x, i, X_G: tl.constexpr, Y_G: tl.constexpr):
    """Channel i on the other side of channel x's group, whose sides hold X_G (x's) and Y_G
    channels: (x // X_G) * Y_G + i. Output channel k's input channels are
    group_channel(k, j, K_G, C_G), input channel c's outputs group_channel(c, i, C_G, K_G).
    Written so that depthwise layers (one channel on each side) keep x itself, whose
    contiguity Triton sees."""
    if X_G == 1 and Y_G == 1:
        return x
    elif Y_G == 1:
        return x // X_G
    else:
        return (x // X_G) * Y_G + i


@triton.jit
def tap_rows_ok(e, r, R: tl.constexpr):
    """Whether kernel row r exists (r < R), as a tensor shaped like e: Triton's interpreter
    (3.6 to 3.9) cannot mask a load with a tensor and'ed with a scalar comparison."""
    return r + tl.zeros_like(e) < R


@triton.jit
def depthwise_fwd_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, z_ptr,
    # sizes
    N, C, H, W, K, P, Q,
    # strides (z, the pre-activation, has y's)
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wk, stride_wc, stride_wr, stride_ws,
    stride_yn, stride_yk, stride_yp, stride_yq,
    stride_b,
    # window: kernel, stride, padding (top, left), dilation; channels per group: input, output
    R: tl.constexpr, S: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr, C_G: tl.constexpr, K_G: tl.constexpr,
    # flags
    HAS_BIAS: tl.constexpr, PAD_MODE: tl.constexpr, ACTIVATION: tl.constexpr, SAVE_PREACTIVATION: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, ALIGN_X: tl.constexpr, ALIGN_Y: tl.constexpr, RUN: tl.constexpr,
    BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
):
    """y[n, k, p, q] = act(b[k] + sum_{j, r, s} x[n, (k // K_G)*C_G + j, h(p, r), w(q, s)] * w[k, j, r, s]).

    One program computes a [BLOCK_A, BLOCK_B] tile of y: output pixels x channels
    (CHANNELS_LAST) or output rows (n, k, p) x columns; with RUN > 1 BLOCK_A runs of RUN output
    columns x channels, or of RUN output rows x columns (``_forward_runs``). With
    SAVE_PREACTIVATION it also writes z, the sum before the activation, which the backward of an
    activation whose derivative the output does not give (SiLU, GELU) reads. Grid:
    (cdiv(N*P*Q, BLOCK_A), cdiv(K, BLOCK_B)) or (cdiv(N*K*P, BLOCK_A), cdiv(Q, BLOCK_B)); with
    runs cdiv(Q, RUN) in place of Q (channels_last), cdiv(P, RUN) in place of P (NCHW).
    ALIGN_X, ALIGN_Y: as the pooling kernels'.
    x: (N, C, H, W), w: (K, C_G, R, S), b: (K,), y, z: (N, K, P, Q).
    """
    if RUN > 1:
        _forward_runs(x_ptr, w_ptr, b_ptr, y_ptr, z_ptr, N, H, W, K, P, Q, stride_xn, stride_xc, stride_xh, stride_xw,
                      stride_wk, stride_wc, stride_wr, stride_ws, stride_yn, stride_yk, stride_yp, stride_yq, stride_b,
                      R, S, SH, SW, PH, PW, DH, DW, C_G, K_G, HAS_BIAS, PAD_MODE, ACTIVATION, SAVE_PREACTIVATION,
                      CHANNELS_LAST, ALIGN_X, ALIGN_Y, RUN, BLOCK_A, BLOCK_B)
        return
    n, k, p, q, a_ok, b_ok = tile_coords(N, K, P, Q, CHANNELS_LAST, ALIGN_Y, BLOCK_A, BLOCK_B)
    tile_ok = a_ok & b_ok
    ACC_TYPE: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    acc = tl.zeros((BLOCK_A, BLOCK_B), dtype=ACC_TYPE)
    k_ok = b_ok if CHANNELS_LAST else a_ok  # the tile's output channels that exist
    w_k = w_ptr + k.to(tl.int64) * stride_wk
    for j in range(C_G):
        c = group_channel(k, j, K_G, C_G)
        for r in tl.range(R, loop_unroll_factor=R if R * S <= UNROLLED_TAPS else 1):  # as ``unrolled_taps``
            for s in tl.static_range(S):
                x_offsets, x_ok = tap_offsets(n, c, p, q, r, s, H, W, stride_xn, stride_xc, stride_xh, stride_xw, SH,
                                              SW, PH, PW, DH, DW, PAD_MODE, ALIGN_X, CHANNELS_LAST)
                v = tl.load(x_ptr + x_offsets, mask=tile_ok & x_ok, other=0.)
                tap = tl.load(w_k + (j * stride_wc + r * stride_wr + s * stride_ws), mask=k_ok, other=0.)
                acc += v.to(ACC_TYPE) * tap.to(ACC_TYPE)
    bias = tl.load(b_ptr + k * stride_b, mask=k_ok, other=0.).to(ACC_TYPE) if HAS_BIAS else 0.
    y_offsets = offsets(n, k, p, q, stride_yn, stride_yk, stride_yp, stride_yq, ALIGN_Y, CHANNELS_LAST)
    _store_output(acc + bias, y_ptr, z_ptr, y_offsets, tile_ok, ACTIVATION, SAVE_PREACTIVATION)


@triton.jit
def _store_output(z, y_ptr, z_ptr, y_offsets, ok, ACTIVATION: tl.constexpr, SAVE_PREACTIVATION: tl.constexpr):
    """The forward's epilogue: y = act(z) stored, and z too with SAVE_PREACTIVATION."""
    if SAVE_PREACTIVATION:
        tl.store(z_ptr + y_offsets, z.to(z_ptr.dtype.element_ty), mask=ok)
    tl.store(y_ptr + y_offsets, activate(z, ACTIVATION).to(y_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _forward_runs(x_ptr, w_ptr, b_ptr, y_ptr, z_ptr, N, H, W, K, P, Q, stride_xn, stride_xc, stride_xh, stride_xw,
                  stride_wk, stride_wc, stride_wr, stride_ws, stride_yn, stride_yk, stride_yp, stride_yq, stride_b,
                  R: tl.constexpr, S: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr,
                  PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr, C_G: tl.constexpr, K_G: tl.constexpr,
                  HAS_BIAS: tl.constexpr, PAD_MODE: tl.constexpr, ACTIVATION: tl.constexpr,
                  SAVE_PREACTIVATION: tl.constexpr, CHANNELS_LAST: tl.constexpr, ALIGN_X: tl.constexpr,
                  ALIGN_Y: tl.constexpr, RUN: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr):
    """depthwise_fwd_kernel's tile as runs of RUN consecutive outputs along the axis that is not
    the tile's contiguous one: in channels_last BLOCK_A runs of output columns (n, p, q0 ..
    q0 + RUN - 1) x BLOCK_B channels, in NCHW BLOCK_A runs of output rows (n, k, p0 .. p0 + RUN
    - 1) x BLOCK_B columns. For each tap across the runs (a kernel row in channels_last, a
    kernel column in NCHW), the SPAN input columns (rows) that the runs' windows cover are each
    loaded and widened once and shared by the taps that read them: RUN x taps from SPAN =
    (RUN - 1)*stride + (taps - 1)*dilation + 1 loads, where single outputs load RUN x taps;
    weights are loaded once per run."""
    # the run's axis: along (stride, dilation, taps); across: the other kernel axis
    STEP: tl.constexpr = SW if CHANNELS_LAST else SH
    DIL: tl.constexpr = DW if CHANNELS_LAST else DH
    ALONG: tl.constexpr = S if CHANNELS_LAST else R
    ACROSS: tl.constexpr = R if CHANNELS_LAST else S
    SPAN: tl.constexpr = (RUN - 1) * STEP + (ALONG - 1) * DIL + 1
    a = tl.program_id(0) * BLOCK_A + tl.arange(0, BLOCK_A)
    b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    if CHANNELS_LAST:  # runs (n, p, q0), channels k
        runs = tl.cdiv(Q, RUN)
        n, p, q = (a // (P * runs))[:, None], ((a // runs) % P)[:, None], ((a % runs) * RUN)[:, None]
        k = b[None, :]
        a_ok, b_ok = (a < N * P * runs)[:, None], below(b, K, ALIGN_Y)[None, :]
        k_ok = b_ok
    else:  # runs (n, k, p0), columns q
        runs = tl.cdiv(P, RUN)
        n, k, p = (a // (K * runs))[:, None], ((a // runs) % K)[:, None], ((a % runs) * RUN)[:, None]
        q = b[None, :]
        a_ok, b_ok = (a < N * K * runs)[:, None], (b < Q)[None, :]
        k_ok = a_ok
    ACC_TYPE: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    accs = (tl.zeros((BLOCK_A, BLOCK_B), dtype=ACC_TYPE),) * RUN
    w_k = w_ptr + k.to(tl.int64) * stride_wk
    for j in range(C_G):
        c = group_channel(k, j, K_G, C_G)
        for u in tl.range(ACROSS, loop_unroll_factor=ACROSS if R * S <= UNROLLED_TAPS else 1):  # as unrolled_taps
            taps = ()
            for i in tl.static_range(ALONG):
                r, s = (u, i) if CHANNELS_LAST else (i, u)
                taps = taps + (tl.load(w_k + (j * stride_wc + r * stride_wr + s * stride_ws), mask=k_ok,
                                       other=0.).to(ACC_TYPE),)
            lines = ()
            for o in tl.static_range(SPAN):  # input column q0*SW - PW + o (row p0*SH - PH + o) of the runs
                if CHANNELS_LAST:
                    x_offsets, x_ok = tap_offsets(n, c, p, q, u, o, H, W, stride_xn, stride_xc, stride_xh, stride_xw,
                                                  SH, SW, PH, PW, DH, 1, PAD_MODE, ALIGN_X, True)
                else:
                    x_offsets, x_ok = tap_offsets(n, c, p, q, o, u, H, W, stride_xn, stride_xc, stride_xh, stride_xw,
                                                  SH, SW, PH, PW, 1, DW, PAD_MODE, ALIGN_X, False)
                lines = lines + (tl.load(x_ptr + x_offsets, mask=a_ok & b_ok & x_ok, other=0.).to(ACC_TYPE),)
            updated = ()
            for t in tl.static_range(RUN):
                acc = accs[t]
                for i in tl.static_range(ALONG):
                    acc += lines[t * STEP + i * DIL] * taps[i]
                updated = updated + (acc,)
            accs = updated
    bias = tl.load(b_ptr + k * stride_b, mask=k_ok, other=0.).to(ACC_TYPE) if HAS_BIAS else 0.
    for t in tl.static_range(RUN):
        if CHANNELS_LAST:
            p_t, q_t = p, q + t
        else:
            p_t, q_t = p + t, q
        y_offsets = offsets(n, k, p_t, q_t, stride_yn, stride_yk, stride_yp, stride_yq, ALIGN_Y, CHANNELS_LAST)
        _store_output(accs[t] + bias, y_ptr, z_ptr, y_offsets, a_ok & b_ok & (p_t < P) & (q_t < Q), ACTIVATION,
                      SAVE_PREACTIVATION)


@triton.jit
def depthwise_dgrad_kernel(
    dy_ptr, saved_ptr, w_ptr, b_ptr, dx_ptr,
    # sizes
    N, C, H, W, K, P, Q,
    # strides (saved: the activation's input or output)
    stride_dyn, stride_dyk, stride_dyp, stride_dyq,
    stride_sn, stride_sk, stride_sp, stride_sq,
    stride_wk, stride_wc, stride_wr, stride_ws,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    stride_b,
    # window: kernel, stride, padding (top, left), dilation; windows visited per axis; channels per group
    R: tl.constexpr, S: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr, COVER_H: tl.constexpr, COVER_W: tl.constexpr, C_G: tl.constexpr,
    K_G: tl.constexpr,
    # flags
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, CHANNELS_LAST: tl.constexpr, ALIGN_DY: tl.constexpr,
    ALIGN_DX: tl.constexpr,
    BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
):
    """dx[n, c, h, w] = b[c] + sum_{i, r, s} dy[n, k, p, q] * w[k, c % C_G, r, s] over the output
    pixels (p, q) whose tap (r, s) lands on (h, w), k = (c // C_G)*K_G + i for i < K_G.

    Zero padding only (other modes fold a padded buffer afterwards, as the GEMM dgrad's).
    Gather form over pooling's ``covering_window``: per axis the COVER windows that can cover
    a pixel, one per tap (r = j), or where windows do not overlap (COVER == 1) the one window
    a pixel lies in. With an ACTIVATION fused into the forward, dy is taken through its
    derivative as it is loaded, from ``saved``. The bias (HAS_BIAS) serves conv_transpose2d,
    whose forward is this kernel. One program computes a [BLOCK_A, BLOCK_B] tile of dx: input
    pixels x channels (CHANNELS_LAST) or input rows (n, c, h) x columns. Grid:
    (cdiv(N*H*W, BLOCK_A), cdiv(C, BLOCK_B)) or (cdiv(N*C*H, BLOCK_A), cdiv(W, BLOCK_B)).
    ALIGN_DY: dy's and saved's. dy, saved: (N, K, P, Q), w: (K, C_G, R, S), b: (C,), dx: (N, C, H, W).
    """
    n, c, h, w, a_ok, b_ok = tile_coords(N, C, H, W, CHANNELS_LAST, ALIGN_DX, BLOCK_A, BLOCK_B)
    tile_ok = a_ok & b_ok
    ACC_TYPE: tl.constexpr = tl.float64 if dy_ptr.dtype.element_ty == tl.float64 else tl.float32
    acc = tl.zeros((BLOCK_A, BLOCK_B), dtype=ACC_TYPE)
    c_ok = b_ok if CHANNELS_LAST else a_ok  # the tile's input channels that exist
    w_c = w_ptr + (c % C_G).to(tl.int64) * stride_wc
    for i in range(K_G):
        k = group_channel(c, i, C_G, K_G)
        for jh in tl.range(COVER_H, loop_unroll_factor=COVER_H if COVER_H * COVER_W <= UNROLLED_TAPS else 1):
            p, r, p_ok = covering_window(h, jh, H, P, R, SH, PH, DH, COVER_H, False)
            for jw in tl.static_range(COVER_W):
                q, s, q_ok = covering_window(w, jw, W, Q, S, SW, PW, DW, COVER_W, False)
                ok = tile_ok & p_ok & q_ok
                dy_offsets = offsets(n, k, p, q, stride_dyn, stride_dyk, stride_dyp, stride_dyq, ALIGN_DY,
                                     CHANNELS_LAST)
                g = tl.load(dy_ptr + dy_offsets, mask=ok, other=0.)
                if ACTIVATION != 0:
                    saved_offsets = offsets(n, k, p, q, stride_sn, stride_sk, stride_sp, stride_sq, ALIGN_DY,
                                            CHANNELS_LAST)
                    g = through_activation(g, tl.load(saved_ptr + saved_offsets, mask=ok, other=0.), ACTIVATION)
                w_ok = c_ok  # a tap per pixel where windows do not overlap, else one per channel
                if COVER_H == 1:
                    w_ok = w_ok & p_ok
                if COVER_W == 1:
                    w_ok = w_ok & q_ok
                tap = tl.load(w_c + k.to(tl.int64) * stride_wk + r * stride_wr + s * stride_ws, mask=w_ok, other=0.)
                acc += g.to(ACC_TYPE) * tap.to(ACC_TYPE)
    if HAS_BIAS:
        acc += tl.load(b_ptr + c * stride_b, mask=c_ok, other=0.).to(ACC_TYPE)
    dx_offsets = offsets(n, c, h, w, stride_dxn, stride_dxc, stride_dxh, stride_dxw, ALIGN_DX, CHANNELS_LAST)
    tl.store(dx_ptr + dx_offsets, acc.to(dx_ptr.dtype.element_ty), mask=tile_ok)


@triton.jit
def depthwise_wgrad_kernel(
    x_ptr, dy_ptr, saved_ptr, dw_ptr, db_ptr,
    # sizes
    N, C, H, W, K, P, Q, SPLIT,
    # strides (saved: the activation's input or output; dw and db: per slice of the reduction first)
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_dyn, stride_dyk, stride_dyp, stride_dyq,
    stride_sn, stride_sk, stride_sp, stride_sq,
    stride_dw_split, stride_dwk, stride_dwc, stride_dwr, stride_dws,
    stride_db_split, stride_db,
    # window: kernel, stride, padding (top, left), dilation; channels per group; kernel rows per program
    R: tl.constexpr, S: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    DH: tl.constexpr, DW: tl.constexpr, C_G: tl.constexpr, K_G: tl.constexpr, TAP_ROWS: tl.constexpr,
    # flags
    WEIGHT_GRAD: tl.constexpr, BIAS_GRAD: tl.constexpr, PAD_MODE: tl.constexpr, ACTIVATION: tl.constexpr,
    FLAT_PLANES: tl.constexpr, CHANNELS_LAST: tl.constexpr, ALIGN_X: tl.constexpr, ALIGN_DY: tl.constexpr,
    BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
):
    """Weight and/or bias gradients over one of SPLIT slices of the N*P*Q reduction.

    dw[split, k, j, r, s] = sum_{(n, p, q) in slice} dy[n, k, p, q] * x[n, (k // K_G)*C_G + j, h(p, r), w(q, s)]
    db[split, k] = sum_{(n, p, q) in slice} dy[n, k, p, q]  (BIAS_GRAD only)
    The channel axis runs over the rows (k, j) of dw, e = k*C_G + j. A program owns BLOCK_B of
    them and TAP_ROWS kernel rows, and walks its slice in [BLOCK_A pixels of one image, BLOCK_B]
    tiles along contiguous memory (pooling's ``plane_tile``: channels in CHANNELS_LAST, pixels
    otherwise), each dy tile read once for all its TAP_ROWS x S taps, which accumulate apart
    (a tuple of tiles) and are summed over the pixels at the end. With an ACTIVATION fused
    into the forward, dy is taken through its derivative from ``saved`` as it is loaded.
    Grid: (cdiv(K*C_G, BLOCK_B) * cdiv(R, TAP_ROWS), SPLIT); the slices split the steps over
    (image, block of BLOCK_A pixels). With SPLIT = 1 dw and db are the gradients themselves
    (split stride 0, any layout and dtype); else fp32 partials (fp64 for fp64), which
    ``conv2d_sum_splits_kernel`` finishes. FLAT_PLANES, ALIGN_DY: dy's and saved's, as
    ``plane_tile`` takes them. x: (N, C, H, W), dy, saved: (N, K, P, Q),
    dw: (SPLIT, K, C_G, R, S), db: (SPLIT, K).
    """
    e_blocks = tl.cdiv(K * C_G, BLOCK_B)
    e = (tl.program_id(0) % e_blocks) * BLOCK_B + tl.arange(0, BLOCK_B)
    r0 = (tl.program_id(0) // e_blocks) * TAP_ROWS
    split = tl.program_id(1)
    k = group_channel(e, 0, C_G, 1)  # e // C_G
    c = group_channel(k, e % C_G, K_G, C_G)
    e_ok = e < K * C_G
    pixel_blocks = tl.cdiv(P * Q, BLOCK_A)
    steps = N * pixel_blocks
    chunk = tl.cdiv(steps, SPLIT)
    ACC_TYPE: tl.constexpr = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    accs = (tl.zeros((BLOCK_A, BLOCK_B), dtype=ACC_TYPE),) * (TAP_ROWS * S)
    db_acc = tl.zeros((BLOCK_A, BLOCK_B), dtype=ACC_TYPE)
    for step in range(split * chunk, tl.minimum(split * chunk + chunk, steps)):
        n = step // pixel_blocks
        pix = (step % pixel_blocks) * BLOCK_A + tl.arange(0, BLOCK_A)
        dy_offsets, ok = plane_tile(n.to(tl.int64), pix, k, K, P, Q, stride_dyn, stride_dyk, stride_dyp, stride_dyq,
                                    FLAT_PLANES, CHANNELS_LAST, ALIGN_DY)
        ok = ok & e_ok[None, :]
        g = tl.load(dy_ptr + dy_offsets, mask=ok, other=0.)
        if ACTIVATION != 0:
            saved_offsets, _ = plane_tile(n.to(tl.int64), pix, k, K, P, Q, stride_sn, stride_sk, stride_sp, stride_sq,
                                          FLAT_PLANES, CHANNELS_LAST, ALIGN_DY)
            g = through_activation(g, tl.load(saved_ptr + saved_offsets, mask=ok, other=0.), ACTIVATION)
        g = g.to(ACC_TYPE)
        if BIAS_GRAD:
            db_acc += g
        if WEIGHT_GRAD:
            p = (pix // Q)[:, None]
            q = (pix % Q)[:, None]
            updated = ()
            for i in tl.static_range(TAP_ROWS):
                h, h_ok = tap_pixel(p, r0 + i, H, SH, PH, DH, PAD_MODE)
                for s in tl.static_range(S):
                    w, w_ok = tap_pixel(q, s, W, SW, PW, DW, PAD_MODE)
                    x_ptrs = x_ptr + offsets(n, c[None, :], h, w, stride_xn, stride_xc, stride_xh, stride_xw, ALIGN_X,
                                             CHANNELS_LAST)
                    v = tl.load(x_ptrs, mask=ok & h_ok & w_ok & tap_rows_ok(e, r0 + i, R)[None, :], other=0.)
                    updated = updated + (accs[i * S + s] + v.to(ACC_TYPE) * g,)
            accs = updated
    if WEIGHT_GRAD:
        dw_e = (dw_ptr + split.to(tl.int64) * stride_dw_split + k.to(tl.int64) * stride_dwk
                + (e % C_G).to(tl.int64) * stride_dwc)
        for i in tl.static_range(TAP_ROWS):
            for s in tl.static_range(S):
                total = tl.sum(accs[i * S + s], axis=0)
                tl.store(dw_e + (r0 + i) * stride_dwr + s * stride_dws, total.to(dw_ptr.dtype.element_ty),
                         mask=e_ok & tap_rows_ok(e, r0 + i, R))
    if BIAS_GRAD:  # the programs of the first kernel rows, for the first input channel of each k
        db_ptrs = db_ptr + split.to(tl.int64) * stride_db_split + k * stride_db
        first = (e % C_G == 0) & tap_rows_ok(e, r0, 1)  # r0 == 0
        tl.store(db_ptrs, tl.sum(db_acc, axis=0).to(db_ptr.dtype.element_ty), mask=e_ok & first)


# ---------------------------------------------------------------------------------------
# Tiles on CUDA, autotuned. Keys hold what changes the best tile: the sizes and the window.
# ---------------------------------------------------------------------------------------
# (BLOCK_A, BLOCK_B, num_warps): a tile of BLOCK_A x BLOCK_B outputs along contiguous memory on
# axis 1 (channels, or columns in NCHW). Not yet measured on a GPU: the autotuner picks per layer
# among those that fit in registers (``_prune_to``).
# Tiles of one size list the tallest first (more pixels, less halo per output).
SHAPES = [(256, 32, 8), (128, 64, 8), (128, 32, 4), (64, 64, 4), (32, 128, 4), (128, 16, 4), (64, 32, 4), (32, 64, 4),
          (64, 16, 4), (32, 32, 4), (16, 64, 4)]
# The weight gradient keeps a tile per tap (TAP_ROWS x S of them): smaller tiles
WGRAD_SHAPES = [(128, 16, 4), (64, 32, 4), (32, 64, 4), (128, 8, 4), (64, 16, 4), (32, 32, 4), (16, 64, 4), (64, 8, 4),
                (32, 16, 4)]
# Register budgets, as bytes per thread over the taps one loop iteration unrolls: what the
# forward and input gradient load in flight (elements per thread x their dtype, per tap), what
# the weight gradient accumulates (as many fp32 per tap). In NCHW an element loads alone, with
# an address of its own: it counts NCHW_COST times. Compiled for sm_90 (fp16,
# perf/results/aot/README.md, triton 3.6 and 3.9): channels_last 3x3 forwards with 32
# outputs per thread (576 bytes) took 192-245 registers without spills, 64 per thread spilled
# 144 bytes; NCHW 3x3 tiles spilled from 16 outputs per thread, none at 8. Under triton 3.9's
# ptxas (13.4) these kernels spilled 8-272 bytes at 72-128 registers, where triton 3.6's (ptxas
# 12.x) took 104-241 and none: given the block's thread count (.reqntid), ptxas 13 aims at an
# occupancy and spills to reach it. MAX_REGISTERS (PTX .maxnreg) lets it use what it needs, as
# ptxas 12 does, so that both compile alike.
THREAD_BYTES = 576
# A forward in runs (channels_last) holds widened fp32 columns and RUN accumulators per element:
# at 16 elements per thread its 5x5 and 7x7 rows (768 and 896 bytes) took 223 and 251
# registers without spills, its 3x3 windows (all rows unrolled, 1408 bytes) spilled 8-48 bytes
RUN_THREAD_BYTES = 1024
# NCHW runs hold an address per loaded element too: compiled for sm_90 and sm_80, their tiles of
# 16 elements per thread spilled 500-4,300 bytes on 5x5 and 7x7 windows; of 8, none on 3x3 and
# 7x7 layers of 56x56, 16-700 bytes on strided 3x3 and 5x5 (single-output NCHW tiles, which the
# autotuner also tries there, spill none)
NCHW_RUN_ELEMENTS = 8
NCHW_COST = 4
MAX_REGISTERS = 255
# A thread's share of a channels_last tile holds at least one 16-byte vector along channels:
# narrower shares load 8 bytes at a time (4 fp16 per thread of 32x16 and 64x8 tiles, sm_80/90)
VECTOR_BYTES = 16
# Outputs a forward program computes in a run (output columns in channels_last, rows in NCHW),
# sharing each input column (row) its windows read (``_forward_runs``). Compiled for sm_90
# (fp16, perf/results/aot/README.md) runs issued fewer instructions per output everywhere:
# channels_last 46.5 -> 35 (3x3), 117.5 -> 66 (5x5), 214 -> 117 (7x7), all without spills, so
# channels_last tiles run in runs; NCHW 78 -> 39 (3x3), 180 -> 90 (3x3/2), 316-423 -> 195-205
# (5x5), 716 -> 335 (7x7), but several of its run tiles spill 240-600 bytes, so NCHW tries both
# and the autotuner picks.
FORWARD_RUN = 4
# Taps a weight-gradient program accumulates: whole kernel rows of up to this many taps (a 3x3
# window at once, 5x5 and 7x7 a row at a time), so that a tile of two fp16 vectors per thread
# fits THREAD_BYTES of fp32 accumulators
WGRAD_MAX_TAPS = 9
KEY = ("N", "C", "H", "W", "K", "P", "Q", "R", "S", "SH", "SW", "C_G", "K_G", "CHANNELS_LAST")


def _configs(shapes, runs=(None,)):
    return [triton.Config({"BLOCK_A": a, "BLOCK_B": b, **({} if run is None else {"RUN": run})}, num_warps=warps,
                          maxnreg=MAX_REGISTERS) for run in runs for a, b, warps in shapes]


def depthwise_fwd_configs(capability):
    """The forward's tiles, each with single outputs (RUN = 1) and with runs (``run_choices``)."""
    return _configs(SHAPES, (1, FORWARD_RUN))


def depthwise_dgrad_configs(capability):
    return _configs(SHAPES)


def depthwise_wgrad_configs(capability):
    return _configs(WGRAD_SHAPES)


def unrolled_taps(rows, columns):
    """The taps one iteration of a tap loop holds: a whole window up to UNROLLED_TAPS taps, else a row."""
    return rows * columns if rows * columns <= UNROLLED_TAPS else columns


def _prune_to(axis_a, axis_b, tap_bytes, pointer):
    """Keep the tiles whose axes are no more than twice the extents they tile (at least 16 and 8
    wide) and that fit the register budget (THREAD_BYTES, RUN_THREAD_BYTES for a forward in runs,
    with ``tap_bytes`` per element per thread), in channels_last at least VECTOR_BYTES per
    thread, and at least the smallest tile. The extents and bytes are functions of the kernel's arguments (``pointer``'s dtype)."""
    def prune(configs, named_args, **kwargs):
        args = {**named_args, **kwargs}
        b = axis_b(args)
        least = VECTOR_BYTES // args[pointer].dtype.itemsize if args["CHANNELS_LAST"] else 1

        def fits(cfg):
            per_thread = cfg.kwargs["BLOCK_A"] * cfg.kwargs["BLOCK_B"] // (32 * cfg.num_warps)
            run = cfg.kwargs.get("RUN", 1)
            budget = RUN_THREAD_BYTES if run > 1 else THREAD_BYTES
            # NCHW's scalar loads in flight each hold an address; runs hold widened values instead
            layout_cost = 1 if args["CHANNELS_LAST"] or run > 1 else NCHW_COST
            return (cfg.kwargs["BLOCK_A"] <= max(16, 2 * triton.next_power_of_2(axis_a({**args, "RUN": run})))
                    and cfg.kwargs["BLOCK_B"] <= max(8, 2 * triton.next_power_of_2(b))
                    and per_thread * tap_bytes({**args, "RUN": run}) * layout_cost <= budget and per_thread >= least
                    and (args["CHANNELS_LAST"] or run == 1 or per_thread <= NCHW_RUN_ELEMENTS)
                    and ("RUN" not in cfg.kwargs or run in run_choices(args)))
        kept = [cfg for cfg in configs if fits(cfg)]
        return kept or [min((cfg for cfg in configs if cfg.kwargs.get("RUN", 1) in run_choices(args)),
                            key=lambda cfg: cfg.kwargs["BLOCK_A"] * cfg.kwargs["BLOCK_B"])]
    return lambda capability: prune


def run_choices(a):
    """The RUN a forward launch can take (FORWARD_RUN): runs where windows overlap along the
    run's axis (output columns in channels_last, rows in NCHW) and it holds more than one
    output; in channels_last only runs, in NCHW both."""
    along, outputs = ("S", "Q") if a["CHANNELS_LAST"] else ("R", "P")
    if a[along] == 1 or a[outputs] == 1:
        return (1,)
    return (FORWARD_RUN,) if a["CHANNELS_LAST"] else (1, FORWARD_RUN)


def _fwd_axes(out_c, out_h, out_w):
    """A forward-style tile's extents (axis 0, axis 1) over an (N, out_c, out_h, out_w) output:
    pixels (or runs of RUN columns) x channels, or rows (or runs of RUN rows) x columns."""
    return (lambda a: (a["N"] * a[out_h] * triton.cdiv(a[out_w], a.get("RUN", 1)) if a["CHANNELS_LAST"]
                       else a["N"] * a[out_c] * triton.cdiv(a[out_h], a.get("RUN", 1))),
            lambda a: a[out_c] if a["CHANNELS_LAST"] else a[out_w])


def _loaded(pointer, rows, columns, row_loop_cost=1.):
    """Bytes an element of a tile loads per iteration of the tap loop; a loop over kernel rows
    (windows beyond UNROLLED_TAPS) counts each tap ``row_loop_cost`` times. A forward in runs
    (RUN > 1) holds, per run and kernel row, its SPAN widened input columns and RUN accumulators."""
    def loaded(a):
        taps = unrolled_taps(a[rows], a[columns])
        if a.get("RUN", 1) > 1:  # RUN accumulators, and SPAN widened lines per tap across the runs unrolled
            along, across = ("S", "R") if a["CHANNELS_LAST"] else ("R", "S")
            step, dil = ("SW", "DW") if a["CHANNELS_LAST"] else ("SH", "DH")
            span = (a["RUN"] - 1) * a[step] + (a[along] - 1) * a[dil] + 1
            unrolled = a[across] if a["R"] * a["S"] <= UNROLLED_TAPS else 1
            return max(4, a[pointer].dtype.itemsize) * (a["RUN"] + span * unrolled)
        cost = row_loop_cost if taps < a[rows] * a[columns] else 1.
        return a[pointer].dtype.itemsize * taps * cost
    return loaded


def _accumulated(a):
    """Bytes of fp32 (fp64) accumulators an element of a weight-gradient tile holds."""
    return max(4, a["x_ptr"].dtype.itemsize) * a["TAP_ROWS"] * a["S"]


depthwise_fwd_prune = _prune_to(*_fwd_axes("K", "P", "Q"), _loaded("x_ptr", "R", "S"), "x_ptr")
# The input gradient's row loop also finds each row's covering windows: at 32 outputs per
# thread a 7x7 one spilled 112-168 bytes where 5x5 and the forward's did not (sm_90, fp16)
DGRAD_ROW_LOOP_COST = 1.5
depthwise_dgrad_prune = _prune_to(*_fwd_axes("C", "H", "W"), _loaded("dy_ptr", "COVER_H", "COVER_W",
                                                                       DGRAD_ROW_LOOP_COST), "dy_ptr")
depthwise_wgrad_prune = _prune_to(lambda a: a["P"] * a["Q"], lambda a: a["K"] * a["C_G"], _accumulated, "x_ptr")
