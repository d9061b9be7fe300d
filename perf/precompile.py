"""Compile every kernel a suite will launch, in parallel, before anything is timed.

    python perf/precompile.py --suite quick                   # on the GPU machine: its own GPU
    python perf/precompile.py --suite smoke --arch 90 --jobs 2  # without a GPU: for sm_90

Triton's autotuner compiles a launch's configs one after another, inside the process that
times them, and a fresh machine has no cache: the quick suite's conv layers alone need several
hundred compiles of a second or more each (perf/aot_report.py counts them), which would eat a
GPU session's minutes on one CPU core. Here worker processes compile them over every core,
each through Triton's own ``JITFunction.warmup``, the path a real call compiles through, so the
binaries land in Triton's on-disk cache under the keys the timed calls look up.

The launches are those of perf/sweep.py's points (its default passes, dtypes and layouts on a
GPU, or a curated suite's picks), run on meta tensors as perf/aot_report.py runs them: for a
gradient point, the untimed forward too. Each with every config the autotuner would try there; launches that Triton would bind identically compile once. A warm-up
asks the driver nothing but its target, ``GPUTarget("cuda", arch, 32)`` as Triton's CUDA driver
builds it from the device's capability: the workers are given that target and never touch the
GPU (no CUDA context each), and without a GPU ``--arch`` names the GPU to compile for.

With ``--configs``, perf/shipped_configs.py's native runs come first: every config of every
launch of its problems, forced at each warp and stage count the GPU's autotuner can pick (the
GPU session's configs stage runs them right after).

It stops itself after ``--seconds`` and writes what it did to ``--json``: what it compiled
stays in the cache, and the rest compiles when first called, as it would have anyway.
"""
import argparse
import concurrent.futures
import dataclasses
import functools
import json
import multiprocessing
import os
import sys
import time

STARTED = time.perf_counter()  # before torch's import: --seconds counts from here
PERF_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, PERF_DIR)
import aot_report  # noqa: E402
import shapes  # noqa: E402
import shipped_configs  # noqa: E402
import sweep  # noqa: E402

FAILURES_KEPT = 5
MAX_JOBS = 32  # by default one process per core this process may run on, at most this many (each imports torch)


@dataclasses.dataclass(frozen=True)
class Unit:
    """One compile: config ``config`` of launch ``launch`` in the sweep's point (``shape``,
    ``op``, ``dtype``, ``layout``)."""
    shape: object  # a perf/shapes.py layer (Conv or Pool)
    op: str
    dtype: str
    layout: str
    launch: int
    config: int

    def resolve(self, target, tf32):
        """(launch, tensors, keyword arguments) to compile."""
        point = (self.shape, self.op, self.dtype, self.layout)
        launch, tensors = _launches(*point, target.arch, target.sms, tf32)[self.launch]
        return launch, tensors, aot_report.launch_configs(launch, tensors, target)[self.config]


@dataclasses.dataclass(frozen=True)
class TableUnit:
    """One compile of perf/shipped_configs.py's native runs: launch number ``launch`` of
    ``problem``'s training step in ``dtype``, with keyword arguments ``kwargs``."""
    problem: object
    dtype: str
    launch: int
    kwargs: dict = dataclasses.field(hash=False)

    def resolve(self, target, tf32):
        launch, tensors = _table_launches(self.problem, self.dtype, target.arch, target.sms, tf32)[self.launch]
        return launch, tensors, self.kwargs


@functools.cache
def _table_launches(problem, dtype, arch, sms, tf32):
    return shipped_configs.meta_launches(problem, dtype, target_of(arch, sms), tf32)


def table_plan(target, tf32=True, problems=None):
    """The units of perf/shipped_configs.py's native runs on ``target`` (of the problems named, or all)."""
    problems = [shipped_configs.problem_named(name) for name in problems] if problems else None
    return [TableUnit(*unit) for unit in shipped_configs.native_units(target, tf32, problems)]


def points(suite, names=None, dtypes=None, layouts=None):
    """The sweep's points of ``suite`` on a GPU, with its default passes and, unless given, its
    default dtypes and layouts (a curated suite's picks): (shape, op, dtype, layout)."""
    members = sweep.members_of(argparse.Namespace(suite=suite, shapes=names))
    for _, shape, op, dtype, layout in sweep.sweep_points(members, shapes.CONV_OPS, dtypes or list(sweep.DTYPES),
                                                          layouts or list(sweep.LAYOUTS)):
        yield shape, op, dtype, layout


def target_of(arch=None, sms=None):
    """The aot_report Target of ``arch``, or of this machine's GPU (its SM count too)."""
    if arch is None:
        import torch
        props = torch.cuda.get_device_properties(0)
        arch, sms = props.major * 10 + props.minor, props.multi_processor_count
    known = aot_report.TARGETS.get(arch) or aot_report.Target(arch, 132, 0, {})
    return dataclasses.replace(known, sms=sms or known.sms)


def plan(suite, target, names=None, tf32=True, dtypes=None, layouts=None):
    """The units to compile: one per distinct binding (perf/aot_report.py's check key)."""
    units = {}
    for point in points(suite, names, dtypes, layouts):
        for i, (launch, tensors) in enumerate(_launches(*point, target.arch, target.sms, tf32)):
            for j, kwargs in enumerate(aot_report.launch_configs(launch, tensors, target)):
                units.setdefault(aot_report.bind(launch, tensors, kwargs, target).key, Unit(*point, i, j))
    return list(units.values())


@functools.cache
def _launches(shape, op, dtype, layout, arch, sms, tf32):
    """Every launch of a sweep point on a GPU of ``arch`` with ``sms`` SMs (cached: a worker
    compiles many configs of one point)."""
    call = aot_report.sweep_call(shape, op, dtype, layout)
    return aot_report.launches_of(call, target_of(arch, sms), tf32)


class _TargetOnly:
    """The driver as a warm-up sees it: the target compiled for, and device and stream 0."""

    def __init__(self, arch):
        from triton.backends.compiler import GPUTarget
        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0


def _start_worker(arch):
    from triton.runtime import driver
    driver.set_active(_TargetOnly(arch))


def compile_unit(unit, target, tf32):
    """Compile ``unit`` through JITFunction.warmup; its seconds."""
    start = time.perf_counter()
    launch, tensors, kwargs = unit.resolve(target, tf32)
    launch.kernel.warmup(*tensors, *launch.scalars, grid=(1,), **kwargs)
    return time.perf_counter() - start


def precompile(suite, arch=None, names=None, jobs=None, seconds=None, tf32=True, sms=None, dtypes=None,
               layouts=None, configs=False, started=None):
    """Compile ``suite``'s units (None: none) over ``jobs`` processes for at most ``seconds``
    since ``started`` (a perf_counter time; default now), after the configs table's with
    ``configs`` (True, or the names of some of its problems); a summary dict."""
    start = started or time.perf_counter()
    target = target_of(arch, sms)
    table = table_plan(target, tf32, None if configs is True else configs) if configs else []
    units = table + (plan(suite, target, names, tf32, dtypes, layouts) if suite else [])
    jobs = jobs or min(len(os.sched_getaffinity(0)), MAX_JOBS)
    result = dict(suite=suite, arch=target.arch, jobs=jobs, units=len(units), table_units=len(table), compiled=0,
                  failed=0, failures=[], compile_s=0.0, finished=False)
    pool = concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=_start_worker, initargs=(target.arch,))
    futures = {pool.submit(compile_unit, unit, target, tf32): unit for unit in units}
    left = None if seconds is None else max(0.0, seconds - (time.perf_counter() - start))
    try:
        for future in concurrent.futures.as_completed(futures, timeout=left):
            try:
                result["compile_s"] += future.result()
                result["compiled"] += 1
            except Exception as e:  # a unit that fails to compile fails again when called: reported there
                result["failed"] += 1
                if len(result["failures"]) < FAILURES_KEPT:
                    result["failures"].append(f"{futures[future]}: {type(e).__name__}: {str(e)[:200]}")
        result["finished"] = True
    except concurrent.futures.TimeoutError:
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()  # their units compile when first called
    pool.shutdown(wait=result["finished"], cancel_futures=True)
    result.update(compile_s=round(result["compile_s"], 1), seconds=round(time.perf_counter() - start, 1))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="quick", choices=sorted(shapes.SUITES), help="shape suite (default: quick)")
    parser.add_argument("--shapes", nargs="+", help="only these shapes of the suite")
    parser.add_argument("--dtypes", nargs="+", choices=list(sweep.DTYPES), help="as perf/sweep.py's (default: all)")
    parser.add_argument("--layouts", nargs="+", choices=list(sweep.LAYOUTS), help="as perf/sweep.py's (default: both)")
    parser.add_argument("--arch", type=int, help="compile for this GPU (90: sm_90) instead of this machine's")
    parser.add_argument("--sms", type=int, help="with --arch: its SM count (wgrad splits by it; default: H100's, A100's)")
    parser.add_argument("--jobs", type=int, help=f"worker processes (default: one per usable core, at most {MAX_JOBS})")
    parser.add_argument("--seconds", type=float, help="stop after this long (from the process's start)")
    parser.add_argument("--tf32", choices=("on", "off"), default="on", help="fp32 GEMMs as the sweep runs them")
    parser.add_argument("--configs", action="store_true", help="first every compile of perf/shipped_configs.py's "
                                                               "native runs")
    parser.add_argument("--json", help="write the summary here")
    args = parser.parse_args(argv)
    result = precompile(args.suite, args.arch, args.shapes, args.jobs, args.seconds, args.tf32 == "on",
                        args.sms, args.dtypes, args.layouts, args.configs, started=STARTED)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(f"precompile: {result['compiled']} of {result['units']} compiled ({result['failed']} failed) for "
          f"sm_{result['arch']} over {result['jobs']} processes in {result['seconds']} s"
          + ("" if result["finished"] else ", stopped at --seconds"))
    for failure in result["failures"]:
        print(f"  failed: {failure}")
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
