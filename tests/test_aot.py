"""Every kernel compiles for sm_90 and sm_80 as real calls compile it (signatures from Triton's
own binder on the launches of real layers, perf/aot_report.py), with tensor cores in the
fp16/bf16/tf32 GEMM main loops and shared memory within the limit. No GPU needed.

CI compiles the largest config of a representative set of calls; --runslow compiles every
config each call runs with, over every dtype, architecture and layout."""
import itertools

import pytest

from aot import LAYERS, aot_report, check_compiled, compiled_checks

ARCHS = [90, 80]
DTYPES = ["fp16", "bf16", "fp32"]  # fp32 GEMMs in tf32, cuDNN's default
LAYOUTS = ["nhwc", "nchw"]

# (call, layer): what each reaches
CONV_CALLS = [
    ("layer", "vgg16_28_512to512"),  # the big GEMMs: C % 16 == 0, 3x3, groups 1
    ("bias", "rn50_14_3x3_256"),  # the forward's bias, the wgrad's bias gradient
    ("transposed", "rn50_56to28_3x3s2_128"),  # conv_transpose2d: dgrad with a bias, stride 2
    ("bias", "lenet_c3"),  # 6 channels: FLAT_TAPS; wgrad split over the SMs, summed by sum_splits
    ("transposed", "lenet_c3"),  # FLAT_TAPS dgrad with a bias
    ("reflect", "db_face_54_64to64_3x3"),  # dgrad into a padded fp32 buffer, folded by pad_fold
]
CI_CONV = [  # (call, layer, dtype, arch, layout), the largest config of each launch
    ("layer", "vgg16_28_512to512", "fp16", 90, "nhwc"),  # HGMMA fed by 16-byte cp.async
    ("layer", "vgg16_28_512to512", "bf16", 80, "nchw"),  # gathers, mma.sync
    ("layer", "vgg16_28_512to512", "fp32", 90, "nchw"),  # tf32 wgmma
    ("layer", "lenet_c1", "fp32", 80, "nhwc"),  # one channel: a constant C, FLAT_TAPS, sum_splits
    ("bias", "rn50_14_3x3_256", "fp16", 80, "nhwc"),
    ("transposed", "rn50_56to28_3x3s2_128", "bf16", 90, "nhwc"),
    ("reflect", "db_face_54_64to64_3x3", "fp16", 90, "nchw"),
]
EVERY_CONV = [(*call, dtype, arch, layout) for call, dtype, arch, layout
              in itertools.product(CONV_CALLS, DTYPES, ARCHS, LAYOUTS)]

POOL_CALLS = [("layer", "rn50_stem_max3x3s2"), ("layer", "lenet_avg2x2s2"),
              ("layer", "rn50_global_avg7x7"),  # adaptive windows
              ("exclude_pad", "lenet_avg2x2s2")]
POOL_DTYPES = DTYPES + ["fp64"]
# each pooling kernel in every dtype, layout and architecture (the other flags in --runslow)
CI_POOL = [(*call, dtype, arch, layout) for call in POOL_CALLS[:2] for dtype, arch, layout in [
    ("fp16", 90, "nhwc"), ("bf16", 80, "nchw"), ("fp32", 90, "nchw"), ("fp64", 80, "nhwc")]]
EVERY_POOL = [(*call, dtype, arch, layout) for call, dtype, arch, layout
              in itertools.product(POOL_CALLS, POOL_DTYPES, ARCHS, LAYOUTS)]


def case_id(case):
    return "-".join(f"sm_{v}" if isinstance(v, int) else v for v in case)


def _cases(ci, every):
    """The CI cases, then --runslow's: every case with every config."""
    return ([pytest.param(*case, False, id=case_id(case) + "-largest") for case in ci]
            + [pytest.param(*case, True, id=case_id(case) + "-every", marks=pytest.mark.slow) for case in every])


@pytest.mark.parametrize("call, layer, dtype, arch, layout, every", _cases(CI_CONV, EVERY_CONV))
def test_conv_calls_compile(call, layer, dtype, arch, layout, every):
    compiled = compiled_checks(call, layer, dtype, arch, layout, every, jobs=2 if every else 1)
    assert {check.name for check, _, _ in compiled} >= {"conv2d_dgrad", "conv2d_wgrad"}
    for check, meta, figures in compiled:
        check_compiled(check, meta, dtype, figures)


@pytest.mark.parametrize("arch", ARCHS)
def test_fp64_conv_compiles(arch):
    # fp64 runs the same GEMM code with fp64 accumulation; it must compile, no tensor-core claim
    (compiled,) = compiled_checks("layer", "lenet_c3", "fp64", arch, "nchw", kernel="conv2d_fwd")
    check_compiled(*compiled[:2], "fp64", compiled[2])


@pytest.mark.parametrize("call, layer, dtype, arch, layout, every", _cases(CI_POOL, EVERY_POOL))
def test_pool_calls_compile(call, layer, dtype, arch, layout, every):
    # the fixed CUDA tiles of convtri/pool_launch.py, with Triton's default warps and stages
    compiled = compiled_checks(call, layer, dtype, arch, layout, jobs=2 if every else 1)
    assert len(compiled) == 2  # forward and backward
    for check, meta, figures in compiled:
        check_compiled(check, meta, dtype, figures)


def test_signature_is_what_triton_specialises():
    """The NOTES' ResNet-50 layer (N=32, C=K=256, 14x14, 3x3, channels_last): Triton's binder
    makes its ints equal to 1 constants (groups, unit strides, conv stride, dilation) and marks
    multiples of 16 (N, C/groups, K/groups, the other strides, the pointers) divisible, as at run time."""
    step = aot_report.training_step(LAYERS["rn50_14_3x3_256"], "fp16", "nhwc")
    checks = [c for c, _ in aot_report.checks_of(step, aot_report.TARGETS[90], largest=True)]
    forward = next(c for c in checks if c.name == "conv2d_fwd")
    for name in ("GROUPS", "stride_xc", "stride_wc", "stride_yk", "conv_stride_h", "dil_w"):
        assert forward.signature[name] == "constexpr" and forward.constexpr(name) == 1, name
    _, sixteen = forward.specialisation().split(" | ")
    assert {"N", "C_G", "K_G", "stride_xh", "stride_wk"} <= set(sixteen.split()[1:])
    assert not {"H", "W", "P", "Q"} & set(sixteen.split()[1:])  # 14 is no multiple of 16
    assert all(forward.attrs[(i,)] for i, name in enumerate(forward.signature) if name.endswith("_ptr"))


# A fragment of sm_90 SASS: a load loop (0x0100-0x0140) inside the main loop (0x00c0-0x0190)
SASS = """
        /*00b0*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*00c0*/                   LDGSTS.E.BYPASS.128 [R20], desc[UR12][R14.64], P0 ;
        /*00d0*/                   HGMMA.64x64x16.F32 R24, gdesc[UR4], R24 ;
        /*00e0*/                   HGMMA.64x64x16.F32 R24, gdesc[UR4], R24, gsb0 ;
        /*00f0*/                   STL [R1], R3 ;
        /*0100*/                   LDG.E.U16 R6, desc[UR4][R8.64] ;
        /*0110*/                   LDG.E.64 R10, desc[UR4][R8.64+0x8] ;
        /*0120*/                   IADD3 R8, R8, 0x10, RZ ;
        /*0130*/                   ISETP.NE.AND P1, PT, R8, R9, PT ;
        /*0140*/               @P1 BRA 0x100 ;
        /*0150*/                   LDGDEPBAR ;
        /*0160*/                   DEPBAR.LE SB0, 0x1 ;
        /*0170*/                   IADD3 R0, R0, 0x1, RZ ;
        /*0180*/                   ISETP.GE.AND P0, PT, R0, R5, PT ;
        /*0190*/              @!P0 BRA 0xc0 ;
        /*01a0*/                   EXIT ;
        /*01b0*/                   BRA 0x1b0;
"""


def test_main_loop_is_the_innermost_holding_tensor_cores():
    f = aot_report.sass_figures(SASS)
    assert f["loop"] == "0x00c0-0x0190" and f["loop_instructions"] == 14
    assert (f["hgmma"], f["hmma"], f["ldgsts"], f["ldgsts128"], f["ldg"], f["ldg128"]) == (2, 0, 1, 1, 2, 0)
    assert f["loads"] == "LDG.16*1 LDG.64*1 LDGSTS.128*1" and f["local_in_loop"] == 1
    assert f["mma"] == "HGMMA.64x64x16.F32*2"
    without_mma = aot_report.sass_figures(SASS.replace("HGMMA", "FFMA"))  # the innermost loop with loads
    assert without_mma["loop"] == "0x0100-0x0140" and without_mma["loop_instructions"] == 5


def test_issue_tensor_ratio():
    # NOTES: the old 64x64x32 tile at 8 warps, ~151 loop instructions: 4.7 on an H100 in fp16
    check = aot_report.Check("m:k", 90, {"BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr"},
                             {(0,): 64, (1,): 64, (2,): 32}, {}, {"num_warps": 8})
    figures = dict(hgmma=2, hmma=0, loop_instructions=151)
    assert aot_report.issue_tensor_ratio(figures, check, "fp16", aot_report.TARGETS[90]) == pytest.approx(4.72, abs=0.01)
    assert aot_report.issue_tensor_ratio(figures, check, "tf32", aot_report.TARGETS[90]) == pytest.approx(2.36, abs=0.01)
    assert aot_report.issue_tensor_ratio(figures, check, None, aot_report.TARGETS[90]) is None


def test_report_writes_the_issue_columns(tmp_path, capsys):
    out = tmp_path / "aot.csv"
    rows = aot_report.main(["--suites", "pool", "--shapes", "vgg16_max2x2s2_56", "--kernels", "max_pool2d_fwd",
                            "--archs", "90", "--dtypes", "fp16", "--layouts", "nhwc", "--jobs", "1", "--csv", str(out)])
    assert len(rows) == 1 and "max_pool2d_fwd" in capsys.readouterr().out
    header = out.read_text().splitlines()[0].split(",")
    assert header[:14] == ["kernel", "config", "layer", "dtype", "arch", "layout", "regs", "spill_bytes", "smem_bytes",
                           "hgmma", "hmma", "ldg128", "loop_instructions", "issue_tensor_ratio"]
