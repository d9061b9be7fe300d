from datetime import timedelta
from typing import NamedTuple

import pytest
import torch
from hypothesis import HealthCheck, settings

from convtri._dispatch import clear_plans
from convtri._launch import Launch

# Property tests (tests/test_properties.py): "ci", the default, keeps the suite to minutes
# with a fixed, reproducible budget; `--hypothesis-profile=long` runs thousands of examples.
settings.register_profile("ci", max_examples=25, deadline=timedelta(seconds=20), derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("long", max_examples=2000, deadline=timedelta(seconds=60),
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile("ci")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run the tests marked slow")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def fresh_plans():
    """Plans built afresh in the test and forgotten after it: for tests that change what a
    plan is built from (convtri/_dispatch.py caches one per call signature)."""
    clear_plans()
    yield
    clear_plans()


class Seen(NamedTuple):
    """A tensor a kernel was given, as data: holding the tensor itself would change what
    autograd does (it copies a gradient that something else still references)."""
    data_ptr: int
    shape: tuple
    stride: tuple
    dtype: torch.dtype

    def meta(self):
        """A meta tensor of the same sizes, strides and dtype, for torch's layout queries."""
        return torch.empty_strided(self.shape, self.stride, dtype=self.dtype, device="meta")


@pytest.fixture
def launches(monkeypatch):
    """Every kernel launch our ops make, as (kernel name, [Seen tensor, ...])."""
    calls = []
    launch = Launch.__call__

    def record(self, *tensors):
        calls.append((self.kernel.__name__, [Seen(t.data_ptr(), tuple(t.shape), t.stride(), t.dtype) for t in tensors]))
        return launch(self, *tensors)
    monkeypatch.setattr(Launch, "__call__", record)
    return calls


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param
