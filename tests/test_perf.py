"""The performance sweep (perf/): the CPU smoke run end to end, its CSV and plots, the FLOP and
byte formulas on hand-computed shapes, and the suites naming every shape of issue 5."""
import csv
import importlib.util
import math
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PERF = ROOT / "perf"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMOKE_LABEL = "cpu-smoke (not a performance measurement)"


def _load(name):
    """perf/<name>.py as a module (perf/ is a folder of scripts, not a package)."""
    if str(PERF) not in sys.path:
        sys.path.insert(0, str(PERF))  # sweep.py imports its neighbours by name
    spec = importlib.util.spec_from_file_location(f"perf_{name}", PERF / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shapes = _load("shapes")


def _run(*args, cwd):
    result = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


# ----------------------------------------------------------------------------- the smoke run

@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One CPU smoke sweep (Triton's interpreter against torch's CPU ops), shared by the tests."""
    tmp = tmp_path_factory.mktemp("smoke")
    _run(PERF / "sweep.py", "--suite", "smoke", "--out", tmp / "tmp.csv", cwd=tmp)
    with open(tmp / "tmp.csv", newline="") as f:
        reader = csv.DictReader(f)
        return tmp, reader.fieldnames, list(reader)


def test_smoke_csv_columns(smoke):
    _, columns, rows = smoke
    required = {"suite", "shape", "kind", "op", "dtype", "layout", "provider", "baseline", "impl_layout",
                "ms", "ms_p20", "ms_p80", "flop", "bytes", "tflops", "gbps", "pct_peak", "speedup", "err", "tol",
                "ok", "run", "timer", "tf32", "gpu", "torch", "triton", "cudnn", "commit", "timestamp", "command"}
    assert required <= set(columns), required - set(columns)
    assert rows


def test_smoke_rows_are_labelled_and_correct(smoke):
    _, _, rows = smoke
    for row in rows:
        assert row["run"] == SMOKE_LABEL, row["run"]
        assert (row["timer"], row["gpu"], row["cudnn"], row["pct_peak"]) == ("cpu-wallclock", "cpu", "", "")
        assert row["ok"] == "True", (row["shape"], row["op"], row["provider"], row["err"], row["note"])
        assert float(row["ms_p20"]) <= float(row["ms"]) <= float(row["ms_p80"])
    ours = [row for row in rows if row["provider"] == "convtri"]
    assert all(float(row["err"]) <= float(row["tol"]) and float(row["speedup"]) > 0 for row in ours)
    # every point is a pair: convtri and its baseline, side by side
    point = lambda r: (r["suite"], r["shape"], r["op"], r["dtype"], r["layout"])
    for p in {point(r) for r in rows}:
        providers = sorted(r["provider"] for r in rows if point(r) == p)
        assert providers == ["convtri", "torch-cpu"], (p, providers)
    assert {r["shape"] for r in rows} == {s.name for s in shapes.SMOKE}
    assert {(r["kind"], r["op"]) for r in rows} == ({("conv", op) for op in shapes.CONV_OPS}
                                                    | {("pool", op) for op in shapes.POOL_OPS})
    assert {r["layout"] for r in rows} == {"nchw", "nhwc"}


def test_smoke_plots(smoke):
    tmp, _, _ = smoke
    _run(PERF / "plot.py", tmp / "tmp.csv", "--out-dir", tmp / "plots", "--readme", cwd=tmp)
    for name in ("speedup_smoke.png", "roofline.png", "summary.png"):
        assert (tmp / "plots" / name).read_bytes()[:8] == PNG_MAGIC, name
    readme = (tmp / "plots" / "README.md").read_text()
    assert "CPU SMOKE RUN" in readme and "| conv fwd |" in readme and "| smoke fwd |" in readme


def test_sweep_options_select_points(tmp_path):
    """--ops, --dtypes, --layouts and --shapes each narrow the sweep; pooling answers dgrad with bwd."""
    _run(PERF / "sweep.py", "--suite", "smoke", "--ops", "fwd,dgrad", "--dtypes", "fp16", "--layouts", "nhwc",
         "--shapes", "smoke_3x3", "smoke_max3x3s2", "--out", tmp_path / "some.csv", cwd=tmp_path)
    with open(tmp_path / "some.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["shape"], r["op"]) for r in rows} == {("smoke_3x3", "fwd"), ("smoke_3x3", "dgrad"),
                                                     ("smoke_max3x3s2", "fwd"), ("smoke_max3x3s2", "bwd")}
    assert {(r["dtype"], r["layout"]) for r in rows} == {("fp16", "nhwc")}
    assert all(r["ok"] == "True" for r in rows), [(r["shape"], r["op"], r["err"]) for r in rows]
    # the baseline is timed in both layouts and the faster one is named
    assert {r["impl_layout"] for r in rows if r["provider"] == "torch-cpu"} <= {"nchw", "nhwc"}


def test_results_dir_gathers_suites(tmp_path):
    """--results-dir writes <dir>/<device>/<suite>.csv, then PNGs and README.md from every CSV there."""
    _run(PERF / "sweep.py", "--suite", "smoke", "--ops", "fwd", "--shapes", "smoke_3x3", "--results-dir",
         tmp_path / "results", cwd=tmp_path)
    out = tmp_path / "results" / "cpu"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "roofline.png", "smoke.csv", "speedup_smoke.png",
                                                     "summary.png"]
    readme = (out / "README.md").read_text()
    assert "`python perf/sweep.py --suite smoke" in readme and "CPU SMOKE RUN" in readme


def test_mismatch_is_reported_and_excluded(tmp_path, monkeypatch):
    """A wrong result is flagged in its row and left out of every summary, however fast."""
    import convtri
    sweep, plot = _load("sweep"), _load("plot")
    real = convtri.conv2d
    monkeypatch.setattr(convtri, "conv2d", lambda *args: real(*args) * 1.5)
    out = sweep.main(["--suite", "smoke", "--ops", "fwd", "--shapes", "smoke_3x3", "smoke_global_avg",
                      "--layouts", "nchw", "--out", str(tmp_path / "bad.csv")])
    rows = plot.read_rows([out])
    ours = {r["shape"]: r for r in rows if r["provider"] == "convtri"}
    assert not ours["smoke_3x3"]["ok"] and "mismatch" in ours["smoke_3x3"]["note"]
    assert ours["smoke_3x3"]["err"] == pytest.approx(0.5, rel=1e-6)
    assert ours["smoke_global_avg"]["ok"]  # pooling untouched
    table = plot.geomean_table(rows)
    assert table[("conv", "fwd")]["fp32"][1:] == (0, 1)  # no point used, one excluded
    assert plot.geomean_table(rows)[("pool", "fwd")]["fp32"][1:] == (1, 0)


# ----------------------------------------------------------------------------- formulas

def test_conv_flop_and_bytes_lenet_c1():
    c1 = {s.name: s for s in shapes.LENET}["lenet_c1"]
    # 256x1x28x28 -> 6 filters 5x5, pad 2: P = Q = (28 + 2*2 - 5) // 1 + 1 = 28
    assert c1.out_hw == (28, 28)
    # 2*N*K*P*Q*(C/groups)*R*S = 2 * 256 * 6 * 28*28 * 1 * 5*5 = 2 * 256 * 6 * 784 * 25 = 60,211,200
    assert c1.flop("fwd") == c1.flop("dgrad") == c1.flop("wgrad") == 60_211_200
    assert c1.flop("fwdbwd") == 3 * 60_211_200
    # x 256*1*28*28 = 200,704; w 6*1*5*5 = 150; y 256*6*28*28 = 1,204,224: 1,405,078 elements,
    # at 2 bytes (fp16) 2,810,156 bytes, each pass reading two and writing one of them
    assert c1.traffic("fwd", 2) == c1.traffic("wgrad", 2) == 2_810_156
    assert c1.traffic("fwdbwd", 2) == 3 * 2_810_156


def test_conv_flop_depthwise_strided():
    dw = {s.name: s for s in shapes.DEPTHWISE}["mbv2_dw_96_112s2"]
    # 32x96x112x112, groups 96, 3x3 / 2 pad 1: P = Q = (112 + 2 - 3) // 2 + 1 = 56, C/groups = 1
    assert dw.out_hw == (56, 56)
    # 2 * 32 * 96 * 56*56 * 1 * 3*3 = 2 * 3072 * 3136 * 9 = 173,408,256
    assert dw.flop("fwd") == 173_408_256


def test_pool_bytes_resnet_stem():
    stem = {s.name: s for s in shapes.POOL}["rn50_stem_max3x3s2"]
    # 32x64x112x112, max 3x3 / 2 pad 1: (112 + 2 - 3) // 2 + 1 = 56
    assert stem.out_hw == (56, 56)
    x, y = 32 * 64 * 112 * 112, 32 * 64 * 56 * 56  # 25,690,112 and 6,422,528 elements
    # fwd: read x, write y, fp16: (25,690,112 + 6,422,528) * 2 = 64,225,280 bytes
    assert stem.traffic("fwd", 2) == (x + y) * 2 == 64_225_280
    # bwd: read dy and the one-byte window offsets, write dx: 64,225,280 + 6,422,528 * 1 = 70,647,808
    assert stem.traffic("bwd", 2) == 70_647_808
    # fwdbwd: the forward also writes the offsets
    assert stem.traffic("fwdbwd", 2) == 64_225_280 + 6_422_528 * 1 + 70_647_808
    # one tap per window element: 6,422,528 windows of 9
    assert stem.flop("fwd") == 9 * y


def test_pool_output_sizes():
    pools = {s.name: s for s in shapes.POOL}
    # 54x54, 3x3 / 2: floor gives (54 - 3) // 2 + 1 = 26, ceil_mode ceil(51 / 2) + 1 = 27
    assert pools["alexnet_max3x3s2_ceil"].out_hw == (27, 27)
    gap = pools["rn50_global_avg7x7"]
    assert gap.out_hw == (1, 1) and gap.flop("fwd") == 64 * 2048 * 49
    # avg: no index traffic; 256*6*28*28 in, 256*6*14*14 out, fp32
    assert pools["lenet_avg2x2s2"].traffic("bwd", 4) == (256 * 6 * 28 * 28 + 256 * 6 * 14 * 14) * 4


# ----------------------------------------------------------------------------- suites

# Every shape issue 5 names: (N, C, H, W, K, R, S, stride, padding, groups) for convolutions.
ISSUE_CONV_SHAPES = {
    "lenet_c1": (256, 1, 28, 28, 6, 5, 5, 1, 2, 1),
    "lenet_c3": (256, 6, 14, 14, 16, 5, 5, 1, 0, 1),
    "rn50_conv1_7x7s2": (32, 3, 224, 224, 64, 7, 7, 2, 3, 1),
    **{f"rn50_{size}_1x1_{4 * width}to{width}": (32, 4 * width, size, size, width, 1, 1, 1, 0, 1)
       for size, width in [(56, 64), (28, 128), (14, 256), (7, 512)]},
    **{f"rn50_{size}_3x3_{width}": (32, width, size, size, width, 3, 3, 1, 1, 1)
       for size, width in [(56, 64), (28, 128), (14, 256), (7, 512)]},
    **{f"rn50_{2 * size}to{size}_3x3s2_{width}": (32, width, 2 * size, 2 * size, width, 3, 3, 2, 1, 1)
       for size, width in [(28, 128), (14, 256), (7, 512)]},
    **{f"rn50_{2 * size}to{size}_1x1s2_{cin}to{4 * width}": (32, cin, 2 * size, 2 * size, 4 * width, 1, 1, 2, 0, 1)
       for size, width, cin in [(28, 128, 256), (14, 256, 512), (7, 512, 1024)]},
    **{f"vgg16_{size}_{cin}to{cout}": (32, cin, size, size, cout, 3, 3, 1, 1, 1)
       for size, cin, cout in [(224, 64, 64), (112, 128, 128), (56, 256, 256), (28, 512, 512), (14, 512, 512)]},
    "db_speech_161x700_1to32_5x20s2": (16, 1, 161, 700, 32, 5, 20, 2, 0, 1),
    "db_inception_28_192to32_5x5": (16, 192, 28, 28, 32, 5, 5, 1, 2, 1),
    "mbv2_dw_32_112": (32, 32, 112, 112, 32, 3, 3, 1, 1, 32),
    "mbv2_dw_96_112s2": (32, 96, 112, 112, 96, 3, 3, 2, 1, 96),
    "mbv2_dw_960_7": (32, 960, 7, 7, 960, 3, 3, 1, 1, 960),
    "latency_n1_256_16x16_3x3": (1, 256, 16, 16, 256, 3, 3, 1, 1, 1),
    "latency_n4_256_32x32_3x3s2": (4, 256, 32, 32, 256, 3, 3, 2, 1, 1),
}
# (N, C, H, W, op, kernel, stride, padding, ceil_mode) for pooling; adaptive: output size as kernel.
ISSUE_POOL_SHAPES = {
    "lenet_avg2x2s2": (256, 6, 28, 28, "avg", 2, 2, 0, False),
    "rn50_stem_max3x3s2": (32, 64, 112, 112, "max", 3, 2, 1, False),
    "vgg16_max2x2s2_224": (32, 64, 224, 224, "max", 2, 2, 0, False),
    "vgg16_max2x2s2_56": (16, 128, 56, 56, "max", 2, 2, 0, False),
    "alexnet_max3x3s2_ceil": (64, 96, 54, 54, "max", 3, 2, 0, True),
    "rn50_global_avg7x7": (64, 2048, 7, 7, "adaptive_avg", 1, 1, 0, False),
}


def test_suite_all_has_every_shape_of_the_issue():
    every = {s.name: s for s in shapes.SUITES["all"]}
    for name, expected in ISSUE_CONV_SHAPES.items():
        s = every[name]
        assert (s.n, s.c, s.h, s.w, s.k, s.r, s.s, s.stride[0], s.padding[0], s.groups) == expected, name
    for name, expected in ISSUE_POOL_SHAPES.items():
        s = every[name]
        window = s.output_size if s.op == "adaptive_avg" else s.kernel
        assert (s.n, s.c, s.h, s.w, s.op, window[0], s.stride[0], s.padding[0], s.ceil_mode) == expected, name
    assert all(op in ("fwd", "bwd", "fwdbwd") for op in shapes.POOL_OPS)  # forward and backward


def test_sweep_lists_suite_all_without_running(tmp_path):
    listed = _run(PERF / "sweep.py", "--suite", "all", "--list", "--device", "cpu", cwd=tmp_path)
    names = {line.split()[1] for line in listed.splitlines() if line.strip()}
    assert set(ISSUE_CONV_SHAPES) | set(ISSUE_POOL_SHAPES) <= names
    assert names == {s.name for s in shapes.SUITES["all"]}
    assert not list(tmp_path.iterdir())  # listing writes nothing


def test_cpu_refuses_gpu_suites():
    sweep = _load("sweep")
    with pytest.raises(SystemExit):
        sweep.parse_args(["--suite", "resnet50", "--device", "cpu"])


def _gpu_rows():
    """Rows shaped like a GPU run's, with made-up times (test data only, never a result):
    they drive the plotting paths a CPU run cannot reach, the roofline under known peaks."""
    sweep = _load("sweep")
    env = dict(run="gpu", timer="do_bench", device="cuda", gpu="NVIDIA H100 80GB HBM3", torch="2.11.0",
               triton="3.6.0", cudnn="91000", commit="0" * 40, timestamp="2026-01-01T00:00:00+00:00",
               command="python perf/sweep.py --suite all")
    peaks = sweep.gpu_peaks(env["gpu"])
    rows = []
    for i, (suite, shape) in enumerate(shapes.suite_members("all")[::6]):  # every sixth: both kinds, most suites
        for op in (shapes.CONV_OPS if shape.kind == "conv" else shapes.POOL_OPS):
            for dtype in ("bf16", "fp32"):
                flop, traffic = shape.flop(op), shape.traffic(op, sweep.DTYPES[dtype].itemsize)
                for provider, ms, ok in ((shape.kind == "conv" and "cudnn" or "torch", 1.0, True),
                                         ("convtri", 0.5 + i % 3, i % 5 != 1), ("convtri-failed", math.nan, False)):
                    rows.append(dict(
                        suite=suite, shape=shape.name, kind=shape.kind, op=op, dtype=dtype, layout="nhwc",
                        provider=provider.removesuffix("-failed"), baseline="cudnn", impl_layout="nhwc",
                        params=shape.describe(), ms=ms, ms_p20=ms, ms_p80=ms, flop=flop, bytes=traffic,
                        intensity=flop / traffic, tflops=flop / ms / 1e9, gbps=traffic / ms / 1e6,
                        peak_tflops=peaks["tf32" if dtype == "fp32" else dtype], peak_gbps=peaks["hbm"],
                        pct_peak=math.nan, speedup=1.0 / ms, err=0.0, tol=1e-2, ok=ok, note="", tf32=dtype == "fp32",
                        **env))
    return sweep, rows


def test_gpu_shaped_plots(tmp_path):
    """The roofline with peaks, failed and wrong points, and the README table, on GPU-shaped rows."""
    sweep, rows = _gpu_rows()
    with sweep.CsvWriter(tmp_path / "gpu.csv") as sink:
        for row in rows:
            sink(row)
    _run(PERF / "plot.py", tmp_path / "gpu.csv", "--out-dir", tmp_path / "plots", "--readme", cwd=tmp_path)
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert {"roofline.png", "summary.png", "README.md"} <= set(names) and len(names) > 4
    readme = (tmp_path / "plots" / "README.md").read_text()
    assert "SMOKE" not in readme and "NVIDIA H100 80GB HBM3" in readme
    assert "excluded" in readme  # the wrong and failed points are counted out


def test_geomean_excludes_wrong_results():
    plot = _load("plot")
    row = dict(provider="convtri", kind="conv", op="fwd", dtype="fp16")
    rows = [dict(row, speedup=2.0, ok=True), dict(row, speedup=8.0, ok=True),
            dict(row, speedup=1000.0, ok=False),  # a mismatch: fast and wrong counts for nothing
            dict(row, speedup=math.nan, ok=False)]  # a failure
    gm, used, excluded = plot.geomean_table(rows)[("conv", "fwd")]["fp16"]
    assert (gm, used, excluded) == (pytest.approx(4.0), 2, 2)


# ----------------------------------------------------------------------------- the quick suite

def test_quick_suite_stands_for_every_suite():
    """About 40 points: VGG 3x3 at 56 and 28, ResNet-50 1x1, 3x3 and strided, DeepBench,
    depthwise, LeNet and pooling; fwd, dgrad and wgrad in fp16 and bf16, a few in fp32 (TF32)."""
    picks = shapes.QUICK
    assert 35 <= sum(pick.points() for pick in picks) <= 45
    names = [pick.shape.name for pick in picks]
    assert len(set(names)) == len(names)
    for family in ("vgg16_56_", "vgg16_28_", "rn50_14_1x1", "rn50_14_3x3", "3x3s2", "db_", "mbv2_dw", "lenet_c",
                   "_max", "_avg"):
        assert any(family in name for name in names), family
    every = {s.name: s for s in shapes.SUITES["all"]}
    for pick in picks:
        assert every[pick.shape.name] is pick.shape  # the very shapes of the other suites
        kind_ops = shapes.CONV_OPS if pick.shape.kind == "conv" else shapes.POOL_OPS
        assert set(pick.ops) <= set(kind_ops) and set(pick.dtypes) <= {"fp16", "bf16", "fp32"}, pick
    points = [(p.shape.kind, op, dtype) for p in picks for op in p.ops for dtype in p.dtypes]
    for op in ("fwd", "dgrad", "wgrad"):
        assert {("conv", op, "fp16"), ("conv", op, "bf16")} <= set(points), op
    assert 3 <= sum(dtype == "fp32" for _, _, dtype in points) <= 10
    assert {("pool", "fwd"), ("pool", "bwd")} <= {(kind, op) for kind, op, _ in points}
    assert shapes.suite_members("all") == [m for m in shapes.suite_members("all") if m[0] != "quick"]


def test_sweep_runs_only_the_picked_points(monkeypatch):
    """A curated suite runs its picks, narrowed by the options; should_stop ends it between points."""
    sweep = _load("sweep")
    args = sweep.parse_args(["--suite", "quick", "--list", "--device", "cpu"])
    args.dtypes = list(sweep.DTYPES)
    assert args.graph  # quick times graph replays by default
    visited = []
    monkeypatch.setattr(sweep.Sweep, "point", lambda self, *point: visited.append(point))
    env = dict(gpu="cpu")
    sweep.Sweep(args, env, sink=None).run(sweep.members_of(args))
    expected = {(p.shape.name, op, dtype, layout) for p in shapes.QUICK for op in p.ops for dtype in p.dtypes
                for layout in p.layouts}
    assert {(shape.name, op, dtype, layout) for _, shape, op, dtype, layout in visited} == expected
    assert len(visited) == len(expected)
    args.dtypes = ["bf16"]
    visited.clear()
    sweep.Sweep(args, env, sink=None, should_stop=lambda: len(visited) >= 3).run(sweep.members_of(args))
    assert len(visited) == 3 and all(dtype == "bf16" for _, _, _, dtype, _ in visited)
