"""The GPUs the GEMM configs are made for, as data: per compute capability, the shared memory a
block may use, the pipeline depths the autotuner tries, how a depth fills shared memory, and
the configs left out there because they spill registers. A capability not listed here gets the
most conservative entry, ``UNKNOWN``, and a warning once."""
import functools
import warnings
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Gpu:
    """A GPU generation as the GEMM configs see it."""
    names: str  # GPUs of this capability
    shared_memory: int  # bytes one block may use (CUDA's opt-in maximum per block)
    stages: tuple  # the pipeline depths (num_stages) the autotuner tries
    # wgmma (sm_90) and tcgen05 (sm_100) keep num_stages operand tiles in shared memory,
    # mma.sync (mma v2: sm_80/86/89/120) num_stages - 1 (compiled for each, triton 3.6 and 3.9)
    async_mma: bool
    # GEMM ("fwd", "dgrad", "wgrad") -> {(BLOCK_M, BLOCK_N, BLOCK_K, num_warps): depths left out};
    # "wgrad+BIAS_GRAD": left out of launches with that flag set (the prune sees the flags)
    spilling: dict = field(default_factory=dict)

    def deepest(self, stage_bytes):
        """The deepest pipeline whose operand tiles of ``stage_bytes`` each fit shared memory."""
        return self.shared_memory // stage_bytes + (0 if self.async_mma else 1)

    def spills(self, gemm, shape, stages, flags=None):
        """Whether config (``shape``, ``stages``) of ``gemm`` spills here, at all or with one of
        the constexpr ``flags`` of a launch set."""
        names = [gemm] + [f"{gemm}+{flag}" for flag, value in (flags or {}).items() if value is True]
        return any(stages in self.spilling.get(name, {}).get(tuple(shape), ()) for name in names)


KIB = 1024
# sm_86 and sm_89 compile alike (the same ptxas, the same 99 KiB)
MMA_V2_99KIB = {
    "fwd": {(128, 128, 64, 4): (2, 3), (128, 256, 64, 8): (2, 3), (256, 128, 64, 8): (2, 3)},
    "dgrad": {(128, 128, 64, 4): (2,), (256, 128, 64, 8): (3,)},
    "wgrad": {(64, 128, 64, 4): (3,), (128, 128, 64, 4): (2, 3), (128, 256, 32, 8): (2, 3), (128, 256, 64, 8): (2, 3),
              (256, 128, 32, 8): (2, 3), (256, 128, 64, 8): (2, 3)}}
# Configs left out per GPU: those that spill registers in fp16 when compiled for it with triton
# 3.6 (the GPU machines') or 3.9 (CI's), through perf/aot_report.py's machinery: every large tile
# at every depth for vgg16_28_512to512 and rn50_14_3x3_256 (with and without a bias), channels_last.
# 8 to 208 bytes each, mostly tiles of 128 fp32 accumulators per thread (128x256 and 256x128 at 8
# warps, 128x128 at 4) on mma v2 GPUs, and sm_90's 128x256 weight gradients (80-112 bytes, 3.9);
# a weight gradient with the bias's (BIAS_GRAD) spills more and is left out of more tiles.
GPUS = {
    (8, 0): Gpu("A100, A30", 163 * KIB, (2, 3), async_mma=False, spilling={
        "fwd": {(128, 128, 64, 4): (2, 3), (256, 128, 64, 8): (3,)},
        "dgrad": {(128, 256, 64, 8): (2, 3), (256, 128, 64, 8): (3,)},
        "wgrad": {(64, 128, 64, 4): (3,), (128, 128, 64, 4): (2, 3), (128, 256, 32, 8): (2, 3),
                  (128, 256, 64, 8): (2, 3), (256, 128, 32, 8): (2, 3), (256, 128, 64, 8): (2, 3)},
        "wgrad+BIAS_GRAD": {(128, 64, 64, 4): (2, 3)}}),
    (8, 6): Gpu("RTX 30xx, A10, A40, RTX A6000", 99 * KIB, (2, 3), async_mma=False, spilling=MMA_V2_99KIB),
    (8, 9): Gpu("L4, L40S, RTX 40xx, RTX 6000 Ada", 99 * KIB, (2, 3), async_mma=False, spilling=MMA_V2_99KIB),
    (9, 0): Gpu("H100, H200, GH200", 227 * KIB, (3, 4), async_mma=True, spilling={
        "wgrad": {(128, 256, 32, 8): (3, 4), (128, 256, 64, 8): (3, 4)},
        # the bias gradient's row sums of dy beside 128 accumulators per thread: 260-760 bytes (3.9 only)
        "wgrad+BIAS_GRAD": {(128, 128, 64, 4): (3, 4), (256, 128, 32, 8): (3, 4), (256, 128, 64, 8): (3, 4)}}),
    (10, 0): Gpu("B200, GB200", 227 * KIB, (3, 4), async_mma=True, spilling={
        "fwd": {(64, 128, 64, 4): (3, 4)},
        "wgrad+BIAS_GRAD": {(128, 256, 32, 8): (3, 4), (128, 256, 64, 8): (3, 4), (256, 128, 32, 8): (3, 4),
                            (256, 128, 64, 8): (3, 4)}}),
    (12, 0): Gpu("RTX 50xx, RTX PRO 6000 Blackwell", 99 * KIB, (2, 3), async_mma=False, spilling={
        "fwd": {(64, 128, 64, 4): (2,), (128, 64, 64, 4): (2, 3), (128, 128, 64, 4): (2, 3),
                (128, 256, 64, 8): (2, 3), (256, 128, 64, 8): (2, 3)},
        "dgrad": {(128, 128, 64, 4): (2, 3), (128, 256, 64, 8): (2, 3), (256, 128, 64, 8): (2, 3)},
        "wgrad": {(128, 128, 64, 4): (2, 3), (128, 256, 32, 8): (2, 3), (128, 256, 64, 8): (2, 3),
                  (256, 128, 32, 8): (2, 3), (256, 128, 64, 8): (2, 3)}}),
}


def _spilling_anywhere(stages):
    """Every (GEMM, tile) that spills on some listed GPU, left out at each of ``stages``."""
    gemms = {gemm for entry in GPUS.values() for gemm in entry.spilling}
    return {gemm: {tile: stages for entry in GPUS.values() for tile in entry.spilling.get(gemm, {})} for gemm in gemms}


# An unknown GPU: the least shared memory of any listed, every depth counted as operand buffers,
# the shallowest depths, and every tile that spills on some listed GPU left out.
UNKNOWN = Gpu("a GPU not listed", min(entry.shared_memory for entry in GPUS.values()), (2, 3), async_mma=True,
              spilling=_spilling_anywhere((2, 3)))


@functools.cache
def gpu(capability):
    """The entry of compute ``capability`` (major, minor), or UNKNOWN with a warning, once."""
    capability = tuple(capability)
    if capability in GPUS:
        return GPUS[capability]
    listed = ", ".join(f"sm_{major}{minor}" for major, minor in GPUS)
    warnings.warn(f"convtri: compute capability {capability[0]}.{capability[1]} is not among its GPUs ({listed}); "
                  f"its GEMMs use the most conservative configs ({UNKNOWN.shared_memory // KIB} KiB of shared memory, "
                  f"{UNKNOWN.stages} stages), which work but may be slow", stacklevel=2)
    return UNKNOWN
