"""Plots (and a results README) from the CSVs that perf/sweep.py writes.

    python perf/plot.py sweep.csv [more.csv ...] --out-dir plots [--readme]

Writes speedup_<suite>.png per suite, roofline.png, summary.png (geometric-mean speedup per
op x dtype) and, with --readme, README.md holding the same table, the run's versions and
commit and its exact command. A CPU smoke run is labelled as such on every page.
"""
import argparse
import csv
import math
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.lines  # noqa: E402
import matplotlib.patches  # noqa: E402
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
        gm = math.exp(sum(math.log(s) for s in used) / len(used)) if used else math.nan
        table[key][dtype] = (gm, len(used), len(group) - len(used))
    firsts = ordered([first for first, _ in table], ["conv", "pool"] if by == "kind" else unique(rows, by))
    return {(first, op): table[(first, op)] for first in firsts
            for op in ordered([o for f, o in table if f == first], OP_ORDER)}


def baseline_label(rows):
    names = unique([row for row in rows if row["provider"] == OURS], "baseline")
    return " / ".join(names)


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
    """convtri's speedup over the baseline per shape, one panel per (dtype, layout), bars by op."""
    rows = [row for row in rows if row["suite"] == suite and row["provider"] == OURS]
    combos = [(d, lay) for d in ordered(unique(rows, "dtype"), DTYPE_ORDER) for lay in unique(rows, "layout")
              if any(row["dtype"] == d and row["layout"] == lay for row in rows)]
    names = unique(rows, "shape")
    ops = ordered(unique(rows, "op"), OP_ORDER)
    width = 0.8 / len(ops)
    finite = [row["speedup"] for row in rows if row["speedup"] > 0 and math.isfinite(row["speedup"])] or [1.0]
    low, high = min(min(finite), 1.0) / 1.6, max(max(finite), 1.0) * 1.6
    fig, axes = plt.subplots(len(combos), 1, squeeze=False, layout="constrained",
                             figsize=(max(MIN_WIDTH, 2.5 + 0.22 * len(names) * len(ops)), 1.2 + 2.6 * len(combos)))
    for ax, (dtype, layout) in zip(axes[:, 0], combos):
        panel = [row for row in rows if row["dtype"] == dtype and row["layout"] == layout]
        for j, op in enumerate(ops):
            at = {row["shape"]: row for row in panel if row["op"] == op}
            x = {name: i + (j - (len(ops) - 1) / 2) * width for i, name in enumerate(names) if name in at}
            good = [name for name in x if usable(at[name])]
            wrong = [name for name in x if not usable(at[name]) and math.isfinite(at[name]["speedup"])]
            failed = [name for name in x if not math.isfinite(at[name]["speedup"])]  # no time at all
            ax.bar([x[n] for n in good], [at[n]["speedup"] for n in good], width, color=OP_COLORS.get(op, "grey"))
            ax.bar([x[n] for n in wrong], [at[n]["speedup"] for n in wrong], width, **WRONG_BAR)
            ax.plot([x[n] for n in failed], [low * 1.15] * len(failed), **FAILED_MARK)
        ax.axhline(1.0, color="black", linewidth=1)
        _speedup_axis(ax.yaxis, low, high)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_xticks(np.arange(len(names)))
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("speedup")
        ax.set_title(f"{dtype}, {layout}", fontsize=10, loc="left")
        ax.grid(axis="y", alpha=0.3)
        if ax is axes[0, 0]:
            handles = [matplotlib.patches.Patch(color=OP_COLORS.get(op, "grey"), label=op) for op in ops]
            handles += [matplotlib.patches.Patch(**WRONG_BAR, label="wrong result (excluded)"),
                        matplotlib.lines.Line2D([], [], **FAILED_MARK, label="failed")]
            ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _title(fig, rows, f"{suite}: convtri speedup over {baseline_label(rows)}, higher is better\n"
                      f"(the baseline timed in NCHW and channels_last, the faster kept)")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _speedup_axis(axis, low, high):
    """A log axis with ticks at powers of two, 1x always among them, written 1/4x, 1x, 2x."""
    axis.axes.set_yscale("log", base=2)
    axis.axes.set_ylim(low, high)
    exponents = range(math.floor(math.log2(low)), math.ceil(math.log2(high)) + 1)
    step = max(1, math.ceil(len(exponents) / MAX_SPEEDUP_TICKS))
    axis.set_major_locator(matplotlib.ticker.FixedLocator([2.0 ** e for e in exponents if e % step == 0]))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: ratio_text(v)))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def ratio_text(v):
    """A speedup as text: 2x, 1.23x, 0.5x, and below 0.1 as a fraction, 1/2490x."""
    if not math.isfinite(v):
        return "-"
    return f"{v:.3g}x" if v >= 0.1 else f"1/{round(1 / v)}x"


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
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("FLOP / byte" if kind == "conv" else "window taps / byte")
        ax.set_ylabel("TFLOP/s" if kind == "conv" else "GB/s")
        ax.set_title(f"{kind}, {dtype}", fontsize=10, loc="left")
        ax.grid(which="both", alpha=0.25)
        if j == len(dtypes) - 1:
            ax.scatter([], [], marker="o", facecolors="black", edgecolors="black", s=22, label=OURS)
            ax.scatter([], [], marker="s", facecolors="none", edgecolors="black", s=22, label="baseline")
            ax.scatter([], [], marker="x", color="red", s=40, label="wrong result")
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    _title(fig, rows, "Roofline: achieved rate against minimum-traffic intensity")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


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


def plot_summary(rows, path):
    """One page: geometric-mean speedup per op x dtype, for convtri (and torch.compile if run)."""
    tables = {p: geomean_table(rows, p) for p in (OURS, "torch-compile") if any(row["provider"] == p for row in rows)}
    fig, axes = plt.subplots(len(tables), 1, squeeze=False, layout="constrained",
                             height_ratios=[len(table) for table in tables.values()],
                             figsize=(MIN_WIDTH, 1.8 + sum(0.8 + 0.55 * len(table) for table in tables.values())))
    for ax, (provider, table) in zip(axes[:, 0], tables.items()):
        keys = list(table)
        dtypes = ordered({d for cells in table.values() for d in cells}, DTYPE_ORDER)
        values = np.array([[table[k].get(d, (math.nan,))[0] for d in dtypes] for k in keys])
        image = np.log2(np.where(np.isfinite(values), values, 1.0))
        if is_smoke(rows):  # no colours that read as a verdict
            image = np.zeros_like(image)
        ax.imshow(np.ma.masked_where(~np.isfinite(values), image), cmap="RdYlGn", vmin=-2, vmax=2, aspect="auto")
        for (i, key), (j, dtype) in ((a, b) for a in enumerate(keys) for b in enumerate(dtypes)):
            gm, used, excluded = table[key].get(dtype, (math.nan, 0, 0))
            text = ratio_text(gm) + f"\nn={used}"
            text += f", {excluded} excluded" if excluded else ""
            dark = math.isfinite(gm) and abs(math.log2(gm)) > 1.3 and not is_smoke(rows)
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
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
            out.append(ratio_text(gm) + f" (n={used}"
                       + (f", {excluded} excluded)" if excluded else ")"))
        lines.append(f"| {first} {op} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def write_readme(rows, out_dir, pngs, csv_names):
    gpu = " / ".join(unique(rows, "gpu"))
    bad = [row for row in rows if row["provider"] != rows[0]["baseline"] and not usable(row)
           and row["provider"] in (OURS, "torch-compile")]
    parts = [f"# convtri performance: {gpu}", ""]
    if is_smoke(rows):
        parts += [f"**{SMOKE_BANNER}.** It checks that the pipeline runs; its numbers mean nothing.", ""]
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


# ----------------------------------------------------------------------------- command line

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", nargs="+")
    p.add_argument("--out-dir", default=".", help="where the PNGs go (default: here)")
    p.add_argument("--readme", action="store_true", help="also write README.md with the geomean table")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
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
