"""A pytest plugin for perf/gpu_session.py's native-test stage: it selects the session's tests
and writes one CSV row per test outcome as soon as it is known, so that a run killed at its
time cap keeps every result so far.

    PYTHONPATH=perf python -m pytest tests/ -p pytest_stream --stream-csv tests.csv --stream-select full

``--stream-select full``: the parity subset on ``--stream-device`` (cuda by default) first
(conv forward, dgrad and wgrad, conv_transpose2d and the three poolings, in fp32, fp16 and
bf16, then channels_last), then every test marked ``gpu``, then, as time allows, the float64
parity cases. ``--stream-select smoke``: one parity case and the gpu-marked tests (skipped
without a GPU), to exercise the machinery.

Under pytest-xdist (``-n N``) the workers select the same tests in the same order and the main
process, which receives every report, writes the CSV.
"""
import csv
import json

# (test file, test function) whose cases on the session's device are selected, by priority.
# Pooling first: no autotuning, so its cases take a second each, where a convolution's first
# case per dtype compiles and times every autotune config.
PARITY = [
    # forward and every gradient in fp32, fp16 and bf16 (NCHW)
    ("test_pool2d.py", "test_parity_low_precision"),
    ("test_conv2d.py", "test_parity_low_precision"),
    ("test_conv_transpose2d.py", "test_parity_low_precision"),
    # channels_last in, channels_last out, forward and gradients (float64)
    ("test_pool2d.py", "test_channels_last"),
    ("test_conv2d.py", "test_channels_last"),
    ("test_conv_transpose2d.py", "test_memory_formats_follow_torch"),
]
FLOAT64 = [("test_conv2d.py", "test_parity_float64"), ("test_conv_transpose2d.py", "test_parity_float64"),
           ("test_pool2d.py", "test_parity_float64")]
SMOKE = ("test_pool2d.py", "test_parity_low_precision", dict(op="max", dtype="torch.float32"))
COLUMNS = ["nodeid", "outcome", "when", "seconds", "message"]


def pytest_addoption(parser):
    group = parser.getgroup("stream", "perf/gpu_session.py's test stage")
    group.addoption("--stream-csv", help="write one row per test outcome here, flushed as it comes")
    group.addoption("--stream-select", choices=["full", "smoke"], help="select the session's tests")
    group.addoption("--stream-device", choices=["cuda", "cpu"], default="cuda", help="the device of the parity cases")
    group.addoption("--stream-selected", help="write the selected node ids here (JSON), in order")


def rank(item, select, device):
    """Where ``item`` runs in the session (lower first), or None when it is not selected."""
    params = item.callspec.params if hasattr(item, "callspec") else {}
    test = (item.path.name, getattr(item, "originalname", item.name))
    on_device = params.get("device") == device
    gpu = item.get_closest_marker("gpu") is not None
    if select == "smoke":
        wanted = test == SMOKE[:2] and all(str(params.get(k)) == v for k, v in SMOKE[2].items())
        return 0 if wanted and on_device else (1 if gpu else None)
    if on_device and test in PARITY:
        return PARITY.index(test)
    if gpu:
        return len(PARITY)
    if on_device and test in FLOAT64:
        return len(PARITY) + 1
    return None


def pytest_collection_modifyitems(session, config, items):
    select = config.getoption("--stream-select")
    if not select:
        return
    device = config.getoption("--stream-device")
    ranked = [(rank(item, select, device), i, item) for i, item in enumerate(items)]
    kept = sorted((r, i, item) for r, i, item in ranked if r is not None)
    deselected = [item for r, _, item in ranked if r is None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = [item for _, _, item in kept]
    path = config.getoption("--stream-selected")
    if path and _worker_id(config) in (None, "gw0"):  # under pytest-xdist every worker selects the same
        with open(path, "w") as f:
            json.dump([item.nodeid for item in items], f)


class _Stream:
    def __init__(self, path):
        self.file = open(path, "w", newline="")
        self.writer = csv.writer(self.file)
        self.writer.writerow(COLUMNS)
        self.file.flush()

    def pytest_runtest_logreport(self, report):
        outcome = _outcome(report)
        if outcome is None:
            return
        self.writer.writerow([report.nodeid, outcome, report.when, f"{report.duration:.3f}", _message(report)])
        self.file.flush()


def _outcome(report):
    """The test's outcome from this phase's report, or None when the phase says nothing new
    (a passing setup or teardown)."""
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            return "xfailed" if report.skipped else "xpassed"
        return report.outcome
    if report.skipped:
        return "skipped"
    return "error" if report.failed else None


def _message(report):
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[-1])[:300]
    if report.failed:
        text = report.longreprtext
        errors = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
        return " | ".join(errors[:3] or text.strip().splitlines()[-1:])[:300]
    return ""


def _worker_id(config):
    """The pytest-xdist worker this process is ("gw0", ...), None in the main process."""
    return getattr(config, "workerinput", {}).get("workerid")


def pytest_configure(config):
    path = config.getoption("--stream-csv")
    if path and _worker_id(config) is None:  # the main process, which sees every worker's reports
        config.pluginmanager.register(_Stream(path), "stream-csv")
