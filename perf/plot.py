"""Plots (and a results README) from the CSVs that perf/sweep.py writes.

    python perf/plot.py sweep.csv [more.csv ...] --out-dir plots [--readme]
    python perf/plot.py --session GPU_SESSION_DIR --out-dir perf/results/<gpu>   # a perf/gpu_session.py folder

Writes speedup_<suite>.png per suite, roofline.png, summary.png (geometric-mean speedup per
op x dtype) and, with --readme, README.md: a paragraph generated from the CSVs (where convtri
stands, per op, best and worst, peak rates, the largest gap), the same tables, the run's
versions, commit and exact command. A CPU smoke run is labelled as such on every page. Every
ratio is written one way, ``0.11×`` (two significant digits), by ratio_text.
"""
import argparse
import csv
import json
import math
import os
import shutil
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors  # noqa: E402
import matplotlib.lines  # noqa: E402
import matplotlib.patches  # noqa: E402
import matplotlib.patheffects  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

NUMERIC = ["ms", "ms_p20", "ms_p80", "flop", "bytes", "intensity", "tflops", "gbps", "peak_tflops",
           "peak_gbps", "pct_peak", "speedup", "err", "tol"]
OURS = "convtri"
OP_ORDER = ["fwd", "dgrad", "wgrad", "bwd", "fwdbwd"]
DTYPE_ORDER = ["fp16", "bf16", "fp32"]
OP_COLORS = {"fwd": "tab:blue", "dgrad": "tab:orange", "wgrad": "tab:green", "bwd": "tab:brown",
             "fwdbwd": "tab:purple"}
SMOKE_BANNER = "CPU SMOKE RUN (Triton interpreter): not a performance measurement"
WRONG_BAR = dict(facecolor="lightgrey", hatch="///", edgecolor="red", linewidth=0.8)
FAILED_MARK = dict(marker="x", color="red", markersize=7, linestyle="none")
NOT_MEASURED_MARK = dict(marker="o", markerfacecolor="none", markeredgecolor="grey", markersize=5, linestyle="none")
NOT_MEASURED = "not measured"
PROVIDER_NAMES = {"cudnn": "cuDNN", "torch": "torch", "torch-cpu": "torch's CPU ops", OURS: OURS}
SPEEDUP_CMAP = "RdBu"  # diverging: red slower than the baseline, white 1×, blue faster
ROOFLINE_LABELS = 3  # points named per roofline panel: our fastest, the baseline's fastest, our worst ratio
DPI = 110
MIN_WIDTH = 9.0  # inches: the two header lines fit at fontsize 9
MAX_SPEEDUP_TICKS = 8  # labelled powers of two on a speedup axis, so that labels never overlap


# ----------------------------------------------------------------------------- data

def read_rows(paths):
    rows = []
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                for key in NUMERIC:
                    row[key] = float(row[key]) if row[key] not in ("", None) else math.nan
                row["ok"] = row["ok"] == "True"
                rows.append(row)
    if not rows:
        raise SystemExit(f"no rows in {', '.join(paths)}")
    return rows


def ordered(values, order):
    values = set(values)
    return [v for v in order if v in values] + sorted(values - set(order))


def unique(rows, key):
    return list(dict.fromkeys(row[key] for row in rows))


def is_smoke(rows):
    return any(row["run"] != "gpu" for row in rows)


def usable(row):
    """Counts in summaries: the correctness check passed and a time was measured."""
    return row["ok"] and row["speedup"] > 0 and math.isfinite(row["speedup"])


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def suite_shapes(suite):
    """The shape names perf/shapes.py lists for ``suite``, so that the ones not measured show;
    none where shapes.py is not beside this script or does not know the suite."""
    try:
        import shapes
        return [shape.name for shape in shapes.SUITES.get(suite, [])]
    except Exception:  # plot.py also runs on CSVs alone
        return []


def expected_point(suite, name, op, dtype, layout):
    """Whether a sweep of ``suite`` runs this point: an op of the shape's kind, picked by a
    curated suite (perf/shapes.py's ``selected``); True where shapes.py cannot say."""
    try:
        import shapes
        shape = next(s for s in shapes.SUITES[suite] if s.name == name)
    except Exception:  # plot.py also runs on CSVs alone, and on suites shapes.py no longer has
        return True
    return (op in (shapes.CONV_OPS if shape.kind == "conv" else shapes.POOL_OPS)
            and shapes.selected(suite, shape, op, dtype, layout))


def geomean_table(rows, provider=OURS, by="kind"):
    """{(row[by], op): {dtype: (geomean speedup or nan, rows used, rows excluded)}}, ``by`` being
    "kind" (conv or pool) or "suite"."""
    groups = defaultdict(list)
    for row in rows:
        if row["provider"] == provider:
            groups[(row[by], row["op"]), row["dtype"]].append(row)
    table = defaultdict(dict)
    for (key, dtype), group in groups.items():
        used = [row["speedup"] for row in group if usable(row)]
        table[key][dtype] = (geomean(used), len(used), len(group) - len(used))
    firsts = ordered([first for first, _ in table], ["conv", "pool"] if by == "kind" else unique(rows, by))
    return {(first, op): table[(first, op)] for first in firsts
            for op in ordered([o for f, o in table if f == first], OP_ORDER)}


def baseline_label(rows):
    names = unique([row for row in rows if row["provider"] == OURS], "baseline")
    return " / ".join(PROVIDER_NAMES.get(name, name) for name in names)


def header_lines(rows):
    """Who measured what, two lines per GPU: the machine and versions; commit, date, timer, TF32."""
    lines = []
    for gpu in unique(rows, "gpu"):
        sub = [row for row in rows if row["gpu"] == gpu]
        r = sub[0]
        tf32 = ", ".join(sorted({row["tf32"] for row in sub if row["dtype"] == "fp32"})) or "n/a"
        commit = r["commit"][:12] + ("-dirty" if r["commit"].endswith("-dirty") else "")
        lines.append(f"{gpu} | torch {r['torch']} | triton {r['triton']} | cuDNN {r['cudnn'] or 'n/a'}")
        lines.append(f"commit {commit} | {r['timestamp'][:10]} | timer {r['timer']} | fp32 TF32 {tf32}")
    return lines


def _title(fig, rows, title):
    fig.suptitle("\n".join([title, *header_lines(rows)] + ([SMOKE_BANNER] if is_smoke(rows) else [])), fontsize=9)
    if is_smoke(rows):
        fig.text(0.5, 0.5, "CPU SMOKE RUN\nnot a measurement", ha="center", va="center", fontsize=34,
                 color="red", alpha=0.12, rotation=20, zorder=0)


# ----------------------------------------------------------------------------- plots

def plot_speedup(rows, suite, path):
    """convtri's speedup over the baseline per shape, one panel per (dtype, layout), bars by op.
    A point the sweep did not measure (a shape of the suite, or an op of a measured shape) is
    marked as such rather than left out; returns those points as (dtype, layout, op, shape)."""
    rows = [row for row in rows if row["suite"] == suite and row["provider"] == OURS]
    combos = [(d, lay) for d in ordered(unique(rows, "dtype"), DTYPE_ORDER) for lay in unique(rows, "layout")
              if any(row["dtype"] == d and row["layout"] == lay for row in rows)]
    measured = unique(rows, "shape")
    names = [n for n in suite_shapes(suite) if n in measured or not is_smoke(rows)]
    names += [n for n in measured if n not in names]
    ops = ordered(unique(rows, "op"), OP_ORDER)
    width = 0.8 / len(ops)
    finite = [row["speedup"] for row in rows if row["speedup"] > 0 and math.isfinite(row["speedup"])] or [1.0]
    low, high = min(min(finite), 1.0) / 1.6, max(max(finite), 1.0) * 1.6
    fig, axes = plt.subplots(len(combos), 1, squeeze=False, layout="constrained",
                             figsize=(max(MIN_WIDTH, 2.5 + 0.22 * len(names) * len(ops)), 1.2 + 2.6 * len(combos)))
    not_measured = []
    for ax, (dtype, layout) in zip(axes[:, 0], combos):
        panel = [row for row in rows if row["dtype"] == dtype and row["layout"] == layout]
        for j, op in enumerate(ops):
            at = {row["shape"]: row for row in panel if row["op"] == op}
            x = {name: i + (j - (len(ops) - 1) / 2) * width for i, name in enumerate(names)}
            good = [name for name in at if usable(at[name])]
            wrong = [name for name in at if not usable(at[name]) and math.isfinite(at[name]["speedup"])]
            failed = [name for name in at if not math.isfinite(at[name]["speedup"])]  # no time at all
            missing = [name for name in names if name not in at and expected_point(suite, name, op, dtype, layout)]
            not_measured += [(dtype, layout, op, name) for name in missing]
            ax.bar([x[n] for n in good], [at[n]["speedup"] for n in good], width, color=OP_COLORS.get(op, "grey"))
            ax.bar([x[n] for n in wrong], [at[n]["speedup"] for n in wrong], width, **WRONG_BAR)
            ax.plot([x[n] for n in failed], [low * 1.15] * len(failed), **FAILED_MARK)
            ax.plot([x[n] for n in missing], [low * 1.15] * len(missing), **NOT_MEASURED_MARK)
        ax.axhline(1.0, color="black", linewidth=1)
        _speedup_axis(ax.yaxis, low, high)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_xticks(np.arange(len(names)))
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
        for label, name in zip(ax.get_xticklabels(), names):
            if name not in measured:
                label.set_color("grey")
        ax.set_ylabel("speedup")
        ax.set_title(f"{dtype}, {layout}", fontsize=10, loc="left")
        ax.grid(axis="y", alpha=0.3)
        if ax is axes[0, 0]:
            handles = [matplotlib.patches.Patch(color=OP_COLORS.get(op, "grey"), label=op) for op in ops]
            handles += [matplotlib.patches.Patch(**WRONG_BAR, label="wrong result (excluded)"),
                        matplotlib.lines.Line2D([], [], **FAILED_MARK, label="failed"),
                        matplotlib.lines.Line2D([], [], **NOT_MEASURED_MARK, label=NOT_MEASURED)]
            ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    unmeasured = [n for n in names if n not in measured]
    dtypes = [d for d in DTYPE_ORDER if d not in unique(rows, "dtype")] if not is_smoke(rows) else []
    gaps = ([f"{len(unmeasured)} of its {len(names)} shapes (grey names)"] if unmeasured else []) + (
        [f"dtype{'s' if len(dtypes) > 1 else ''} {', '.join(dtypes)}"] if dtypes else [])
    _title(fig, rows, f"{suite}: convtri speedup over {baseline_label(rows)}, higher is better\n"
                      f"(the baseline timed in NCHW and channels_last, the faster kept)"
           + (f"\n{NOT_MEASURED}: " + "; ".join(gaps) if gaps else ""))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return not_measured


def _speedup_axis(axis, low, high):
    """A log axis with ticks at powers of two, 1× always among them, written as ratio_text does."""
    axis.axes.set_yscale("log", base=2)
    axis.axes.set_ylim(low, high)
    exponents = range(math.floor(math.log2(low)), math.ceil(math.log2(high)) + 1)
    step = max(1, math.ceil(len(exponents) / MAX_SPEEDUP_TICKS))
    axis.set_major_locator(matplotlib.ticker.FixedLocator([2.0 ** e for e in exponents if e % step == 0]))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: ratio_text(v)))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def ratio_text(v):
    """A ratio, the one way every page writes it: two significant digits and ×: 0.047×, 0.11×,
    1×, 1.9×, 12×."""
    if not math.isfinite(v):
        return "–"
    return f"{v:.2g}×" if v < 10 else f"{v:.0f}×"


def plot_roofline(rows, path):
    """TFLOP/s (conv) or GB/s (pooling) against arithmetic intensity, under the GPU's roofline."""
    kinds = ordered(unique(rows, "kind"), ["conv", "pool"])
    dtypes = ordered(unique(rows, "dtype"), DTYPE_ORDER)
    fig, axes = plt.subplots(len(kinds), len(dtypes), squeeze=False, layout="constrained",
                             figsize=(max(MIN_WIDTH, 2.2 + 4.4 * len(dtypes)), 1.2 + 3.6 * len(kinds)))
    for (i, kind), (j, dtype) in ((a, b) for a in enumerate(kinds) for b in enumerate(dtypes)):
        ax = axes[i, j]
        sub = [row for row in rows if row["kind"] == kind and row["dtype"] == dtype and math.isfinite(row["ms"])]
        metric = "tflops" if kind == "conv" else "gbps"
        for op in ordered(unique(sub, "op"), OP_ORDER):
            for ours in (False, True):
                pts = [row for row in sub if row["op"] == op and (row["provider"] == OURS) == ours]
                ax.scatter([r["intensity"] for r in pts], [r[metric] for r in pts], s=22, marker="o" if ours else "s",
                           facecolors=OP_COLORS.get(op, "grey") if ours else "none",
                           edgecolors=OP_COLORS.get(op, "grey"), linewidths=1, label=op if ours else None)
        wrong = [row for row in sub if not row["ok"]]
        ax.scatter([r["intensity"] for r in wrong], [r[metric] for r in wrong], s=60, marker="x", color="red")
        _draw_roof(ax, sub, kind)
        _label_points(ax, sub, metric)
        ax.set_xscale("log")
        ax.set_yscale("log")
        low, high = ax.get_xlim()
        if high < 10 * low:  # no power of ten to label on an axis within a decade: label the minor ticks
            ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("FLOP / byte" if kind == "conv" else "window taps / byte")
        ax.set_ylabel("TFLOP/s" if kind == "conv" else "GB/s")
        ax.set_title(f"{kind}, {dtype}", fontsize=10, loc="left")
        ax.grid(which="both", alpha=0.25)
        if j == len(dtypes) - 1:
            ax.scatter([], [], marker="o", facecolors="black", edgecolors="black", s=22, label=OURS)
            ax.scatter([], [], marker="s", facecolors="none", edgecolors="black", s=22, label=baseline_label(rows))
            ax.scatter([], [], marker="x", color="red", s=40, label="wrong result")
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    _title(fig, rows, "Roofline: achieved rate against minimum-traffic intensity")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def roofline_picks(rows, metric):
    """The points a reader looks for first, as (row, what): our fastest, the baseline's fastest,
    and ours furthest behind its baseline."""
    unit = "TFLOP/s" if metric == "tflops" else "GB/s"
    ours = [row for row in rows if row["provider"] == OURS and usable(row)]
    theirs = [row for row in rows if row["provider"] != OURS and math.isfinite(row[metric])]
    picks = []
    if ours:
        best = max(ours, key=lambda row: row[metric])
        picks.append((best, f"ours at best, {rate_text(best[metric])} {unit}"))
    if theirs:
        best = max(theirs, key=lambda row: row[metric])
        picks.append((best, f"{PROVIDER_NAMES.get(best['provider'], best['provider'])} at best, "
                            f"{rate_text(best[metric])} {unit}"))
    if ours:
        worst = min(ours, key=lambda row: row["speedup"])
        picks.append((worst, f"ours furthest behind, {ratio_text(worst['speedup'])}"))
    return picks[:ROOFLINE_LABELS]


def _label_points(ax, rows, metric):
    """Number roofline_picks' points and name them in a key placed where it hides the fewest points."""
    handles = []
    for number, (row, what) in enumerate(roofline_picks(rows, metric), 1):
        ax.annotate(str(number), (row["intensity"], row[metric]), xytext=(3, 3), textcoords="offset points",
                    fontsize=8, weight="bold",
                    path_effects=[matplotlib.patheffects.withStroke(linewidth=2.5, foreground="white")])
        handles.append(matplotlib.lines.Line2D([], [], marker=f"${number}$", color="black", linestyle="none",
                                               label=f"{what}: {row['shape']} {row['op']} {row['layout']}"))
    if handles:
        ax.add_artist(ax.legend(handles=handles, loc="best", fontsize=6.5, handletextpad=0.3, framealpha=0.85))


def _draw_roof(ax, rows, kind):
    peaks_c = {row["peak_tflops"] for row in rows if math.isfinite(row["peak_tflops"])}
    peaks_m = {row["peak_gbps"] for row in rows if math.isfinite(row["peak_gbps"])}
    if not rows:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")
        return
    if not peaks_m:
        ax.set_title("no roofline: no peaks known for this device", fontsize=8, color="red", loc="right")
        return
    intensities = [row["intensity"] for row in rows]
    hbm = max(peaks_m)
    if kind == "pool":
        ax.axhline(hbm, color="black", linestyle="--", linewidth=1)
        ax.text(min(intensities), hbm, f" HBM {hbm / 1000:g} TB/s", va="bottom", fontsize=8)
        return
    x = np.geomspace(min(intensities) / 2, max(max(intensities) * 2, 4 * max(peaks_c) * 1e3 / hbm), 200)
    for peak in sorted(peaks_c):
        ax.plot(x, np.minimum(peak, hbm * x / 1e3), color="black", linestyle="--", linewidth=1)
        ax.text(x[-1], peak, f"{peak:g} TFLOP/s ", ha="right", va="bottom", fontsize=8)
    ax.text(x[0], hbm * x[0] / 1e3, f" HBM {hbm / 1000:g} TB/s", va="bottom", fontsize=8, rotation=0)


def log2_scale(values):
    """(log2 of ``values``, nan where not finite; the colour scale's reach R): colours run from
    2^-R to 2^R, so that 1× sits in the middle, and R is the smallest whole power of two that
    holds every value."""
    exponents = np.log2(values, where=np.isfinite(values), out=np.full_like(values, np.nan, dtype=float))
    reach = max(1, math.ceil(np.nanmax(np.abs(exponents)))) if np.isfinite(exponents).any() else 1
    return exponents, reach


def plot_summary(rows, path):
    """One page: geometric-mean speedup per op x dtype, for convtri (and torch.compile if run),
    coloured on a log scale centred at 1× (white); a cell not measured is grey and says so."""
    tables = {p: geomean_table(rows, p) for p in (OURS, "torch-compile") if any(row["provider"] == p for row in rows)}
    fig, axes = plt.subplots(len(tables), 1, squeeze=False, layout="constrained",
                             height_ratios=[len(table) for table in tables.values()],
                             figsize=(MIN_WIDTH, 1.8 + sum(0.8 + 0.55 * len(table) for table in tables.values())))
    cmap = plt.get_cmap(SPEEDUP_CMAP).with_extremes(bad="#e6e6e6")
    for ax, (provider, table) in zip(axes[:, 0], tables.items()):
        keys = list(table)
        expected = set() if is_smoke(rows) else set(DTYPE_ORDER)  # a GPU sweep runs all three by default
        dtypes = ordered({d for cells in table.values() for d in cells} | expected, DTYPE_ORDER)
        values = np.array([[table[k].get(d, (math.nan,))[0] for d in dtypes] for k in keys])
        exponents, reach = log2_scale(values)
        if is_smoke(rows):  # no colours that read as a verdict
            exponents = np.where(np.isfinite(exponents), 0.0, np.nan)
        image = ax.imshow(np.ma.masked_invalid(exponents), cmap=cmap, vmin=-reach, vmax=reach, aspect="auto")
        if not is_smoke(rows):
            bar = fig.colorbar(image, ax=ax, shrink=0.9, pad=0.02)
            step = max(1, math.ceil(2 * reach / MAX_SPEEDUP_TICKS))
            ticks = [t for t in range(-reach, reach + 1) if t % step == 0]  # 1× among them
            bar.set_ticks(ticks, labels=[ratio_text(2.0 ** t) for t in ticks])
            bar.set_label("speedup (log scale, 1× white)", fontsize=8)
        for (i, key), (j, dtype) in ((a, b) for a in enumerate(keys) for b in enumerate(dtypes)):
            gm, used, excluded = table[key].get(dtype, (math.nan, 0, 0))
            text = (ratio_text(gm) + f"\nn={used}") if used else NOT_MEASURED if not excluded else "all excluded"
            text += f", {excluded} excluded" if excluded and used else ""
            dark = math.isfinite(gm) and abs(math.log2(gm)) > 0.6 * reach and not is_smoke(rows)
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if dark else "black" if used else "dimgrey")
        ax.set_xticks(range(len(dtypes)))
        ax.set_xticklabels(dtypes)
        ax.set_yticks(range(len(keys)))
        ax.set_yticklabels([f"{kind} {op}" for kind, op in keys])
        ax.set_title(f"{provider}: geometric-mean speedup over {baseline_label(rows)}", fontsize=10, loc="left")
    _title(fig, rows, "Summary: over shapes and layouts; rows failing the correctness check are excluded")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


# ----------------------------------------------------------------------------- README

def markdown_table(rows, provider=OURS, by="kind"):
    table = geomean_table(rows, provider, by)
    dtypes = ordered({d for cells in table.values() for d in cells}, DTYPE_ORDER)
    lines = [f"| {by}, op | " + " | ".join(dtypes) + " |", "|---|" + "---|" * len(dtypes)]
    for (first, op), cells in table.items():
        out = []
        for d in dtypes:
            gm, used, excluded = cells.get(d, (math.nan, 0, 0))
            if not used:
                out.append(f"all {excluded} excluded" if excluded else NOT_MEASURED)
                continue
            out.append(ratio_text(gm) + f" (n={used}" + (f", {excluded} excluded)" if excluded else ")"))
        lines.append(f"| {first} {op} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def where(row):
    return f"{row['shape']} {row['kind']} {row['op']} {row['dtype']} {row['layout']}"


def rate_text(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:.2g}"


def peak_sentence(rows, kind, metric, unit, peak_key):
    """Per dtype: our highest rate against the baseline's, as shares of the GPU's peak when known."""
    parts, all_suites = [], unique([row for row in rows if row["kind"] == kind], "suite")
    for dtype in ordered(unique([row for row in rows if row["kind"] == kind], "dtype"), DTYPE_ORDER):
        sub = [row for row in rows if row["kind"] == kind and row["dtype"] == dtype and math.isfinite(row[metric])]
        ours = [row for row in sub if row["provider"] == OURS and usable(row)]
        theirs = [row for row in sub if row["provider"] == row["baseline"]]
        if not ours or not theirs:
            continue
        a, b = max(ours, key=lambda row: row[metric]), max(theirs, key=lambda row: row[metric])
        peak, suites = a[peak_key], unique(sub, "suite")
        notes = ([f"{100 * a[metric] / peak:.2g}% and {100 * b[metric] / peak:.2g}% of the {rate_text(peak)} {unit} "
                  "peak"] if math.isfinite(peak) and peak > 0 else []) + (
            [f"{', '.join(suites)} only"] if len(suites) < len(all_suites) else [])
        parts.append(f"{dtype} {rate_text(a[metric])} against {rate_text(b[metric])} {unit}"
                     + (f" ({'; '.join(notes)})" if notes else ""))
    return ", ".join(parts)


def story(rows):
    """Where convtri stands, in a few sentences generated from the rows: how many points beat the
    baseline, geomean and median per op, the best and worst points, the peak rates against the
    baseline's, and the suites with the largest and the smallest gap."""
    ours = [row for row in rows if row["provider"] == OURS and usable(row)]
    if not ours:
        return "No point of convtri both passed its correctness check and was timed."
    faster = [row for row in ours if row["speedup"] >= 1]
    faster_kinds = unique(faster, "kind")
    per_kind = []
    for kind in ordered(unique(ours, "kind"), ["conv", "pool"]):
        ops = ordered(unique([row for row in ours if row["kind"] == kind], "op"), OP_ORDER)
        ratios = {op: [row["speedup"] for row in ours if (row["kind"], row["op"]) == (kind, op)] for op in ops}
        per_kind.append(f"{kind} " + ", ".join(f"{op} {ratio_text(geomean(r))} ({ratio_text(float(np.median(r)))})"
                                               for op, r in ratios.items()))
    best, worst = max(ours, key=lambda row: row["speedup"]), min(ours, key=lambda row: row["speedup"])
    baselines = {kind: PROVIDER_NAMES.get(b, b) for kind in unique(ours, "kind")
                 for b in unique([row for row in ours if row["kind"] == kind], "baseline")}
    sentences = [
        f"convtri is faster than its baseline at {len(faster)} of the {len(ours)} points that passed the "
        f"correctness check" + (f" (all {faster_kinds[0]} points)" if len(faster_kinds) == 1 else "") + ".",
        "Speedup per op, geometric mean (median): " + "; ".join(per_kind) + ".",
        f"Best {ratio_text(best['speedup'])} ({where(best)}), worst {ratio_text(worst['speedup'])} ({where(worst)}).",
    ]
    for kind, metric, unit, peak_key, what in (("conv", "tflops", "TFLOP/s", "peak_tflops", "conv rate"),
                                               ("pool", "gbps", "GB/s", "peak_gbps", "pooling bandwidth")):
        peaks = peak_sentence(rows, kind, metric, unit, peak_key)
        if peaks:
            sentences.append(f"Highest {what}, ours against {baselines.get(kind, 'the baseline')}'s: {peaks}.")
    suites = {suite: geomean([row["speedup"] for row in ours if row["suite"] == suite]) for suite in unique(ours, "suite")}
    if len(suites) > 1:
        lowest, highest = min(suites, key=suites.get), max(suites, key=suites.get)
        sentences.append(f"The gap is largest in the {lowest} suite ({ratio_text(suites[lowest])} over its ops and "
                         f"dtypes) and smallest in {highest} ({ratio_text(suites[highest])}).")
    return " ".join(sentences)


def write_readme(rows, out_dir, pngs, csv_names):
    gpu = " / ".join(unique(rows, "gpu"))
    bad = [row for row in rows if row["provider"] != rows[0]["baseline"] and not usable(row)
           and row["provider"] in (OURS, "torch-compile")]
    parts = [f"# convtri performance: {gpu}", ""]
    if is_smoke(rows):
        parts += [f"**{SMOKE_BANNER}.** It checks that the pipeline runs; its numbers mean nothing.", ""]
    parts += [f"**Where convtri stands** (written by `perf/plot.py` from the CSVs below): {story(rows)}", ""]
    baseline = ("torch's CPU ops" if is_smoke(rows) else
                "cuDNN through torch for conv (cudnn.benchmark on), torch's native kernels for pooling")
    parts += [f"Geometric-mean speedup of convtri over {baseline}, each timed in NCHW and channels_last with the "
              "faster kept, over the shapes and layouts of the sweep. n counts the points; those failing the "
              "correctness check are excluded and counted.", "",
              markdown_table(rows), "", "Per suite:", "", markdown_table(rows, by="suite"), ""]
    if any(row["provider"] == "torch-compile" for row in rows):
        parts += ["torch.compile(mode='max-autotune') against the same baseline:", "",
                  markdown_table(rows, "torch-compile"), ""]
    parts += ["## Run", ""]
    parts += [f"- {line}" for line in header_lines(rows)]
    parts += [f"- commit: `{c}`" for c in unique(rows, "commit")]
    parts += [f"- command: `{c}`" for c in unique(rows, "command")]
    parts += ["", "## Files", ""] + [f"- `{name}`" for name in csv_names + pngs]
    parts += ["", "## Failures and mismatches", ""]
    parts += [f"- {row['shape']} {row['op']} {row['dtype']} {row['layout']} {row['provider']}: err {row['err']:.2e} "
              f"(tol {row['tol']:.0e}) {row['note']}" for row in bad] or ["None."]
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write("\n".join(parts) + "\n")


# ----------------------------------------------------------------------------- GPU sessions

SESSION_CSVS = ("quick.csv", "overhead.csv", "lenet.csv", "tests.csv", "ncu.csv", "configs.csv")
SESSION_FILES = ("session.json", "session.log") + SESSION_CSVS
GRAPH_COLORS = {"eager": "tab:blue", "graph": "tab:green"}
PROVIDER_HATCH = {"convtri": None, "torch": "//"}


def _float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _csv_dicts(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_session(folder):
    """A perf/gpu_session.py folder: session.json as a dict, plus "rows" per CSV (the quick
    suite's through read_rows, like any sweep CSV; columns a CSV lacks read as empty)."""
    with open(os.path.join(folder, "session.json")) as f:
        session = json.load(f)
    quick = os.path.join(folder, "quick.csv")
    session["rows"] = {name[:-4]: _csv_dicts(os.path.join(folder, name)) for name in SESSION_CSVS}
    session["rows"]["quick"] = read_rows([quick]) if session["rows"]["quick"] else []
    return session


def graph_rows(rows):
    """The quick suite's rows with the graph-replay speedup as their speedup (for geomean_table)."""
    return [dict(row, speedup=_float(row.get("speedup_graph"))) for row in rows]


def _session_title(fig, session, title):
    env = session.get("environment") or {}
    lines = [title, f"{env.get('gpu', '?')} | torch {env.get('torch', '?')} | triton {env.get('triton', '?')} | "
                    f"cuDNN {env.get('cudnn', '?')} | commit {str(env.get('commit', '?'))[:12]} | "
                    f"{str(session.get('started', ''))[:10]}"]
    if session.get("smoke"):
        lines.append(SMOKE_BANNER)
    fig.suptitle("\n".join(lines), fontsize=9)


def plot_graph_speedup(session, path):
    """Per quick-suite point: convtri's speedup over the baseline in eager mode and as CUDA-graph
    replays, side by side; the gap between the two bars is host overhead."""
    rows = [row for row in session["rows"]["quick"] if row["provider"] == OURS]
    labels = [f"{r['shape']} {r['op']} {r['dtype']}" for r in rows]
    values = {"eager": [r["speedup"] if usable(r) else math.nan for r in rows],
              "graph": [_float(r.get("speedup_graph")) if usable(r) else math.nan for r in rows]}
    finite = [v for vs in values.values() for v in vs if v > 0 and math.isfinite(v)] or [1.0]
    fig, ax = plt.subplots(layout="constrained", figsize=(max(MIN_WIDTH, 2.5 + 0.32 * len(rows)), 5.2))
    for j, (mode, vs) in enumerate(values.items()):
        ax.bar(np.arange(len(rows)) + (j - 0.5) * 0.4, [v if math.isfinite(v) else 0 for v in vs], 0.4,
               color=GRAPH_COLORS[mode], label=mode)
    ax.axhline(1.0, color="black", linewidth=1)
    _speedup_axis(ax.yaxis, min(min(finite), 1.0) / 1.6, max(max(finite), 1.0) * 1.6)
    ax.set_xticks(np.arange(len(rows)))
    ax.set_xticklabels(labels, rotation=55, ha="right", fontsize=7)
    ax.set_ylabel("speedup")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _session_title(fig, session, f"quick suite: convtri over {baseline_label(rows)}, eager and CUDA-graph replay "
                                 "(missing bar: failed or wrong)")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_overhead(session, path):
    """Microseconds per call at LeNet shapes, convtri against torch, per op and pass and mode."""
    rows = session["rows"]["overhead"]
    modes = [m for m in ("eager", "graph", "meta") if any(r["mode"] == m for r in rows)]
    calls = list(dict.fromkeys((r["op"], r["pass"]) for r in rows))
    cell = {(r["op"], r["pass"], r["mode"], r["provider"]): _float(r["us"]) for r in rows}
    fig, axes = plt.subplots(len(modes), 1, squeeze=False, layout="constrained",
                             figsize=(max(MIN_WIDTH, 2.5 + 0.45 * len(calls)), 1.5 + 2.8 * len(modes)))
    for ax, mode in zip(axes[:, 0], modes):
        for j, provider in enumerate(PROVIDER_HATCH):
            ys = [cell.get((op, p, mode, provider), math.nan) for op, p in calls]
            ax.bar(np.arange(len(calls)) + (j - 0.5) * 0.4, [y if math.isfinite(y) else 0 for y in ys], 0.4,
                   color=OP_COLORS["fwd"] if provider == OURS else "lightgrey", hatch=PROVIDER_HATCH[provider],
                   edgecolor="black", linewidth=0.5, label=provider)
        ax.set_yscale("log")
        ax.set_ylabel("us per call")
        ax.set_title(f"{mode}" + (" (meta tensors: the host path alone)" if mode == "meta" else ""), fontsize=10,
                     loc="left")
        ax.set_xticks(np.arange(len(calls)))
        ax.set_xticklabels([f"{op} {p}" for op, p in calls], rotation=35, ha="right", fontsize=8)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _session_title(fig, session, "Host overhead: microseconds per call at LeNet shapes, lower is better")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_lenet_step(session, path):
    """Examples/s of one LeNet training step, a bar per (variant, mode); unmeasured ones say why."""
    rows = session["rows"]["lenet"]
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    rates = [_float(r["examples_per_s"]) for r in rows]
    measured = [v for v in rates if v > 0 and math.isfinite(v)] or [1.0]
    fig, ax = plt.subplots(layout="constrained", figsize=(MIN_WIDTH, 1.8 + 0.42 * len(rows)))
    colors = plt.get_cmap("tab10")
    for i, (row, rate) in enumerate(zip(rows, rates)):
        shown = rate > 0 and math.isfinite(rate)
        ax.barh(i, rate if shown else 0, color=colors(modes.index(row["mode"])))
        ax.text(rate if shown else min(measured) / 2, i, f" {rate:,.0f}" if shown else f" {row['note'] or 'n/a'}",
                va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(min(measured) / 2, max(measured) * 8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r['variant']} {r['mode']}" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("examples / s")
    ax.grid(axis="x", which="both", alpha=0.3)
    _session_title(fig, session, "LeNet training step (forward, backward, SGD), higher is better")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _md_table(header, rows):
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _num(v, spec=".3g"):
    v = _float(v)
    return "-" if math.isnan(v) else format(v, spec)


def session_readme(session, out_dir, pngs):
    """README.md of a session folder: its summary, the machine and its ceilings, every stage,
    the tests, the quick suite eager and graph, host overhead, the LeNet step, the autotune
    record and the profile."""
    env, ceil, rows = session.get("environment") or {}, session.get("ceilings") or {}, session["rows"]
    smi, after = env.get("nvidia_smi_at_rest") or {}, ceil.get("nvidia_smi_after_matmul") or {}
    parts = [f"# convtri GPU session: {env.get('gpu', '?')}", ""]
    if session.get("smoke"):
        parts += [f"**{SMOKE_BANNER}.** It checks that the session runs; its numbers mean nothing.", ""]
    parts += [f"`{session.get('command')}` on {session.get('started')}: {session.get('elapsed_s')} s of a "
              f"{session.get('budget_s')} s budget. Commit `{env.get('commit')}`, sources sha256 "
              f"`{env.get('source_sha256')}` (`python perf/gpu_session.py --source-hash` on a checkout gives its own).",
              "", "## Summary (as the session printed it)", "", "```text", *session.get("summary", []), "```", ""]
    parts += ["## Machine and ceilings", "", _md_table(["", ""], [
        ("GPU", f"{env.get('gpu')}, {env.get('sm_count', '-')} SMs, compute capability {env.get('capability', '-')}, "
                f"{env.get('memory_gib', '-')} GiB, L2 {env.get('l2_mb', '-')} MB"),
        ("driver, CUDA", f"{env.get('driver', '-')}, {env.get('cuda', '-')}"),
        ("torch, triton, cuDNN", f"{env.get('torch')}, {env.get('triton')}, {env.get('cudnn')}"),
        ("Python, numpy", f"{env.get('python')}, {env.get('numpy')}"),
        ("clocks at rest (nvidia-smi)", f"SM {smi.get('clocks.sm', '-')}, memory {smi.get('clocks.mem', '-')}, "
                                        f"max SM {smi.get('clocks.max.sm', '-')}, {smi.get('pstate', '-')}"),
        ("clocks after the matmul", f"SM {after.get('clocks.sm', '-')}, memory {after.get('clocks.mem', '-')}, "
                                    f"power {after.get('power.draw', '-')}"),
        ("device-to-device copy", f"{_num(ceil.get('copy_gbps'), '.0f')} GB/s, bytes read plus written "
                                  f"({_num(ceil.get('copy_bytes', 0) / 2 ** 20, '.0f')} MiB, mean of {ceil.get('iters')})"),
        (ceil.get("matmul", "matmul"), f"{_num(ceil.get('matmul_tflops'), '.0f')} TFLOP/s on random data")]), ""]
    parts += ["## Stages", "", _md_table(["stage", "status", "seconds", "share (s)", "note"], [
        (name, s.get("status"), s.get("seconds"), s.get("share_s"), s.get("note", "")) for name, s in
        (session.get("stages") or {}).items()]), ""]
    tests = session.get("tests") or {}
    parts += ["## Native tests", "", f"Selection: {tests.get('select', '-')}. " + ", ".join(
        f"{tests.get(k, 0)} {label}" for k, label in (("passed", "passed"), ("failed", "failed"), ("error", "errors"),
                                                    ("skipped", "skipped"), ("not_run", "not run"))) +
        f" of {tests.get('selected', 0)} selected (`tests.csv`: one row per outcome).", ""]
    parts += [f"- FAILED `{nodeid}`" for nodeid in tests.get("failures", [])] + [""]
    configs = session.get("configs") or {}
    parts += ["## Every shipped config, forced (`perf/shipped_configs.py`)", "", (
        f"{configs['rounds']} rounds over {configs['problems']} problem/dtype pairs: {configs['ok']} ok, "
        f"{configs['mismatch']} mismatched, {configs['failed']} failed (`configs.csv`: one row per round)."
        if configs else "Not run."), ""]
    parts += [f"- {failure}" for failure in configs.get("failures", [])] + [""]
    parts += _readme_quick(rows["quick"], pngs)
    parts += _readme_overhead(rows["overhead"])
    parts += ["## LeNet training step", "", "Batch 256 of 1x28x28, forward, cross-entropy, backward, SGD (fp32).", "",
              _md_table(["variant", "mode", "examples/s", "ms/step", "x twin eager", "note"], [
                  (r["variant"], r["mode"], _num(r["examples_per_s"], ",.0f"), _num(r["step_ms"]),
                   ratio_text(_float(r["vs_torch_eager"])), r["note"]) for r in rows["lenet"]]), ""]
    parts += _readme_autotune(session.get("autotune") or {})
    ncu = session.get("ncu") or {}
    parts += ["## Nsight Compute (`ncu --clock-control none`)", ""]
    parts += [_md_table(["case", "kernel", "us", "SM %", "DRAM %", "tensor gmma %", "tensor hmma %", "warps %", "regs"], [
        (r["case"], r["kernel"], _num(r["duration_us"]), _num(r["sm_pct"]), _num(r["dram_pct"]),
         _num(r["tensor_gmma_pct"]), _num(r["tensor_hmma_pct"]), _num(r["warps_active_pct"]), _num(r["registers"]))
        for r in rows["ncu"]]) if rows["ncu"] else (session.get("stages", {}).get("ncu", {}).get("note") or "not run"), ""]
    parts += ["## Files", ""] + [f"- `{name}`" for name in sorted(set(os.listdir(out_dir)) - {"README.md"})]
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write("\n".join(parts) + "\n")


def _readme_quick(rows, pngs):
    if not rows:
        return ["## Quick suite", "", "No rows.", ""]
    ours = [r for r in rows if r["provider"] == OURS]
    base = {(r["shape"], r["op"], r["dtype"]): r for r in rows if r["provider"] == r["baseline"]}
    parts = ["## Quick suite: eager and CUDA-graph replay", "",
             "Geometric-mean speedup of convtri over the baseline, eager (what a user gets; timed with do_bench, "
             "whose L2 flush between calls hides up to ~0.1 ms of host time per call) and as CUDA-graph replays "
             "(the kernels alone). host us = eager minus graph, per call.", "",
             "Eager:", "", markdown_table(rows), "", "Graph replay:", "", markdown_table(graph_rows(rows)), "",
             _md_table(["shape", "op", "dtype", "layout", "ours ms", "base ms", "eager x", "ours graph ms",
                        "base graph ms", "graph x", "host us ours", "host us base", "ok"], [
                 (r["shape"], r["op"], r["dtype"], r["layout"], _num(r["ms"], ".4f"),
                  _num(base.get((r["shape"], r["op"], r["dtype"]), {}).get("ms"), ".4f"), ratio_text(r["speedup"]),
                  _num(r.get("ms_graph"), ".4f"),
                  _num(base.get((r["shape"], r["op"], r["dtype"]), {}).get("ms_graph"), ".4f"),
                  ratio_text(_float(r.get("speedup_graph"))), _num(r.get("host_us"), ".0f"),
                  _num(base.get((r["shape"], r["op"], r["dtype"]), {}).get("host_us"), ".0f"),
                  "yes" if r["ok"] else f"no: {r['note']}") for r in ours]), ""]
    return parts + [f"![{png}]({png})" for png in pngs] + [""]


def _readme_overhead(rows):
    if not rows:
        return ["## Host overhead", "", "No rows.", ""]
    pairs = {}
    for r in rows:
        pairs.setdefault((r["op"], r["pass"], r["mode"]), {})[r["provider"]] = r
    return ["## Host overhead at LeNet shapes", "",
            "Microseconds per call (minimum over samples; perf/overhead.py). eager: back-to-back calls on the GPU, "
            "synchronised; graph: the same call replayed from a CUDA graph; meta: meta tensors, the Python path "
            "alone. Launches: CUDA kernels per call (torch.profiler).", "",
            _md_table(["op", "pass", "mode", "convtri us", "torch us", "ours / torch", "launches ours / torch"], [
                (op, p, mode, _num(pair.get(OURS, {}).get("us"), ".1f"), _num(pair.get("torch", {}).get("us"), ".1f"),
                 _num(pair.get(OURS, {}).get("ratio"), ".2f"),
                 f"{_num(pair.get(OURS, {}).get('launches'), 'g')} / {_num(pair.get('torch', {}).get('launches'), 'g')}"
                 if mode == "eager" else "") for (op, p, mode), pair in pairs.items()]), ""]


def _readme_autotune(autotune):
    records = [r for r in autotune.get("records", []) if "kernel" in r]
    parts = ["## Autotune record", "", f"Source: {autotune.get('source', 'nothing recorded')}. session.json holds, for "
             "each quick-suite conv point, the config chosen and the time of every config tried.", ""]
    if records:
        parts += [_md_table(["point", "kernel", "best", "configs timed", "best ms", "slowest ms"], [
            (r["point"], r["kernel"], r["best"], len(r["timings_ms"]),
             _num(min((t for t in r["timings_ms"].values() if t is not None), default=None), ".4f"),
             _num(max((t for t in r["timings_ms"].values() if t is not None), default=None), ".4f"))
            for r in records]), ""]
    return parts


def plot_session(folder, out_dir):
    """A fetched perf/gpu_session.py folder into ``out_dir`` (perf/results/<gpu>/): its files,
    the quick suite's usual plots, the eager-vs-graph, overhead and LeNet plots, and README.md."""
    session = read_session(folder)
    os.makedirs(out_dir, exist_ok=True)
    for name in SESSION_FILES:
        source = os.path.join(folder, name)
        if os.path.exists(source) and os.path.abspath(source) != os.path.abspath(os.path.join(out_dir, name)):
            shutil.copyfile(source, os.path.join(out_dir, name))
    pngs = []
    quick = session["rows"]["quick"]
    if any(r["provider"] == OURS for r in quick):
        for suite in unique(quick, "suite"):  # quick; smoke in a CPU smoke session
            pngs.append(f"speedup_{suite}.png")
            plot_speedup(quick, suite, os.path.join(out_dir, pngs[-1]))
        pngs += ["graph_speedup.png", "roofline.png", "summary.png"]
        plot_graph_speedup(session, os.path.join(out_dir, "graph_speedup.png"))
        plot_roofline(quick, os.path.join(out_dir, "roofline.png"))
        plot_summary(quick, os.path.join(out_dir, "summary.png"))
    if session["rows"]["overhead"]:
        pngs.append("overhead.png")
        plot_overhead(session, os.path.join(out_dir, "overhead.png"))
    if session["rows"]["lenet"]:
        pngs.append("lenet_step.png")
        plot_lenet_step(session, os.path.join(out_dir, "lenet_step.png"))
    session_readme(session, out_dir, pngs)
    slug = (session.get("environment") or {}).get("slug", "?")
    print(f"wrote {', '.join(pngs)} and README.md to {out_dir} (the GPU's results folder: perf/results/{slug}/)")
    return out_dir


# ----------------------------------------------------------------------------- command line

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", nargs="*")
    p.add_argument("--out-dir", default=".", help="where the PNGs go (default: here)")
    p.add_argument("--readme", action="store_true", help="also write README.md with the geomean table")
    p.add_argument("--session", help="a perf/gpu_session.py output folder: its CSVs, session.json and log, "
                                     "plots and README.md go to --out-dir (perf/results/<gpu>)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.session:
        return plot_session(args.session, args.out_dir)
    if not args.csv:
        p.error("give CSV files, or --session DIR")
    rows = read_rows(args.csv)
    os.makedirs(args.out_dir, exist_ok=True)
    pngs = []
    for suite in unique(rows, "suite"):
        if any(row["suite"] == suite and row["provider"] == OURS for row in rows):
            pngs.append(f"speedup_{suite}.png")
            plot_speedup(rows, suite, os.path.join(args.out_dir, pngs[-1]))
    pngs += ["roofline.png", "summary.png"]
    plot_roofline(rows, os.path.join(args.out_dir, "roofline.png"))
    plot_summary(rows, os.path.join(args.out_dir, "summary.png"))
    if args.readme:
        csv_names = [os.path.relpath(path, args.out_dir) for path in args.csv]
        write_readme(rows, args.out_dir, pngs, csv_names)
    print(f"wrote {', '.join(pngs)}{' and README.md' if args.readme else ''} to {args.out_dir}")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
