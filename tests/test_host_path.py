"""How a call is made (issue 13): a plan per call signature, checked once; eager calls that
bypass the dispatcher and give what the custom ops give, bit for bit; and CUDA launches bound
once to the compiled kernel, with the very arguments Triton's JIT would pass."""
import inspect
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import convtri
from convtri import _launch
from convtri._launch import Bound, Launch
from convtri.conv_launch import ConvGeometry, Dgrad, Forward, Wgrad
from convtri.depthwise_launch import DepthwiseDgrad, DepthwiseForward, DepthwiseWgrad
from convtri.kernels.activations import SILU
from convtri.kernels import conv2d as conv_kernels
from convtri.pool_launch import (FLAT_INDICES, WINDOW_OFFSETS, AvgBackward, AvgForward, MaxBackward, MaxForward,
                                 PoolGeometry)
from test_hardening import OP_NAMES, op_case

conv2d_module = sys.modules["convtri.conv2d"]
pool2d_module = sys.modules["convtri.pool2d"]
conv_transpose2d_module = sys.modules["convtri.conv_transpose2d"]
CHECKS = [(conv2d_module, "check_conv2d"), (conv2d_module, "check_tensors"), (conv2d_module, "conv2d_geometry"),
          (conv_transpose2d_module, "transposed_geometry"), (pool2d_module, "pool2d_geometry"),
          (pool2d_module, "adaptive_geometry"), (pool2d_module, "check_input")]


def forward_backward(name, tensors, kwargs):
    _, ours, _, _, _ = op_case(name)
    leaves = [t.detach().requires_grad_() for t in tensors]
    y = ours(*leaves, **kwargs)
    y.backward(torch.ones_like(y))
    return [y.detach()] + [t.grad for t in leaves]


@pytest.mark.parametrize("name", OP_NAMES)
def test_second_call_checks_nothing_and_builds_nothing(name, monkeypatch, fresh_plans):
    """The first call with a signature validates it and builds its plan and launches; a
    second call with the same signature (other tensors, same sizes and strides) does neither."""
    checks, built = [], []
    for module, check in CHECKS:
        original = getattr(module, check)
        monkeypatch.setattr(module, check, lambda *a, _check=check, _original=original, **k: (
            checks.append(_check), _original(*a, **k))[1])
    launch_init = Launch.__init__
    monkeypatch.setattr(Launch, "__init__", lambda self, *a, **k: (built.append(a[0].__name__),
                                                                   launch_init(self, *a, **k))[1])
    _, _, _, tensors, kwargs = op_case(name, dtype=torch.float32)
    forward_backward(name, tensors, kwargs)
    assert checks and built
    checks.clear()
    built.clear()
    forward_backward(name, [torch.randn_like(t) for t in tensors], kwargs)
    assert checks == [] and built == []


class PassThrough(TorchDispatchMode):
    """A dispatch mode that changes nothing but makes torch see every op: our public ops then
    take their custom-op route (torch.ops.convtri.*), forward and backward."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func._schema.name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", OP_NAMES)
def test_eager_route_and_custom_op_route_agree_bitwise(name, device):
    _, _, _, tensors, kwargs = op_case(name, device, torch.float32)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        eager = forward_backward(name, tensors, kwargs)
    with PassThrough() as mode:
        traced = forward_backward(name, tensors, kwargs)
    op = name.split()[0]
    assert f"convtri::{op}" in mode.ops and any(o.startswith(f"convtri::{op}") and o != f"convtri::{op}"
                                                for o in mode.ops)  # the forward op and a backward op
    assert not [e.name for e in profile.events() if e.name.startswith("convtri::")]  # no dispatcher on the way
    for a, b in zip(eager, traced):
        assert torch.equal(a, b)


def test_keys_do_not_confuse_equal_values_of_other_types(fresh_plans):
    # 1.0 and True equal 1 and hash alike: a plan cached for groups=1 or stride 1 must not
    # take them, since torch refuses them
    x, w = torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3)
    convtri.conv2d(x, w, stride=(1, 1), groups=1)
    with pytest.raises(TypeError, match="groups must be an int"):
        convtri.conv2d(x, w, stride=(1, 1), groups=1.0)
    with pytest.raises(TypeError, match="stride must be an int or a pair of ints"):
        convtri.conv2d(x, w, stride=(True, 1), groups=1)
    convtri.avg_pool2d(x, 2, divisor_override=1)
    with pytest.raises(TypeError, match="divisor_override must be an int or None"):
        convtri.avg_pool2d(x, 2, divisor_override=True)


def test_cached_plan_follows_tf32_setting(fresh_plans):
    # the dot precision is fixed in a plan: the cudnn.allow_tf32 flag is part of the key
    x, w = torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3)
    before = torch.backends.cudnn.allow_tf32
    try:
        for allow in (True, False):
            torch.backends.cudnn.allow_tf32 = allow
            convtri.conv2d(x, w)
        assert len(conv2d_module._PLANS) == 2
    finally:
        torch.backends.cudnn.allow_tf32 = before


# ----------------------------------------------------------------------------- bound launches

class FakeCompiled:
    """What Bound uses of Triton's CompiledKernel; its launcher records each call."""
    function, packed_metadata = "function", "packed metadata"

    def __init__(self):
        self.calls = []

    @property
    def run(self):
        return lambda *args: self.calls.append(args)

    def launch_metadata(self, grid, stream, *args):
        return "launch metadata"


def meta(*shape, fmt=torch.contiguous_format, dtype=torch.float16):
    return torch.empty(shape, device="meta", dtype=dtype).to(memory_format=fmt)


GEOM = ConvGeometry((2, 1), (1, 1, 0, 2), (1, 1), 2)
DEPTHWISE = ConvGeometry((2, 1), (1, 1, 0, 2), (1, 1), 2, "reflect")
POOL = PoolGeometry((9, 8), (5, 4), (3, 2), (2, 2), (1, 0), (1, 1))
GLOBAL = PoolGeometry((9, 8), (1, 1), adaptive=True)
CL = torch.channels_last
LAUNCHES = {  # name -> (launch, the tensors a call passes)
    "conv2d forward": lambda: (Forward(meta(2, 4, 9, 8), meta(6, 2, 3, 3), meta(6), GEOM).launch,
                               [meta(2, 4, 9, 8), meta(6, 2, 3, 3), meta(6), meta(2, 6, 5, 8), meta(2, 6, 5, 8)]),
    "depthwise forward": lambda: (DepthwiseForward(meta(2, 2, 9, 8, fmt=CL), meta(4, 1, 3, 3), meta(4), DEPTHWISE,
                                                   activation=SILU).saving_launch,
                                  [meta(2, 2, 9, 8, fmt=CL), meta(4, 1, 3, 3), meta(4), meta(2, 4, 5, 8, fmt=CL),
                                   meta(2, 4, 5, 8, fmt=CL)]),
    "depthwise dgrad": lambda: (DepthwiseDgrad(meta(2, 4, 5, 8), meta(4, 1, 3, 3), None, (2, 2, 9, 8),
                                               torch.contiguous_format, DEPTHWISE).launch,
                                [meta(2, 4, 5, 8), meta(2, 4, 5, 8), meta(4, 1, 3, 3), meta(2, 2, 9, 8),
                                 meta(2, 2, 9, 8)]),
    "depthwise wgrad": lambda: (DepthwiseWgrad(meta(2, 2, 9, 8), meta(2, 4, 5, 8), (4, 1, 3, 3), (9, 9, 3, 1),
                                               DEPTHWISE, True, True).launch,
                                [meta(2, 2, 9, 8), meta(2, 4, 5, 8), meta(2, 4, 5, 8), meta(4, 1, 3, 3), meta(4)]),
    "conv2d dgrad": lambda: (Dgrad(meta(2, 6, 5, 8), meta(6, 2, 3, 3), None, (2, 4, 9, 8), torch.channels_last,
                                   GEOM).launch,
                             [meta(2, 6, 5, 8), meta(2, 6, 5, 8), meta(6, 2, 3, 3), meta(2, 4, 9, 8),
                              meta(2, 4, 9, 8)]),
    "conv2d wgrad": lambda: (Wgrad(meta(2, 4, 9, 8), meta(2, 6, 5, 8), (6, 2, 3, 3), (18, 9, 3, 1), GEOM, True,
                                   True).launch,
                             [meta(2, 4, 9, 8), meta(2, 6, 5, 8), meta(2, 6, 5, 8), meta(6, 2, 3, 3), meta(6)]),
    "max_pool2d forward": lambda: (MaxForward(meta(2, 3, 9, 8), POOL, FLAT_INDICES).launch,
                                   [meta(2, 3, 9, 8), meta(2, 3, 5, 4), meta(2, 3, 5, 4, dtype=torch.int64)]),
    "max_pool2d forward, window offsets": lambda: (
        MaxForward(meta(2, 3, 9, 8, fmt=CL), POOL, WINDOW_OFFSETS).launch,
        [meta(2, 3, 9, 8, fmt=CL), meta(2, 3, 5, 4, fmt=CL), meta(2, 3, 5, 4, fmt=CL, dtype=torch.uint8)]),
    "max_pool2d backward": lambda: (MaxBackward(meta(2, 3, 5, 4), meta(2, 3, 5, 4, dtype=torch.int64), (2, 3, 9, 8),
                                                torch.contiguous_format, POOL).launch,
                                    [meta(2, 3, 5, 4), meta(2, 3, 5, 4, dtype=torch.int64), meta(2, 3, 9, 8)]),
    "max_pool2d backward, window offsets": lambda: (
        MaxBackward(meta(2, 3, 5, 4, fmt=CL), meta(2, 3, 5, 4, fmt=CL, dtype=torch.uint8), (2, 3, 9, 8), CL,
                    POOL).launch,
        [meta(2, 3, 5, 4, fmt=CL), meta(2, 3, 5, 4, fmt=CL, dtype=torch.uint8), meta(2, 3, 9, 8, fmt=CL)]),
    "avg_pool2d forward": lambda: (AvgForward(meta(2, 3, 9, 8, fmt=CL), POOL).launch,
                                   [meta(2, 3, 9, 8), meta(2, 3, 5, 4)]),
    "global avg_pool2d forward": lambda: (AvgForward(meta(2, 3, 9, 8), GLOBAL).launch,
                                          [meta(2, 3, 9, 8), meta(2, 3, 1, 1)]),
    "avg_pool2d backward": lambda: (AvgBackward(meta(2, 3, 5, 4), (2, 3, 9, 8), torch.contiguous_format,
                                                POOL).launch, [meta(2, 3, 5, 4), meta(2, 3, 9, 8)]),
}


def test_autotuner_times_configs_briefly():
    # the conv GEMMs' autotuner (built for sm_90 here: building it needs no GPU) times each config
    # with AUTOTUNE_BENCH, 5 + 25 ms, instead of Triton's 25 + 100 ms
    fwd = conv_kernels
    tuner = _launch._autotuned(fwd.conv2d_fwd_kernel, (9, 0), fwd.conv2d_fwd_configs, fwd.CONV_KEY,
                               fwd.conv2d_fwd_prune)
    assert tuner.do_bench is _launch.AUTOTUNE_BENCH
    assert _launch.AUTOTUNE_BENCH.keywords == dict(warmup=5, rep=25)


def test_autotune_off_keeps_the_first_config_the_prune_keeps(monkeypatch):
    # CONVTRI_AUTOTUNE=0 (the GPU session's native tests): one config per launch, the first that
    # the launch's own prune keeps, so only it compiles
    fwd = conv_kernels
    prune = lambda configs, named_args, **kwargs: [c for c in configs if c.kwargs["BLOCK_N"] <= named_args["n"]]
    configs = fwd.conv2d_fwd_configs((9, 0))
    assert len(prune(configs, dict(n=64))) > 1
    assert _launch.first_config(prune)(configs, dict(n=64)) == prune(configs, dict(n=64))[:1]
    monkeypatch.setenv(_launch.AUTOTUNE_ENV, "0")
    _launch._autotuned.cache_clear()
    try:
        tuner = _launch._autotuned(fwd.conv2d_fwd_kernel, (9, 0), fwd.conv2d_fwd_configs, fwd.CONV_KEY,
                                   lambda capability: prune)
        assert tuner.early_config_prune(configs, dict(n=64)) == prune(configs, dict(n=64))[:1]
    finally:
        _launch._autotuned.cache_clear()


@pytest.mark.parametrize("name", LAUNCHES)
def test_bound_launch_passes_what_triton_passes(name, monkeypatch):
    """A bound launch calls the compiled kernel's launcher as JITFunction.run does: grid,
    stream, function, packed metadata, launch metadata and hooks, then every kernel argument
    in the kernel's own order, constexprs included, with the config's block sizes."""
    launch, tensors = LAUNCHES[name]()
    config = dict(launch.blocks)
    if launch.tuning is not None:  # an autotuned kernel: one of its configs, as the autotuner picks one
        configs, _, _ = launch.tuning
        config = configs((9, 0))[0].kwargs
    compiled = FakeCompiled()
    bound = Bound(compiled, launch.kernel.arg_names, tensors, launch.scalars, {**launch.meta, **config}, launch.grid)
    enter, leave = object(), object()
    monkeypatch.setattr(_launch.knobs.runtime, "launch_enter_hook", enter)
    monkeypatch.setattr(_launch.knobs.runtime, "launch_exit_hook", leave)
    bound(tensors, stream=7)
    (call,) = compiled.calls
    arguments = inspect.signature(launch.kernel.fn).bind(*tensors, *launch.scalars, **launch.meta, **config).arguments
    grid = launch.grid(dict(arguments))
    assert call[:3] == (*grid, 1, 1)[:3]
    assert call[3:9] == (7, "function", "packed metadata", "launch metadata", enter, leave)
    assert list(call[9:]) == list(arguments.values())


@pytest.mark.gpu
@pytest.mark.parametrize("name", OP_NAMES)
def test_cuda_second_call_skips_triton_dispatch(name, monkeypatch):
    """After the first call per signature, no kernel goes through Triton's autotuner or JIT:
    each launch calls the compiled kernel's launcher bound on the first call."""
    import triton.runtime.autotuner
    import triton.runtime.jit
    through_triton, bound = [], []
    for cls in (triton.runtime.autotuner.Autotuner, triton.runtime.jit.JITFunction):
        run = cls.run
        monkeypatch.setattr(cls, "run", lambda self, *a, _run=run, **k: (through_triton.append(self),
                                                                          _run(self, *a, **k))[1])
    call = Bound.__call__
    monkeypatch.setattr(Bound, "__call__", lambda self, *a: (bound.append(self), call(self, *a))[1])
    _, _, _, tensors, kwargs = op_case(name, "cuda", torch.float32)
    forward_backward(name, tensors, kwargs)
    assert through_triton
    through_triton.clear()
    forward_backward(name, [torch.randn_like(t) for t in tensors], kwargs)
    torch.cuda.synchronize()
    assert through_triton == [] and bound


def test_wgrad_writes_gradients_directly_when_not_split(launches):
    # one slice of the N*P*Q reduction (always on CPU): one launch, no partials, no second pass
    x, w = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    y = convtri.conv2d(x, w, b)
    launches.clear()
    torch.autograd.grad(y, (w, b), torch.ones_like(y))
    assert [name for name, _ in launches] == [conv_kernels.conv2d_wgrad_kernel.__name__]


def test_cuda_launch_binds_once_per_device_and_alignment(monkeypatch):
    """Launch._cuda's bookkeeping, on meta tensors standing in for CUDA ones: the first call
    binds (and launches through Triton), later calls with the same device and pointer
    alignment call the bound kernel on the current stream."""
    launch, tensors = LAUNCHES["conv2d forward"]()
    binds, calls = [], []
    monkeypatch.setattr(Launch, "_bind", lambda self, ts, index: binds.append(index) or (
        lambda ts, stream: calls.append((len(ts), stream))))
    monkeypatch.setattr(torch._C, "_cuda_getDevice", lambda: tensors[0].get_device(), raising=False)  # CPU builds lack them
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda index: 7, raising=False)
    for _ in range(3):
        launch._cuda(tensors)
    assert binds == [tensors[0].get_device()] and calls == [(5, 7), (5, 7)]  # x, w, b, y, z


def test_interpreter_leaves_triton_language_as_it_was():
    """A kernel run through the interpreter patches triton.language (tl.sum, tl.static_range,
    ...) and must undo every patch, or a GPU compile later in the process fails: the
    launched kernel's patches are undone last (they saved the real functions)."""
    import triton.language as tl
    names = ("static_range", "range", "multiple_of", "reduce", "sum", "max_contiguous")
    before = {name: getattr(tl, name) for name in names}
    x, w = torch.randn(1, 3, 6, 6, requires_grad=True), torch.randn(4, 3, 3, 3, requires_grad=True)
    convtri.conv2d(x, w).sum().backward()  # the wgrad kernel calls tl.sum
    convtri.max_pool2d(x, 2).sum().backward()
    assert {name: getattr(tl, name) for name in names} == before


@pytest.mark.parametrize("env, checked", [(None, False), ("0", False), ("1", True)])
def test_interpreter_overflow_checks_follow_the_environment(env, checked, monkeypatch):
    """The interpreter's int32 overflow checks (about 40% of its time) are off unless
    CONVTRI_SANITIZE_OVERFLOW=1, during a launch only: its builder's option is restored after."""
    from triton.runtime import interpreter
    if env is None:
        monkeypatch.delenv(_launch.SANITIZE_ENV, raising=False)
    else:
        monkeypatch.setenv(_launch.SANITIZE_ENV, env)
    before = interpreter.interpreter_builder.options
    seen = []
    run = _launch.InterpretedFunction.run
    monkeypatch.setattr(_launch.InterpretedFunction, "run", lambda self, *args, **kwargs: (
        seen.append(interpreter.interpreter_builder.options.sanitize_overflow), run(self, *args, **kwargs))[1])
    convtri.conv2d(torch.randn(1, 2, 4, 4), torch.randn(2, 1, 3, 3), groups=2)
    assert seen == [checked] and interpreter.interpreter_builder.options is before
