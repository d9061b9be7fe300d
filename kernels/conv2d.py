"""conv2d kernels: implicit-GEMM forward, input gradient (dgrad), weight gradient (wgrad).

Every tensor is read and written through its four strides, so NCHW, channels_last and
sliced views need no copy. Conv parameters follow torch: output pixel (p, q) reads input
rows ``h = p * conv_stride_h - pad_h + r * dil_h`` for kernel rows r (likewise columns).
``PAD_MODE`` folds torch's padding modes into that index arithmetic: 0 zeros, 1 reflect,
2 replicate, 3 circular. Accumulation is fp32 (fp64 for fp64 tensors).
"""
import copy
import functools

import triton
import triton.language as tl

from convtri.kernels import gpus
from convtri.kernels.activations import activate, through_activation


PAD_ZEROS, PAD_REFLECT, PAD_REPLICATE, PAD_CIRCULAR = 0, 1, 2, 3
@triton.jit
def padded_index(i, size, PAD_MODE: tl.constexpr):
    """Map coordinate ``i`` of the virtually padded input onto the input: (index, in_bounds)."""
    if PAD_MODE == 1:  # reflect: -1 -> 1, size -> size - 2
        i = tl.where(i < 0, -i, i)
        i = tl.where(i >= size, 2 * size - 2 - i, i)
    elif PAD_MODE == 2:  # replicate: clamp to the edge
        i = tl.minimum(tl.maximum(i, 0), size - 1)
    elif PAD_MODE == 3:  # circular: wrap around (torch allows padding <= size)
        i = tl.where(i < 0, i + size, i)
        i = tl.where(i >= size, i - size, i)
    in_bounds = (i >= 0) & (i < size)  # only ever false for zero padding
    return i, in_bounds


@triton.jit
def window_corner(x_img, h0, w0, stride_xh, stride_xw, PAD_MODE: tl.constexpr):
    """Per-row base pointers for ``window_taps``: for zero padding, pointers to the windows'
    top-left corners (h0, w0), which may lie outside the input (every load is masked); for
    other modes the image base, as each tap's coordinates go through padded_index."""
    if PAD_MODE == 0:
        x_img = x_img + h0.to(tl.int64) * stride_xh + w0.to(tl.int64) * stride_xw
    return x_img


@triton.jit
def window_taps(x_corner, h0, w0, dh, dw, H, W, stride_xh, stride_xw, PAD_MODE: tl.constexpr):
    """Pointers to the input pixels (h0 + dh, w0 + dw) of each row and whether they hold data.

    With zero padding a tap costs one scalar offset from the hoisted corner pointers plus the
    bounds masks; other padding modes map every coordinate into the input instead."""
    h = h0 + dh
    w = w0 + dw
    if PAD_MODE == 0:
        ok = (h >= 0) & (h < H) & (w >= 0) & (w < W)
        ptrs = x_corner + (dh.to(tl.int64) * stride_xh + dw.to(tl.int64) * stride_xw)
    else:
        h, h_ok = padded_index(h, H, PAD_MODE)
        w, w_ok = padded_index(w, W, PAD_MODE)
        ok = h_ok & w_ok
        ptrs = x_corner + h.to(tl.int64) * stride_xh + w.to(tl.int64) * stride_xw
    return ptrs, ok


@triton.jit
def dot_accumulate(acc, a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """acc + a @ b in acc's type (fp32, or fp64 for fp64 operands: triton 3.6 needs out_dtype
    to say so). fp16/bf16 operands are widened in Triton's interpreter, whose bf16 dot is broken."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=acc.dtype)


@triton.jit
def next_block(c0, s, r, C, S, BLOCK: tl.constexpr):
    """The next step of a mixed-radix counter (r, s, c0): c0 advances by BLOCK below C, then
    s below S, then r. Reductions over (r, s, blocks of C channels) step with it, as scalar
    counters instead of a division per step."""
    c0 += BLOCK
    next_tap = c0 >= C
    c0 = tl.where(next_tap, 0, c0)
    s = tl.where(next_tap, s + 1, s)
    next_row = s >= S
    s = tl.where(next_row, 0, s)
    r = tl.where(next_row, r + 1, r)
    return c0, s, r


@triton.jit
def phase_taps(phase, pad, dil, conv_stride, tap_step, R):
    """The kernel taps r < R that land on input rows h = phase (mod conv_stride), as dgrad
    needs them: (phase + pad - r*dil) % conv_stride == 0. They are r_first, r_first + tap_step,
    ... with tap_step = conv_stride / gcd(conv_stride, dil). Returns r_first, how many there
    are, and the output row offset of r_first's tap, (phase + pad - r_first*dil) / conv_stride."""
    lift = conv_stride * R * dil  # a multiple of conv_stride that keeps % and // on numbers >= 0
    first = tl.full([], -1, tl.int32)
    for t in range(0, tap_step):
        hit = ((phase + pad - t * dil + lift) % conv_stride == 0) & (first < 0)
        first = tl.where(hit, t, first)
    count = tl.where((first >= 0) & (first < R), tl.cdiv(R - first, tap_step), 0)
    row = (phase + pad - first * dil + lift) // conv_stride - R * dil
    return first, count, row


@triton.jit
def conv2d_fwd_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, z_ptr,
    # sizes (C_G and K_G: input and output channels per group)
    N, C_G, H, W, K_G, P, Q, R, S, GROUPS,
    # strides
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wk, stride_wc, stride_wr, stride_ws,
    stride_yn, stride_yk, stride_yp, stride_yq,
    stride_b,
    # conv parameters
    conv_stride_h, conv_stride_w, pad_h, pad_w, dil_h, dil_w,
    # flags
    HAS_BIAS: tl.constexpr, PAD_MODE: tl.constexpr, FLAT_TAPS: tl.constexpr, PRECISION: tl.constexpr,
    UPCAST: tl.constexpr, EVEN_BLOCKS: tl.constexpr, ACTIVATION: tl.constexpr, SAVE_PREACTIVATION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """y[n, k, p, q] = act(b[k] + sum_{c, r, s} x[n, c, h(p, r), w(q, s)] * w[k, c, r, s]), act
    the ACTIVATION (kernels/activations.py) applied in the epilogue; with SAVE_PREACTIVATION the
    sum before it is also written to z (y's strides), for the backward of SiLU and GELU.

    Implicit GEMM per group: M = N*P*Q output pixels, N = K/GROUPS output channels,
    reduced over (C/GROUPS)*R*S in the order (r, s, then channel blocks), or, with FLAT_TAPS
    (few channels), along one axis over (r, s, c) so that a block spans several taps.
    EVEN_BLOCKS: BLOCK_K divides C/GROUPS, so channel blocks need no mask.
    One program computes a BLOCK_M x BLOCK_N tile of y for one group.
    Grid: (cdiv(N*P*Q, BLOCK_M) * cdiv(K/GROUPS, BLOCK_N), GROUPS), tiles in GROUP_M order.
    x: (N, C, H, W), w: (K, C/GROUPS, R, S), b: (K,), y, z: (N, K, P, Q).
    """
    M = N * P * Q
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(K_G, BLOCK_N)
    pid = tl.program_id(0)
    g = tl.program_id(1)
    # grouped order: GROUP_M row tiles share their weight tiles in L2
    width = GROUP_M * tiles_n
    first_m = (pid // width) * GROUP_M
    group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % group_rows
    pid_n = (pid % width) // group_rows

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < M
    n = offs_m // (P * Q)
    p = (offs_m // Q) % P
    q = offs_m % Q
    offs_k = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k_ok = offs_k < K_G
    k_abs = g * K_G + offs_k
    offs_c = tl.arange(0, BLOCK_K)

    h0 = p * conv_stride_h - pad_h
    w0 = q * conv_stride_w - pad_w
    x_img = x_ptr + n.to(tl.int64) * stride_xn + (g * C_G).to(tl.int64) * stride_xc
    x_corner = window_corner(x_img, h0, w0, stride_xh, stride_xw, PAD_MODE)
    w_row = w_ptr + k_abs.to(tl.int64) * stride_wk
    ACC_TYPE = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_TYPE)
    if FLAT_TAPS:
        for t0 in range(0, R * S * C_G, BLOCK_K):
            t = t0 + offs_c  # reduction index over (r, s, c), c fastest
            t_ok = t < R * S * C_G
            c = t % C_G
            r = (t // C_G) // S
            s = (t // C_G) % S
            x_pix, tap_ok = window_taps(x_corner[:, None], h0[:, None], w0[:, None], (r * dil_h)[None, :],
                                        (s * dil_w)[None, :], H, W, stride_xh, stride_xw, PAD_MODE)
            a = tl.load(x_pix + c.to(tl.int64)[None, :] * stride_xc, mask=m_ok[:, None] & tap_ok & t_ok[None, :],
                        other=0.)
            w_tap = c * stride_wc + r * stride_wr + s * stride_ws
            b = tl.load(w_row[None, :] + w_tap[:, None], mask=t_ok[:, None] & k_ok[None, :], other=0.)
            acc = dot_accumulate(acc, a, b, PRECISION, UPCAST)
    else:
        c0 = tl.full([], 0, tl.int32)
        s = tl.full([], 0, tl.int32)
        r = tl.full([], 0, tl.int32)
        for _ in range(0, R * S * tl.cdiv(C_G, BLOCK_K)):  # one loop over (r, s, channel block) pipelines best
            x_pix, tap_ok = window_taps(x_corner, h0, w0, r * dil_h, s * dil_w, H, W, stride_xh, stride_xw, PAD_MODE)
            pix_ok = m_ok & tap_ok
            w_rs = w_row + r * stride_wr + s * stride_ws
            c = c0 + offs_c
            c_ok = (c < C_G) | EVEN_BLOCKS  # EVEN_BLOCKS: a constant True, no mask to compute
            a = tl.load(x_pix[:, None] + c.to(tl.int64)[None, :] * stride_xc, mask=pix_ok[:, None] & c_ok[None, :],
                        other=0.)
            b = tl.load(w_rs[None, :] + c[:, None] * stride_wc, mask=c_ok[:, None] & k_ok[None, :], other=0.)
            acc = dot_accumulate(acc, a, b, PRECISION, UPCAST)
            c0, s, r = next_block(c0, s, r, C_G, S, BLOCK_K)

    if HAS_BIAS:
        bias = tl.load(b_ptr + k_abs * stride_b, mask=k_ok, other=0.)
        acc += bias.to(ACC_TYPE)[None, :]
    y_pix = n.to(tl.int64) * stride_yn + p.to(tl.int64) * stride_yp + q.to(tl.int64) * stride_yq
    y_offsets = y_pix[:, None] + k_abs.to(tl.int64)[None, :] * stride_yk
    if SAVE_PREACTIVATION:
        tl.store(z_ptr + y_offsets, acc.to(z_ptr.dtype.element_ty), mask=m_ok[:, None] & k_ok[None, :])
    acc = activate(acc, ACTIVATION)
    tl.store(y_ptr + y_offsets, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & k_ok[None, :])


@triton.jit
def conv2d_dgrad_kernel(
    dy_ptr, y_ptr, w_ptr, b_ptr, dx_ptr,
    # sizes (C_G and K_G: input and output channels per group)
    N, C_G, H, W, K_G, P, Q, R, S, GROUPS,
    # strides
    stride_dyn, stride_dyk, stride_dyp, stride_dyq,
    stride_yn, stride_yk, stride_yp, stride_yq,
    stride_wk, stride_wc, stride_wr, stride_ws,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    stride_b,
    # conv parameters; tap_step: conv_stride / gcd(conv_stride, dil), the spacing of one phase's taps
    conv_stride_h, conv_stride_w, pad_h, pad_w, dil_h, dil_w, tap_step_h, tap_step_w,
    # flags
    HAS_BIAS: tl.constexpr, FLAT_TAPS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    EVEN_BLOCKS: tl.constexpr, ACTIVATION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """dx[n, c, h, w] = b[c] + sum_{k, r, s} dy[n, k, p, q] * w[k, c, r, s] over h = p*stride - pad + r*dil.

    With an ACTIVATION fused into the forward, dy is the gradient of its output y and is taken
    through the activation's derivative as it is loaded (``through_activation``).
    The bias (HAS_BIAS) serves conv_transpose2d, whose forward is this kernel.
    Gather form, decomposed by stride phase so that no zero of a strided gradient is read:
    a program owns input pixels with h % conv_stride_h == phase_h (likewise w), and only
    the kernel taps (r, s) that land on that phase contribute, each to output row
    p = (h + pad_h - r*dil_h) / conv_stride_h exactly.
    Implicit GEMM per (group, phase): M = N*cdiv(H, sh)*cdiv(W, sw) input pixels,
    N = C/GROUPS input channels, reduced over (K/GROUPS)*R*S: tap by tap, or with FLAT_TAPS
    (few output channels) along one axis over (r, s, k), masking the taps of other phases.
    EVEN_BLOCKS: BLOCK_K divides K/GROUPS, so channel blocks need no mask.
    One program computes a BLOCK_M x BLOCK_N tile of dx.
    Grid: (cdiv(M, BLOCK_M) * cdiv(C/GROUPS, BLOCK_N), GROUPS, conv_stride_h * conv_stride_w).
    dy, y: (N, K, P, Q), w: (K, C/GROUPS, R, S), b: (C,), dx: (N, C, H, W).
    """
    H_PH = tl.cdiv(H, conv_stride_h)  # rows per phase, at most
    W_PH = tl.cdiv(W, conv_stride_w)
    M = N * H_PH * W_PH
    tiles_m = tl.cdiv(M, BLOCK_M)
    pid_m = tl.program_id(0) % tiles_m
    pid_n = tl.program_id(0) // tiles_m
    g = tl.program_id(1)
    phase = tl.program_id(2)
    phase_h = phase // conv_stride_w
    phase_w = phase % conv_stride_w

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n = offs_m // (H_PH * W_PH)
    i = (offs_m // W_PH) % H_PH
    j = offs_m % W_PH
    h = phase_h + i * conv_stride_h
    w = phase_w + j * conv_stride_w
    pix_ok = (offs_m < M) & (h < H) & (w < W)
    offs_c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ok = offs_c < C_G
    offs_k = tl.arange(0, BLOCK_K)

    dy_img = dy_ptr + n.to(tl.int64) * stride_dyn + (g * K_G).to(tl.int64) * stride_dyk
    dy_corner = window_corner(dy_img, i, j, stride_dyp, stride_dyq, 0)  # dy[n, :, i, j]
    y_corner = window_corner(y_ptr + n.to(tl.int64) * stride_yn + (g * K_G).to(tl.int64) * stride_yk, i, j,
                             stride_yp, stride_yq, 0)
    w_col = w_ptr + (g * K_G).to(tl.int64) * stride_wk + offs_c * stride_wc
    ACC_TYPE = tl.float64 if dy_ptr.dtype.element_ty == tl.float64 else tl.float32
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_TYPE)
    if HAS_BIAS:  # the accumulator starts from the bias (in the epilogue instead, ptxas spills more)
        acc += tl.load(b_ptr + (g * C_G + offs_c) * stride_b, mask=c_ok, other=0.).to(ACC_TYPE)[None, :]
    # Offsets that keep the scalar % and // below on non-negative numbers.
    lift_h = conv_stride_h * R * dil_h
    lift_w = conv_stride_w * S * dil_w
    if FLAT_TAPS:
        for t0 in range(0, R * S * K_G, BLOCK_K):
            t = t0 + offs_k  # reduction index over (r, s, k), k fastest
            k = t % K_G
            r = (t // K_G) // S
            s = (t // K_G) % S
            top = phase_h + pad_h - r * dil_h + lift_h  # as below, per column
            left = phase_w + pad_w - s * dil_w + lift_w
            t_ok = (t < R * S * K_G) & (top % conv_stride_h == 0) & (left % conv_stride_w == 0)
            dp = (top // conv_stride_h - R * dil_h)[None, :]
            dq = (left // conv_stride_w - S * dil_w)[None, :]
            dy_pix, tap_ok = window_taps(dy_corner[:, None], i[:, None], j[:, None], dp, dq, P, Q, stride_dyp,
                                         stride_dyq, 0)
            a_mask = pix_ok[:, None] & tap_ok & t_ok[None, :]
            a = tl.load(dy_pix + k.to(tl.int64)[None, :] * stride_dyk, mask=a_mask, other=0.)
            if ACTIVATION != 0:
                y_pix, _ = window_taps(y_corner[:, None], i[:, None], j[:, None], dp, dq, P, Q, stride_yp, stride_yq, 0)
                a = through_activation(a, tl.load(y_pix + k.to(tl.int64)[None, :] * stride_yk, mask=a_mask, other=0.),
                                       ACTIVATION)
            w_tap = k.to(tl.int64) * stride_wk + r * stride_wr + s * stride_ws
            b = tl.load(w_col[None, :] + w_tap[:, None], mask=t_ok[:, None] & c_ok[None, :], other=0.)
            acc = dot_accumulate(acc, a, b, PRECISION, UPCAST)
    else:
        # one loop over (this phase's taps, channel blocks) with scalar counters
        r_first, r_count, p_first = phase_taps(phase_h, pad_h, dil_h, conv_stride_h, tap_step_h, R)
        s_first, s_count, q_first = phase_taps(phase_w, pad_w, dil_w, conv_stride_w, tap_step_w, S)
        p_step = tap_step_h * dil_h // conv_stride_h  # dy rows between two taps of the phase
        q_step = tap_step_w * dil_w // conv_stride_w
        dy_block_k = offs_k.to(tl.int64)[None, :] * stride_dyk
        k0 = tl.full([], 0, tl.int32)
        sv = tl.full([], 0, tl.int32)
        rv = tl.full([], 0, tl.int32)
        for _ in range(0, r_count * s_count * tl.cdiv(K_G, BLOCK_K)):
            # tap (r, s) reads dy rows p = i + p_first - rv * p_step, likewise q
            dp = p_first - rv * p_step
            dq = q_first - sv * q_step
            dy_pix, tap_ok = window_taps(dy_corner, i, j, dp, dq, P, Q, stride_dyp, stride_dyq, 0)
            row_ok = pix_ok & tap_ok
            w_rs = w_col + (r_first + rv * tap_step_h) * stride_wr + (s_first + sv * tap_step_w) * stride_ws
            k = k0 + offs_k
            k_ok = (k < K_G) | EVEN_BLOCKS  # EVEN_BLOCKS: a constant True, no mask to compute
            dy_k = dy_pix + k0.to(tl.int64) * stride_dyk  # 64-bit channel offsets
            a = tl.load(dy_k[:, None] + dy_block_k, mask=row_ok[:, None] & k_ok[None, :], other=0.)
            if ACTIVATION != 0:
                y_pix, _ = window_taps(y_corner, i, j, dp, dq, P, Q, stride_yp, stride_yq, 0)
                y_k = y_pix[:, None] + k.to(tl.int64)[None, :] * stride_yk
                a = through_activation(a, tl.load(y_k, mask=row_ok[:, None] & k_ok[None, :], other=0.), ACTIVATION)
            b = tl.load(w_rs[None, :] + k[:, None].to(tl.int64) * stride_wk, mask=k_ok[:, None] & c_ok[None, :],
                        other=0.)
            acc = dot_accumulate(acc, a, b, PRECISION, UPCAST)
            k0, sv, rv = next_block(k0, sv, rv, K_G, s_count, BLOCK_K)

    dx_pix = dx_ptr + n.to(tl.int64) * stride_dxn + h.to(tl.int64) * stride_dxh + w.to(tl.int64) * stride_dxw
    dx_ptrs = dx_pix[:, None] + (g * C_G + offs_c).to(tl.int64)[None, :] * stride_dxc
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=pix_ok[:, None] & c_ok[None, :])


@triton.jit
def conv2d_wgrad_kernel(
    x_ptr, dy_ptr, y_ptr, dw_ptr, db_ptr,
    # sizes (C_G and K_G: input and output channels per group)
    N, C_G, H, W, K_G, P, Q, R, S, GROUPS, SPLIT,
    # strides (dw and db: per slice of the reduction first)
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_dyn, stride_dyk, stride_dyp, stride_dyq,
    stride_yn, stride_yk, stride_yp, stride_yq,
    stride_dw_split, stride_dwk, stride_dwc, stride_dwr, stride_dws,
    stride_db_split, stride_db,
    # conv parameters
    conv_stride_h, conv_stride_w, pad_h, pad_w, dil_h, dil_w,
    # flags; P_POW2, Q_POW2: next_power_of_2(P), next_power_of_2(Q)
    WEIGHT_GRAD: tl.constexpr, BIAS_GRAD: tl.constexpr, PAD_MODE: tl.constexpr, FLAT_TAPS: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, P_POW2: tl.constexpr, Q_POW2: tl.constexpr,
    ACTIVATION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Weight and/or bias gradients over one of SPLIT slices of the N*P*Q reduction.

    dw[split, k, c, r, s] = sum_{(n, p, q) in slice} dy[n, k, p, q] * x[n, c, h(p, r), w(q, s)]
    db[split, k] = sum_{(n, p, q) in slice} dy[n, k, p, q]  (BIAS_GRAD only)
    GEMM per (group, r, s): M = K/GROUPS, N = C/GROUPS, reduced over the slice; with FLAT_TAPS
    (few channels) one GEMM per group whose N axis runs over (r, s, c), c fastest.
    A reduction step takes BLOCK_K rows as a block of images x output rows p x columns q,
    each a power of two (columns first, up to Q_POW2; then rows; then images: on a GPU's 16 to
    64 rows, one image): a row's offsets are the block's (scalar) plus its place in the block
    (fixed), so no row index is divided or carried. The slices split the steps.
    One program computes a BLOCK_M x BLOCK_N tile for one (r, s, slice, group); the programs
    with the first column tile at r = s = 0 also reduce dy for the bias.
    Grid: (cdiv(K/GROUPS, BLOCK_M) * cdiv(C/GROUPS, BLOCK_N) * R*S, SPLIT, GROUPS), with FLAT_TAPS
    (cdiv(K/GROUPS, BLOCK_M) * cdiv(R*S*C/GROUPS, BLOCK_N), SPLIT, GROUPS), and
    (cdiv(K/GROUPS, BLOCK_M), SPLIT, GROUPS) for the bias alone (not WEIGHT_GRAD).
    With an ACTIVATION fused into the forward, dy (the gradient of its output y) is taken
    through the activation's derivative as it is loaded.
    x: (N, C, H, W), dy, y: (N, K, P, Q), dw: (SPLIT, K, C/GROUPS, R, S), db: (SPLIT, K). With
    SPLIT = 1 they are the gradients themselves (split stride 0, any layout and dtype); else
    fp32 partials (fp64 for fp64) that ``conv2d_sum_splits_kernel`` finishes.
    """
    tiles_m = tl.cdiv(K_G, BLOCK_M)
    tiles_n = tl.cdiv(R * S * C_G, BLOCK_N) if FLAT_TAPS else tl.cdiv(C_G, BLOCK_N)
    pid = tl.program_id(0)
    pid_m = pid % tiles_m
    pid_n = (pid // tiles_m) % tiles_n
    rs = pid // (tiles_m * tiles_n)  # always 0 with FLAT_TAPS
    g = tl.program_id(2)
    split = tl.program_id(1)

    offs_k = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    k_ok = offs_k < K_G
    k_abs = g * K_G + offs_k
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if FLAT_TAPS:  # columns (r, s, c), c fastest
        col_ok = cols < R * S * C_G
        offs_c = cols % C_G
        col_rs = cols // C_G
    else:  # columns c of tap rs
        col_ok = cols < C_G
        offs_c = cols
        col_rs = tl.zeros_like(cols) + rs
    c_abs = g * C_G + offs_c
    tap_dh = (rs // S) * dil_h
    tap_dw = (rs % S) * dil_w
    col_dh = (col_rs // S) * dil_h
    col_dw = (col_rs % S) * dil_w

    # the steps over (block of images, block of p rows, block of q columns) of this slice
    BLOCK_Q: tl.constexpr = Q_POW2 if Q_POW2 < BLOCK_K else BLOCK_K
    BLOCK_P: tl.constexpr = P_POW2 if P_POW2 < BLOCK_K // BLOCK_Q else BLOCK_K // BLOCK_Q
    BLOCK_I: tl.constexpr = BLOCK_K // (BLOCK_P * BLOCK_Q)  # images (1 for the GPU's blocks of rows)
    offs_j = tl.arange(0, BLOCK_K)
    ii = offs_j // (BLOCK_P * BLOCK_Q)  # the row's place in a block: image, row, column
    ip = (offs_j // BLOCK_Q) % BLOCK_P
    iq = offs_j % BLOCK_Q
    q_blocks = tl.cdiv(Q, BLOCK_Q)
    p_blocks = tl.cdiv(P, BLOCK_P)
    steps = tl.cdiv(N, BLOCK_I) * p_blocks * q_blocks
    chunk = tl.cdiv(steps, SPLIT)
    start = split * chunk
    qb = start % q_blocks
    pb = (start // q_blocks) % p_blocks
    nb = start // (q_blocks * p_blocks)
    dy_in_block = ii.to(tl.int64) * stride_dyn + ip.to(tl.int64) * stride_dyp + iq.to(tl.int64) * stride_dyq
    y_in_block = ii.to(tl.int64) * stride_yn + ip.to(tl.int64) * stride_yp + iq.to(tl.int64) * stride_yq
    x_in_image = ii.to(tl.int64) * stride_xn
    h_in_block = ip * conv_stride_h
    w_in_block = iq * conv_stride_w

    ACC_TYPE = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_TYPE)
    db_acc = tl.zeros((BLOCK_M,), dtype=ACC_TYPE)
    for _ in range(start, tl.minimum(start + chunk, steps)):
        n0 = nb * BLOCK_I
        p0 = pb * BLOCK_P
        q0 = qb * BLOCK_Q
        row_ok = (ii < N - n0) & (ip < P - p0) & (iq < Q - q0)
        dy_block = dy_ptr + (n0.to(tl.int64) * stride_dyn + p0.to(tl.int64) * stride_dyp
                             + q0.to(tl.int64) * stride_dyq)
        a = tl.load((dy_block + dy_in_block)[None, :] + k_abs.to(tl.int64)[:, None] * stride_dyk,
                    mask=k_ok[:, None] & row_ok[None, :], other=0.)
        if ACTIVATION != 0:
            y_block = y_ptr + (n0.to(tl.int64) * stride_yn + p0.to(tl.int64) * stride_yp + q0.to(tl.int64) * stride_yq)
            y = tl.load((y_block + y_in_block)[None, :] + k_abs.to(tl.int64)[:, None] * stride_yk,
                        mask=k_ok[:, None] & row_ok[None, :], other=0.)
            a = through_activation(a, y, ACTIVATION)
        if WEIGHT_GRAD:
            h0 = p0 * conv_stride_h - pad_h  # the block's first window corner
            w0 = q0 * conv_stride_w - pad_w
            x_img = x_ptr + n0.to(tl.int64) * stride_xn + x_in_image  # per row
            if FLAT_TAPS:  # a tap per column
                h = h0 + h_in_block
                w = w0 + w_in_block
                x_corner = window_corner(x_img, h, w, stride_xh, stride_xw, PAD_MODE)
                x_pix, tap_ok = window_taps(x_corner[:, None], h[:, None], w[:, None], col_dh[None, :],
                                            col_dw[None, :], H, W, stride_xh, stride_xw, PAD_MODE)
                x_mask = row_ok[:, None] & tap_ok & col_ok[None, :]
            else:  # one tap for the whole tile
                h = h0 + tap_dh + h_in_block
                w = w0 + tap_dw + w_in_block
                if PAD_MODE == 0:  # the block's corner plus the row's fixed offset within it
                    x_pix = x_img + ((h0 + tap_dh).to(tl.int64) * stride_xh + (w0 + tap_dw).to(tl.int64) * stride_xw
                                     + (h_in_block.to(tl.int64) * stride_xh + w_in_block.to(tl.int64) * stride_xw))
                    tap_ok = (h >= 0) & (h < H) & (w >= 0) & (w < W)
                else:
                    x_pix, tap_ok = window_taps(x_img, h, w, 0, 0, H, W, stride_xh, stride_xw, PAD_MODE)
                x_pix = x_pix[:, None]
                x_mask = (row_ok & tap_ok)[:, None] & col_ok[None, :]
            b = tl.load(x_pix + c_abs.to(tl.int64)[None, :] * stride_xc, mask=x_mask, other=0.)
            acc = dot_accumulate(acc, a, b, PRECISION, UPCAST)
        if BIAS_GRAD:
            db_acc += tl.sum(a.to(ACC_TYPE), axis=1)
        qb, pb, nb = next_block(qb, pb, nb, q_blocks, p_blocks, 1)

    if WEIGHT_GRAD:
        dw_slice = dw_ptr + split.to(tl.int64) * stride_dw_split
        col_off = offs_c * stride_dwc + (col_rs // S) * stride_dwr + (col_rs % S) * stride_dws
        ptrs = dw_slice + k_abs.to(tl.int64)[:, None] * stride_dwk + col_off[None, :]
        tl.store(ptrs, acc.to(dw_ptr.dtype.element_ty), mask=k_ok[:, None] & col_ok[None, :])
    if BIAS_GRAD:
        if (pid_n == 0) & (rs == 0):  # one program per output-channel tile writes the bias
            db_ptrs = db_ptr + split.to(tl.int64) * stride_db_split + k_abs * stride_db
            tl.store(db_ptrs, db_acc.to(db_ptr.dtype.element_ty), mask=k_ok)


@triton.jit
def conv2d_sum_splits_kernel(
    part_ptr, out_ptr,
    # sizes: out is (D0, D1, D2, D3); part is contiguous (SPLIT, D0, D1, D2, D3)
    SPLIT, D0, D1, D2, D3,
    # strides
    stride_o0, stride_o1, stride_o2, stride_o3,
    BLOCK: tl.constexpr,
):
    """out = sum of part over its leading SPLIT axis, in a fixed order (deterministic).

    One program reduces BLOCK consecutive elements of the logical (D0, D1, D2, D3) index.
    Grid: (cdiv(D0*D1*D2*D3, BLOCK),).
    """
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    numel = D0 * D1 * D2 * D3
    ok = offs < numel
    total = tl.zeros((BLOCK,), dtype=part_ptr.dtype.element_ty)
    for split in range(0, SPLIT):
        total += tl.load(part_ptr + split * numel + offs, mask=ok, other=0.)
    i3 = offs % D3
    i2 = (offs // D3) % D2
    i1 = (offs // (D3 * D2)) % D1
    i0 = offs // (D3 * D2 * D1)
    out_ptrs = out_ptr + i0 * stride_o0 + i1 * stride_o1 + i2 * stride_o2 + i3 * stride_o3
    tl.store(out_ptrs, total.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def pad_fold_kernel(
    gp_ptr, gx_ptr,
    # sizes: gx is (N, C, H, W); gp is (N, C, HP, WP), padded by pad_h rows on top, pad_w on the left
    N, C, H, W, HP, WP,
    # strides
    stride_gpn, stride_gpc, stride_gph, stride_gpw,
    stride_gxn, stride_gxc, stride_gxh, stride_gxw,
    # padding (top, left)
    pad_h, pad_w,
    PAD_MODE: tl.constexpr, BLOCK: tl.constexpr,
):
    """Gradient through reflect/replicate/circular padding: gx[h, w] sums gp over the padded
    positions that ``padded_index`` maps onto (h, w).

    The padded positions mapping onto input row h are h + pad_h itself and some of the
    HP - H border rows, so each element checks those HP - H + 1 candidates per axis.
    One program folds BLOCK elements of the logical (N, C, H, W) index.
    Grid: (cdiv(N*C*H*W, BLOCK),).
    """
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < N * C * H * W
    w = (offs % W).to(tl.int32)
    h = ((offs // W) % H).to(tl.int32)
    c = (offs // (W * H)) % C
    n = offs // (W * H * C)
    gp_img = gp_ptr + n * stride_gpn + c * stride_gpc
    ACC_TYPE = tl.float64 if gp_ptr.dtype.element_ty == tl.float64 else tl.float32
    total = tl.zeros((BLOCK,), dtype=ACC_TYPE)
    for jh in range(0, HP - H + 1):
        # candidate 0 is the interior row; 1..pad_h the top border; the rest the bottom border
        hp = tl.where(jh == 0, h + pad_h, tl.where(jh <= pad_h, jh - 1, H + jh - 1))
        h_src, _ = padded_index(hp - pad_h, H, PAD_MODE)
        for jw in range(0, WP - W + 1):
            wp = tl.where(jw == 0, w + pad_w, tl.where(jw <= pad_w, jw - 1, W + jw - 1))
            w_src, _ = padded_index(wp - pad_w, W, PAD_MODE)
            hit = ok & (h_src == h) & (w_src == w)
            g = tl.load(gp_img + hp.to(tl.int64) * stride_gph + wp.to(tl.int64) * stride_gpw, mask=hit, other=0.)
            total += g.to(ACC_TYPE)
    gx_ptrs = gx_ptr + n * stride_gxn + c * stride_gxc + h.to(tl.int64) * stride_gxh + w.to(tl.int64) * stride_gxw
    tl.store(gx_ptrs, total.to(gx_ptr.dtype.element_ty), mask=ok)


# ---------------------------------------------------------------------------------------
# Autotune configs (CUDA). Keys hold only what changes the best config: the problem shape.
# ---------------------------------------------------------------------------------------
CONV_KEY = ("N", "C_G", "H", "W", "K_G", "P", "Q", "R", "S", "GROUPS")
DGRAD_KEY = CONV_KEY + ("HAS_BIAS",)  # conv_transpose2d (with a bias) tunes apart from conv2d's dgrad


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps). Large tiles feed Hopper's wgmma: compiled for a real
# layer (sm_90, fp16, channels_last, 3x3, 256 channels) their main loops issue 0.40-0.52
# instructions per tensor-core cycle at 128x256x64 with 8 warps, where the 64x64x32 tile that
# the first H100 sweep measured at ~20% of peak issued 4.7 (perf/results/aot/). BLOCK_K = 32
# variants keep fp32 (tf32) tiles within shared memory; of those, 256x128x32 compiles without
# spills where 128x256x32 spills 88-112 bytes (tf32 wgrad, sm_90: issue/tensor 0.77-0.80, and
# forward 0.52 at 4 stages). Small tiles serve small GEMMs (LeNet, depthwise, late ResNet
# stages), where a large tile would mostly compute padding.
LARGE_SHAPES = [(128, 256, 64, 8), (256, 128, 64, 8), (128, 128, 64, 8), (128, 128, 64, 4), (128, 64, 64, 4),
                (64, 128, 64, 4), (128, 256, 32, 8), (256, 128, 32, 8), (128, 128, 32, 8)]
SMALL_SHAPES = [(64, 64, 32, 4), (64, 64, 16, 4), (64, 32, 16, 4), (32, 64, 16, 4), (32, 32, 16, 4), (64, 16, 16, 4),
                (32, 16, 16, 2)]
FWD_SHAPES = DGRAD_SHAPES = WGRAD_SHAPES = LARGE_SHAPES + SMALL_SHAPES
MAX_BLOCK_K = max(bk for _, _, bk, _ in FWD_SHAPES)  # all BLOCK_K are powers of two
# A GEMM with this many output tiles of 128x128 or more fills an H100 (132 SMs) by itself: it
# gets no tile smaller than 128x64, which only adds autotuning time there.
LARGE_GEMM_TILES = 132


def _gemm_configs(capability, gemm, shapes, with_group_m):
    """Autotune configs for implicit GEMM ``gemm`` ("fwd", "dgrad", "wgrad") on a GPU of
    ``capability``: each tile shape at the pipeline depths its entry in kernels/gpus.py lists,
    but those that spill there."""
    entry = gpus.gpu(capability)
    group = {"GROUP_M": 8} if with_group_m else {}
    return tuple(
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, **group}, num_warps=warps, num_stages=st)
        for bm, bn, bk, warps in shapes for st in entry.stages if not entry.spills(gemm, (bm, bn, bk, warps), st))


# Configs compiled with some flags set spill beyond these blocks: FLAT_TAPS gathers build 2-D
# 64-bit pointer tiles, which spill 2-3 KB at 128x64 and 128x128 in NCHW (dgrad with a bias,
# conv_transpose2d's forward, sm_90 fp16; 64x64 none) and 64 bytes in channels_last fp32.
# (Bias tiles without FLAT_TAPS run on channels_last operands only and do not spill.)
FLAG_LIMITS = {
    "fwd": {"FLAT_TAPS": dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=16)},
    "dgrad": {"FLAT_TAPS": dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=16)},
    "wgrad": {"FLAT_TAPS": dict(BLOCK_M=64, BLOCK_K=16, BLOCK_N=32)},
}


def fits_flags(config, limits, flags):
    """Whether ``config`` is within the limits of every flag set in ``flags``."""
    return all(config.kwargs[name] <= most for flag, blocks in limits.items() if flags.get(flag)
               for name, most in blocks.items())


def _prune_to_problem(gemm, m_arg, n_arg, k_arg, operand):
    """For GEMM ``gemm`` on a GPU of ``capability``: drop configs whose tile is far larger than
    the GEMM dimension it covers (a 64-wide tile on 6 channels wastes 90% of its work), small
    tiles for a GEMM that large tiles fill the GPU with, and those that spill with the flags set
    (FLAG_LIMITS, and the GPU's own entries in kernels/gpus.py); shorten a pipeline that exceeds
    the GPU's shared memory (``operand``: a tensor argument with the operands' dtype) to the
    deepest that fits, of at least 2 stages, else drop it; keep at least the smallest config."""
    return lambda capability: functools.partial(_prune, gemm, m_arg, n_arg, k_arg, operand, gpus.gpu(capability))


def _prune(gemm, m_arg, n_arg, k_arg, operand, gpu, configs, named_args, **kwargs):
    m, n, k = (arg(named_args) for arg in (m_arg, n_arg, k_arg))
    t = named_args[operand]
    large = triton.cdiv(m, 128) * triton.cdiv(n, 128) >= LARGE_GEMM_TILES

    def fits(cfg):
        b = cfg.kwargs
        return (b["BLOCK_M"] <= max(16, 2 * triton.next_power_of_2(m))
                and b["BLOCK_N"] <= max(16, 2 * triton.next_power_of_2(n))
                and b["BLOCK_K"] <= max(16, 2 * triton.next_power_of_2(k))
                and (not large or b["BLOCK_M"] * b["BLOCK_N"] >= 128 * 64)
                and fits_flags(cfg, FLAG_LIMITS[gemm], kwargs)
                and not gpu.spills(gemm, (b["BLOCK_M"], b["BLOCK_N"], b["BLOCK_K"], cfg.num_warps), cfg.num_stages,
                                   kwargs))
    kept = {}
    for config in configs:
        config = within_shared_memory(config, gpu, t.element_size()) if fits(config) else None
        if config is not None:
            kept.setdefault((tuple(sorted(config.kwargs.items())), config.num_warps, config.num_stages), config)
    return (list(kept.values())
            or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_K"])])


def within_shared_memory(config, gpu, element_size):
    """``config``, or its tile with the deepest pipeline of at least 2 stages whose operand
    buffers fit ``gpu``'s shared memory (None if none does). tf32 tiles with BLOCK_K = 64 fit
    sm_90 at 2 stages only, where their main loops issue 0.35 (128x256x64 forward, 0 spills) to
    0.66 (256x128x64 wgrad, 24 spill bytes) instructions per tensor-core cycle, against 0.52 and
    0.80 for the deepest BLOCK_K = 32 tiles without spills (perf/results/aot/tf32-sm90.md)."""
    stage_bytes = (config.kwargs["BLOCK_M"] + config.kwargs["BLOCK_N"]) * config.kwargs["BLOCK_K"] * element_size
    stages = min(config.num_stages, gpu.deepest(stage_bytes))
    if stages < 2:
        return None
    if stages == config.num_stages:
        return config
    shorter = copy.copy(config)
    shorter.num_stages = stages
    return shorter


def _c_per_group(a):
    return a["C_G"]


def _k_per_group(a):
    return a["K_G"]


def conv2d_fwd_configs(capability):
    return _gemm_configs(capability, "fwd", FWD_SHAPES, with_group_m=True)


conv2d_fwd_prune = _prune_to_problem("fwd", lambda a: a["N"] * a["P"] * a["Q"], _k_per_group, _c_per_group,
                                     "x_ptr")


def conv2d_dgrad_configs(capability):
    return _gemm_configs(capability, "dgrad", DGRAD_SHAPES, with_group_m=False)


conv2d_dgrad_prune = _prune_to_problem("dgrad", lambda a: a["N"] * a["H"] * a["W"], _c_per_group, _k_per_group,
                                       "dy_ptr")


def conv2d_wgrad_configs(capability):
    return _gemm_configs(capability, "wgrad", WGRAD_SHAPES, with_group_m=False)


conv2d_wgrad_prune = _prune_to_problem("wgrad", _k_per_group, _c_per_group, lambda a: a["N"] * a["P"] * a["Q"],
                                       "x_ptr")
