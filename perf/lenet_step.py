"""Examples per second of one LeNet training step (forward, backward, SGD), per mode.

    python perf/lenet_step.py [--device cpu|cuda] [--out CSV] [--smoke] [--modes M ...] [--variants V ...]

A step is the chapter's: a batch of 256 1x28x28 images, cross-entropy, backward, plain SGD,
in fp32 with torch's default TF32 settings (convolutions yes, matmuls no) and
cudnn.benchmark on, on one fixed random batch already on the device. Both LeNet variants (d2l: sigmoid and average pooling; modern: ReLU and max pooling)
run in every mode of ``MODES``, a table of named step builders: a new mode is one entry.

Timer: after ``WARMUP_STEPS`` steps (compilation, autotuning and cuDNN's benchmark happen
there), each sample runs a number of steps back to back and synchronises; examples/s is the
median over the samples, ``step_ms`` the median step time.
"""
import argparse
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from convtri.convert import convert
from convtri.lenet.models import VARIANTS, LeNet, TorchLeNet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sweep  # noqa: E402  (perf/sweep.py: environment, CUDA-graph capture, CSV writer)

BATCH = 256
LR = 0.1
# normal, --smoke (where a step of ours through the interpreter takes about a second: one step in all)
WARMUP_STEPS = {False: 3, True: 0}
SAMPLES = {False: 5, True: 1}
TARGET_SAMPLE_S = {False: 0.2, True: 0.0}  # a sample lasts at least this long (at least one step)
SMOKE_BATCH = 4
SMOKE_COMPILE_BACKEND = "aot_eager"  # inductor takes ~40 s to compile on the CPU machines

COLUMNS = ["variant", "mode", "batch", "examples_per_s", "step_ms", "step_ms_min", "vs_torch_eager", "samples",
           "steps_per_sample", "note", "run", "device", "gpu", "torch", "triton", "commit", "timestamp", "command"]


@dataclass(frozen=True)
class Setup:
    """What a step builder is given."""
    variant: str
    device: str
    batch: int
    smoke: bool


def _net(make, setup):
    return make(setup.variant).to(setup.device)


def train_step(model, setup):
    """One SGD step of ``model`` on a fixed random batch, as a callable."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(setup.batch, 1, 28, 28, generator=gen).to(setup.device)
    y = torch.randint(0, 10, (setup.batch,), generator=gen).to(setup.device)
    opt = torch.optim.SGD(model.parameters(), lr=LR)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def FusedLeNet(variant):
    """Our LeNet with each convolution's activation fused into its kernels, as `convtri lenet` trains it."""
    return convert(LeNet(variant), fuse=True)


def graphed(build):
    """The step that ``build()`` returns, captured whole in a CUDA graph (static batch,
    gradients and optimizer state in the graph's pool); returns its replay."""
    graph, step = sweep.capture_graph(build)
    return lambda: graph.replay() or step


def compiled(model, setup):
    """torch.compile of the model: inductor, or a light backend in a CPU smoke run."""
    torch._dynamo.reset()
    return torch.compile(model, backend=SMOKE_COMPILE_BACKEND if setup.smoke and setup.device == "cpu" else "inductor")


# name -> step builder. The order is the order of measurement: slow builds (compilation) last,
# so that a run cut short by its time budget has the others.
MODES = {
    "torch-eager": lambda s: train_step(_net(TorchLeNet, s), s),  # the torch.nn twin (cuDNN on a GPU)
    "ours-eager": lambda s: train_step(_net(LeNet, s), s),
    "ours-fused": lambda s: train_step(_net(FusedLeNet, s), s),  # activations in the convolutions' kernels
    "ours-graph": lambda s: graphed(lambda: train_step(_net(LeNet, s), s)),  # the whole step, CUDA graph
    "ours-fused-graph": lambda s: graphed(lambda: train_step(_net(FusedLeNet, s), s)),  # both: convtri lenet's default
                                                                                       # network with --cuda-graph
    "torch-compile": lambda s: train_step(compiled(_net(TorchLeNet, s), s), s),
}
NEEDS_CUDA = {"ours-graph", "ours-fused-graph"}


# ----------------------------------------------------------------------------- timing

def time_steps(step, batch, cuda, smoke):
    """(median examples/s, median step ms, fastest step ms, samples, steps per sample)."""
    sweep.wall_seconds(step, WARMUP_STEPS[smoke], cuda)
    steps = 1
    if TARGET_SAMPLE_S[smoke]:
        steps = max(1, math.ceil(TARGET_SAMPLE_S[smoke] / max(sweep.wall_seconds(step, 1, cuda), 1e-6)))
    per_step = [sweep.wall_seconds(step, steps, cuda) / steps for _ in range(SAMPLES[smoke])]
    return (statistics.median(batch / t for t in per_step), statistics.median(per_step) * 1e3,
            min(per_step) * 1e3, len(per_step), steps)


def measure(device="cpu", smoke=False, modes=None, variants=VARIANTS, batch=None, sink=None, deadline=None,
            command=""):
    """Rows of (variant, mode) with examples/s; ``sink(row)`` gets each as it is measured.
    ``deadline`` (time.time()) stops between measurements."""
    batch = batch or (SMOKE_BATCH if smoke else BATCH)
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False  # torch's defaults
    env = sweep.environment(device, command)
    env = dict(env, run="gpu" if device == "cuda" else "cpu" + (" smoke: not a measurement" if smoke else ""))
    rows, eager = [], {}
    for mode in modes or MODES:
        for variant in variants:
            if deadline is not None and time.time() > deadline:
                return rows
            row = dict(env, variant=variant, mode=mode, batch=batch, note="")
            row.update(_measure_one(mode, Setup(variant, device, batch, smoke)))
            if mode == "torch-eager":
                eager[variant] = row.get("examples_per_s", math.nan)
            row["vs_torch_eager"] = row.get("examples_per_s", math.nan) / eager.get(variant, math.nan)
            rows.append(row)
            if sink:
                sink(row)
            print(f"{variant:<7} {mode:<14} {row.get('examples_per_s', math.nan):12.0f} examples/s "
                  f"{row.get('step_ms', math.nan):9.3f} ms/step {row['note']}", flush=True)
    return rows


def _measure_one(mode, setup):
    cuda = setup.device == "cuda"
    if mode in NEEDS_CUDA and not cuda:
        return dict(note="skipped: no CUDA")
    try:
        step = MODES[mode](setup)
        rate, step_ms, fastest, samples, steps = time_steps(step, setup.batch, cuda, setup.smoke)
    except Exception as e:  # a failure is a row
        return dict(note=f"failed: {sweep._short(e)}")
    finally:
        if cuda:
            torch.cuda.empty_cache()
    note = f"smoke: {SMOKE_COMPILE_BACKEND} backend" if mode == "torch-compile" and setup.smoke and not cuda else ""
    return dict(examples_per_s=rate, step_ms=step_ms, step_ms_min=fastest, samples=samples, steps_per_sample=steps,
                note=note)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--out", default="lenet_step.csv", help="the CSV (default: lenet_step.csv)")
    p.add_argument("--smoke", action="store_true", help=f"batch {SMOKE_BATCH}, one step per sample: checks the script")
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--batch", type=int, help=f"default {BATCH} ({SMOKE_BATCH} with --smoke)")
    args = p.parse_args(argv)
    args.device = sweep.resolve_device(p, args.device)
    command = " ".join(["python", "perf/lenet_step.py", *argv])
    with sweep.CsvWriter(args.out, COLUMNS) as sink:
        rows = measure(args.device, args.smoke, args.modes, args.variants, args.batch, sink, command=command)
    print(f"wrote {len(rows)} rows to {args.out}")
    return rows


if __name__ == "__main__":
    main()
