"""One command that turns a lent GPU into results, within a time budget.

    cd REPO && PYTHONUNBUFFERED=1 python3 perf/gpu_session.py --out "$OUT" --budget-s 480
    python perf/gpu_session.py --device cpu --smoke --out /tmp/session     # CPU: every stage, tiny, seconds

Stages, in order, each with a share of the budget (plus what earlier stages left unused):
  env       GPU, SMs, clocks, driver, versions, commit; measured ceilings: device-to-device
            copy (GB/s, read + write) and a bf16 8192^3 matmul (TFLOP/s), on random data
  compile   every kernel config the configs stage forces and the quick suite will autotune,
            compiled over all CPU cores into Triton's cache (perf/precompile.py), where the
            autotuner would compile them one by one
  configs   every shipped kernel config forced on small problems, at every warp and stage count
            the autotuner can pick on this GPU, against torch in float64 (perf/shipped_configs.py,
            in a process of its own, restarted where a kernel breaks its CUDA context)
  tests     pytest: the CUDA parity subset, then every `gpu`-marked test, then float64 parity
            (perf/pytest_stream.py selects them and streams one CSV row per test)
  quick     the quick suite, eager and CUDA-graph replay, against cuDNN / torch (perf/sweep.py)
  overhead  host cost per op call at LeNet shapes: eager, graph replay, launches (perf/overhead.py)
  lenet     examples/s of one LeNet training step per mode (perf/lenet_step.py)
  autotune  for each quick-suite conv point, the config chosen and the time of every config tried
  ncu       Nsight Compute on three kernels: SM, DRAM and tensor-pipe utilisation

Output (at most 8 files, none in folders): session.json (environment, ceilings, stages, test
counts, autotune record, profile, summary), session.log (everything printed), configs.csv,
tests.csv, quick.csv, overhead.csv, lenet.csv, ncu.csv. CSVs are written row by row and
session.json is rewritten after every stage, so a run cut short keeps what it measured. The
measuring stages run in a worker process (and the configs runner, pytest and ncu in their
own), killed when their share is spent; a crash there costs that stage, not the session, and a
worker whose CUDA context reports an error after a stage is replaced before the next. A failed
install stops the session with a one-line reason. The last thing printed is the summary.
"""
import argparse
import csv
import datetime
import glob
import hashlib
import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(PERF_DIR)
sys.path.insert(0, PERF_DIR)

# (name, share of the budget, what runs it). A stage may also use what earlier stages left.
@dataclass(frozen=True)
class Stage:
    name: str
    share: float
    runner: str  # "worker" (the measuring process), "compile", "tests" (pytest), "autotune" or "ncu"
    needs_cuda: bool = False


STAGES = [
    Stage("env", 0.05, "worker"),
    # the configs table's ~900 compiles, then the quick suite's ~550 (sm_90); about 0.6 s each over 16 cores
    Stage("compile", 0.17, "compile", needs_cuda=True),
    Stage("configs", 0.05, "configs"),  # ~840 small runs (sm_90) from Triton's cache, each checked on the CPU
    Stage("tests", 0.16, "tests"),
    Stage("quick", 0.30, "worker"),
    Stage("overhead", 0.07, "worker"),
    Stage("lenet", 0.09, "worker"),
    Stage("autotune", 0.01, "autotune", needs_cuda=True),
    Stage("ncu", 0.10, "ncu", needs_cuda=True),
]
DEFAULT_BUDGET_S = 480
RESERVE = (2.0, 10.0, 0.02)  # seconds kept for the summary: min, max, fraction of the budget
GRACE_S = 1.5  # a stage's own deadline comes this long before it is killed, to write its results
# pytest processes of the tests stage on a GPU machine (with pytest-xdist): a test's time there is
# mostly compiling its kernels, on one core each; the GPU is shared
TEST_WORKERS = 8
COMPILE_WRAP_UP_S = 3.0  # perf/precompile.py's time to stop its workers and write its summary
MIN_STAGE_S = 0.5  # a stage with less time than this is skipped
KILL_WAIT_S = 5.0  # how long a killed child may take to go
INSTALL_TIMEOUT_S = 120
SUMMARY_MAX_LINES = 60
FAILURES_LISTED = 6
CONFIGS_LISTED = 3  # lines of failing configs in the summary
FILES = {"session": "session.json", "log": "session.log", "configs": "configs.csv", "tests": "tests.csv",
         "quick": "quick.csv", "overhead": "overhead.csv", "lenet": "lenet.csv", "ncu": "ncu.csv"}
SHIPPED_CONFIGS = os.path.join(PERF_DIR, "shipped_configs.py")  # the configs stage's runner
STICKY_EXIT = 3  # its exit status when a kernel broke its CUDA context (shipped_configs.STICKY_EXIT)
MAX_RESTARTS = 20  # of the configs runner within its share
INSTALL = ["-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", "."]
SOURCE_DIRS = ("convtri", "convtri/lenet", "kernels", "perf", "tests", "tests/lenet")

# The quick stage's sweep: do_bench settings as the first H100 session used.
QUICK_ARGS = ["--suite", "quick", "--graph", "--warmup-ms", "10", "--rep-ms", "50"]
QUICK_SMOKE_ARGS = ["--suite", "smoke", "--graph", "--shapes", "smoke_3x3", "smoke_max3x3s2", "--ops", "fwd",
                    "--layouts", "nhwc", "--cpu-repeats", "1"]
TEST_PATHS = {"full": ["tests"], "smoke": ["tests/test_pool2d.py", "tests/test_conv2d.py"]}
CEILING_SIZES = {False: dict(copy_bytes=2 << 30, matmul_n=8192, iters=20),
                 True: dict(copy_bytes=16 << 20, matmul_n=256, iters=2)}

# ncu: three kernels, each run once inside its own profiler range after a warm-up (autotuning).
# (label, quick-suite shape, op, dtype, kernel names that belong to it)
NCU_CASES = [
    ("vgg_fwd", "vgg16_56_256to256", "fwd", "fp16", ("conv2d_fwd_kernel",)),  # the largest VGG forward (118 GFLOP)
    ("rn50_3x3_wgrad", "rn50_14_3x3_256", "wgrad", "fp16", ("conv2d_wgrad_kernel", "conv2d_sum_splits_kernel")),
    ("stem_maxpool_fwd", "rn50_stem_max3x3s2", "fwd", "fp16", ("max_pool2d_fwd_kernel",)),
]
NCU_METRICS = {  # column -> ncu metric
    "duration_us": "gpu__time_duration.sum",
    "sm_pct": "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "dram_pct": "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed",
    "tensor_gmma_pct": "sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active",
    "tensor_hmma_pct": "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
    "warps_active_pct": "sm__warps_active.avg.pct_of_peak_sustained_active",
    "registers": "launch__registers_per_thread",
}
NCU_COLUMNS = ["case", "kernel", *NCU_METRICS, "metrics_source", "gpu", "commit"]
TIME_UNITS_US = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}


# ----------------------------------------------------------------------------- small helpers

def now():
    return time.time()


def iso(t=None):
    return datetime.datetime.fromtimestamp(t or now(), datetime.timezone.utc).isoformat(timespec="seconds")


def write_json(path, data):
    """Write ``data`` to ``path`` atomically (a temporary file in the same folder, renamed)."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str, allow_nan=False)
    os.replace(tmp, path)


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def read_csv(path):
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def finite(v):
    """A float from a CSV cell or a value, or NaN."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v


def plain(v):
    """JSON-safe: NaN and infinities become None; tuples lists; anything else a string."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    return v if v is None or isinstance(v, (int, str, bool)) else str(v)


def short(e):
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]


def source_sha256():
    """A hash of the Python sources and pyproject.toml, to match the tree a session measured
    with a commit when the copy on the GPU machine has no usable .git."""
    digest = hashlib.sha256()
    paths = [os.path.join(REPO, "pyproject.toml")] + sorted(
        path for d in SOURCE_DIRS for path in glob.glob(os.path.join(REPO, d, "*.py")))
    for path in paths:
        digest.update(os.path.relpath(path, REPO).encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(f.read() + b"\0")
    return digest.hexdigest()


# ----------------------------------------------------------------------------- child processes

class Child:
    """A subprocess in its own process group; its output lines go to the session log, except
    those ``on_line`` consumes (returns True for)."""

    def __init__(self, cmd, log, on_line=None, stdin=False, env=None):
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     encoding="utf-8", errors="replace", bufsize=1,
                                     stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
                                     start_new_session=True)
        self.log, self.on_line = log, on_line
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self):
        for line in self.proc.stdout:
            if not (self.on_line and self.on_line(line)):
                self.log(line.rstrip("\n"), echo_prefix="  ")

    def alive(self):
        return self.proc.poll() is None

    def wait(self, deadline):
        """The exit status, or None if still running at ``deadline``."""
        try:
            return self.proc.wait(timeout=max(0.0, deadline - now()))
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        """End the child and everything it started (its process group); wait for it a few
        seconds at most (a process inside a GPU driver call can take a while to go)."""
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        try:
            self.proc.wait(timeout=KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            pass
        self.thread.join(timeout=2)

    def send(self, message):
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def close(self, timeout=3.0):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        if self.wait(now() + timeout) is None:
            self.kill()
        self.thread.join(timeout=2)


class Worker:
    """The measuring process (perf/gpu_session.py --worker): imports torch and convtri once
    and runs the env, quick, overhead and lenet stages on command. Protocol on its stdout:
    ``@@ready {json}`` once, ``@@done <stage>`` after each stage; results in the scratch folder."""

    def __init__(self, session):
        self.info, self.ready, self.done = None, threading.Event(), {}
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--device", session.args.device,
               "--out", session.out, "--scratch", session.scratch]
        self.child = Child(cmd, session.log, on_line=self._protocol, stdin=True)

    def _protocol(self, line):
        if line.startswith("@@ready "):
            self.info = json.loads(line[len("@@ready "):])
            self.ready.set()
            return True
        if line.startswith("@@done "):
            self.done.setdefault(line.split()[1], threading.Event()).set()
            return True
        return False

    def run(self, stage, deadline, **options):
        """True when the stage finished by ``deadline``; the worker is killed otherwise."""
        if not self._wait(self.ready, deadline):
            return False
        event = self.done.setdefault(stage, threading.Event())
        try:
            self.child.send(dict(stage=stage, deadline=deadline - GRACE_S, **options))
        except OSError:
            return False
        return self._wait(event, deadline)

    def _wait(self, event, deadline):
        while not event.wait(0.1):
            if not self.child.alive() or now() > deadline:
                return False
        return True


# ----------------------------------------------------------------------------- the session

class Session:
    def __init__(self, args):
        self.args = args
        self.start = now()
        self.out = os.path.abspath(args.out)
        os.makedirs(self.out, exist_ok=True)
        self.scratch = tempfile.mkdtemp(prefix="gpu_session_")
        self.path = {key: os.path.join(self.out, name) for key, name in FILES.items()}
        for path in self.path.values():  # this folder holds one session
            if os.path.exists(path):
                os.remove(path)
        self.log_file = open(self.path["log"], "w")
        self.lock = threading.Lock()
        self.worker = None
        self.device = args.device if args.device != "auto" else None
        self.smoke = args.smoke
        reserve = min(RESERVE[1], max(RESERVE[0], RESERVE[2] * args.budget_s))
        self.end = self.start + args.budget_s - reserve
        self.data = dict(command=" ".join(["python3", "perf/gpu_session.py", *args.argv]), started=iso(self.start),
                         budget_s=args.budget_s, smoke=args.smoke, finished=False, environment={}, ceilings={},
                         stages={}, compile={}, configs={}, tests={}, quick={}, overhead={}, lenet={}, autotune={},
                         ncu={}, files=[])

    # -- output

    def log(self, text, echo_prefix=""):
        with self.lock:
            print(echo_prefix + text, flush=True)
            self.log_file.write(echo_prefix + text + "\n")
            self.log_file.flush()

    def save(self):
        self.data["elapsed_s"] = round(now() - self.start, 1)
        self.data["files"] = sorted(name for name in os.listdir(self.out) if not name.startswith("."))
        write_json(self.path["session"], plain(self.data))

    # -- the run

    def run(self):
        """Every stage in turn, each until its cumulative share of the budget; then the summary."""
        self.log(f"== gpu_session: budget {self.args.budget_s:.0f} s, out {self.out}, {iso(self.start)}")
        try:
            self.install()
            stages = [s for s in STAGES if s.name in self.args.stages]
            begin, total, done_share = now(), sum(s.share for s in stages), 0.0
            for stage in stages:
                done_share += stage.share
                self.run_stage(stage, begin + (self.end - begin) * done_share / total)
                self.save()
        except KeyboardInterrupt:
            self.log("== interrupted")
        except SessionStopped as e:
            self.data["stopped"] = str(e)
            self.log(f"== stopped: {e}")
        finally:
            self.finish()
        return self.data

    def install(self):
        """``pip install --no-deps --no-build-isolation -e .`` unless this checkout's convtri is
        already what Python imports (or --no-install). Nothing imports convtri without it: a
        failed install stops the session (SessionStopped, with pip's last line)."""
        spec = importlib.util.find_spec("convtri")
        here = os.path.join(REPO, "convtri", "__init__.py")
        if self.args.no_install or (spec and spec.origin and os.path.exists(spec.origin)
                                    and os.path.samefile(spec.origin, here)):
            self.data["install"] = dict(ran=False, note="convtri already imports from this checkout"
                                        if not self.args.no_install else "--no-install")
            return
        t = now()
        cmd = [sys.executable, *INSTALL]
        self.log("== install: " + " ".join(cmd[2:]))
        printed = []

        def keep(line):  # and log it
            printed.append(line.strip())
            return False
        try:
            child = Child(cmd, self.log, on_line=keep)
            status = child.wait(min(self.end, now() + INSTALL_TIMEOUT_S))
            if status is None:
                child.kill()
        except OSError as e:
            status = short(e)
        self.data["install"] = dict(ran=True, status=status, seconds=round(now() - t, 1))
        if status != 0:
            said = next((line for line in reversed(printed) if line), "")
            raise SessionStopped(f"pip install failed ({'timed out' if status is None else f'status {status}'})"
                                 + (f": {said[:200]}" if said else ""))

    def run_stage(self, stage, deadline):
        started, window = now(), deadline - now()
        record = self.data["stages"][stage.name] = dict(share_s=round(window, 1))
        if window < MIN_STAGE_S:
            record.update(status="skipped", note=f"skipped: no time left ({window:.1f} s)")
        elif stage.needs_cuda and self.device != "cuda" and self.device is not None:
            record.update(status="skipped", note="skipped: no CUDA")
        else:
            self.log(f"== {stage.name}: up to {window:.0f} s")
            try:
                record.update(getattr(self, f"stage_{stage.runner}")(stage, deadline))
            except Exception as e:  # the session goes on
                record.update(status="failed", note=f"failed: {short(e)}")
        record["seconds"] = round(now() - started, 1)
        self.log(f"== {stage.name}: {record.get('status')} in {record['seconds']:.0f} s"
                 + (f" ({record['note']})" if record.get("note") else ""))

    def stage_worker(self, stage, deadline):
        if self.worker is None or not self.worker.child.alive():
            self.worker = Worker(self)
        finished = self.worker.run(stage.name, deadline, smoke=self.smoke)
        self.learn_device()
        result = read_json(os.path.join(self.scratch, f"{stage.name}.json"), {})
        if not finished:
            alive = self.worker.child.alive()
            self.worker.child.kill()
            status = self.worker.child.proc.returncode
            self.worker = None
            note = "stopped: its share was spent" if alive else f"failed: the worker exited with status {status}"
            result = dict(result, status="stopped" if alive else "failed", note=note)
        error = result.pop("cuda_error", None)
        if error and self.worker is not None:  # a sticky error would fail every later stage
            self.worker.child.kill()
            self.worker = None
            result["note"] = "; ".join(filter(None, [result.get("note"), f"its CUDA context reports {error}: "
                                                                         "the worker is replaced"]))
        if stage.name == "env":
            self.data["environment"] = result.pop("environment", {})
            self.data["ceilings"] = result.pop("ceilings", {})
        else:
            self.data[stage.name] = dict(self.data.get(stage.name) or {}, **result)
        result.setdefault("status", "ok")
        return {k: result[k] for k in ("status", "note") if k in result}

    def learn_device(self):
        """The device the worker found (auto resolves there); without CUDA, the CPU smoke."""
        info = self.worker.info if self.worker else None
        if info and self.device is None:
            self.device = info["device"]
        if self.device == "cpu" and not self.smoke:
            self.smoke = True
            self.data["smoke"] = True
            self.log("== no CUDA GPU: the session runs its CPU smoke (tiny shapes, nothing measured)")

    def device_or_guess(self):
        return self.device or ("cuda" if shutil.which("nvidia-smi") else "cpu")

    def stage_tests(self, stage, deadline):
        select, device = "smoke" if self.smoke else "full", self.device_or_guess()
        selected_path = os.path.join(self.scratch, "selected.json")
        cmd = [sys.executable, "-m", "pytest", *TEST_PATHS[select], "-p", "pytest_stream",
               "--stream-csv", self.path["tests"], "--stream-select", select, "--stream-device", device,
               "--stream-selected", selected_path, "-q", "--tb=short", "-p", "no:cacheprovider"]
        if device == "cuda" and importlib.util.find_spec("xdist"):  # the GPU machines have pytest-xdist
            cmd += ["-n", str(TEST_WORKERS)]
        env = dict(PYTHONPATH=os.pathsep.join(filter(None, [PERF_DIR, os.environ.get("PYTHONPATH")])),
                   CONVTRI_AUTOTUNE="0")  # one config per launch: tests check results, and compiling is most of their time
        child = Child(cmd, self.log, env=env)
        status = child.wait(deadline)
        if status is None:
            child.kill()
        counts = count_outcomes(read_csv(self.path["tests"]), read_json(selected_path, []))
        self.data["tests"] = dict(counts, select=f"{select} on {device}", pytest_status=status)
        if status is None:
            not_run = f"{counts['not_run']} tests not run" if counts["selected"] else "before pytest selected its tests"
            return dict(status="stopped", note=f"stopped at its cap: {not_run}")
        return dict(status="ok" if status in (0, 1) else "failed",
                    note="" if status in (0, 1) else f"pytest exited with status {status}")

    def stage_configs(self, stage, deadline):
        """perf/shipped_configs.py in a process of its own, writing configs.csv row by row. Where a
        kernel breaks its CUDA context (it writes that round's row and exits with STICKY_EXIT) or
        the process dies in a round (the session writes the row), it starts again, skipping the
        rounds that have a row; one that ends before its first round is not started again."""
        device, path = self.device_or_guess(), self.path["configs"]
        runs, status, seen = 0, None, {}
        while runs <= MAX_RESTARTS and deadline - now() - GRACE_S >= MIN_STAGE_S:
            runs += 1
            cmd = [sys.executable, SHIPPED_CONFIGS, "--device", device, "--csv", path, "--resume",
                   "--seconds", f"{deadline - now() - GRACE_S:.1f}"] + (["--smoke"] if self.smoke else [])
            seen.clear()

            def on_line(line):  # "@@round <id>" as each round starts; "@@finished" or "@@stopped" at the end
                if line.startswith("@@"):
                    seen["end" if line.startswith(("@@finished", "@@stopped")) else "round"] = line.split(" ", 1)[-1]
                return line.startswith(("@@round ", "@@finished", "@@stopped"))
            child = Child(cmd, self.log, on_line=on_line)
            status = child.wait(deadline)
            if status is None:
                child.kill()
            child.thread.join(timeout=KILL_WAIT_S)  # every line it printed read
            if status is None or "end" in seen or "round" not in seen:  # out of time, done, or it cannot start
                break
            if status != STICKY_EXIT:
                append_failed_round(path, seen["round"].strip(), device, f"the process died (status {status})")
        rows = read_csv(path)
        counts = {outcome: sum(r["status"] == outcome for r in rows) for outcome in ("ok", "mismatch", "failed")}
        self.data["configs"] = dict(counts, rounds=len(rows), restarts=max(runs - 1, 0), runner_status=status,
                                    problems=len({(r["problem"], r["dtype"]) for r in rows}),
                                    failures=failing_configs(rows))
        note = (f"{len(rows)} rounds, {counts['mismatch']} mismatched, {counts['failed']} failed"
                + (f", {runs - 1} restarts" if runs > 1 else ""))
        if seen.get("end", "").startswith("@@finished"):
            return dict(status="ok", note=note)
        if status is None or "end" in seen:
            return dict(status="stopped", note=f"stopped: its share was spent; {note}")
        return dict(status="failed", note=f"the runner exited with status {status}; {note}")

    def stage_compile(self, stage, deadline):
        """perf/precompile.py over the configs table and the quick suite, stopping itself before ``deadline``."""
        result_path = os.path.join(self.scratch, "compile.json")
        seconds = deadline - now() - GRACE_S - COMPILE_WRAP_UP_S
        cmd = [sys.executable, os.path.join(PERF_DIR, "precompile.py"), "--suite", "quick", "--configs",
               "--json", result_path, "--seconds", f"{seconds:.1f}"]
        env = self.data["environment"]
        if env.get("capability") and env.get("sm_count"):  # as the env stage found the GPU
            major, minor = env["capability"].split(".")
            cmd += ["--arch", str(int(major) * 10 + int(minor)), "--sms", str(env["sm_count"])]
        child = Child(cmd, self.log)
        status = child.wait(deadline)
        if status is None:
            child.kill()
        result = self.data["compile"] = read_json(result_path, {})
        if not result:
            return dict(status="failed", note=f"precompile exited with status {status}, nothing recorded")
        note = f"{result['compiled']} of {result['units']} compiled, {result['failed']} failed"
        status = "failed" if result["failed"] else "ok" if result["finished"] else "stopped"
        return dict(status=status, note=note)

    def stage_autotune(self, stage, deadline):
        record = read_json(os.path.join(self.scratch, "autotune.json"))
        if not record:
            return dict(status="skipped", note="skipped: nothing recorded (the quick stage did not tune)")
        self.data["autotune"] = record
        return dict(status="ok", note=f"{len(record.get('records', []))} tunings from {record.get('source')}")

    def stage_ncu(self, stage, deadline):
        result = profile_with_ncu(self, deadline)
        self.data["ncu"] = result
        return {k: result[k] for k in ("status", "note") if k in result}

    def finish(self):
        if self.worker:
            self.worker.child.close()
        self.data["finished"] = True
        self.data["summary"] = []
        self.save()
        lines = summary_lines(self.data, self.out)
        self.data["summary"] = lines
        self.save()
        self.log("\n".join(lines))
        self.log_file.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


def failing_configs(rows):
    """A line per config (kernel and config, or the reference round) with a round of configs.csv
    that failed or mismatched: in which problems and dtypes, and what was off."""
    grouped = {}
    for r in rows:
        if r["status"] != "ok":
            config = r["round"].split(" ", 1)[1] if r["round"].startswith("#") else r["round"]
            grouped.setdefault(config, []).append(r)
    return [f"{'/'.join(sorted({r['status'] for r in bad}))} {config}: " + "; ".join(
        f"{r['problem']} {r['dtype']} {r.get('outputs') or r.get('note') or ''}".strip() for r in bad)
        for config, bad in grouped.items()]


class SessionStopped(Exception):
    """Nothing later can run (the install failed): the session writes what it has and ends."""


def append_failed_round(path, ident, device, note):
    """A configs.csv row for the round ``ident`` ("problem / dtype / round") that killed its runner."""
    problem, dtype, round_ = ident.split(" / ", 2)
    row = dict(problem=problem, dtype=dtype, round=round_, status="failed", note=note, device=device)
    try:
        with open(path, newline="") as f:
            columns = next(csv.reader(f), None)
    except OSError:
        columns = None
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, columns or list(row), extrasaction="ignore")
        if not columns:
            writer.writeheader()
        writer.writerow(row)


def count_outcomes(rows, selected):
    """Counts per outcome over the streamed rows (a test's worst outcome wins), the failures
    by node id, and how many selected tests never reported."""
    order = ["passed", "xfailed", "skipped", "xpassed", "failed", "error"]
    final = {}
    for row in rows:
        outcome = row["outcome"] if row["outcome"] in order else "error"
        if row["nodeid"] not in final or order.index(outcome) > order.index(final[row["nodeid"]]):
            final[row["nodeid"]] = outcome
    counts = {outcome: sum(o == outcome for o in final.values()) for outcome in order}
    failures = [nodeid for nodeid, o in final.items() if o in ("failed", "error", "xpassed")]
    return dict(counts, selected=len(selected), not_run=len(set(selected) - set(final)), failures=failures)


# ----------------------------------------------------------------------------- ncu (parent side)

def find_ncu():
    candidates = [shutil.which("ncu")] + sorted(glob.glob("/opt/nvidia/nsight-compute/*/ncu"), reverse=True) + [
        "/usr/local/cuda/bin/ncu"]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def profile_with_ncu(session, deadline):
    """The three NCU_CASES kernels under ``ncu --clock-control none``; one line and status
    "skipped" where ncu is missing or fails (it reads no counters on gVisor machines)."""
    ncu = find_ncu()
    if not ncu:
        return dict(status="skipped", note="skipped: ncu not found")
    report = os.path.join(session.scratch, "profile")
    target = [sys.executable, os.path.abspath(__file__), "--ncu-target", "--out", session.scratch]
    base = [ncu, "--clock-control", "none", "--profile-from-start", "off", "--target-processes", "all", "-f",
            "-o", report]
    attempts = [("metrics", ["--metrics", ",".join(NCU_METRICS.values())]), ("SpeedOfLight", ["--section",
                                                                                            "SpeedOfLight"])]
    tail = []
    for source, selection in attempts:
        lines = []

        def log(text, echo_prefix=""):
            lines.append(text)
            session.log(text, echo_prefix)
        child = Child(base + selection + target, log)
        status = child.wait(deadline - 5)
        if status is None:
            child.kill()
            return dict(status="skipped", note="skipped: ncu did not finish in its share")
        errors = [line for line in lines if "ERROR" in line or "error" in line]
        tail = errors[-2:] or lines[-2:]
        if status == 0 and os.path.exists(report + ".ncu-rep"):
            raw = subprocess.run([ncu, "--import", report + ".ncu-rep", "--csv", "--page", "raw"],
                                 capture_output=True, text=True, timeout=max(1, deadline - now()))
            rows = ncu_rows(raw.stdout, source)
            tail = tail + raw.stderr.strip().splitlines()[-1:]
            if rows:
                env = session.data.get("environment", {})
                with open(session.path["ncu"], "w", newline="") as f:
                    writer = csv.DictWriter(f, NCU_COLUMNS)
                    writer.writeheader()
                    for row in rows:
                        writer.writerow({k: plain(row.get(k, env.get(k))) for k in NCU_COLUMNS})
                return dict(status="ok", note=f"{len(rows)} kernels ({source})", kernels=rows)
        if not any("metric" in line.lower() for line in errors):  # only an unknown metric is worth a retry
            break
    return dict(status="skipped", note="skipped: ncu failed: " + " / ".join(t.strip() for t in tail)[:300])


def ncu_rows(text, source):
    """Kernel rows from ``ncu --csv --page raw`` output: a header row (with "Kernel Name"), a
    units row, then one row per profiled kernel. Metrics not collected stay None."""
    lines = [line for line in text.splitlines() if line.startswith('"')]
    table = list(csv.reader(lines))
    header = next((i for i, row in enumerate(table) if "Kernel Name" in row), None)
    if header is None:
        return []
    names, units = table[header], {}
    rows = []
    for cells in table[header + 1:]:
        cell = dict(zip(names, cells))
        if not cell.get("ID", "").strip().isdigit():  # the units row
            units = cell
            continue
        kernel = cell["Kernel Name"]
        row = dict(kernel=kernel, metrics_source=source,
                   case=next((label for label, *_, kernels in NCU_CASES if any(k in kernel for k in kernels)), "?"))
        for column, metric in NCU_METRICS.items():
            row[column] = finite(cell.get(metric, "").replace(",", "")) if cell.get(metric) else None
        if row["duration_us"] is not None:
            row["duration_us"] *= TIME_UNITS_US.get(units.get(NCU_METRICS["duration_us"], "nsecond"), math.nan)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- the summary

def summary_lines(data, out):
    """The table printed last: at most SUMMARY_MAX_LINES lines."""
    env, ceil = data.get("environment") or {}, data.get("ceilings") or {}
    lines = ["", "=" * 100, f"SUMMARY gpu_session {'(CPU SMOKE: nothing here is a measurement) ' if data.get('smoke') else ''}"
             f"{data.get('elapsed_s', 0):.0f} s of {data.get('budget_s', 0):.0f} s budget"]
    if data.get("stopped"):
        lines.append(f"STOPPED: {data['stopped']}")
    lines.append(f"device: {env.get('gpu', '?')} | SMs {env.get('sm_count', '-')} | driver {env.get('driver', '-')} | "
                 f"torch {env.get('torch', '-')} | triton {env.get('triton', '-')} | cuDNN {env.get('cudnn', '-')} | "
                 f"commit {env.get('commit', '?')} | sources {str(env.get('source_sha256', '?'))[:12]}")
    lines.append(f"ceilings: copy {_fmt(ceil.get('copy_gbps'), '.0f')} GB/s (read+write) | {ceil.get('matmul', 'matmul')} "
                 f"{_fmt(ceil.get('matmul_tflops'), '.0f')} TFLOP/s | clocks {ceil.get('clocks', '-')}")
    lines.append("stages: " + " | ".join(f"{name} {s.get('status', '?')} {s.get('seconds', 0):.0f}s"
                                         for name, s in (data.get("stages") or {}).items()))
    compiled = data.get("compile") or {}
    if compiled:
        lines.append(f"compile: {compiled['compiled']} of {compiled['units']} kernels "
                     f"({compiled.get('table_units', 0)} of the configs table, then the quick suite's) precompiled "
                     f"for sm_{compiled['arch']} over {compiled['jobs']} processes in {compiled['seconds']} s"
                     f"{'' if compiled['finished'] else ' (stopped: the rest compiled when first called)'}")
    lines += _configs_lines(data.get("configs") or {})
    lines += _tests_lines(data.get("tests") or {})
    lines += _quick_lines(read_csv(os.path.join(out, FILES["quick"])))
    lines += _overhead_lines(read_csv(os.path.join(out, FILES["overhead"])))
    lines += _lenet_lines(read_csv(os.path.join(out, FILES["lenet"])))
    autotune = data.get("autotune") or {}
    tunings = [r for r in autotune.get("records", []) if "kernel" in r]
    lines.append(f"autotune: {len(tunings)} tunings over {len({r['point'] for r in autotune.get('records', [])})} "
                 f"conv points ({autotune.get('source', 'nothing recorded')})")
    lines += _ncu_lines(data.get("ncu") or {}, (data.get("stages") or {}).get("ncu", {}))
    lines.append("files: " + " ".join(data.get("files") or []))
    if len(lines) > SUMMARY_MAX_LINES:
        lines = lines[:SUMMARY_MAX_LINES - 1] + ["(summary cut to 60 lines: session.json has the rest)"]
    return lines


def _fmt(v, spec=".3g"):
    v = finite(v)
    return "-" if math.isnan(v) else format(v, spec)


def _ratio(v):
    v = finite(v)
    return "-" if math.isnan(v) or v <= 0 else f"{v:.3g}x"


def _configs_lines(configs):
    """The configs stage's counts and, in at most CONFIGS_LISTED lines, the configs that failed or mismatched."""
    if not configs:
        return ["configs: not run"]
    lines = [f"configs (every shipped config forced, perf/shipped_configs.py): {configs['rounds']} rounds over "
             f"{configs['problems']} problem/dtype pairs: {configs['ok']} ok, {configs['mismatch']} mismatched, "
             f"{configs['failed']} failed" + (f", {configs['restarts']} restarts" if configs.get("restarts") else "")]
    failures = configs.get("failures") or []
    shown = failures if len(failures) <= CONFIGS_LISTED else failures[:CONFIGS_LISTED - 1]
    lines += [f"  {failure[:160]}" for failure in shown]
    if len(failures) > len(shown):
        lines.append(f"  ... and {len(failures) - len(shown)} more configs (session.json, configs.csv)")
    return lines


def _tests_lines(tests):
    if not tests:
        return ["tests: not run"]
    lines = [f"tests ({tests.get('select')}): {tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, "
             f"{tests.get('error', 0)} errors, {tests.get('skipped', 0)} skipped, {tests.get('not_run', 0)} not run "
             f"of {tests.get('selected', 0)} selected"]
    failures = tests.get("failures") or []
    lines += [f"  FAILED {nodeid}" for nodeid in failures[:FAILURES_LISTED]]
    if len(failures) > FAILURES_LISTED:
        lines.append(f"  ... and {len(failures) - FAILURES_LISTED} more (session.json, tests.csv)")
    return lines


def _geomean(values):
    values = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else math.nan


def _median(values):
    values = sorted(v for v in values if math.isfinite(v))
    return values[len(values) // 2] if values else math.nan


def _quick_lines(rows):
    """Geomean speedups (eager, graph) per (kind, op, dtype) over the points that passed the
    correctness check, and the median host microseconds per call (eager minus graph)."""
    if not rows:
        return ["quick suite: no rows"]
    ours = [r for r in rows if r["provider"] == "convtri"]
    base = [r for r in rows if r["provider"] == r["baseline"]]
    lines = [f"quick suite: convtri over {'/'.join(sorted({r['baseline'] for r in rows}))}, geomean over points "
             f"({len(ours)} measured, {sum(r['ok'] != 'True' for r in ours)} failed or wrong, excluded)",
             f"  {'kind op dtype':<24}{'n':>4} {'eager':>9} {'graph':>9} {'host us: ours':>14} {'base':>5}"]
    groups = {}
    for r in ours:
        tf32 = r["kind"] == "conv" and r.get("tf32") == "True"
        groups.setdefault((r["kind"], r["op"], r["dtype"], tf32), []).append(r)
    for (kind, op, dtype, tf32), group in groups.items():
        good = [r for r in group if r["ok"] == "True"]
        twins = [b for b in base if (b["kind"], b["op"], b["dtype"]) == (kind, op, dtype)]
        label = f"{kind} {op} {dtype}{'/tf32' if tf32 else ''}"
        eager = _ratio(_geomean(finite(r["speedup"]) for r in good))
        graph = _ratio(_geomean(finite(r.get("speedup_graph")) for r in good))
        host = _fmt(_median(finite(r.get("host_us")) for r in good), ".0f")
        host_base = _fmt(_median(finite(b.get("host_us")) for b in twins), ".0f")
        lines.append(f"  {label:<24}{len(good):>4} {eager:>9} {graph:>9} {host:>14} {host_base:>5}")
    return lines


def _overhead_lines(rows):
    if not rows:
        return ["host overhead: no rows"]
    modes = [m for m in ("eager", "graph", "meta") if any(r["mode"] == m for r in rows)]
    shown = modes[:2]
    lines = [f"host overhead, us per call at LeNet shapes (ours / torch; launches per call in eager); modes: {', '.join(modes)}",
             f"  {'op pass':<28}" + "".join(f"{m:>18}" for m in shown) + (f"{'launches':>10}" if "eager" in shown else "")]
    cell = {(r["op"], r["pass"], r["mode"], r["provider"]): r for r in rows}
    for op, pass_ in dict.fromkeys((r["op"], r["pass"]) for r in rows):
        parts = [f"{_fmt(cell.get((op, pass_, m, 'convtri'), {}).get('us'), '.0f')} / "
                 f"{_fmt(cell.get((op, pass_, m, 'torch'), {}).get('us'), '.0f')}" for m in shown]
        line = f"  {f'{op} {pass_}':<28}" + "".join(f"{p:>18}" for p in parts)
        if "eager" in shown:
            line += (f"{_fmt(cell.get((op, pass_, 'eager', 'convtri'), {}).get('launches'), 'g')}/"
                     f"{_fmt(cell.get((op, pass_, 'eager', 'torch'), {}).get('launches'), 'g')}").rjust(10)
        lines.append(line)
    return lines


def _lenet_lines(rows):
    if not rows:
        return ["lenet step: no rows"]
    lines = ["lenet step, examples/s (x the torch.nn twin eager):"]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        parts = [f"{r['mode']} {_fmt(r['examples_per_s'], '.0f')} ({_ratio(r['vs_torch_eager'])})"
                 if r["examples_per_s"] else f"{r['mode']} {r['note'] or '-'}" for r in rows if r["variant"] == variant]
        lines.append(f"  {variant}: " + " | ".join(parts))
    return lines


def _ncu_lines(ncu, stage):
    if ncu.get("status") != "ok":
        return [f"ncu: {stage.get('note') or ncu.get('note') or 'not run'}"]
    lines = ["ncu (% of peak): case, kernel, us, SM, DRAM, tensor gmma/hmma"]
    for row in ncu.get("kernels", []):
        lines.append(f"  {row['case']:<17} {row['kernel'][:40]:<40} {_fmt(row['duration_us'], '.1f'):>8} "
                     f"{_fmt(row['sm_pct'], '.0f'):>4} {_fmt(row['dram_pct'], '.0f'):>4} "
                     f"{_fmt(row['tensor_gmma_pct'], '.0f'):>4}/{_fmt(row['tensor_hmma_pct'], '.0f')}")
    return lines


# ----------------------------------------------------------------------------- the worker's stages

@dataclass
class Context:
    stage: str
    deadline: float
    smoke: bool
    device: str
    out: str
    scratch: str
    recorder: object

    def stopping(self):
        return now() > self.deadline

    def csv(self, key):
        return os.path.join(self.out, FILES[key])


def stage_env(ctx):
    import sweep
    import torch
    env = sweep.environment(ctx.device, "python3 perf/gpu_session.py")
    env = {k: env[k] for k in ("device", "gpu", "torch", "triton", "cudnn", "commit")}
    env["slug"] = sweep.slug(env["gpu"])  # the results folder's name: perf/results/<slug>/
    env.update(python=sys.version.split()[0], numpy=_version("numpy"), source_sha256=source_sha256(),
               cuda_available=torch.cuda.is_available())
    if ctx.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(sm_count=props.multi_processor_count, capability=f"{props.major}.{props.minor}",
                   memory_gib=round(props.total_memory / 2 ** 30, 1), l2_mb=getattr(props, "L2_cache_size", 0) / 1e6,
                   cuda=torch.version.cuda)
    smi = nvidia_smi()
    env.update(driver=smi.get("driver_version", "-"), nvidia_smi_at_rest=smi)
    return dict(environment=env, ceilings=ceilings(ctx.device, ctx.smoke))


def _version(module):
    try:
        return __import__(module).__version__
    except Exception:
        return None


def nvidia_smi():
    """What nvidia-smi reads now (clocks, power, state), or {} without it."""
    fields = ["name", "driver_version", "pstate", "clocks.sm", "clocks.mem", "clocks.max.sm", "clocks.max.mem",
              "power.draw", "power.limit", "temperature.gpu"]
    try:
        text = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    first = text.strip().splitlines()[:1]
    return dict(zip(fields, (v.strip() for v in first[0].split(",")))) if first else {}


def ceilings(device, smoke):
    """Measured: a device-to-device copy (GB/s counting bytes read and written) and a large
    matmul through torch (TFLOP/s), both on random data, each the mean of ``iters`` calls
    after warm-up. On CPU (smoke) small sizes in fp32: it checks the code, measures nothing."""
    import sweep
    import torch
    size = CEILING_SIZES[smoke or device != "cuda"]
    cuda, iters = device == "cuda", size["iters"]
    copy_gbps = sweep.copy_bandwidth(device, size["copy_bytes"], iters)
    n, dtype = size["matmul_n"], torch.bfloat16 if cuda else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    mm = lambda: a @ b
    sweep.wall_seconds(mm, 3, cuda)
    tflops = 2 * n ** 3 * iters / sweep.wall_seconds(mm, iters, cuda) / 1e12
    after = nvidia_smi()
    del a, b
    if cuda:
        torch.cuda.empty_cache()
    return dict(copy_gbps=copy_gbps, copy_bytes=size["copy_bytes"], matmul=f"{str(dtype)[6:]} {n}^3 matmul",
                matmul_tflops=tflops, iters=iters, nvidia_smi_after_matmul=after,
                clocks=f"sm {after.get('clocks.sm', '-')} mem {after.get('clocks.mem', '-')} after the matmul"
                if after else "-")


def stage_quick(ctx):
    import sweep
    argv = (QUICK_SMOKE_ARGS if ctx.smoke else QUICK_ARGS) + ["--device", ctx.device]
    args = sweep.parse_args(argv)
    command = "python perf/sweep.py " + " ".join(argv) + " (gpu_session's quick stage)"
    planned = len(list(sweep.Sweep(args, dict(gpu=""), sink=None).points(sweep.members_of(args))))
    rows = sweep.run_sweep(args, ctx.csv("quick"), command, on_row=ctx.recorder.on_row, should_stop=ctx.stopping)
    points = {(r["shape"], r["op"], r["dtype"], r["layout"]) for r in rows}
    return dict(rows=len(rows), points=len(points), planned=planned)


def stage_overhead(ctx):
    import overhead
    import sweep
    with sweep.CsvWriter(ctx.csv("overhead"), overhead.COLUMNS) as sink:
        if ctx.device == "cuda":
            rows = overhead.measure("cuda", ctx.smoke, sink, ctx.deadline, modes=("eager", "graph", "meta"))
        else:
            print("skipped: no CUDA (the CUDA part); the host path on meta tensors only", flush=True)
            rows = overhead.measure("cpu", ctx.smoke, sink, ctx.deadline, ops=["conv2d", "max_pool2d"])
    print("\n".join(overhead.table(rows)), flush=True)
    return dict(rows=len(rows))


def stage_lenet(ctx):
    import lenet_step
    import sweep
    options = dict(modes=["torch-eager", "ours-eager", "ours-graph"], variants=["modern"]) if ctx.smoke else {}
    with sweep.CsvWriter(ctx.csv("lenet"), lenet_step.COLUMNS) as sink:
        rows = lenet_step.measure(ctx.device, ctx.smoke, sink=sink, deadline=ctx.deadline, **options)
    return dict(rows=len(rows))


WORKER_STAGES = {"env": stage_env, "quick": stage_quick, "overhead": stage_overhead, "lenet": stage_lenet}


class AutotuneRecorder:
    """For each quick-suite conv point, the Triton autotuner's choices made while it ran:
    {"point", "kernel", "key", "best", "timings_ms": {config: median ms}}, written to
    ``path`` after every point. From ``convtri._launch.autotune_record()`` where convtri has
    it; otherwise from a wrapper around triton's Autotuner.run, in this process only, that
    notes every key benchmarked (convtri is not touched)."""

    def __init__(self, path):
        import convtri._launch
        self.path, self.pending, self.records, self.seen = path, [], [], set()
        self.provided = getattr(convtri._launch, "autotune_record", None)
        self.source = "convtri._launch.autotune_record()" if self.provided else "triton Autotuner.run wrapper"
        if not self.provided:
            self._wrap()

    def _wrap(self):
        from triton.runtime.autotuner import Autotuner
        original, pending = Autotuner.run, self.pending

        def run(tuner, *args, **kwargs):
            known, timings_before = set(tuner.cache), getattr(tuner, "configs_timings", None)
            result = original(tuner, *args, **kwargs)
            for key in set(tuner.cache) - known:
                timings = getattr(tuner, "configs_timings", None)
                pending.append(dict(kernel=kernel_name(tuner), key=plain(list(key)), best=str(tuner.cache[key]),
                                    timings_ms={str(c): plain(_median_ms(t)) for c, t in (timings or {}).items()}
                                    if timings is not timings_before else {}))
            return result
        run.recorder_original = original
        Autotuner.run = run

    def take(self):
        """The tunings made since the last call."""
        if self.provided:
            fresh = []
            for record in self.provided() or []:
                ident = (record.get("kernel"), json.dumps(plain(record.get("key"))))
                if ident not in self.seen:
                    self.seen.add(ident)
                    fresh.append(plain(record))
            return fresh
        fresh, self.pending[:] = list(self.pending), []
        return fresh

    def on_row(self, row):
        if row["provider"] != "convtri":
            return
        point = f"{row['shape']} {row['op']} {row['dtype']} {row['layout']}"
        fresh = self.take()
        self.records += [dict(record, point=point) for record in fresh]
        if row["kind"] == "conv" and not fresh:
            self.records.append(dict(point=point, note="no new tuning: every key was tuned at an earlier point"))
        write_json(self.path, dict(source=self.source, records=self.records))


def kernel_name(tuner):
    fn = getattr(tuner, "base_fn", None) or tuner
    while not hasattr(fn, "__name__") and hasattr(fn, "fn"):
        fn = fn.fn
    return getattr(fn, "__name__", str(fn))


def _median_ms(timing):
    return timing[0] if isinstance(timing, (list, tuple)) else timing


def cuda_context_error(device):
    """What the CUDA context reports when this process synchronises: None while it is healthy
    (and on CPU). A kernel's fault (an illegal address, ...) leaves a sticky error that every
    later CUDA call raises again."""
    if device != "cuda":
        return None
    import torch
    try:
        torch.cuda.synchronize()
    except Exception as e:
        return short(e)
    return None


def worker_main(args):
    import torch
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    recorder = AutotuneRecorder(os.path.join(args.scratch, "autotune.json"))
    print("@@ready " + json.dumps(dict(device=device, cuda_available=torch.cuda.is_available())), flush=True)
    while True:
        line = sys.stdin.readline()
        if not line:  # the session closed our stdin: done
            return
        command = json.loads(line)
        ctx = Context(stage=command["stage"], deadline=command["deadline"], smoke=command["smoke"], device=device,
                      out=args.out, scratch=args.scratch, recorder=recorder)
        try:
            result = WORKER_STAGES[ctx.stage](ctx)
            result["status"] = "stopped" if ctx.stopping() else "ok"
            if result["status"] == "stopped":
                result["note"] = "stopped: its share was spent"
        except Exception as e:  # the stage failed; the worker lives on for the next
            import traceback
            traceback.print_exc()
            result = dict(status="failed", note=f"failed: {short(e)}")
        result["cuda_error"] = cuda_context_error(device)  # the session replaces a worker that has one
        write_json(os.path.join(args.scratch, f"{ctx.stage}.json"), plain(result))
        print(f"@@done {ctx.stage}", flush=True)


def ncu_target_main(args):
    """Run under ncu: each NCU_CASES kernel warmed up (autotuned) outside, then once inside its
    own profiler range."""
    import torch
    import convtri
    import shapes
    import sweep
    every = {shape.name: shape for shape in shapes.SUITES["all"]}
    calls = []
    for label, name, op, dtype, _ in NCU_CASES:
        case = sweep.Case(every[name], op, dtype, "cuda", seed=0)
        fn = case.callable(case.forward(convtri), "nhwc")
        for _ in range(3):
            fn()
        calls.append((label, fn))
    torch.cuda.synchronize()
    for label, fn in calls:
        torch.cuda.profiler.start()
        fn()
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
        print(f"profiled {label}", flush=True)


# ----------------------------------------------------------------------------- command line

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_session", help="output folder (on the device machine: \"$OUT\")")
    p.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                   help=f"the whole run ends within this many seconds (default {DEFAULT_BUDGET_S})")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--smoke", action="store_true", help="tiny shapes and counts: checks every stage, measures nothing")
    p.add_argument("--stages", nargs="+", choices=[s.name for s in STAGES], default=[s.name for s in STAGES],
                   help="run only these stages (in the usual order)")
    p.add_argument("--no-install", action="store_true", help="skip `pip install --no-deps --no-build-isolation -e .`")
    p.add_argument("--source-hash", action="store_true", help="print the sources' sha256 (as session.json records) and exit")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ncu-target", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--scratch", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = argv
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.source_hash:
        print(source_sha256())
        return None
    if args.worker:
        return worker_main(args)
    if args.ncu_target:
        return ncu_target_main(args)
    return Session(args).run()


if __name__ == "__main__":
    session = main()
    sys.exit(1 if isinstance(session, dict) and session.get("stopped") else 0)
