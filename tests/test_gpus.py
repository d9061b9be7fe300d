"""The supported GPUs as data (kernels/gpus.py): each listed capability's GEMM configs fit its
shared memory and leave out what spills there, proven by compiling the largest config each
GEMM keeps for a large layer (as real calls compile it, no GPU needed); an unknown capability
gets the most conservative entry and one warning."""
import pathlib
import warnings

import pytest
import torch

from aot import aot_report, compiled_checks
from convtri.kernels import conv2d as kernels
from convtri.kernels import gpus

ROOT = pathlib.Path(__file__).resolve().parent.parent
GEMMS = {"fwd": kernels.conv2d_fwd_configs, "dgrad": kernels.conv2d_dgrad_configs,
         "wgrad": kernels.conv2d_wgrad_configs}


def shape(config):
    return (config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.kwargs["BLOCK_K"], config.num_warps)


@pytest.mark.parametrize("capability", list(gpus.GPUS))
def test_configs_follow_the_table(capability):
    entry = gpus.GPUS[capability]
    for gemm, configs in GEMMS.items():
        listed = configs(capability)
        assert {c.num_stages for c in listed} <= set(entry.stages)
        assert not [c for c in listed if entry.spills(gemm, shape(c), c.num_stages)]
        for tile, stages in entry.spilling.get(gemm, {}).items():
            assert tile in kernels.LARGE_SHAPES + kernels.SMALL_SHAPES, (gemm, tile)  # no stale entry
            assert set(stages) <= set(entry.stages), (gemm, tile)


@pytest.mark.parametrize("capability, dtype, stages", [
    ((8, 6), torch.float16, 3),  # mma v2 keeps 2 of 3 stages' tiles: 96 KiB of 99
    ((8, 6), torch.float32, 2),  # tf32: 192 KiB at 3 stages, 96 KiB at 2
    ((9, 0), torch.float16, 4),  # wgmma keeps all 4: 192 KiB of 227
    ((9, 0), torch.float32, 2),  # 192 KiB at 2 stages
])
def test_pipeline_depth_fits_shared_memory(capability, dtype, stages):
    # the 128x256x64 input gradient of vgg16_28_512to512, at the deepest pipeline its GPU tries
    configs = kernels.conv2d_dgrad_configs(capability)
    named = dict(N=32, H=28, W=28, K_G=512, C_G=512, dy_ptr=torch.empty(0, dtype=dtype))
    kept = kernels.conv2d_dgrad_prune(capability)(list(configs), named)
    assert max(c.num_stages for c in kept if shape(c) == (128, 256, 64, 8)) == stages


def test_flag_spills_are_left_out_where_the_flag_is_set():
    # sm_90's weight gradient: 256x128x64 spills only beside the bias gradient (BIAS_GRAD), so the
    # launch-time prune drops it from launches with the flag and keeps it in the others
    named = dict(N=32, P=28, Q=28, K_G=512, C_G=512, x_ptr=torch.empty(0, dtype=torch.float16))
    prune = kernels.conv2d_wgrad_prune((9, 0))
    configs = list(kernels.conv2d_wgrad_configs((9, 0)))
    tiles = lambda kept: {shape(c) for c in kept}
    assert (256, 128, 64, 8) in tiles(prune(configs, named, BIAS_GRAD=False, WEIGHT_GRAD=True))
    assert (256, 128, 64, 8) not in tiles(prune(configs, named, BIAS_GRAD=True, WEIGHT_GRAD=True))
    assert gpus.GPUS[(9, 0)].spills("wgrad", (256, 128, 64, 8), 4, dict(BIAS_GRAD=True, PRECISION="ieee"))


def test_unknown_capability_gets_the_most_conservative_entry_and_one_warning():
    gpus.gpu.cache_clear()
    try:
        with pytest.warns(UserWarning, match=r"compute capability 8\.7 is not among its GPUs \(sm_80, sm_86"):
            assert gpus.gpu((8, 7)) is gpus.UNKNOWN
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert gpus.gpu((8, 7)) is gpus.UNKNOWN and gpus.gpu((9, 0)) is gpus.GPUS[(9, 0)]
    finally:
        gpus.gpu.cache_clear()
    unknown = gpus.UNKNOWN
    assert unknown.shared_memory == min(entry.shared_memory for entry in gpus.GPUS.values())
    assert unknown.async_mma and unknown.stages == min(entry.stages for entry in gpus.GPUS.values())
    for entry in gpus.GPUS.values():  # a tile that spills anywhere is left out at every depth
        for gemm, tiles in entry.spilling.items():
            assert all(unknown.spills(gemm, tile, st) for tile in tiles for st in unknown.stages)


def test_readme_lists_the_supported_gpus():
    readme = (ROOT / "README.md").read_text()
    for (major, minor), entry in gpus.GPUS.items():
        assert (f"| sm_{major}{minor} | {entry.names} | {entry.shared_memory // gpus.KIB} KiB | "
                f"{', '.join(map(str, entry.stages))} |") in readme


ARCHS = [major * 10 + minor for major, minor in gpus.GPUS]
# vgg16_28_512to512 (C = K = 512, 28x28, batch 32): the largest tiles of each GEMM; the weight
# gradient of rn50_14_3x3_256 with the bias's (BIAS_GRAD), by default on the GPUs whose entry
# leaves out configs for that flag, on the others with --runslow
CASES = ([pytest.param(arch, "layer", "vgg16_28_512to512", "", id=f"sm_{arch}-vgg16_28_512to512") for arch in ARCHS]
         + [pytest.param(arch, "bias", "rn50_14_3x3_256", "wgrad", id=f"sm_{arch}-rn50_14_3x3_256-bias-wgrad",
                         marks=[] if "wgrad+BIAS_GRAD" in gpus.GPUS[(arch // 10, arch % 10)].spilling
                         else [pytest.mark.slow]) for arch in ARCHS])


@pytest.mark.parametrize("arch, call, layer, kernel", CASES)
def test_largest_gemm_configs_compile_within_limits(arch, call, layer, kernel):
    """The largest config each GEMM keeps on this GPU (fp16, channels_last) uses at most its
    shared memory and spills nothing."""
    compiled = compiled_checks(call, layer, "fp16", arch, "nhwc", jobs=2, kernel=kernel)
    gemms = [(check, figures) for check, meta, figures in compiled if "PRECISION" in meta]
    assert sorted(check.name for check, _ in gemms) == (["conv2d_wgrad"] if kernel else
                                                          ["conv2d_dgrad", "conv2d_fwd", "conv2d_wgrad"])
    limit = aot_report.TARGETS[arch].shared_memory
    for check, figures in gemms:
        where = f"{check.name} {check.config} sm_{arch}"
        assert figures["smem_bytes"] <= limit, f"{where}: {figures['smem_bytes']} bytes of shared memory of {limit}"
        assert figures["spill_bytes"] == 0, f"{where}: spills {figures['spill_bytes']} bytes"
