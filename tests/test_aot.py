"""Every kernel compiles for sm_80 and sm_90 in the dtypes we ship, with tensor cores in the
fp16/bf16 (and tf32) GEMM main loops and no register spills. No GPU needed."""
import pytest
import triton

from aot import compile_kernel, spill_bytes, uses_tensor_cores
from convtri.conv_launch import ELEMENTWISE_BLOCK_CUDA
from convtri.kernels import conv2d as conv_kernels

ARCHS = [80, 90]
CONV_VARIANTS = [  # (kernel, constexpr flags besides the block sizes and FLAT_TAPS, the op pass it serves)
    (conv_kernels.conv2d_fwd_kernel, dict(HAS_BIAS=True, PAD_MODE=0, UPCAST=False, EVEN_BLOCKS=True), "conv2d-fwd"),
    (conv_kernels.conv2d_dgrad_kernel, dict(HAS_BIAS=False, UPCAST=False, EVEN_BLOCKS=True), "conv2d-dgrad"),
    (conv_kernels.conv2d_dgrad_kernel, dict(HAS_BIAS=True, UPCAST=False, EVEN_BLOCKS=False), "conv_transpose2d-fwd"),
    (conv_kernels.conv2d_wgrad_kernel, dict(WEIGHT_GRAD=True, BIAS_GRAD=True, PAD_MODE=0, UPCAST=False, P_POW2=16, Q_POW2=16),
     "conv2d-wgrad"),
]
# (layout, FLAT_TAPS): the tap-by-tap GEMMs in both layouts; FLAT_TAPS serves few channels,
# whose strides are not multiples of 16 whatever the layout, so the gather case covers it
# (NCHW operands of more than 16 channels are copied to channels_last before the GEMMs)
LAYOUTS = [("nhwc", False), ("nchw", True)]
FLAG_LIMITS = {
    conv_kernels.conv2d_fwd_kernel: conv_kernels.FLAG_LIMITS["fwd"],
    conv_kernels.conv2d_dgrad_kernel: conv_kernels.FLAG_LIMITS["dgrad"],
    conv_kernels.conv2d_wgrad_kernel: conv_kernels.FLAG_LIMITS["wgrad"],
}
CONV_CONFIGS = {
    conv_kernels.conv2d_fwd_kernel: conv_kernels.conv2d_fwd_configs,
    conv_kernels.conv2d_dgrad_kernel: conv_kernels.conv2d_dgrad_configs,
    conv_kernels.conv2d_wgrad_kernel: conv_kernels.conv2d_wgrad_configs,
}
TENSOR_ARGS = ("x_ptr", "w_ptr", "b_ptr", "y_ptr", "dy_ptr", "dx_ptr")
PARTIAL_ARGS = ("dw_ptr", "db_ptr")  # fp32 partials of a split reduction


# Two layout classes, as Triton specialises them at run time: channels_last with C % 16 == 0
# (channel strides are 1, the other strides multiples of 16: vectorised loads) and NCHW
# (nothing known: gathers).
UNIT_STRIDES_NHWC = {
    conv_kernels.conv2d_fwd_kernel: dict(stride_xc=1, stride_wc=1, stride_yk=1),
    conv_kernels.conv2d_dgrad_kernel: dict(stride_dyk=1, stride_wk=1, stride_dxc=1),
    conv_kernels.conv2d_wgrad_kernel: dict(stride_xc=1, stride_dyk=1),
}


def layout_specialisation(kernel, layout, pointers):
    """(constexpr strides, args divisible by 16) of ``layout``."""
    if layout == "nchw":
        return {}, list(pointers)
    ones = UNIT_STRIDES_NHWC[kernel]
    strides = [a for a in kernel.arg_names if a.startswith("stride_") and a not in ones]
    return ones, list(pointers) + strides + ["C_G", "K_G"]


def conv_pointer_types(kernel, dtype):
    accumulator = "fp64" if dtype == "fp64" else "fp32"
    return {name: dtype if name in TENSOR_ARGS else accumulator
            for name in kernel.arg_names if name in TENSOR_ARGS + PARTIAL_ARGS}


def shipped_configs(kernel, arch, everything, flags):
    # as the launch-time pruning keeps them for these flags
    configs = [c for c in CONV_CONFIGS[kernel]((arch // 10, arch % 10)) if conv_kernels.fits_flags(
        c, FLAG_LIMITS[kernel], flags)]
    if everything:
        return configs
    # the largest tile, the one with the most registers
    return [max(configs, key=lambda c: (c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"], c.num_stages))]


def check_conv_kernel(kernel, flags, dtype, arch, config, layout):
    pointers = conv_pointer_types(kernel, dtype)
    ones, divisible = layout_specialisation(kernel, layout, pointers)
    flags = dict(flags, PRECISION="tf32" if dtype == "fp32" else "ieee", **ones)
    compiled = compile_kernel(kernel, pointers, {**flags, **config.kwargs}, arch, config.num_warps,
                              config.num_stages, divisible)
    if dtype in ("fp16", "bf16", "fp32"):  # fp32 with tf32, as with cuDNN's default
        assert uses_tensor_cores(compiled), f"{kernel.__name__} {dtype} sm_{arch}: no mma in the main loop"
    assert spill_bytes(compiled, arch) == 0, f"{kernel.__name__} {dtype} {layout} {flags} sm_{arch} {config}: spills"


# CI compiles the largest config of each kernel; --runslow every shipped one
@pytest.mark.parametrize("everything", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["largest", "every"])
@pytest.mark.parametrize("layout, flat", LAYOUTS)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
@pytest.mark.parametrize("kernel, flags, use", CONV_VARIANTS, ids=[use for _, _, use in CONV_VARIANTS])
def test_conv_kernels_compile(kernel, flags, use, dtype, arch, layout, flat, everything):
    flags = dict(flags, FLAT_TAPS=flat)
    for config in shipped_configs(kernel, arch, everything, flags):
        check_conv_kernel(kernel, flags, dtype, arch, config, layout)


@pytest.mark.parametrize("arch", ARCHS)
def test_fp64_conv_compiles(arch):
    # fp64 runs the same GEMM code with fp64 accumulation; it must compile, no tensor-core claim
    kernel = conv_kernels.conv2d_fwd_kernel
    config = triton.Config({"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 16, "GROUP_M": 8}, num_warps=4, num_stages=2)
    flags = dict(CONV_VARIANTS[0][1], FLAT_TAPS=False, PRECISION="ieee")
    compiled = compile_kernel(kernel, conv_pointer_types(kernel, "fp64"), {**flags, **config.kwargs}, arch,
                              config.num_warps, config.num_stages)
    assert spill_bytes(compiled, arch) == 0


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kernel, pointers, flags", [
    (conv_kernels.conv2d_sum_splits_kernel, dict(part_ptr="fp32", out_ptr="bf16"), dict(BLOCK=ELEMENTWISE_BLOCK_CUDA)),
    (conv_kernels.pad_fold_kernel, dict(gp_ptr="fp32", gx_ptr="fp16"), dict(PAD_MODE=1, BLOCK=ELEMENTWISE_BLOCK_CUDA)),
], ids=["sum_splits", "pad_fold"])
def test_elementwise_conv_kernels_compile(kernel, pointers, flags, arch):
    compiled = compile_kernel(kernel, pointers, flags, arch, num_warps=4, num_stages=1)
    assert spill_bytes(compiled, arch) == 0


# The pooling kernels: tests/test_pool_aot.py, compiled with real calls' signatures.
