"""perf/plot.py on the committed H100 results: one notation for ratios, colours centred at 1×,
points not measured marked, roofline points named, and a results README whose paragraph is
generated from the CSVs (the committed README must be exactly what plot.py writes today)."""
import csv
import importlib.util
import math
import pathlib
import statistics
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PERF = ROOT / "perf"
RESULTS = PERF / "results" / "nvidia-h100-80gb-hbm3"


def _load_plot():
    if str(PERF) not in sys.path:
        sys.path.insert(0, str(PERF))  # plot.py finds shapes.py beside it
    spec = importlib.util.spec_from_file_location("perf_plot", PERF / "plot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plot = _load_plot()


@pytest.fixture(scope="module")
def rows():
    return plot.read_rows(sorted(str(p) for p in RESULTS.glob("*.csv")))


def raw_rows():
    """The CSVs read here with csv alone, to check plot.py's figures against."""
    out = []
    for path in sorted(RESULTS.glob("*.csv")):
        with open(path, newline="") as f:
            out += list(csv.DictReader(f))
    return out


@pytest.mark.parametrize("value, text", [
    (0.117, "0.12×"), (0.1, "0.1×"), (0.0434, "0.043×"), (1 / 23, "0.043×"),  # was 1/23x
    (1.0, "1×"), (1.868, "1.9×"), (12.3, "12×"), (math.nan, "–"),
])
def test_one_notation_for_ratios(value, text):
    assert plot.ratio_text(value) == text


def test_colours_are_centred_at_one(rows):
    # a diverging map on log2(speedup) from -R to R: 1× is always the middle colour
    exponents, reach = plot.log2_scale(np.array([[0.25, 0.06], [math.nan, 2.0]]))
    assert reach == 5 and np.isnan(exponents[1, 0]) and exponents[0, 0] == -2  # 0.06 is 2^-4.06
    assert plot.log2_scale(np.array([1.0]))[1] == 1
    cmap = plot.plt.get_cmap(plot.SPEEDUP_CMAP)
    middle = cmap(0.5)
    assert min(middle[:3]) > 0.9  # white-ish: neither better nor worse
    assert cmap(0.1)[0] > cmap(0.1)[2] and cmap(0.9)[2] > cmap(0.9)[0]  # red slower, blue faster


def test_points_not_measured_are_marked(rows, tmp_path):
    # deepbench: the lease ended after 10 of its 16 shapes, the 10th with its forward alone
    missing = plot.plot_speedup(rows, "deepbench", tmp_path / "deepbench.png")
    shapes = {shape for *_, shape in missing}
    assert len(shapes) == 7 and "db_inception_14_512to48_5x5" in shapes
    assert ("fp16", "nchw", "fwd", "db_inception_14_512to48_5x5") not in missing
    assert ("fp16", "nchw", "wgrad", "db_inception_14_512to48_5x5") in missing
    assert plot.plot_speedup(rows, "lenet", tmp_path / "lenet.png") == []  # lenet: every point measured
    table = plot.markdown_table(rows, by="suite")
    assert "| deepbench fwd | 0.13× (n=20) | not measured | not measured |" in table


def test_roofline_names_the_extremes(rows):
    conv16 = [row for row in rows if row["kind"] == "conv" and row["dtype"] == "fp16"]
    picks = plot.roofline_picks(conv16, "tflops")
    raw = [r for r in raw_rows() if r["kind"] == "conv" and r["dtype"] == "fp16"]
    ours_best = max((r for r in raw if r["provider"] == "convtri"), key=lambda r: float(r["tflops"]))
    cudnn_best = max((r for r in raw if r["provider"] == "cudnn"), key=lambda r: float(r["tflops"]))
    assert picks[0][0]["shape"] == ours_best["shape"] and f"{float(ours_best['tflops']):.0f} TFLOP/s" in picks[0][1]
    assert picks[1][0]["shape"] == cudnn_best["shape"] and picks[1][1].startswith("cuDNN at best, 740")
    assert picks[2][1] == "ours furthest behind, 0.021×"


def test_the_story_is_generated_from_the_csvs(rows):
    text = plot.story(rows)
    raw = [r for r in raw_rows() if r["provider"] == "convtri"]
    speedups = [float(r["speedup"]) for r in raw]
    faster = sum(s >= 1 for s in speedups)
    assert f"faster than its baseline at {faster} of the {len(raw)} points" in text
    fwd = [float(r["speedup"]) for r in raw if (r["kind"], r["op"]) == ("conv", "fwd")]
    geomean = math.exp(statistics.fmean(math.log(s) for s in fwd))
    assert f"conv fwd {plot.ratio_text(geomean)} ({plot.ratio_text(statistics.median(fwd))})" in text
    assert f"worst {plot.ratio_text(min(speedups))}" in text and f"Best {plot.ratio_text(max(speedups))}" in text
    assert "fp16 199 against 740 TFLOP/s (20% and 75% of the 989 TFLOP/s peak)" in text
    assert "The gap is largest in the depthwise suite" in text
    assert "1/" not in text and "x " not in text.replace("max ", "")


def test_committed_readme_is_what_plot_writes(rows, tmp_path):
    # regenerate README.md from the committed CSVs: the committed one holds nothing typed by hand
    committed = (RESULTS / "README.md").read_text()
    pngs = [line.strip("- `") for line in committed.splitlines() if line.startswith("- `") and line.endswith(".png`")]
    csvs = [line.strip("- `") for line in committed.splitlines() if line.startswith("- `") and line.endswith(".csv`")]
    plot.write_readme(rows, tmp_path, pngs, csvs)
    assert (tmp_path / "README.md").read_text() == committed
    assert "**Where convtri stands**" in committed.splitlines()[2]


def test_a_complete_quick_run_misses_nothing(tmp_path):
    # the quick suite's picks choose their own ops, dtypes and layouts: a run with every pick
    # measured (made-up rows) marks no point "not measured" (was 213: every op, dtype and layout
    # of every shape, a conv's "bwd" and a pool's dgrad among them)
    import shapes
    template = next(iter(plot.read_rows(sorted(str(p) for p in RESULTS.glob("*.csv")))))
    rows = [dict(template, suite="quick", shape=pick.shape.name, kind=pick.shape.kind, op=op, dtype=dtype, layout=layout,
                 provider="convtri", speedup=0.5, ok=True)
            for pick in shapes.QUICK for op in pick.ops for dtype in pick.dtypes for layout in pick.layouts]
    assert len(rows) == sum(pick.points() for pick in shapes.QUICK)
    assert plot.plot_speedup(rows, "quick", tmp_path / "quick.png") == []
    del rows[0]  # vgg16_56_256to256 fwd fp16 nhwc, the first pick's first point
    assert plot.plot_speedup(rows, "quick", tmp_path / "quick.png") == [("fp16", "nhwc", "fwd", "vgg16_56_256to256")]
