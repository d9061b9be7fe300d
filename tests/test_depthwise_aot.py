"""The direct depthwise kernels compiled for sm_90 and sm_80 as real calls compile them
(perf/aot_report.py; no GPU needed): in channels_last fp16 and bf16, every config the autotuner
can pick loads and stores 16-byte vectors with no spill, and its tile and halo move at most
TRAFFIC_BOUND times the layer's minimum DRAM bytes per output.

CI compiles the largest config of a few (layer, dtype, arch); --runslow every config of every
depthwise layer in both dtypes and architectures."""
import itertools

import pytest

from aot import LAYERS, aot_report

DIRECT = ("depthwise_fwd", "depthwise_dgrad", "depthwise_wgrad")
# Bytes a program's tile and window halo move per output over the minimum: the largest tiles
# (perf/results/aot/depthwise-after.md) stay within it; every config within the looser bound (a tile
# of 16 pixels under a 7x7 window reads 7 x 22 of them: 5.3; neighbours share that halo in L2)
TRAFFIC_BOUND = {"largest": 2.1, "every": 6.0}
LAYER_NAMES = ["mbv2_dw_32_112", "mbv2_dw_96_112s2", "mbv2_dw_960_7", "effb0_dw5_144_56s2", "effb0_dw5_672_14",
               "cnxt_dw7_96_56", "cnxt_dw7_768_7"]
CI = [  # (layer, dtype, arch): what each adds
    ("mbv2_dw_32_112", "fp16", 90),  # 3x3, stride 1: every tap unrolled
    ("mbv2_dw_96_112s2", "bf16", 80),  # stride 2: the input gradient's windows skip pixels
    ("cnxt_dw7_96_56", "fp16", 90),  # 7x7: loops over kernel rows; the weight gradient a row per program
]
EVERY = list(itertools.product(LAYER_NAMES, ["fp16", "bf16"], [90, 80]))


def compiled_direct(layer, dtype, arch, largest):
    """(check, figures) of every direct kernel config a training step of ``layer`` launches."""
    step = aot_report.training_step(LAYERS[layer], dtype, "nhwc")
    checks = [check for check, _ in aot_report.checks_of(step, aot_report.TARGETS[arch], largest=largest)
              if check.name in DIRECT]
    return [(check, aot_report.compile_check(check)) for check in checks]


def _cases():
    return ([pytest.param(*case, True, id="-".join(map(str, case)) + "-largest") for case in CI]
            + [pytest.param(*case, False, id="-".join(map(str, case)) + "-every", marks=pytest.mark.slow)
               for case in EVERY])


@pytest.mark.parametrize("layer, dtype, arch, largest", _cases())
def test_direct_kernels_move_16_byte_vectors_without_spills(layer, dtype, arch, largest):
    compiled = compiled_direct(layer, dtype, arch, largest)
    assert {check.name for check, _ in compiled} == set(DIRECT)
    bound = TRAFFIC_BOUND["largest" if largest else "every"]
    for check, figures in compiled:
        where = f"{check.name} {check.config} {layer} {dtype} sm_{arch}"
        assert figures["spill_bytes"] == 0, where
        assert figures["ldg128"] > 0, where  # x or dy along channels, in the main loop
        if check.name != "depthwise_wgrad":  # its outputs are per-channel sums: scalar stores
            assert figures["stg128"] > 0 and figures["stores"] == f"STG.128*{figures['stg128']}", where
        assert aot_report.traffic_ratio(check, LAYERS[layer]) <= bound, where


def test_traffic_ratio_counts_the_halo():
    # a 3x3 stride-1 forward whose 64-pixel tile lies in one 112-pixel row reads 3 rows of 66
    # pixels for 64 outputs: (198 / 64 + 1) / (1 + 1) bytes over the minimum
    layer = LAYERS["mbv2_dw_32_112"]
    names = ["BLOCK_A", "BLOCK_B", "CHANNELS_LAST", "R", "S", "SH", "SW", "DH", "DW"]
    check = aot_report.Check("convtri.kernels.depthwise:depthwise_fwd_kernel", 90, dict.fromkeys(names, "constexpr"),
                             {(i,): v for i, v in enumerate([64, 64, True, 3, 3, 1, 1, 1, 1])}, {}, {})
    assert aot_report.traffic_ratio(check, layer) == pytest.approx((198 / 64 + 1) / 2, abs=1e-3)
