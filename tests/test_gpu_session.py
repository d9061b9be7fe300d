"""perf/gpu_session.py: the CPU smoke session end to end, a tiny time budget, and the parts
that only a GPU machine runs, on made-up inputs (ncu's CSV, the autotuner record, the test
selection, the summary)."""
import csv
import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from test_perf import PERF, ROOT, _load

gpu_session = _load("gpu_session")
pytest_stream = _load("pytest_stream")
STAGES = [stage.name for stage in gpu_session.STAGES]


def _session(out, *args):
    start = time.time()
    result = subprocess.run([sys.executable, str(PERF / "gpu_session.py"), "--device", "cpu", "--smoke",
                             "--out", str(out), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout, time.time() - start, json.loads((out / "session.json").read_text())


def _printed_last(stdout, summary):
    assert stdout.rstrip("\n").splitlines()[-len(summary):] == summary
    assert len(summary) <= gpu_session.SUMMARY_MAX_LINES


def test_cpu_smoke_session(tmp_path):
    """Every stage runs on CPU through the interpreter; those that need CUDA say so."""
    out = tmp_path / "out"
    stdout, _, data = _session(out)
    assert sorted(p.name for p in out.iterdir()) == ["configs.csv", "lenet.csv", "overhead.csv", "quick.csv",
                                                     "session.json", "session.log", "tests.csv"]
    status = {name: stage["status"] for name, stage in data["stages"].items()}
    assert status == dict(env="ok", compile="skipped", configs="ok", tests="ok", quick="ok", overhead="ok", lenet="ok",
                          autotune="skipped", ncu="skipped"), data["stages"]
    assert data["stages"]["ncu"]["note"] == data["stages"]["autotune"]["note"] == "skipped: no CUDA"
    assert data["stages"]["compile"]["note"] == "skipped: no CUDA"
    assert data["finished"] and data["smoke"] and data["install"]["ran"] is False
    assert (data["tests"]["passed"], data["tests"]["failed"], data["tests"]["not_run"]) == (1, 0, 0)
    assert data["tests"]["skipped"] >= 1  # the gpu-marked test in the smoke selection
    env = data["environment"]
    assert env["torch"] == torch.__version__ and len(env["source_sha256"]) == 64
    assert data["ceilings"]["copy_gbps"] > 0 and data["ceilings"]["matmul_tflops"] > 0
    # the configs stage: the smoke problem's reference round and one forced config per launch, all right
    configs = data["configs"]
    assert (configs["ok"], configs["mismatch"], configs["failed"], configs["restarts"]) == (configs["rounds"], 0, 0, 0)
    assert configs["rounds"] >= 4 and configs["problems"] == 1
    with open(out / "configs.csv", newline="") as f:
        rounds = list(csv.DictReader(f))
    assert {r["kernel"] for r in rounds} >= {"conv2d_fwd_kernel", "conv2d_dgrad_kernel", "conv2d_wgrad_kernel"}
    assert all(r["device"] == "cpu" and r["gpu"] == "interpreter" for r in rounds)
    assert any(line.startswith("configs (every shipped config forced") for line in data["summary"])
    with open(out / "quick.csv", newline="") as f:
        quick = list(csv.DictReader(f))
    assert {r["provider"] for r in quick} == {"convtri", "torch-cpu"} and all(r["ok"] == "True" for r in quick)
    assert all(r["ms_graph"] == "" for r in quick)  # no graphs without CUDA
    assert "skipped: no CUDA" in stdout
    _printed_last(stdout, data["summary"])
    assert data["summary"][-1] in (out / "session.log").read_text()


def test_tiny_budget_stops_in_time(tmp_path):
    """With 8 s for everything, stages are cut or skipped, the run ends in time, and its files
    are written all the same."""
    budget = 8
    stdout, elapsed, data = _session(tmp_path / "out", "--budget-s", str(budget))
    assert elapsed < budget + 2, elapsed  # the session's own interpreter start-up on top
    assert data["finished"] and data["elapsed_s"] <= budget
    assert list(data["stages"]) == STAGES
    assert {stage["status"] for stage in data["stages"].values()} & {"stopped", "skipped"}
    assert (tmp_path / "out" / "session.log").exists()
    _printed_last(stdout, data["summary"])


# ----------------------------------------------------------------------------- GPU-only parts, faked

NCU_RAW = '''==PROF== Connected to process 123
"ID","Process ID","Kernel Name","gpu__time_duration.sum","sm__throughput.avg.pct_of_peak_sustained_elapsed","gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed","launch__registers_per_thread"
"","","","usecond","%","%","register/thread"
"0","123","conv2d_fwd_kernel","1,234.567","45.5","12.25","168"
"1","123","conv2d_wgrad_kernel","20","30","50","128"
"2","123","max_pool2d_fwd_kernel","8","10","80.5","40"
'''


def test_ncu_rows_from_raw_csv():
    rows = gpu_session.ncu_rows(NCU_RAW, "metrics")
    assert [(r["case"], r["kernel"]) for r in rows] == [("vgg_fwd", "conv2d_fwd_kernel"),
                                                         ("rn50_3x3_wgrad", "conv2d_wgrad_kernel"),
                                                         ("stem_maxpool_fwd", "max_pool2d_fwd_kernel")]
    first = rows[0]
    assert first["duration_us"] == pytest.approx(1234.567) and first["sm_pct"] == 45.5 and first["registers"] == 168
    assert first["tensor_gmma_pct"] is None  # not collected: left empty
    assert gpu_session.ncu_rows("==ERROR== LibraryNotLoaded\n", "metrics") == []


def _conv_row(op="fwd"):
    return dict(provider="convtri", kind="conv", shape="vgg16_56_256to256", op=op, dtype="fp16", layout="nhwc")


def test_autotune_record_from_triton_autotuner(tmp_path, monkeypatch):
    """Without convtri._launch.autotune_record, a wrapper around Autotuner.run notes each key
    benchmarked: the kernel, the key, the best config and every config's median time."""
    from triton.runtime.autotuner import Autotuner
    import convtri._launch
    monkeypatch.delattr(convtri._launch, "autotune_record", raising=False)

    def conv2d_fwd_kernel():
        pass

    def fake_run(tuner, *args, **kwargs):  # what Autotuner.run leaves behind after benchmarking a new key
        if args[0] not in tuner.cache:
            tuner.configs_timings = {"BLOCK_M: 64": [0.5, 0.4, 0.6], "BLOCK_M: 32": [float("inf")] * 3}
            tuner.cache[args[0]] = "BLOCK_M: 64"
    monkeypatch.setattr(Autotuner, "run", fake_run)
    recorder = gpu_session.AutotuneRecorder(str(tmp_path / "autotune.json"))
    tuner = SimpleNamespace(cache={}, base_fn=conv2d_fwd_kernel)
    Autotuner.run(tuner, (32, 256, "torch.float16"))
    recorder.on_row(_conv_row("fwd"))
    Autotuner.run(tuner, (32, 256, "torch.float16"))  # cached: nothing new
    recorder.on_row(_conv_row("dgrad"))
    saved = json.loads((tmp_path / "autotune.json").read_text())
    assert saved["source"] == "triton Autotuner.run wrapper"
    first, second = saved["records"]
    assert first == dict(point="vgg16_56_256to256 fwd fp16 nhwc", kernel="conv2d_fwd_kernel",
                         key=[32, 256, "torch.float16"], best="BLOCK_M: 64",
                         timings_ms={"BLOCK_M: 64": 0.5, "BLOCK_M: 32": None})
    assert second["point"].endswith("dgrad fp16 nhwc") and "no new tuning" in second["note"]


def test_autotune_record_from_convtri(tmp_path, monkeypatch):
    """Where convtri provides autotune_record(), its records are taken, each once."""
    import convtri._launch
    record = dict(kernel="conv2d_wgrad_kernel", key=[1, 2], best="cfg", timings_ms={"cfg": 0.1})
    monkeypatch.setattr(convtri._launch, "autotune_record", lambda: [record], raising=False)
    recorder = gpu_session.AutotuneRecorder(str(tmp_path / "autotune.json"))
    recorder.on_row(_conv_row("wgrad"))
    recorder.on_row(_conv_row("wgrad"))
    saved = json.loads((tmp_path / "autotune.json").read_text())
    assert saved["source"] == "convtri._launch.autotune_record()"
    assert saved["records"][0] == dict(record, point="vgg16_56_256to256 wgrad fp16 nhwc")
    assert "no new tuning" in saved["records"][1]["note"]


def _item(file, name, device=None, gpu=False, **params):
    return SimpleNamespace(path=SimpleNamespace(name=file), originalname=name, name=name,
                           callspec=SimpleNamespace(params=dict(params, **({"device": device} if device else {}))),
                           get_closest_marker=lambda marker: object() if gpu and marker == "gpu" else None)


def test_stream_under_xdist_is_written_by_the_main_process(tmp_path):
    """The GPU machines run the tests stage in pytest-xdist processes: each worker selects the
    same tests and the main process writes every outcome to the one CSV."""
    pytest.importorskip("xdist")  # not a CI dependency; the GPU machines have it
    csv_path, selected = tmp_path / "tests.csv", tmp_path / "selected.json"
    result = subprocess.run([sys.executable, "-m", "pytest", "tests/test_pool2d.py", "-p", "pytest_stream", "-n", "2",
                             "--stream-csv", str(csv_path), "--stream-select", "full", "--stream-device", "cpu",
                             "--stream-selected", str(selected), "-k", "parity_low_precision and max", "-q",
                             "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=str(PERF)))
    assert result.returncode == 0, result.stdout[-3000:]
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == len({r["nodeid"] for r in rows}) == 3  # max pooling in fp32, fp16, bf16, once each
    assert {r["outcome"] for r in rows} == {"passed"}
    assert all(r["nodeid"].startswith("tests/test_pool2d.py::test_parity_low_precision[cpu-max") for r in rows)
    assert json.loads(selected.read_text())  # written once, by the first worker


def test_full_selection_on_cuda():
    """Parity cases on CUDA first (low precision, then channels_last), then gpu-marked tests,
    then float64 parity; CPU cases and the rest are not selected."""
    rank = lambda item: pytest_stream.rank(item, "full", "cuda")
    assert rank(_item("test_pool2d.py", "test_parity_low_precision", "cuda")) == 0
    assert rank(_item("test_conv2d.py", "test_parity_low_precision", "cuda")) == 1
    assert rank(_item("test_conv_transpose2d.py", "test_memory_formats_follow_torch", "cuda")) == 5
    assert rank(_item("test_hardening.py", "test_second_gpu", gpu=True)) == 6
    assert rank(_item("test_conv2d.py", "test_parity_float64", "cuda")) == 7
    assert rank(_item("test_conv2d.py", "test_parity_low_precision", "cpu")) is None
    assert rank(_item("test_conv2d.py", "test_gradcheck", "cuda")) is None
    smoke = _item("test_pool2d.py", "test_parity_low_precision", "cpu", op="max", dtype=torch.float32)
    assert pytest_stream.rank(smoke, "smoke", "cpu") == 0
    assert pytest_stream.rank(_item("test_pool2d.py", "test_parity_low_precision", "cpu", op="avg",
                                    dtype=torch.float32), "smoke", "cpu") is None


def test_compile_stage_compiles_for_the_gpu_the_env_stage_found(tmp_path, monkeypatch):
    """The compile stage runs perf/precompile.py for the capability and SM count in the
    environment (here an H100's, compiled on this CPU), the configs table's compiles first,
    and reports what it did when its share ends before the ~900 + ~550 compiles do. (Its 12 s
    hold the start of a process importing torch and Triton: 6 s on a busy 2-core machine.)"""
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))
    lines = []
    session = SimpleNamespace(scratch=str(tmp_path), log=lambda text, echo_prefix="": lines.append(text),
                              data=dict(environment=dict(capability="9.0", sm_count=132)))
    stage = next(s for s in gpu_session.STAGES if s.name == "compile")
    start = time.time()
    result = gpu_session.Session.stage_compile(session, stage, gpu_session.now() + 12)
    assert time.time() - start < 13
    assert result["status"] == "stopped" and result["note"].endswith("compiled, 0 failed"), (result, lines)
    record = session.data["compile"]
    assert (record["arch"], record["suite"], record["finished"]) == (90, "quick", False)
    assert record["units"] > record["table_units"] > 100 > record["compiled"]


def test_counts_take_each_tests_worst_outcome():
    rows = [dict(nodeid="a", outcome="passed"), dict(nodeid="b", outcome="failed"),
            dict(nodeid="c", outcome="passed"), dict(nodeid="c", outcome="error"),  # a teardown error
            dict(nodeid="d", outcome="skipped")]
    counts = gpu_session.count_outcomes(rows, selected=["a", "b", "c", "d", "e", "f"])
    assert (counts["passed"], counts["failed"], counts["error"], counts["skipped"]) == (1, 1, 1, 1)
    assert counts["not_run"] == 2 and counts["failures"] == ["b", "c"]


def test_summary_fits_in_60_lines(tmp_path):
    """A GPU-shaped session with many failures and every table full still prints at most 60
    lines, with the speedups per op and dtype, the overhead table and the lenet modes."""
    def write(name, rows):
        with open(tmp_path / name, "w", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    quick = []
    for kind, ops in (("conv", ("fwd", "dgrad", "wgrad")), ("pool", ("fwd", "bwd"))):
        for op in ops:
            for dtype in ("fp16", "bf16", "fp32"):
                for provider, speedup in (("cudnn", 1.0), ("convtri", 0.25)):
                    quick.append(dict(provider=provider, baseline="cudnn", kind=kind, op=op, dtype=dtype,
                                      tf32=str(dtype == "fp32"), ok="True", speedup=speedup, speedup_graph=0.5,
                                      host_us=150 if provider == "convtri" else 8))
    write("quick.csv", quick)
    write("overhead.csv", [dict(op=op, mode=mode, provider=provider, us=10.0, launches=2, **{"pass": p})
                           for op in ("conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d")
                           for p in ("fwd", "bwd", "fwdbwd") for mode in ("eager", "graph", "meta")
                           for provider in ("convtri", "torch")])
    write("lenet.csv", [dict(variant=v, mode=m, examples_per_s=1e5, vs_torch_eager=1.5, note="")
                        for v in ("d2l", "modern") for m in ("torch-eager", "ours-eager", "ours-graph")])
    data = dict(budget_s=480, elapsed_s=470, environment=dict(gpu="NVIDIA H200", sm_count=132),
                ceilings=dict(copy_gbps=4300, matmul_tflops=790), stages={s: dict(status="ok", seconds=1) for s in STAGES},
                tests=dict(select="full on cuda", passed=100, failed=30, failures=[f"tests/t.py::f[{i}]" for i in range(30)],
                           selected=140, not_run=10),
                compile=dict(compiled=512, units=1660, table_units=900, arch=90, jobs=16, seconds=55.0, finished=False),
                configs=dict(rounds=1000, problems=20, ok=990, mismatch=8, failed=2, restarts=1,
                             failures=[f"mismatch conv2d_fwd_kernel {i}x64x32 w8 s3: even_blocks fp16 y"
                                       for i in range(10)]),
                ncu=dict(status="ok", kernels=[dict(case="vgg_fwd", kernel="conv2d_fwd_kernel", duration_us=900,
                                                    sm_pct=40, dram_pct=10, tensor_gmma_pct=30, tensor_hmma_pct=0)]),
                files=["quick.csv"])
    lines = gpu_session.summary_lines(data, str(tmp_path))
    text = "\n".join(lines)
    assert len(lines) <= 60, text
    for expected in ("conv wgrad fp16", "pool bwd bf16", "conv fwd fp32/tf32", "0.25x", "0.5x", "conv_transpose2d bwd",
                     "ours-graph 100000 (1.5x)", "4300 GB/s", "790 TFLOP/s", "30 failed", "... and 24 more", "vgg_fwd",
                     "compile: 512 of 1660 kernels (900 of the configs table, then the quick suite's) precompiled for sm_90 "
                     "over 16 processes in 55.0 s",
                     "1000 rounds over 20 problem/dtype pairs: 990 ok, 8 mismatched, 2 failed, 1 restarts",
                     "  mismatch conv2d_fwd_kernel 1x64x32 w8 s3: even_blocks fp16 y",
                     "... and 8 more configs (session.json, configs.csv)"):
        assert expected in text, (expected, text)


def test_plot_session_folder(tmp_path):
    """perf/plot.py --session turns a GPU-shaped session folder (made-up numbers, test data
    only) into the results folder: its files, plots and a README with every table. Rows
    without the graph columns (an older CSV) read as unmeasured."""
    from test_perf import PNG_MAGIC, _gpu_rows
    sweep, rows = _gpu_rows()
    plot = _load("plot")
    folder = tmp_path / "session"
    folder.mkdir()
    with sweep.CsvWriter(folder / "quick.csv") as sink:
        for i, row in enumerate(rows):
            graph = dict(ms_graph=row["ms"] / 2, speedup_graph=2 * row["speedup"], host_us=row["ms"] * 500) if i % 2 else {}
            sink(dict(row, suite="quick", **graph))

    def write(name, table):
        with open(folder / name, "w", newline="") as f:
            writer = csv.DictWriter(f, list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    write("overhead.csv", [dict(op="conv2d", mode=mode, provider=provider, us=us, ratio=3.0 if provider == "convtri" else 1,
                                launches=3 if provider == "convtri" else 1, **{"pass": "bwd"})
                           for mode in ("eager", "graph") for provider, us in (("convtri", 90.0), ("torch", 30.0))])
    write("lenet.csv", [dict(variant="d2l", mode=m, examples_per_s=v, step_ms=1.0, vs_torch_eager=v and v / 2e5, note=n)
                        for m, v, n in (("torch-eager", 2e5, ""), ("ours-eager", 5e4, ""), ("torch-compile", "", "failed: X"))])
    write("tests.csv", [dict(nodeid="tests/test_conv2d.py::test_x[cuda]", outcome="failed", when="call", seconds=1,
                             message="boom")])
    write("ncu.csv", [dict(case="vgg_fwd", kernel="conv2d_fwd_kernel", duration_us=900, sm_pct=40, dram_pct=10,
                           tensor_gmma_pct=30, tensor_hmma_pct=0, warps_active_pct=20, registers=168)])
    record = dict(point="vgg16_56_256to256 fwd fp16 nhwc", kernel="conv2d_fwd_kernel", key=[32], best="BLOCK_M: 64",
                  timings_ms={"BLOCK_M: 64": 0.5, "BLOCK_M: 32": 0.9})
    session = dict(command="python3 perf/gpu_session.py --out x", started="2026-01-01T00:00:00+00:00", budget_s=480,
                   elapsed_s=470, smoke=False, summary=["SUMMARY line"], stages={"env": dict(status="ok", seconds=9)},
                   environment=dict(gpu="NVIDIA H200", slug="nvidia-h200", commit="0" * 40, sm_count=132),
                   ceilings=dict(copy_gbps=4300, matmul_tflops=790, matmul="bfloat16 8192^3 matmul"),
                   tests=dict(select="full on cuda", passed=10, failed=1, failures=["tests/test_conv2d.py::test_x[cuda]"]),
                   configs=dict(rounds=837, problems=20, ok=836, mismatch=1, failed=0,
                                failures=["mismatch conv2d_fwd_kernel 128x256x64 GROUP_M=8 w8 s3: even_blocks fp16 y"]),
                   autotune=dict(source="triton Autotuner.run wrapper", records=[record]))
    (folder / "session.json").write_text(json.dumps(session))
    out = tmp_path / "results"
    plot.main(["--session", str(folder), "--out-dir", str(out)])
    for png in ("speedup_quick.png", "graph_speedup.png", "roofline.png", "summary.png", "overhead.png",
                "lenet_step.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC, png
    assert {"session.json", "quick.csv", "overhead.csv", "lenet.csv", "tests.csv", "ncu.csv"} <= {p.name for p in out.iterdir()}
    readme = (out / "README.md").read_text()
    for expected in ("# convtri GPU session: NVIDIA H200", "SUMMARY line", "4300 GB/s", "790 TFLOP/s",
                     "FAILED `tests/test_conv2d.py::test_x[cuda]`", "Graph replay:",
                     "837 rounds over 20 problem/dtype pairs: 836 ok, 1 mismatched, 0 failed",
                     "- mismatch conv2d_fwd_kernel 128x256x64 GROUP_M=8 w8 s3: even_blocks fp16 y", "| conv2d | bwd | eager | 90.0 | 30.0 | 3.00 | 3 / 1 |",
                     "| d2l | torch-compile | - |", "| vgg16_56_256to256 fwd fp16 nhwc | conv2d_fwd_kernel | BLOCK_M: 64 | 2 | 0.5000 | 0.9000 |",
                     "| vgg_fwd | conv2d_fwd_kernel | 900 | 40 | 10 | 30 |"):
        assert expected in readme, expected
    assert "SMOKE" not in readme


# ----------------------------------------------------------------------------- the configs stage, faults, install

FAKE_RUNNER = """
import csv, os, sys
args = sys.argv[1:]
path = args[args.index("--csv") + 1]
runs = os.path.join(os.path.dirname(path), "runs")
run = len(open(runs).read()) if os.path.exists(runs) else 0
open(runs, "a").write("x")
columns = ["problem", "dtype", "round", "kernel", "config", "status", "outputs", "note", "device"]
new = not os.path.exists(path)
with open(path, "a", newline="") as f:
    writer = csv.DictWriter(f, columns)
    if new:
        writer.writeheader()
    print("@@round even_blocks / fp16 / #0 conv2d_fwd_kernel 128x256x64 GROUP_M=8 w8 s3", flush=True)
    if run == 0:  # an illegal address: the runner writes the round's row and exits with STICKY_EXIT
        writer.writerow(dict(problem="even_blocks", dtype="fp16", status="failed",
                             round="#0 conv2d_fwd_kernel 128x256x64 GROUP_M=8 w8 s3",
                             note="RuntimeError: CUDA error (the CUDA context is lost)"))
        sys.exit(3)
    print("@@round even_blocks / fp16 / #1 conv2d_dgrad_kernel 64x64x32 w4 s4", flush=True)
    if run == 1:  # the process dies in that round, writing nothing
        os._exit(9)
    writer.writerow(dict(problem="even_blocks", dtype="fp16", round="#2 conv2d_wgrad_kernel 32x16x16 w2 s3",
                         status="mismatch", outputs="dw", note="dw: Greatest absolute difference: 3.5"))
print("@@finished", flush=True)
"""


def test_configs_stage_restarts_after_a_lost_context(tmp_path, monkeypatch):
    """Where a kernel breaks the runner's CUDA context (it exits with STICKY_EXIT after writing
    the round) or its process dies (the round in flight gets a row), the runner starts again on
    the rounds left; the stage counts and lists what failed or mismatched."""
    runner = tmp_path / "runner.py"
    runner.write_text(FAKE_RUNNER)
    monkeypatch.setattr(gpu_session, "SHIPPED_CONFIGS", str(runner))
    lines = []
    session = SimpleNamespace(path=dict(configs=str(tmp_path / "configs.csv")), log=lambda text, echo_prefix="":
                              lines.append(text), smoke=False, data={}, device_or_guess=lambda: "cuda")
    stage = next(s for s in gpu_session.STAGES if s.name == "configs")
    result = gpu_session.Session.stage_configs(session, stage, gpu_session.now() + 60)
    assert result == dict(status="ok", note="3 rounds, 1 mismatched, 2 failed, 2 restarts"), lines
    configs = session.data["configs"]
    assert (configs["rounds"], configs["ok"], configs["runner_status"]) == (3, 0, 0)
    assert configs["failures"] == [  # a line per config
        "failed conv2d_fwd_kernel 128x256x64 GROUP_M=8 w8 s3: even_blocks fp16 RuntimeError: CUDA error (the CUDA "
        "context is lost)", "failed conv2d_dgrad_kernel 64x64x32 w4 s4: even_blocks fp16 the process died (status 9)",
        "mismatch conv2d_wgrad_kernel 32x16x16 w2 s3: even_blocks fp16 dw"]
    assert gpu_session.STICKY_EXIT == _load("shipped_configs").STICKY_EXIT
    text = "\n".join(gpu_session._configs_lines(configs))
    assert "3 rounds over 1 problem/dtype pairs: 0 ok, 1 mismatched, 2 failed, 2 restarts" in text


def test_configs_runner_that_cannot_start_is_not_restarted(tmp_path, monkeypatch):
    """A runner that ends before its first round (an import error) would end so again: the stage
    fails at once, saying how the runner exited."""
    runner = tmp_path / "runner.py"
    runner.write_text("import sys; print('ModuleNotFoundError: No module named shipped'); sys.exit(1)")
    monkeypatch.setattr(gpu_session, "SHIPPED_CONFIGS", str(runner))
    session = SimpleNamespace(path=dict(configs=str(tmp_path / "configs.csv")), log=lambda *args, **kwargs: None,
                              smoke=False, data={}, device_or_guess=lambda: "cuda")
    stage = next(s for s in gpu_session.STAGES if s.name == "configs")
    result = gpu_session.Session.stage_configs(session, stage, gpu_session.now() + 60)
    assert result == dict(status="failed", note="the runner exited with status 1; 0 rounds, 0 mismatched, 0 failed")
    assert session.data["configs"]["restarts"] == 0


class FakeWorker:
    """A worker whose stage ends with a sticky CUDA error (a kernel's illegal address)."""
    started = []

    def __init__(self, session):
        self.session, self.info = session, dict(device="cuda")
        self.child = SimpleNamespace(alive=lambda: True, kill=lambda: self.killed.append(True))
        self.killed = []
        FakeWorker.started.append(self)

    def run(self, stage, deadline, **options):
        error = "RuntimeError: CUDA error: an illegal memory access was encountered" if stage == "quick" else None
        gpu_session.write_json(os.path.join(self.session.scratch, f"{stage}.json"),
                               dict(status="ok", rows=3, cuda_error=error))
        return True


def test_a_worker_with_a_cuda_error_is_replaced(tmp_path, monkeypatch):
    """A worker whose CUDA context reports an error after a stage is ended, and the next stage
    starts a new one (a sticky error would fail all of its later stages)."""
    monkeypatch.setattr(gpu_session, "Worker", FakeWorker)
    FakeWorker.started.clear()
    session = gpu_session.Session(gpu_session.parse_args(["--device", "cuda", "--out", str(tmp_path), "--no-install"]))
    stages = {s.name: s for s in gpu_session.STAGES}
    session.run_stage(stages["quick"], gpu_session.now() + 5)
    assert session.worker is None and FakeWorker.started[0].killed == [True]
    assert session.data["stages"]["quick"]["note"] == ("its CUDA context reports RuntimeError: CUDA error: an illegal "
                                                       "memory access was encountered: the worker is replaced")
    assert session.data["quick"] == dict(status="ok", rows=3, note=session.data["stages"]["quick"]["note"])
    session.run_stage(stages["overhead"], gpu_session.now() + 5)
    assert len(FakeWorker.started) == 2 and session.worker is FakeWorker.started[1]  # healthy: kept
    session.log_file.close()


def test_cuda_context_error(monkeypatch):
    """The worker's check after each stage: a sticky error makes every CUDA call raise."""
    def sticky():
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nCUDA kernel errors ...")
    monkeypatch.setattr(torch.cuda, "synchronize", sticky)
    error = gpu_session.cuda_context_error("cuda")
    assert error == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert gpu_session.cuda_context_error("cpu") is None
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    assert gpu_session.cuda_context_error("cuda") is None


def test_failed_install_stops_the_session(tmp_path, monkeypatch, capsys):
    """Nothing imports convtri without the install: its failure ends the session at once, with
    a one-line reason, after writing what it has (session.json, the log, the summary)."""
    monkeypatch.setattr(gpu_session.importlib.util, "find_spec", lambda name: None)  # convtri not importable here
    monkeypatch.setattr(gpu_session, "INSTALL", ["-c", "print('Processing /repo'); print('ERROR: Could not build "
                                                       "wheels for convtri'); raise SystemExit(1)"])
    data = gpu_session.Session(gpu_session.parse_args(["--device", "cpu", "--smoke", "--out", str(tmp_path)])).run()
    reason = "pip install failed (status 1): ERROR: Could not build wheels for convtri"
    assert data["stopped"] == reason and data["stages"] == {} and data["finished"]
    assert data["install"]["status"] == 1
    saved = json.loads((tmp_path / "session.json").read_text())
    assert saved["stopped"] == reason and f"STOPPED: {reason}" in saved["summary"]
    _printed_last(capsys.readouterr().out, saved["summary"])
    assert f"== stopped: {reason}" in (tmp_path / "session.log").read_text()
