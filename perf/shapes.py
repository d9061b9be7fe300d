"""Every shape the sweep runs, named, with where it comes from, and the work each one does.

A suite is a list of shapes. ``Conv`` and ``Pool`` hold a layer's sizes and its arithmetic:
``flop`` (conv: 2*N*K*P*Q*(C/groups)*R*S per pass) and ``traffic`` (the minimum bytes one
pass must move: every tensor it reads or writes, once). ``perf/sweep.py`` turns a shape
into tensors and calls; nothing here imports torch.
"""
from dataclasses import dataclass

CONV_OPS = ("fwd", "dgrad", "wgrad", "fwdbwd")
# Pooling has no weight: its only gradient is the input's, written "bwd" in the CSV.
POOL_OPS = ("fwd", "bwd", "fwdbwd")
# What max pooling saves for its backward, per output: convtri's one-byte window offset (torch
# stores 8-byte int64 indices; both providers' GB/s are computed on these minimum bytes)
INDEX_BYTES = 1


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def pool_output_size(size, kernel, stride, pad, ceil_mode):
    """torch's pooling output size on one axis: under ceil_mode the last window must start
    inside the input or its left padding."""
    out = (size + 2 * pad - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@dataclass(frozen=True)
class _Layer:
    """A named layer on an N x C x H x W input; ``PAIRS`` name the fields given as int or pair."""
    name: str
    n: int
    c: int
    h: int
    w: int
    PAIRS = ()

    def __post_init__(self):
        for field in self.PAIRS:
            if getattr(self, field) is not None:
                object.__setattr__(self, field, _pair(getattr(self, field)))

    @property
    def input_shape(self):
        return (self.n, self.c, self.h, self.w)

    @property
    def output_shape(self):
        return (self.n, self.out_channels, *self.out_hw)


@dataclass(frozen=True)
class Conv(_Layer):
    """conv2d with K filters of C/groups x R x S, no bias."""
    k: int
    r: int
    s: int
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    groups: int = 1
    kind = "conv"
    PAIRS = ("stride", "padding")

    @property
    def out_channels(self):
        return self.k

    @property
    def out_hw(self):
        return tuple((size + 2 * pad - kernel) // stride + 1 for size, pad, kernel, stride
                     in zip((self.h, self.w), self.padding, (self.r, self.s), self.stride))

    @property
    def weight_shape(self):
        return (self.k, self.c // self.groups, self.r, self.s)

    def flop(self, op):
        """2*N*K*P*Q*(C/groups)*R*S for each of fwd, dgrad and wgrad (the same GEMM size,
        reduced along another axis); fwdbwd runs all three."""
        p, q = self.out_hw
        one = 2 * self.n * self.k * p * q * (self.c // self.groups) * self.r * self.s
        return 3 * one if op == "fwdbwd" else one

    def traffic(self, op, itemsize):
        """Each pass reads two of (input, weight, output) and writes the third, once."""
        elements = sum(_numel(shape) for shape in (self.input_shape, self.weight_shape, self.output_shape))
        return (3 if op == "fwdbwd" else 1) * elements * itemsize

    def describe(self):
        p, q = self.out_hw
        return (f"N={self.n} C={self.c} H={self.h} W={self.w} -> K={self.k} P={p} Q={q} R={self.r} S={self.s} "
                f"stride={_text(self.stride)} pad={_text(self.padding)} groups={self.groups}")

    dims = 2  # the spatial dimensions of the call: conv2d


@dataclass(frozen=True)
class Conv1d(Conv):
    """conv1d: a Conv of one row (h = r = 1) called as F.conv1d on (N, C, L) tensors."""
    dims = 1

    @property
    def input_shape(self):
        return (self.n, self.c, self.w)

    @property
    def weight_shape(self):
        return (self.k, self.c // self.groups, self.s)

    @property
    def output_shape(self):
        return (self.n, self.k, self.out_hw[1])

    def describe(self):
        return (f"N={self.n} C={self.c} L={self.w} -> K={self.k} L_out={self.out_hw[1]} kernel={self.s} "
                f"stride={self.stride[1]} pad={self.padding[1]} groups={self.groups}")


def conv1d(name, n, c, length, k, kernel, stride=1, padding=0, groups=1):
    return Conv1d(name, n, c, 1, length, k, 1, kernel, (1, stride), (0, padding), groups)


@dataclass(frozen=True)
class Pool(_Layer):
    """Pooling: ``op`` "max" or "avg" over kernel x kernel windows, or "adaptive_avg" to ``output_size``."""
    op: str
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    ceil_mode: bool = False
    output_size: tuple = None  # adaptive_avg only
    kind = "pool"
    PAIRS = ("kernel", "stride", "padding", "output_size")

    @property
    def out_channels(self):
        return self.c

    @property
    def out_hw(self):
        if self.op == "adaptive_avg":
            return self.output_size
        return tuple(pool_output_size(*args, self.ceil_mode) for args
                     in zip((self.h, self.w), self.kernel, self.stride, self.padding))

    def window_taps(self):
        """Input reads summed over every output window (padding included): the op count."""
        if self.op != "adaptive_avg":
            return _numel(self.output_shape) * self.kernel[0] * self.kernel[1]
        rows, cols = (sum(-(-(i + 1) * size // out) - i * size // out for i in range(out))
                      for size, out in zip((self.h, self.w), self.output_size))
        return self.n * self.c * rows * cols

    def flop(self, op):
        """Not FLOPs proper: one comparison or addition per window tap, for the roofline's x axis."""
        return (2 if op == "fwdbwd" else 1) * self.window_taps()

    def traffic(self, op, itemsize):
        """fwd reads x and writes y; bwd reads dy and writes dx, and max pooling also reads its
        int64 argmax. fwdbwd is a training step: its forward also writes that argmax."""
        x, y = _numel(self.input_shape), _numel(self.output_shape)
        index = y * INDEX_BYTES if self.op == "max" else 0
        fwd, bwd = (x + y) * itemsize, (x + y) * itemsize + index
        return {"fwd": fwd, "bwd": bwd, "fwdbwd": fwd + index + bwd}[op]

    def describe(self):
        window = (f"output={_text(self.output_size)}" if self.op == "adaptive_avg" else
                  f"kernel={_text(self.kernel)} stride={_text(self.stride)} pad={_text(self.padding)}"
                  + (" ceil_mode" if self.ceil_mode else ""))
        oh, ow = self.out_hw
        return f"{self.op} N={self.n} C={self.c} H={self.h} W={self.w} -> {oh}x{ow} {window}"


def _numel(shape):
    total = 1
    for size in shape:
        total *= size
    return total


def _text(pair):
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def intensity(shape, op, itemsize):
    """Arithmetic intensity: flop per byte of minimum traffic."""
    return shape.flop(op) / shape.traffic(op, itemsize)


# ----------------------------------------------------------------------------- suites

# Tiny shapes for the CPU smoke run through Triton's interpreter (a fraction of a second per
# call): they exercise the pipeline, they measure nothing.
SMOKE = [
    Conv("smoke_3x3", 2, 4, 8, 8, 8, 3, 3, padding=1),  # plain 3x3, same padding
    Conv("smoke_3x3s2_odd", 2, 8, 9, 9, 8, 3, 3, stride=2, padding=1),  # odd H, stride 2
    Conv("smoke_dw3x3", 2, 8, 8, 8, 8, 3, 3, padding=1, groups=8),  # depthwise
    conv1d("smoke_conv1d_dw4", 2, 8, 16, 8, 4, padding=3, groups=8),  # Mamba-style depthwise conv1d
    Pool("smoke_max3x3s2", 2, 4, 9, 9, "max", 3, 2, 1),  # ResNet-stem-like window on odd H
    Pool("smoke_global_avg", 2, 8, 4, 4, "adaptive_avg", output_size=1),  # global average
]

# LeNet-5 as in d2l's chapter, batch 256 of 28x28 Fashion-MNIST images.
LENET = [
    Conv("lenet_c1", 256, 1, 28, 28, 6, 5, 5, padding=2),  # C1: 1 -> 6, 5x5, pad 2
    Conv("lenet_c3", 256, 6, 14, 14, 16, 5, 5),  # C3: 6 -> 16, 5x5 on the pooled 14x14
]


def _resnet50_stage(size, width, in_channels, batch=32):
    """One stage of torchvision's ResNet-50 (v1.5: the stride sits on the 3x3) at resolution
    ``size``: its bottleneck 1x1 (reduce and expand) and 3x3 layers, and, coming from twice the
    resolution, the strided 3x3 and the 1x1/2 downsample of its first block."""
    out = width * 4
    layers = [
        Conv(f"rn50_{size}_1x1_{out}to{width}", batch, out, size, size, width, 1, 1),  # 1x1 reduce (blocks 2+)
        Conv(f"rn50_{size}_3x3_{width}", batch, width, size, size, width, 3, 3, padding=1),  # 3x3
        Conv(f"rn50_{size}_1x1_{width}to{out}", batch, width, size, size, out, 1, 1),  # 1x1 expand
    ]
    if in_channels != 64:  # stages 3-5 start from the previous resolution, twice as large
        prev = 2 * size
        layers += [
            Conv(f"rn50_{prev}to{size}_3x3s2_{width}", batch, width, prev, prev, width, 3, 3, stride=2, padding=1),
            Conv(f"rn50_{prev}to{size}_1x1s2_{in_channels}to{out}", batch, in_channels, prev, prev, out, 1, 1,
                 stride=2),
        ]
    return layers


# ResNet-50 (He et al. 2016; torchvision), batch 32 at 224x224. Stage 2's first 1x1 (64 -> 64)
# and its stride-1 downsample (64 -> 256, the same shape as its 1x1 expand) are added below.
RESNET50 = [
    Conv("rn50_conv1_7x7s2", 32, 3, 224, 224, 64, 7, 7, stride=2, padding=3),  # the stem, 3 channels
    Conv("rn50_56_1x1_64to64", 32, 64, 56, 56, 64, 1, 1),  # stage 2, block 1's 1x1 reduce
    *_resnet50_stage(56, 64, 64),
    *_resnet50_stage(28, 128, 256),
    *_resnet50_stage(14, 256, 512),
    *_resnet50_stage(7, 512, 1024),
]

# VGG-16 (Simonyan & Zisserman 2015), configuration D: 3x3, pad 1 layers, batch 32 at 224x224.
VGG = [Conv(f"vgg16_{size}_{cin}to{cout}", 32, cin, size, size, cout, 3, 3, padding=1)
       for size, cin, cout in [(224, 3, 64), (224, 64, 64), (112, 64, 128), (112, 128, 128),
                               (56, 128, 256), (56, 256, 256), (28, 256, 512), (28, 512, 512),
                               (14, 512, 512)]]

# Baidu DeepBench, code/kernels/conv_problems.h, training_set (w, h, c, n, k, s, r, pad_w, pad_h,
# wstride, hstride), a representative subset; H is the tuple's h (frequency for speech), W its w.
DEEPBENCH = [
    # DeepSpeech 2 (speech): a spectrogram of 161 frequencies x 700 frames, 5x20 filters / 2
    Conv("db_speech_161x700_1to32_5x20s2", 16, 1, 161, 700, 32, 5, 20, stride=2),
    Conv("db_speech_79x341_32to32_5x10s2", 16, 32, 79, 341, 32, 5, 10, stride=2),
    Conv("db_speech_161x700_1to64_5x5s2", 16, 1, 161, 700, 64, 5, 5, stride=2, padding=1),
    Conv("db_speech_80x350_64to64_3x3", 16, 64, 80, 350, 64, 3, 3, padding=1),
    # OCR: wide, short text-line images
    Conv("db_ocr_48x480_1to16_3x3", 16, 1, 48, 480, 16, 3, 3, padding=1),
    Conv("db_ocr_24x240_16to32_3x3", 16, 16, 24, 240, 32, 3, 3, padding=1),
    # face recognition
    Conv("db_face_108_3to64_3x3s2", 8, 3, 108, 108, 64, 3, 3, stride=2, padding=1),
    Conv("db_face_54_64to64_3x3", 8, 64, 54, 54, 64, 3, 3, padding=1),
    # GoogLeNet (Inception v1): the 5x5 branches and a 1x1
    Conv("db_inception_28_192to32_5x5", 16, 192, 28, 28, 32, 5, 5, padding=2),
    Conv("db_inception_14_512to48_5x5", 16, 512, 14, 14, 48, 5, 5, padding=2),
    Conv("db_inception_7_832to128_5x5", 16, 832, 7, 7, 128, 5, 5, padding=2),
    Conv("db_inception_28_192to64_1x1", 16, 192, 28, 28, 64, 1, 1),
    # ResNet entries of the set: a 1x1/2 with padding 3 (as listed), and a stage-4 1x1
    Conv("db_resnet_7_2048to512_1x1s2_pad3", 16, 2048, 7, 7, 512, 1, 1, stride=2, padding=3),
    Conv("db_resnet_14_256to1024_1x1s2", 16, 256, 14, 14, 1024, 1, 1, stride=2),
    # Not DeepBench's: a latency-bound pair, too little work to fill an H100
    Conv("latency_n1_256_16x16_3x3", 1, 256, 16, 16, 256, 3, 3, padding=1),
    Conv("latency_n4_256_32x32_3x3s2", 4, 256, 32, 32, 256, 3, 3, stride=2, padding=1),
]

# Depthwise layers (groups = channels), batch 32 at 224x224: MobileNetV2's 3x3 (Sandler et al.
# 2018), EfficientNet-B0's 5x5 (Tan and Le 2019) and ConvNeXt-T's 7x7 (Liu et al. 2022); and one
# ResNeXt-50 (32x4d) grouped 3x3, 4 channels per group, which stays on the GEMMs
# (convtri/depthwise_launch.py: is_direct).
DEPTHWISE = [
    Conv("mbv2_dw_32_112", 32, 32, 112, 112, 32, 3, 3, padding=1, groups=32),  # first block, stride 1
    Conv("mbv2_dw_96_112s2", 32, 96, 112, 112, 96, 3, 3, stride=2, padding=1, groups=96),  # 112 -> 56
    Conv("mbv2_dw_960_7", 32, 960, 7, 7, 960, 3, 3, padding=1, groups=960),  # last stage
    Conv("effb0_dw5_144_56s2", 32, 144, 56, 56, 144, 5, 5, stride=2, padding=2, groups=144),  # stage 3 entry
    Conv("effb0_dw5_672_14", 32, 672, 14, 14, 672, 5, 5, padding=2, groups=672),  # stage 5
    Conv("cnxt_dw7_96_56", 32, 96, 56, 56, 96, 7, 7, padding=3, groups=96),  # ConvNeXt-T stage 1
    Conv("cnxt_dw7_768_7", 32, 768, 7, 7, 768, 7, 7, padding=3, groups=768),  # ConvNeXt-T stage 4
    Conv("rnx50_g32_128_56", 32, 128, 56, 56, 128, 3, 3, padding=1, groups=32),  # ResNeXt-50 conv2, 4 per group
]

# Mamba's short causal convolution (Gu and Dao 2023): depthwise conv1d over the inner width
# (2 x d_model), kernel 4, padded 3 on both sides (the first L outputs are kept), in fp16/bf16.
# The sweep's nhwc layout is a transposed (N, L, C) tensor, as Mamba holds it.
CONV1D = [
    conv1d("mamba_130m_l2048", 8, 1536, 2048, 1536, 4, padding=3, groups=1536),  # d_model 768
    conv1d("mamba_1p4b_l4096", 4, 4096, 4096, 4096, 4, padding=3, groups=4096),  # d_model 2048, long sequence
    conv1d("mamba_2p8b_l1024", 8, 5120, 1024, 5120, 4, padding=3, groups=5120),  # d_model 2560
    conv1d("mamba_130m_l512_n1", 1, 1536, 512, 1536, 4, padding=3, groups=1536),  # one short sequence: latency
]

POOL = [
    # d2l LeNet: 2x2/2 average pooling after C1 (256 x 6 x 28x28 -> 14x14)
    Pool("lenet_avg2x2s2", 256, 6, 28, 28, "avg", 2, 2),
    # ResNet stem: max 3x3/2 pad 1 after conv1 (112 -> 56)
    Pool("rn50_stem_max3x3s2", 32, 64, 112, 112, "max", 3, 2, 1),
    # VGG: max 2x2/2 after the first block, and a smaller one at 56 (channels as in the issue)
    Pool("vgg16_max2x2s2_224", 32, 64, 224, 224, "max", 2, 2),
    Pool("vgg16_max2x2s2_56", 16, 128, 56, 56, "max", 2, 2),
    # AlexNet (Caffe's): max 3x3/2 with ceil_mode; on a 54x54 conv1 output (a 224 input, no
    # padding) ceil_mode matters: 27x27 instead of floor's 26x26
    Pool("alexnet_max3x3s2_ceil", 64, 96, 54, 54, "max", 3, 2, ceil_mode=True),
    # ResNet-50's head: global average pooling of 7x7 (AdaptiveAvgPool2d(1))
    Pool("rn50_global_avg7x7", 64, 2048, 7, 7, "adaptive_avg", output_size=1),
]

SUITES = {
    "smoke": SMOKE,
    "lenet": LENET,
    "resnet50": RESNET50,
    "vgg": VGG,
    "deepbench": DEEPBENCH,
    "depthwise": DEPTHWISE,
    "conv1d": CONV1D,
    "pool": POOL,
}
NOT_IN_ALL = ("all", "smoke", "quick")  # smoke is CPU-only; quick picks from the others
SUITES["all"] = [shape for name, suite in SUITES.items() if name not in NOT_IN_ALL for shape in suite]


# ----------------------------------------------------------------------------- curated suites

@dataclass(frozen=True)
class Pick:
    """A shape of a curated suite with the passes, dtypes and layouts run for it (the sweep's
    own options narrow them further). Pooling's backward is "bwd"."""
    shape: _Layer
    ops: tuple
    dtypes: tuple
    layouts: tuple = ("nhwc",)

    def covers(self, op, dtype, layout):
        return op in self.ops and dtype in self.dtypes and layout in self.layouts

    def points(self):
        return len(self.ops) * len(self.dtypes) * len(self.layouts)


def _pick(name, ops, dtypes, layouts=("nhwc",)):
    return Pick({shape.name: shape for shape in SUITES["all"]}[name], ops, dtypes, layouts)


CONV3 = ("fwd", "dgrad", "wgrad")
LOW = ("fp16", "bf16")
# "quick": about 40 points that stand for every suite above, for a GPU session with minutes to
# spend. One point of each family comes early, so that a run cut short still covers them. fp32
# runs as TF32 under the sweep's default --tf32 on. LeNet runs NCHW, as its models do.
QUICK = [
    _pick("vgg16_56_256to256", CONV3, LOW),  # VGG 3x3 at 56: compute-bound (every VGG layer after the first: 118 GFLOP)
    _pick("rn50_14_3x3_256", CONV3, LOW),  # ResNet-50 3x3
    _pick("rn50_14_1x1_1024to256", CONV3, ("fp16",)),  # ResNet-50 1x1: a plain GEMM over channels
    _pick("rn50_stem_max3x3s2", ("fwd", "bwd"), LOW),  # ResNet stem max-pool: memory-bound
    _pick("lenet_c3", CONV3, ("fp32",), ("nchw",)),  # LeNet C3, TF32: host-bound
    _pick("mbv2_dw_96_112s2", CONV3, ("fp16",)),  # depthwise, strided
    _pick("mamba_130m_l2048", ("fwd",), ("bf16",)),  # depthwise conv1d, Mamba's, channels-fastest
    _pick("db_inception_14_512to48_5x5", ("fwd", "dgrad"), ("fp16",)),  # DeepBench 5x5, long reduction
    _pick("db_speech_79x341_32to32_5x10s2", ("fwd",), ("fp16",)),  # DeepBench speech: wide kernel, stride 2
    _pick("rn50_28to14_3x3s2_256", CONV3, ("fp16",)),  # ResNet-50 strided 3x3
    _pick("vgg16_28_512to512", ("fwd",), ("fp16", "bf16", "fp32")),  # VGG 3x3 at 28, TF32 too
    _pick("rn50_conv1_7x7s2", ("fwd", "wgrad"), ("fp16",)),  # ResNet-50 stem 7x7/2: 3 channels
    _pick("lenet_c1", ("fwd",), ("fp32",), ("nchw",)),  # LeNet C1: one input channel
    _pick("lenet_avg2x2s2", ("fwd", "bwd"), ("fp32",), ("nchw",)),  # d2l LeNet's average pooling
    _pick("vgg16_max2x2s2_56", ("fwd",), ("bf16",)),  # VGG max-pool
    _pick("rn50_global_avg7x7", ("fwd", "bwd"), ("fp16",)),  # global average pooling
    _pick("latency_n1_256_16x16_3x3", ("fwd",), ("fp16",)),  # one image: latency-bound
]
SUITES["quick"] = [pick.shape for pick in QUICK]
PICKS = {"quick": {pick.shape.name: pick for pick in QUICK}}  # suite -> shape name -> Pick


def selected(suite, shape, op, dtype, layout):
    """Whether a point belongs to its suite: every point of a plain suite; a curated suite's
    picks only."""
    picks = PICKS.get(suite)
    return picks is None or picks[shape.name].covers(op, dtype, layout)


def suite_members(name):
    """(suite, shape) pairs of a suite; "all" keeps each shape's own suite."""
    names = [n for n in SUITES if n not in NOT_IN_ALL] if name == "all" else [name]
    return [(n, shape) for n in names for shape in SUITES[n]]


def _check_unique_names():
    seen = set()
    for shape in SUITES["all"] + SMOKE:
        assert shape.name not in seen, f"duplicate shape name {shape.name!r}"
        seen.add(shape.name)


_check_unique_names()
