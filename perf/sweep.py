"""The performance sweep: convtri against cuDNN (conv) and torch's native pooling, side by side.

    python perf/sweep.py --suite resnet50 --out resnet50.csv          # a GPU
    python perf/sweep.py --suite all --results-dir perf/results       # the full sweep, plots and README
    python perf/sweep.py --suite smoke --out smoke.csv                 # CPU smoke run (interpreter)

Every point checks convtri's result against the baseline's, then times both. One CSV row per
(suite, shape, op, dtype, layout, provider). perf/README.md explains the columns.
"""
import argparse
import csv
import datetime
import glob
import math
import os
import re
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
import triton
import triton.testing

import convtri
import convtri.graphs

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, PERF_DIR)
import plot  # noqa: E402  (perf/plot.py, which draws the results dir's PNGs and README)
import shapes  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
LAYOUTS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}
# --ops names the conv passes; pooling's only backward (the input gradient) answers to dgrad.
POOL_OP = {"fwd": "fwd", "dgrad": "bwd", "fwdbwd": "fwdbwd"}

# Relative L2 error ||ours - ref|| / ||ref|| allowed against the baseline's own output.
TOLERANCE = {"fp16": 1e-2, "bf16": 5e-2, "fp32": 1e-4, "tf32": 1e-2}

# Peaks per GPU: dense tensor-core TFLOP/s (fp16/bf16, TF32), fp32 without tensor cores, HBM GB/s.
# SXM parts, matched on torch.cuda.get_device_name(); H100 PCIe/NVL have lower peaks, and no
# entry here: their rows leave pct_peak empty rather than show a wrong percentage.
GPU_PEAKS = [
    (r"H200", dict(fp16=989, bf16=989, tf32=495, fp32=67, hbm=4800)),
    (r"H100(?!.*(PCIe|NVL))", dict(fp16=989, bf16=989, tf32=495, fp32=67, hbm=3350)),
    (r"A100", dict(fp16=312, bf16=312, tf32=156, fp32=19.5, hbm=2000)),
]

RUN_GPU = "gpu"
RUN_CPU_SMOKE = "cpu-smoke (not a performance measurement)"
TIMER_GPU = "do_bench"
TIMER_CPU = "cpu-wallclock"

COLUMNS = [
    "suite", "shape", "kind", "op", "dtype", "layout", "provider", "baseline", "impl_layout", "params",
    "ms", "ms_p20", "ms_p80", "flop", "bytes", "intensity", "tflops", "gbps",
    "peak_tflops", "peak_gbps", "pct_peak", "copy_gbps", "pct_copy", "speedup", "ms_graph", "speedup_graph", "host_us",
    "err", "tol", "ok", "note",
    "run", "timer", "tf32", "device", "gpu", "torch", "triton", "cudnn", "commit", "timestamp", "command",
]


# ----------------------------------------------------------------------------- environment

def git_commit():
    """HEAD, with -dirty when tracked files differ from it; "unknown" outside a checkout.
    CONVTRI_COMMIT overrides it where the tree was copied without its own git metadata."""
    if os.environ.get("CONVTRI_COMMIT"):
        return os.environ["CONVTRI_COMMIT"]
    def git(*args):
        return subprocess.run(["git", "-C", PERF_DIR, *args], capture_output=True, text=True, check=True).stdout
    try:
        head = git("rev-parse", "HEAD").strip()
        return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no").strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment(device, command):
    """What every row carries about the machine and the code."""
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return dict(
        run=RUN_GPU if device == "cuda" else RUN_CPU_SMOKE,
        timer=TIMER_GPU if device == "cuda" else TIMER_CPU,
        device=device, gpu=gpu, torch=torch.__version__, triton=triton.__version__,
        cudnn=torch.backends.cudnn.version() if device == "cuda" else None,
        commit=git_commit(), timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=command)


def gpu_peaks(gpu):
    for pattern, peaks in GPU_PEAKS:
        if re.search(pattern, gpu):
            return peaks
    return None


def uses_tf32(dtype, device):
    """convtri's rule, and cuDNN's: fp32 on CUDA runs TF32 exactly when cudnn.allow_tf32."""
    return dtype == "fp32" and device == "cuda" and torch.backends.cudnn.allow_tf32


def slug(gpu):
    return re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")


# ----------------------------------------------------------------------------- timing

def bench(fn, device, args):
    """(median, p20, p80) milliseconds of fn(): do_bench on CUDA, a wall-clock loop on CPU."""
    if device == "cuda":
        return tuple(triton.testing.do_bench(fn, warmup=args.warmup_ms, rep=args.rep_ms, quantiles=[0.5, 0.2, 0.8]))
    fn()
    times = []
    for _ in range(args.cpu_repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return tuple(float(t) for t in np.percentile(times, [50, 20, 80]))


capture_graph = convtri.graphs.capture  # a CUDA graph of one call of build()'s callable, and that callable


def wall_seconds(fn, calls, cuda):
    """Seconds for ``calls`` back-to-back calls of fn, synchronised before and after on CUDA:
    the steady state of a loop of calls, whichever of host and device is the slower."""
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


COPY_BYTES = 1 << 28  # the copy that measures a GPU's reachable memory bandwidth: 256 MiB, far beyond L2
COPY_CALLS = 20


def copy_bandwidth(device, nbytes=COPY_BYTES, calls=COPY_CALLS):
    """Measured GB/s of a device-to-device copy of ``nbytes``, counting bytes read and written:
    the mean over ``calls`` back-to-back copies after three warm-up ones."""
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    copy = lambda: dst.copy_(src)
    wall_seconds(copy, 3, device == "cuda")
    return 2 * src.numel() * 4 * calls / wall_seconds(copy, calls, device == "cuda") / 1e9


def rel_error(ours, ref):
    """The largest relative L2 error over the outputs (y, or the gradients)."""
    worst = 0.0
    for a, b in zip(_as_tuple(ours), _as_tuple(ref)):
        a, b = a.double(), b.double()
        scale = torch.linalg.vector_norm(b).item() or 1.0
        worst = max(worst, torch.linalg.vector_norm(a - b).item() / scale)  # NaN stays NaN
    return worst


def _as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


# ----------------------------------------------------------------------------- cases

class Case:
    """One (shape, op, dtype) on one device: the tensors, and the callable each provider times.

    fwd times the forward alone; dgrad / wgrad (pooling: bwd) time
    torch.autograd.grad(y, x or w, dy, retain_graph=True) with y computed once, untimed, and
    only that tensor requiring grad; fwdbwd times the forward and all gradients together.
    """

    def __init__(self, shape, op, dtype, device, seed):
        self.shape, self.op = shape, op
        gen = torch.Generator(device=device).manual_seed(seed)
        randn = lambda size: torch.randn(size, generator=gen, device=device).to(DTYPES[dtype])
        self.tensors = [randn(shape.input_shape)] + ([randn(shape.weight_shape)] if shape.kind == "conv" else [])
        self.dy = randn(shape.output_shape)
        self.wrt = self.gradients(op, len(self.tensors))

    @staticmethod
    def gradients(op, inputs):
        """Which of ``inputs`` tensors ``op`` differentiates."""
        return {"fwd": [], "dgrad": [0], "bwd": [0], "wgrad": [1], "fwdbwd": list(range(inputs))}[op]

    def forward(self, lib):
        """The op from ``lib``: convtri, torch.nn.functional, or anything with their signatures."""
        s = self.shape
        if s.kind == "conv" and s.dims == 1:
            return lambda x, w: lib.conv1d(x, w, None, s.stride[1], s.padding[1], 1, s.groups)
        if s.kind == "conv":
            return lambda x, w: lib.conv2d(x, w, None, s.stride, s.padding, 1, s.groups)
        if s.op == "max":
            return lambda x: lib.max_pool2d(x, s.kernel, s.stride, s.padding, ceil_mode=s.ceil_mode)
        if s.op == "avg":
            return lambda x: lib.avg_pool2d(x, s.kernel, s.stride, s.padding, ceil_mode=s.ceil_mode)
        return lambda x: lib.adaptive_avg_pool2d(x, s.output_size)

    def callable(self, forward, layout):
        """What is timed, with the inputs (and dy) in ``layout``."""
        leaves = [in_layout(t, layout).requires_grad_(i in self.wrt) for i, t in enumerate(self.tensors)]
        wrt = [leaves[i] for i in self.wrt]
        dy = in_layout(self.dy, layout)
        if self.op == "fwd":
            return lambda: forward(*leaves)
        if self.op == "fwdbwd":
            return lambda: torch.autograd.grad(forward(*leaves), wrt, dy)
        y = forward(*leaves)
        return lambda: torch.autograd.grad(y, wrt, dy, retain_graph=True)


def in_layout(t, layout):
    """``t`` copied into ``layout``: a memory format for 4-D tensors; for 3-D ones (conv1d) nhwc is
    channels fastest, a transposed (N, L, C) tensor."""
    if t.dim() == 3 and layout == "nhwc":
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    return t.contiguous(memory_format=LAYOUTS[layout]) if t.dim() == 4 else t.contiguous()


def shape_ops(shape, ops):
    """The passes of ``ops`` (conv names) that ``shape`` runs: pooling's backward is "bwd"."""
    if shape.kind == "conv":
        return [op for op in ops if op in shapes.CONV_OPS]
    return [POOL_OP[op] for op in ops if op in POOL_OP]


def sweep_points(members, ops, dtypes, layouts):
    """The (suite, shape, op, dtype, layout) points a sweep of ``members`` runs, in order."""
    for suite, shape in members:
        for dtype in dtypes:
            for op in shape_ops(shape, ops):
                for layout in layouts:
                    if shapes.selected(suite, shape, op, dtype, layout):
                        yield suite, shape, op, dtype, layout


def baseline_name(kind, device):
    if device == "cpu":
        return "torch-cpu"
    return "cudnn" if kind == "conv" else "torch"


# ----------------------------------------------------------------------------- the sweep

class Sweep:
    def __init__(self, args, env, sink, should_stop=None):
        """``sink(row)`` receives each row as soon as it is measured; ``should_stop()``, asked
        before each point, ends the sweep early (a time budget)."""
        self.args, self.env, self.sink = args, env, sink
        self.should_stop = should_stop or (lambda: False)
        self.peaks = gpu_peaks(env["gpu"]) if args.device == "cuda" else None
        # memory-bound layers (depthwise, pooling) against what a copy reaches on this GPU
        self.copy_gbps = copy_bandwidth("cuda") if args.device == "cuda" else math.nan
        self.graph = args.graph and args.device == "cuda"
        self.baselines = {}  # (shape, op, dtype) -> (layout, timing, graph timing) of the better baseline layout
        self.rows = []

    def points(self, members):
        """The (suite, shape, op, dtype, layout) points the sweep runs, in order."""
        return sweep_points(members, self.args.ops, self.args.dtypes, self.args.layouts)

    def run(self, members):
        for point in self.points(members):
            if self.should_stop():
                break
            self.point(*point)
        return self.rows

    def point(self, suite, shape, op, dtype, layout):
        """One (shape, op, dtype, layout): correctness first, then ours and the baseline timed."""
        device = self.args.device
        base = dict(suite=suite, shape=shape.name, kind=shape.kind, op=op, dtype=dtype, layout=layout,
                    params=shape.describe(), baseline=baseline_name(shape.kind, device))
        case = Case(shape, op, dtype, device, self.args.seed)
        tol = TOLERANCE["tf32" if uses_tf32(dtype, device) else dtype]
        try:
            ref_fn = case.callable(case.forward(F), layout)
            ref = ref_fn()
        except Exception as e:  # no baseline, nothing to compare with: say so and move on
            self.emit(base, shape, case, provider=base["baseline"], note=f"baseline failed: {_short(e)}", ok=False)
            return
        base_layout, base_time, base_graph = self.baseline(shape, op, dtype, case, layout, ref_fn)
        self.emit(base, shape, case, provider=base["baseline"], timing=base_time, impl_layout=base_layout,
                  speedup=1.0, err=0.0, tol=tol, ok=True, note=base_graph[1], graph=base_graph[0],
                  speedup_graph=1.0 if math.isfinite(base_graph[0][0]) else math.nan)
        providers = [("convtri", lambda: case.forward(convtri))]
        if self.args.compile_baseline:
            providers.append(("torch-compile", lambda: _compiled(case.forward(F))))
        for provider, forward in providers:
            try:
                fn = case.callable(forward(), layout)
                err = rel_error(fn(), ref)
                timing = bench(fn, device, self.args)
            except Exception as e:  # a failure is a row too
                self.emit(base, shape, case, provider=provider, tol=tol, ok=False, note=f"failed: {_short(e)}")
                continue
            graph, graph_note = self.graph_timing(case, forward, layout)
            ok = err <= tol
            note = "; ".join(filter(None, ["" if ok else "mismatch: excluded from summaries", graph_note]))
            self.emit(base, shape, case, provider=provider, timing=timing, impl_layout=layout, tol=tol, err=err,
                      ok=ok, speedup=base_time[0] / timing[0], note=note, graph=graph,
                      speedup_graph=base_graph[0][0] / graph[0])
        del case, ref, ref_fn
        if device == "cuda":
            torch.cuda.empty_cache()

    def baseline(self, shape, op, dtype, case, layout, ref_fn):
        """The baseline timed in NCHW and channels_last, once per (shape, op, dtype): the faster
        wins, and is also timed as a graph replay."""
        key = (shape.name, op, dtype)
        if key not in self.baselines:
            timings = {}
            for candidate in LAYOUTS:
                fn = ref_fn if candidate == layout else case.callable(case.forward(F), candidate)
                timings[candidate] = bench(fn, self.args.device, self.args)
            best = min(timings, key=lambda name: timings[name][0])
            self.baselines[key] = (best, timings[best], self.graph_timing(case, lambda: case.forward(F), best))
        return self.baselines[key]

    def graph_timing(self, case, forward, layout):
        """((median, p20, p80) ms of the point's call replayed from a CUDA graph, note): the
        kernels without the host's launch path. NaNs without --graph, on CPU, or when the
        capture fails (the note says why)."""
        if not self.graph:
            return (math.nan,) * 3, ""
        try:
            graph, fn = capture_graph(lambda: case.callable(forward(), layout))
            return bench(graph.replay, "cuda", self.args), ""
        except Exception as e:
            try:  # what a failed capture left in flight
                torch.cuda.synchronize()
            except Exception:
                pass
            return (math.nan,) * 3, f"graph failed: {_short(e)}"

    def emit(self, base, shape, case, provider, timing=(math.nan,) * 3, impl_layout="", speedup=math.nan,
             err=math.nan, tol=math.nan, ok=False, note="", graph=(math.nan,) * 3, speedup_graph=math.nan):
        dtype = base["dtype"]
        itemsize = DTYPES[dtype].itemsize
        flop, traffic = shape.flop(case.op), shape.traffic(case.op, itemsize)
        ms = timing[0]
        tflops = flop / ms / 1e9 if shape.kind == "conv" else math.nan
        gbps = traffic / ms / 1e6
        tf32 = uses_tf32(dtype, self.args.device)
        peak_tflops = peak_gbps = pct = math.nan
        if self.peaks:
            peak_tflops = self.peaks["tf32" if tf32 else dtype]
            peak_gbps = self.peaks["hbm"]
            pct = 100 * (tflops / peak_tflops if shape.kind == "conv" else gbps / peak_gbps)
        row = dict(base, provider=provider, impl_layout=impl_layout, ms=ms, ms_p20=timing[1], ms_p80=timing[2],
                   flop=flop, bytes=traffic, intensity=flop / traffic, tflops=tflops, gbps=gbps,
                   peak_tflops=peak_tflops, peak_gbps=peak_gbps, pct_peak=pct, copy_gbps=self.copy_gbps,
                   pct_copy=100 * gbps / self.copy_gbps, speedup=speedup,
                   ms_graph=graph[0], speedup_graph=speedup_graph, host_us=(ms - graph[0]) * 1e3,
                   err=err, tol=tol, ok=ok, note=note, tf32=tf32, **self.env)
        self.rows.append(row)
        self.sink(row)
        graphed = f" graph {graph[0]:.4f} ms x{speedup_graph:<6.3g}" if math.isfinite(graph[0]) else ""
        print(f"{row['suite']:>9} {row['shape']:<34} {row['op']:<6} {dtype} {row['layout']} {provider:<13} "
              f"{ms:9.4f} ms  x{speedup:<8.3g}{graphed} err {err:.1e} {'ok' if ok else note}", flush=True)


def _compiled(forward):
    """torch.compile(max-autotune) of the forward; each point compiles afresh."""
    torch._dynamo.reset()
    return torch.compile(forward, mode="max-autotune", dynamic=False)


def _short(e):
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]


class CsvWriter:
    """A CSV (the sweep's, or another perf script's ``columns``), written row by row and
    flushed, so that a run cut short (a GPU lease ending, a crash) keeps every row so far."""

    def __init__(self, path, columns=COLUMNS, append=False):
        """With ``append``, rows go after those ``path`` holds (the header only if it is new)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.columns = columns
        header = not (append and os.path.exists(path) and os.path.getsize(path))
        self.file = open(path, "a" if append else "w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=columns)
        if header:
            self.writer.writeheader()
        self.file.flush()

    def __call__(self, row):
        self.writer.writerow({k: _cell(row.get(k)) for k in self.columns})
        self.file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def _cell(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return "" if v is None else v


# ----------------------------------------------------------------------------- command line

def _choices(allowed):
    """A list option: space- or comma-separated, each from ``allowed``."""
    def parse(text):
        items = [item for item in text.split(",") if item]
        for item in items:
            if item not in allowed:
                raise argparse.ArgumentTypeError(f"{item!r} is not one of {', '.join(allowed)}")
        return items
    return parse


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=list(shapes.SUITES), default=None,
                   help="shapes to run (default: all on a GPU, smoke on CPU)")
    p.add_argument("--ops", type=_choices(shapes.CONV_OPS), nargs="+", default=[list(shapes.CONV_OPS)],
                   help="passes (default: all); pooling runs fwd, dgrad (its backward, 'bwd') and fwdbwd")
    p.add_argument("--dtypes", type=_choices(list(DTYPES)), nargs="+", default=None,
                   help="default: fp16 bf16 fp32 on a GPU, fp32 on CPU")
    p.add_argument("--layouts", type=_choices(list(LAYOUTS)), nargs="+", default=[list(LAYOUTS)],
                   help="memory format of convtri's inputs (default: both)")
    p.add_argument("--out", help="CSV path (default: SUITE.csv, or RESULTS_DIR/<gpu>/SUITE.csv)")
    p.add_argument("--results-dir", help="write SUITE.csv to RESULTS_DIR/<gpu-name>/, then PNGs and README.md "
                                         "from every CSV there (run suites one by one into the same folder)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--tf32", choices=["on", "off"], default="on",
                   help="torch.backends.cudnn.allow_tf32 for both sides (default on, torch's default)")
    p.add_argument("--graph", action=argparse.BooleanOptionalAction, default=None,
                   help="also time every point as a CUDA-graph replay: ms_graph, speedup_graph, host_us "
                        "(default: on for --suite quick)")
    p.add_argument("--compile-baseline", action="store_true",
                   help="also time torch.compile(mode='max-autotune') (slow; failures are recorded)")
    p.add_argument("--shapes", nargs="+", help="only these shape names of the suite")
    p.add_argument("--list", action="store_true", help="print the suite's shapes and exit")
    p.add_argument("--warmup-ms", type=int, default=25, help="do_bench warmup")
    p.add_argument("--rep-ms", type=int, default=100, help="do_bench measuring time")
    p.add_argument("--cpu-repeats", type=int, default=3, help="timed calls per point on CPU, after one warm-up")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.device = resolve_device(p, args.device)
    if args.suite is None:
        args.suite = "all" if args.device == "cuda" else "smoke"
    if args.graph is None:
        args.graph = args.suite == "quick"
    args.ops = _flat(args.ops)
    args.layouts = _flat(args.layouts)
    args.dtypes = _flat(args.dtypes) if args.dtypes else (list(DTYPES) if args.device == "cuda" else ["fp32"])
    if args.device == "cpu" and args.suite != "smoke" and not args.list:
        p.error(f"--suite {args.suite} needs a CUDA GPU: on CPU our kernels run through Triton's "
                f"interpreter, which measures nothing; use --suite smoke")
    return args


def resolve_device(parser, device):
    """--device auto, cpu or cuda as the device to run on; cuda without a GPU is a usage error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU available")
    return device


def _flat(lists):
    return list(dict.fromkeys(item for items in lists for item in items))


def members_of(args):
    """The (suite, shape) pairs that the options select."""
    members = shapes.suite_members(args.suite)
    if args.shapes:
        unknown = set(args.shapes) - {shape.name for _, shape in members}
        if unknown:
            raise SystemExit(f"no shape named {', '.join(sorted(unknown))} in suite {args.suite}")
        members = [(suite, shape) for suite, shape in members if shape.name in args.shapes]
    return members


def run_sweep(args, out, command, on_row=None, should_stop=None):
    """The sweep that ``args`` select, into the CSV ``out``; ``on_row(row)`` sees each row
    after it is written, ``should_stop()`` ends the sweep between points. Returns the rows."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.tf32 == "on"
    env = environment(args.device, command)
    if args.device == "cpu":
        print(f"CPU smoke run: Triton's interpreter against torch's CPU ops. {RUN_CPU_SMOKE}.")
    with CsvWriter(out) as writer:
        def sink(row):
            writer(row)
            if on_row:
                on_row(row)
        rows = Sweep(args, env, sink, should_stop).run(members_of(args))
    print(f"wrote {len(rows)} rows to {out}")
    return rows


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.list:
        picks = shapes.PICKS.get(args.suite, {})
        for suite, shape in members_of(args):
            pick = picks.get(shape.name)
            runs = f"  [{' '.join(pick.ops)} | {' '.join(pick.dtypes)} | {' '.join(pick.layouts)}]" if pick else ""
            print(f"{suite:<10} {shape.name:<34} {shape.describe()}{runs}")
        return None

    command = " ".join(["python", "perf/sweep.py", *argv])  # as run from the repository's root
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    out_dir = os.path.join(args.results_dir, slug(gpu)) if args.results_dir else None
    out = args.out or os.path.join(out_dir or ".", f"{args.suite}.csv")
    run_sweep(args, out, command)
    if out_dir:  # plots and README over every suite measured there so far
        csvs = sorted({os.path.abspath(path) for path in glob.glob(os.path.join(out_dir, "*.csv")) + [out]})
        plot.main([*csvs, "--out-dir", out_dir, "--readme"])
    return out


if __name__ == "__main__":
    main()
