"""PyTorch's own OpInfo samples (torch.testing._internal.common_methods_invocations.op_db) for
our ops: every sample input's output and gradients against torch's in float64 on CPU, and every
error input raising torch's exception type. max_pool2d has 1,440 samples: every 40th runs in the
default suite, all of them with --runslow."""
import functools

import pytest
import torch

import convtri
from tolerances import assert_close

op_db = pytest.importorskip("torch.testing._internal.common_methods_invocations").op_db
# Importing torch's test internals freezes torch.backends' flags (common_utils calls
# torch.backends.disable_global_flags()) for the whole process: thaw them, so that the rest of
# the suite may set cudnn flags as users do
torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True
assert not torch.backends.flags_frozen()

OURS = {"nn.functional.conv1d": convtri.conv1d, "nn.functional.conv2d": convtri.conv2d,
        "nn.functional.conv_transpose2d": convtri.conv_transpose2d, "nn.functional.max_pool2d": convtri.max_pool2d,
        "nn.functional.avg_pool2d": convtri.avg_pool2d,
        "nn.functional.adaptive_avg_pool2d": convtri.adaptive_avg_pool2d}
INFOS = {info.name: info for info in op_db if info.name in OURS and not info.variant_test_name}
DEFAULT_EVERY = {"nn.functional.max_pool2d": 40}  # the default suite's share of the samples; --runslow: all
CPU = torch.device("cpu")
REDUCTION = 64  # tolerance's reduction length: the samples' sums are short


def _samples():
    for name, info in INFOS.items():
        every = DEFAULT_EVERY.get(name, 1)
        for i, _ in enumerate(info.sample_inputs(CPU, torch.float64)):
            marks = [] if i % every == 0 else [pytest.mark.slow]
            yield pytest.param(name, i, marks=marks, id=f"{name.split('.')[-1]}-{i}")


def _tensors(sample):
    return [t for t in (sample.input, *sample.args, *sample.kwargs.values()) if isinstance(t, torch.Tensor)]


def _run(fn, sample):
    """(outputs, gradients of the first output w.r.t. every tensor that requires grad)."""
    out = fn(sample.input, *sample.args, **sample.kwargs)
    outs = out if isinstance(out, tuple) else (out,)
    leaves = [t for t in _tensors(sample) if t.requires_grad]
    dy = torch.randn(outs[0].shape, dtype=outs[0].dtype, generator=torch.Generator().manual_seed(0))
    grads = torch.autograd.grad(outs[0], leaves, dy, allow_unused=True) if leaves and outs[0].numel() else []
    return [o.detach() for o in outs], list(grads)


@functools.cache
def samples_of(name):
    """The op's samples, made once (max_pool2d's take half a second): gradients are taken with
    torch.autograd.grad, which leaves the inputs as they were."""
    return list(INFOS[name].sample_inputs(CPU, torch.float64, requires_grad=True))


@pytest.mark.parametrize("name, index", list(_samples()))
def test_sample(name, index):
    info = INFOS[name]
    sample = samples_of(name)[index]
    want = _run(info.op, sample)
    got = _run(OURS[name], sample)
    for a, b in zip(got[0] + got[1], want[0] + want[1]):
        if b is None:
            assert a is None or not a.any()
        elif b.dtype == torch.int64:  # max pooling's indices
            assert torch.equal(a, b)
        else:
            assert_close(a, b, REDUCTION)


def _errors():
    for name, info in INFOS.items():
        if info.error_inputs_func is not None:
            for i, _ in enumerate(info.error_inputs(CPU)):
                yield pytest.param(name, i, id=f"{name.split('.')[-1]}-{i}")


@pytest.mark.parametrize("name, index", list(_errors()))
def test_error_input(name, index):
    error = list(INFOS[name].error_inputs(CPU))[index]
    sample = error.sample_input
    with pytest.raises(error.error_type):
        OURS[name](sample.input, *sample.args, **sample.kwargs)
