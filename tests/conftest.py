from datetime import timedelta

import pytest
import torch
from hypothesis import HealthCheck, settings

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


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param
