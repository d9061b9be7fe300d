"""A tensor copied into another memory layout (NCHW to channels_last), as cuDNN does before
its NHWC kernels: one pass, reading and writing along each side's contiguous axis."""
import triton
import triton.language as tl

BLOCK_PIXELS = 64  # pixels x channels per program on CUDA: 64 x 64 fp16 is 8 KB through shared memory
BLOCK_CHANNELS = 64


@triton.jit
def relayout_kernel(
    src_ptr, dst_ptr,
    # sizes
    N, C, H, W,
    # strides
    stride_sn, stride_sc, stride_sh, stride_sw,
    stride_dn, stride_dc, stride_dh, stride_dw,
    # flags
    FLAT_PIXELS: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dst[n, c, h, w] = src[n, c, h, w] for tensors of one size in two layouts.

    One program copies a BLOCK_P (pixels (h, w) of one image) x BLOCK_C (channels) tile:
    Triton loads it along the source's contiguous axis and stores it along the
    destination's, turning it around in shared memory between the two. FLAT_PIXELS: both
    tensors lay a row of pixels right after the previous (stride_h = W * stride_w), so a
    pixel's offset is its flat index times stride_w, which Triton can see is contiguous.
    Grid: (N * cdiv(H*W, BLOCK_P), cdiv(C, BLOCK_C)).
    src, dst: (N, C, H, W).
    """
    tiles_p = tl.cdiv(H * W, BLOCK_P)
    n = (tl.program_id(0) // tiles_p).to(tl.int64)
    offs_p = (tl.program_id(0) % tiles_p) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    if FLAT_PIXELS:
        src_pix = offs_p.to(tl.int64) * stride_sw
        dst_pix = offs_p.to(tl.int64) * stride_dw
    else:
        h = (offs_p // W).to(tl.int64)
        w = (offs_p % W).to(tl.int64)
        src_pix = h * stride_sh + w * stride_sw
        dst_pix = h * stride_dh + w * stride_dw
    c = offs_c.to(tl.int64)
    mask = (offs_p < H * W)[:, None] & (offs_c < C)[None, :]
    src = src_ptr + n * stride_sn + src_pix[:, None] + c[None, :] * stride_sc
    dst = dst_ptr + n * stride_dn + dst_pix[:, None] + c[None, :] * stride_dc
    tl.store(dst, tl.load(src, mask=mask), mask=mask)
