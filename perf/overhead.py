"""Host cost of one op call: convtri against torch's own op, forward, backward and both.

    python perf/overhead.py [--device cpu|cuda] [--out CSV] [--smoke]

CPU (``meta`` rows): microseconds per call on meta tensors. Neither side runs a kernel for a
meta tensor, so this is the Python and dispatcher path alone, convtri's against
torch.nn.functional's, timed in the same run, interleaved, with their ratio.

CUDA (``eager`` and ``graph`` rows): microseconds per call of back-to-back calls on the GPU
(synchronised at the end: the larger of host and device time), the same call replayed from
a CUDA graph (the kernels alone), and the kernel launches per call, counted from
torch.profiler's CUDA kernel events. Host overhead per call is eager minus graph.

Shapes are LeNet's at batch 256 (d2l's chapter): conv2d is C3 (6 -> 16, 5x5 on 14x14),
conv_transpose2d its transpose, and the pools take C3's 16x10x10 output to 5x5.

cuDNN runs with cudnn.benchmark on (a first call per shape picks the algorithm, before timing).

Timer: each sample times back-to-back calls, as many as fill ``SAMPLING``'s seconds per
sample; ``us`` is the minimum over the samples, the least disturbed by other processes, and
``us_median`` their median. convtri's and torch's samples alternate.
"""
import argparse
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import convtri

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sweep  # noqa: E402  (perf/sweep.py: environment, CUDA-graph capture)

BATCH = 256
# op -> (input shapes: x first, then weight and bias; keyword arguments). Every input takes a gradient.
CASES = {
    "conv2d": ([(BATCH, 6, 14, 14), (16, 6, 5, 5), (16,)], {}),  # LeNet C3
    "conv_transpose2d": ([(BATCH, 16, 10, 10), (16, 6, 5, 5), (6,)], {}),  # C3 transposed: 16x10x10 -> 6x14x14
    "max_pool2d": ([(BATCH, 16, 10, 10)], dict(kernel_size=2, stride=2)),  # after C3, modern LeNet
    "avg_pool2d": ([(BATCH, 16, 10, 10)], dict(kernel_size=2, stride=2)),  # after C3, d2l's LeNet
    "adaptive_avg_pool2d": ([(BATCH, 16, 10, 10)], dict(output_size=5)),  # the same windows, adaptive
}
PASSES = ("fwd", "bwd", "fwdbwd")
PROVIDERS = {"convtri": convtri, "torch": F}
MODES = {"cpu": ("meta",), "cuda": ("eager", "graph")}

# (seconds one sample lasts, samples) per mode; --smoke: (0.002, 2)
SAMPLING = {"meta": (0.05, 7), "eager": (0.03, 5), "graph": (0.03, 5)}
SMOKE_SAMPLING = (0.002, 2)
PROFILED_CALLS = 5  # calls under torch.profiler when counting launches
MEMORY_OPS = ("Memcpy", "Memset")  # CUDA device events that are not kernels

COLUMNS = ["op", "pass", "mode", "provider", "us", "us_median", "ratio", "launches", "memops", "calls", "samples",
           "shapes", "note", "run", "timer", "device", "gpu", "torch", "triton", "commit", "timestamp", "command"]
RUN_LABEL = {"cpu": "host path on meta tensors (this CPU)", "cuda": "gpu"}
TIMER = {"meta": "min of samples, perf_counter", "eager": "min of samples, perf_counter + synchronize",
         "graph": "min of samples of CUDAGraph.replay, perf_counter + synchronize"}


# ----------------------------------------------------------------------------- calls

def make_call(op, pass_, lib, device):
    """The timed callable for (op, pass) from ``lib``: fwd runs the op on inputs that require
    grad (as in training); bwd is torch.autograd.grad of every input from a saved output;
    fwdbwd is both."""
    shapes, kwargs = CASES[op]
    gen = torch.Generator(device="cpu").manual_seed(0)
    leaves = [torch.randn(shape, generator=gen).to(device).requires_grad_() for shape in shapes]
    fn = getattr(lib, op)
    forward = lambda: fn(*leaves, **kwargs)
    y = forward()
    dy = torch.randn(y.shape, generator=gen).to(device)
    if pass_ == "fwd":
        return forward
    if pass_ == "bwd":
        return lambda: torch.autograd.grad(y, leaves, dy, retain_graph=True)
    return lambda: torch.autograd.grad(forward(), leaves, dy)


def sample_us(fn, number, cuda):
    """Microseconds per call over ``number`` back-to-back calls."""
    return sweep.wall_seconds(fn, number, cuda) / number * 1e6


def calls_per_sample(fn, cuda, seconds):
    """Enough calls for one sample to last ``seconds`` (after a warm-up call)."""
    fn()
    one = max(sample_us(fn, 1, cuda), 1.0)
    return max(1, int(seconds * 1e6 / one))


def time_interleaved(fns, cuda, sampling):
    """{name: (min, median, calls per sample)} with the samples of every fn alternating;
    ``sampling`` is (seconds per sample, samples)."""
    seconds, count = sampling
    numbers = {name: calls_per_sample(fn, cuda, seconds) for name, fn in fns.items()}
    samples = {name: [] for name in fns}
    for _ in range(count):
        for name, fn in fns.items():
            samples[name].append(sample_us(fn, numbers[name], cuda))
    return {name: (min(s), statistics.median(s), numbers[name]) for name, s in samples.items()}


def count_launches(fn):
    """(kernels, memcpy/memset operations) per call, from torch.profiler's CUDA device events."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(PROFILED_CALLS):
            fn()
        torch.cuda.synchronize()
    return launch_counts(prof.events(), PROFILED_CALLS)


def launch_counts(events, calls):
    """(kernels, memcpy/memset operations) per call among profiler events of ``calls`` calls."""
    device = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    memops = sum(e.name.startswith(MEMORY_OPS) for e in device)
    return (len(device) - memops) / calls, memops / calls


def graph_replay(op, pass_, lib):
    """One call captured in a CUDA graph; returns its replay, which keeps the graph and its
    inputs alive."""
    graph, fn = sweep.capture_graph(lambda: make_call(op, pass_, lib, "cuda"))
    return lambda: graph.replay() or fn


# ----------------------------------------------------------------------------- measurement

def measure(device="cpu", smoke=False, sink=None, deadline=None, ops=None, modes=None, command=""):
    """Rows of (op, pass, mode, provider) with microseconds per call; ``sink(row)`` gets each
    as it is measured. device "cpu" times meta tensors; "cuda" times eager calls, graph
    replays and counts launches. ``deadline`` (time.time()) stops between measurements."""
    modes = modes or MODES[device]
    torch.backends.cudnn.benchmark = True
    run = RUN_LABEL[device] + (", smoke: too few calls to measure" if smoke else "")
    env = dict(sweep.environment("cuda" if device == "cuda" else "cpu", command), run=run)
    rows = []
    for op in ops or CASES:
        for pass_ in PASSES:
            for mode in modes:
                if deadline is not None and time.time() > deadline:
                    return rows
                rows += _measure_one(op, pass_, mode, smoke, env, sink)
    return rows


def _measure_one(op, pass_, mode, smoke, env, sink):
    base = dict(env, op=op, mode=mode, timer=TIMER[mode], device="meta" if mode == "meta" else "cuda",
                shapes=" ".join("x".join(map(str, s)) for s in CASES[op][0]))
    base["pass"] = pass_
    cuda = mode != "meta"
    fns, notes, launches = {}, {}, {}
    for provider, lib in PROVIDERS.items():
        try:
            if mode == "graph":
                fns[provider] = graph_replay(op, pass_, lib)
            else:
                fns[provider] = make_call(op, pass_, lib, base["device"])
                if mode == "eager":
                    launches[provider] = count_launches(fns[provider])
        except Exception as e:  # a failure is a row
            notes[provider] = f"failed: {sweep._short(e)}"
    timings, sampling = {}, SMOKE_SAMPLING if smoke else SAMPLING[mode]
    try:
        timings = time_interleaved(fns, cuda, sampling)
    except Exception as e:
        notes = {p: f"failed: {sweep._short(e)}" for p in PROVIDERS}
    rows = []
    torch_us = timings.get("torch", (math.nan,))[0]
    for provider in PROVIDERS:
        us, med, number = timings.get(provider, (math.nan, math.nan, 0))
        kernels, memops = launches.get(provider, (math.nan, math.nan))
        row = dict(base, provider=provider, us=us, us_median=med, ratio=us / torch_us, launches=kernels,
                   memops=memops, calls=number, samples=sampling[1] if number else 0, note=notes.get(provider, ""))
        rows.append(row)
        if sink:
            sink(row)
    if cuda:
        torch.cuda.empty_cache()
    return rows


# ----------------------------------------------------------------------------- output

def table(rows):
    """Lines of text: one per (op, pass, mode), ours against torch's."""
    lines = [f"{'op':<20} {'pass':<7} {'mode':<6} {'convtri us':>11} {'torch us':>9} {'ratio':>7} {'launches':>9}"]
    key = lambda r: (r["op"], r["pass"], r["mode"])
    by_key = {}
    for row in rows:
        by_key.setdefault(key(row), {})[row["provider"]] = row
    for (op, pass_, mode), pair in by_key.items():
        ours, theirs = pair.get("convtri", {}), pair.get("torch", {})
        launches = "" if mode != "eager" else f"{_num(ours.get('launches'))}/{_num(theirs.get('launches'))}"
        note = " ".join(filter(None, (ours.get("note"), theirs.get("note"))))
        lines.append(f"{op:<20} {pass_:<7} {mode:<6} {_num(ours.get('us')):>11} {_num(theirs.get('us')):>9} "
                     f"{_num(ours.get('ratio'), '.2f'):>7} {launches:>9} {note}".rstrip())
    return lines


def _num(v, fmt=".1f"):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="cpu: meta tensors (the host path alone); cuda: eager, graph replay and launches")
    p.add_argument("--out", default="overhead.csv", help="the CSV (default: overhead.csv)")
    p.add_argument("--smoke", action="store_true", help="a few calls per sample: checks the script, measures little")
    args = p.parse_args(argv)
    args.device = sweep.resolve_device(p, args.device)
    command = " ".join(["python", "perf/overhead.py", *argv])
    with sweep.CsvWriter(args.out, COLUMNS) as sink:
        rows = measure(args.device, args.smoke, sink, command=command)
    print("\n".join(table(rows)))
    print(f"wrote {len(rows)} rows to {args.out}")
    return rows


if __name__ == "__main__":
    main()
