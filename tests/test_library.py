"""convtri's ops as PyTorch custom ops: opcheck on every op, torch.compile, torch.export,
autocast with GradScaler, and channels_last end to end without format conversions."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import convtri
from tolerances import assert_close

CL = torch.channels_last


def t(*shape, grad=False, fmt=torch.contiguous_format, dtype=torch.float64):
    return torch.randn(shape, dtype=dtype).to(memory_format=fmt).requires_grad_(grad)


def _outputs():
    """Outputs that the backward samples take as their inputs (dy, indices)."""
    ops = torch.ops.convtri
    x, w = t(2, 4, 7, 6), t(6, 2, 3, 3)
    dy = ops.conv2d(x, w, None, [2, 1], [1, 2, 0, 1], [1, 1], 2, "zeros")[0]
    xd, wd = t(2, 3, 6, 5), t(6, 1, 3, 3)  # depthwise, multiplier 2: the direct kernels
    dyd = ops.conv2d(xd, wd, None, [2, 1], [1, 1, 0, 1], [1, 2], 3, "zeros")[0]
    xt, wt = t(2, 4, 5, 4), t(4, 3, 3, 2)
    dyt = ops.conv_transpose2d(xt, wt, None, [2, 2], [1, 0], [1, 0], 1, [1, 1])
    xp = t(2, 3, 7, 8)
    y, idx = ops.max_pool2d(xp, [3, 2], [2, 2], [1, 1], [1, 2], True, "flat")
    _, offsets = ops.max_pool2d(xp.to(memory_format=CL), [3, 2], [2, 2], [1, 1], [1, 2], True, "offsets")
    return dict(x=x, w=w, dy=dy, xd=xd, wd=wd, dyd=dyd, xt=xt, wt=wt, dyt=dyt, xp=xp, y=y, idx=idx,
                offsets=offsets)


AVG_ARGS = ([3, 3], [2, 2], [1, 1], True, False, None)
OPS = torch.ops.convtri
# (op, args from _outputs()): contiguous, channels_last and strided views, with and without
# grad. The args are built inside the test, so that collecting runs no kernel.
SAMPLES = [
    # stride 2, asymmetric padding, groups, bias, all gradients
    (OPS.conv2d, lambda o: (t(2, 4, 7, 6, grad=True), t(6, 2, 3, 3, grad=True), t(6, grad=True), [2, 1],
                            [1, 2, 0, 1], [1, 1], 2, "zeros")),
    # channels_last input, reflect padding, no grad
    (OPS.conv2d, lambda o: (t(1, 3, 6, 6, fmt=CL), t(4, 3, 3, 3), None, [1, 1], [1, 1, 2, 2], [1, 1], 1, "reflect")),
    # a strided view (every other row) with grad
    (OPS.conv2d, lambda o: (t(2, 3, 12, 5, grad=True)[:, :, ::2], t(4, 3, 2, 2, grad=True), None, [1, 1],
                            [0, 0, 0, 0], [2, 1], 1, "zeros")),
    # depthwise with multiplier 2 (the direct kernels), channels_last, grad
    (OPS.conv2d, lambda o: (t(2, 3, 6, 5, fmt=CL, grad=True), t(6, 1, 3, 3, grad=True), t(6, grad=True), [1, 1],
                            [1, 1, 1, 1], [1, 1], 3, "zeros")),
    (OPS.conv2d_dgrad, lambda o: (o["dyd"], o["wd"], list(o["xd"].shape), True, [2, 1], [1, 1, 0, 1], [1, 2], 3,
                                  "zeros")),
    (OPS.conv2d_wgrad, lambda o: (o["xd"], o["dyd"], o["wd"], [2, 1], [1, 1, 0, 1], [1, 2], 3, "reflect", True, True)),
    (OPS.conv2d_dgrad, lambda o: (o["dy"], o["w"], list(o["x"].shape), False, [2, 1], [1, 2, 0, 1], [1, 1], 2,
                                  "zeros")),
    (OPS.conv2d_dgrad, lambda o: (o["dy"].to(memory_format=CL), o["w"], list(o["x"].shape), True, [2, 1],
                                  [1, 2, 0, 1], [1, 1], 2, "circular")),
    (OPS.conv2d_wgrad, lambda o: (o["x"], o["dy"], o["w"], [2, 1], [1, 2, 0, 1], [1, 1], 2, "zeros", True, True)),
    (OPS.conv2d_wgrad, lambda o: (o["x"].to(memory_format=CL), o["dy"], o["w"], [2, 1], [1, 2, 0, 1], [1, 1], 2,
                                  "replicate", False, True)),
    # stride 2 with output_padding, bias, all gradients
    (OPS.conv_transpose2d, lambda o: (t(2, 4, 5, 4, grad=True), t(4, 3, 3, 2, grad=True), t(3, grad=True),
                                      [2, 2], [1, 0], [1, 0], 1, [1, 1])),
    # channels_last, groups, dilation, no grad
    (OPS.conv_transpose2d, lambda o: (t(1, 4, 4, 5, fmt=CL), t(4, 1, 2, 3), t(2), [1, 2], [0, 1], [0, 1], 2,
                                      [2, 1])),
    (OPS.conv_transpose2d_backward, lambda o: (o["dyt"], o["xt"], o["wt"], [2, 2], [1, 0], [1, 0], 1, [1, 1],
                                               True, True, True)),
    # dilation, ceil_mode, returned indices, grad
    (OPS.max_pool2d, lambda o: (t(2, 3, 7, 8, grad=True), [3, 2], [2, 2], [1, 1], [1, 2], True, "flat")),
    # window offsets (uint8), what backward needs when indices are not returned; grad, channels_last
    (OPS.max_pool2d, lambda o: (t(2, 3, 7, 8, grad=True, fmt=CL), [2, 2], [2, 2], [1, 0], [1, 1], False, "offsets")),
    # a channels_last view, without indices
    (OPS.max_pool2d, lambda o: (t(2, 3, 9, 8, fmt=CL)[:, :, 1:], [2, 2], [2, 2], [0, 0], [1, 1], False, "none")),
    (OPS.max_pool2d_backward, lambda o: (torch.randn_like(o["y"]), o["idx"], list(o["xp"].shape), False, [3, 2],
                                         [2, 2], [1, 1], [1, 2], True)),
    # from window offsets, channels_last
    (OPS.max_pool2d_backward, lambda o: (torch.randn_like(o["offsets"], dtype=torch.float64), o["offsets"],
                                         list(o["xp"].shape), True, [3, 2], [2, 2], [1, 1], [1, 2], True)),
    (OPS.avg_pool2d, lambda o: (t(2, 3, 8, 7, grad=True), *AVG_ARGS)),
    (OPS.avg_pool2d, lambda o: (t(2, 3, 8, 7, fmt=CL), [2, 3], [1, 2], [1, 0], False, True, 5)),
    (OPS.avg_pool2d_backward, lambda o: (t(2, 3, 5, 4), [2, 3, 8, 7], False, *AVG_ARGS)),
    (OPS.adaptive_avg_pool2d, lambda o: (t(2, 3, 7, 5, grad=True), [3, 2])),
    (OPS.adaptive_avg_pool2d, lambda o: (t(2, 3, 7, 5, fmt=CL), [1, 1])),
    (OPS.adaptive_avg_pool2d_backward, lambda o: (t(2, 3, 3, 2, fmt=CL), [2, 3, 7, 5], True)),
]


@pytest.mark.parametrize("op, make_args", SAMPLES,
                         ids=[f"{op._qualified_op_name.split('::')[1]}-{i}" for i, (op, _) in enumerate(SAMPLES)])
def test_opcheck(op, make_args):
    # schema, autograd registration, fake (meta) implementation against the real output's
    # shape, strides and dtype, and AOTDispatcher (the torch.compile path) with dynamic shapes
    torch.library.opcheck(op, make_args(_outputs()))


def test_every_op_is_registered():
    names = {op._qualified_op_name for op, _ in SAMPLES}
    assert names == {f"convtri::{name}" for name in (
        "conv2d", "conv2d_dgrad", "conv2d_wgrad", "conv_transpose2d", "conv_transpose2d_backward", "max_pool2d",
        "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward", "adaptive_avg_pool2d",
        "adaptive_avg_pool2d_backward")}


# ----------------------------------------------------------------------------- compile and export

def every_layer_model():
    """One of each of our layers, on an input of 2 x 3 x 8 x 8."""
    return torch.nn.Sequential(
        convtri.nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), torch.nn.ReLU(),
        convtri.nn.MaxPool2d(2), convtri.nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1),
        convtri.nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True), torch.nn.Sigmoid(),
        convtri.nn.AdaptiveAvgPool2d((2, 1)), torch.nn.Flatten())


def forward_backward(model, x):
    x = x.detach().requires_grad_()
    y = model(x)
    y.backward(torch.ones_like(y))
    grads = [x.grad] + [p.grad for p in model.parameters()]
    model.zero_grad()
    return y.detach(), grads


def check_compiled(backend, device, dtype):
    torch.manual_seed(0)
    model = every_layer_model().to(device, dtype)
    x = torch.randn(2, 3, 8, 8, device=device, dtype=dtype)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    (y, grads), (y_ref, grads_ref) = forward_backward(compiled, x), forward_backward(model, x)
    for got, want in zip([y, *grads], [y_ref, *grads_ref]):
        if backend == "aot_eager":  # the very same kernels run: the very same numbers
            assert torch.equal(got, want)
        else:  # the compiler may autotune to other tiles, which sum in another order
            assert_close(got, want.double(), 2 * 8 * 8 * 9)


def test_compile_fullgraph_aot_eager():
    # on CPU our ops stay whole in the graph (the interpreter cannot be traced) and run eagerly
    check_compiled("aot_eager", "cpu", torch.float64)


def test_compile_functional_forms():
    # torch's argument forms (padding='same', unbatched input, return_indices) under fullgraph
    def f(x, w):
        y = convtri.conv2d(x, w, padding="same")
        y, idx = convtri.max_pool2d(y, 2, return_indices=True)
        return convtri.conv_transpose2d(y, w), idx
    x, w = torch.randn(3, 6, 6, dtype=torch.float64), torch.randn(4, 3, 2, 2, dtype=torch.float64)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(x, w), f(x, w)):
        assert torch.equal(got, want)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_compile_fullgraph_inductor(dtype):
    # on CUDA torch.compile traces into our kernels (wrap_triton) and Inductor launches them
    check_compiled("inductor", "cuda", dtype)


def test_export():
    model = every_layer_model().double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    program = torch.export.export(model, (x,))
    called = {node.target for node in program.graph.nodes if node.op == "call_function"}
    assert {torch.ops.convtri.conv2d.default, torch.ops.convtri.conv_transpose2d.default,
            torch.ops.convtri.max_pool2d.default, torch.ops.convtri.avg_pool2d.default,
            torch.ops.convtri.adaptive_avg_pool2d.default} <= called
    assert torch.equal(program.module()(x), model(x))


# ----------------------------------------------------------------------------- autocast

def autocast_devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", autocast_devices())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_runs_conv_low_and_pool_as_is(device, dtype):
    x, w = torch.randn(2, 3, 8, 8, device=device), torch.randn(4, 3, 3, 3, device=device)
    b = torch.randn(4, device=device)
    with torch.autocast(device, dtype=dtype):
        y, y_ref = convtri.conv2d(x, w, b, padding=1), F.conv2d(x, w, b, padding=1)
        yt, yt_ref = convtri.conv_transpose2d(x, w.transpose(0, 1)), F.conv_transpose2d(x, w.transpose(0, 1))
        pooled = convtri.max_pool2d(x, 2), convtri.avg_pool2d(x, 2), convtri.adaptive_avg_pool2d(x, 1)
        doubled = convtri.conv2d(x.double(), w.double())  # float64 is not autocast, as in torch
    assert y.dtype == y_ref.dtype == yt.dtype == yt_ref.dtype == dtype
    assert all(p.dtype == torch.float32 for p in pooled) and doubled.dtype == torch.float64
    # the same low-precision inputs as torch's, so only the output rounding differs
    assert_close(y, F.conv2d(x.to(dtype).double(), w.to(dtype).double(), b.to(dtype).double(), padding=1), 27)


@pytest.mark.parametrize("device", autocast_devices())
def test_grad_scaler_training_step(device):
    # one fp16 autocast step with torch.amp.GradScaler: our gradients, unscaled, match the
    # torch.nn twin's, and the step applies
    torch.manual_seed(0)
    ours = torch.nn.Sequential(convtri.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), convtri.nn.MaxPool2d(2),
                               convtri.nn.Conv2d(8, 4, 3)).to(device)
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(8, 4, 3)).to(device)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(4, 3, 10, 10, device=device)
    grads = []
    for model in (ours, ref):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler(device, init_scale=2.0 ** 12)
        with torch.autocast(device, dtype=torch.float16):
            loss = model(x).float().square().mean()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grads.append([p.grad.clone() for p in model.parameters()])
        before = [p.detach().clone() for p in model.parameters()]
        scaler.step(optimizer)
        scaler.update()
        assert scaler.get_scale() == 2.0 ** 12  # no inf or NaN: the step was taken
        assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), before))
    for got, want in zip(*grads):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-3)


# ----------------------------------------------------------------------------- channels_last

COPIES = {"aten::clone", "aten::_to_copy", "aten::copy_", "aten::contiguous", "aten::to"}


def layouts(tensors):
    """(name, is channels_last) of the 4-D floating-point tensors among ``tensors``."""
    return [(tuple(t.shape), t.is_contiguous(memory_format=CL)) for t in tensors
            if isinstance(t, torch.Tensor) and t.dim() == 4 and t.dtype.is_floating_point]


class OpLog(TorchDispatchMode):
    """Every op the dispatcher runs at the model's level (our ops whole), and the layouts of
    its tensors. It keeps no tensor: a held reference would make autograd copy gradients."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else [out]
        self.calls.append((func._schema.name, layouts([*args, *outs])))
        return out


def test_channels_last_end_to_end(launches):
    """A model moved to channels_last stays channels_last through our layers, forward and
    backward: no copy between layers, and every kernel reads and writes channels_last tensors."""
    model = every_layer_model()[:-3].to(memory_format=CL)  # conv, relu, max pool, conv_transpose, avg pool
    x = torch.randn(2, 3, 8, 8).to(memory_format=CL).requires_grad_()
    with OpLog() as log:
        y = model(x)
        y.backward(torch.ones_like(y))
    names = [name for name, _ in log.calls]
    assert not COPIES & set(names), names
    ours = [(name, tensors) for name, tensors in log.calls if name.startswith("convtri::")]
    assert sorted(name for name, _ in ours) == sorted(f"convtri::{op}" for op in (
        "conv2d", "conv2d_dgrad", "conv2d_wgrad", "max_pool2d", "max_pool2d_backward", "conv_transpose2d",
        "conv_transpose2d_backward", "avg_pool2d", "avg_pool2d_backward"))
    for name, tensors in ours:
        assert tensors and all(channels_last for _, channels_last in tensors), (name, tensors)
    assert len(launches) >= 10
    for kernel, seen in launches:
        tensors = [t.meta() for t in seen]
        assert all(channels_last for _, channels_last in layouts(tensors)), (kernel, layouts(tensors))
    assert x.grad.is_contiguous(memory_format=CL)
    assert all(p.grad.is_contiguous(memory_format=CL) for p in model.parameters() if p.dim() == 4)
