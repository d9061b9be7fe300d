"""LeNet: structure, initialisation, checkpoints that load into torch.nn, and convert(fuse=True) on it
(the default of `convtri lenet`) keeping its parameters, outputs and gradients; the README's names
of the application's pieces."""
import importlib
import pathlib
import re

import pytest
import torch
from torch import nn

import convtri
import convtri.nn as cnn
from convtri.lenet.models import LeNet, TorchLeNet


@pytest.mark.parametrize("variant, act, pool", [("d2l", nn.Sigmoid, cnn.AvgPool2d), ("modern", nn.ReLU, cnn.MaxPool2d)])
def test_lenet_structure(variant, act, pool):
    net = LeNet(variant)
    kinds = [type(m) for m in net]
    assert kinds == [cnn.Conv2d, act, pool, cnn.Conv2d, act, pool, nn.Flatten, nn.Linear, act, nn.Linear, act,
                     nn.Linear]
    assert (net[0].in_channels, net[0].out_channels, net[0].kernel_size, net[0].padding) == (1, 6, (5, 5), (2, 2))
    assert (net[3].in_channels, net[3].out_channels, net[3].padding) == (6, 16, (0, 0))
    assert [net[i].out_features for i in (7, 9, 11)] == [120, 84, 10]
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_lenet_xavier_init():
    torch.manual_seed(1)
    for layer in LeNet():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(layer.weight)
            bound = (6 / (fan_in + fan_out)) ** 0.5
            assert layer.weight.abs().max() <= bound
            assert layer.weight.abs().max() > 0.8 * bound  # uniform over the whole range, not torch's default


def test_lenet_bad_variant():
    with pytest.raises(ValueError, match="variant"):
        LeNet("vgg")


@pytest.mark.parametrize("variant", ["d2l", "modern"])
def test_checkpoint_loads_into_torch_lenet(variant):
    ours = LeNet(variant).double()
    twin = TorchLeNet(variant).double()
    twin.load_state_dict(ours.state_dict())
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(ours(x), twin(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("variant", ["d2l", "modern"])
def test_convert_fuse_keeps_parameters_outputs_and_gradients(variant):
    torch.manual_seed(0)
    plain = LeNet(variant).double()
    fused = LeNet(variant).double()
    fused.load_state_dict(plain.state_dict())
    params = list(fused.parameters())
    assert convtri.convert(fused, fuse=True) is fused
    assert [p is q for p, q in zip(fused.parameters(), params)] == [True] * len(params)  # the same tensors
    assert list(fused.state_dict()) == list(plain.state_dict())
    act = "sigmoid" if variant == "d2l" else "relu"
    assert [fused[i].activation for i in (0, 3)] == [act, act]
    assert all(isinstance(fused[i], torch.nn.Identity) for i in (1, 4))
    assert not isinstance(fused[8], torch.nn.Identity)  # linear layers' activations stay
    x = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    outputs = []
    for model in (plain, fused):
        y = model(x)
        y.square().sum().backward()
        outputs.append([y.detach(), *[p.grad for p in model.parameters()]])
    for a, b in zip(*outputs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.gpu
def test_reduce_overhead_compile_of_a_converted_model():
    torch.manual_seed(0)
    model = convtri.convert(LeNet("modern"), fuse=True).cuda()
    compiled = torch.compile(model, mode="reduce-overhead")
    x = torch.randn(16, 1, 28, 28, device="cuda")
    for _ in range(3):  # warm-up, then replays of the recorded graph
        y = compiled(x)
        y.sum().backward()
    torch.testing.assert_close(y, model(x), rtol=1e-3, atol=1e-3)


def test_the_readme_names_of_the_application_exist():
    # its imports (the loading example) and its table of the application's pieces
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    imported = [f"{module}.{name.strip()}" for module, names in re.findall(r"^from (convtri\.lenet[\w.]*) import (.+)$",
                                                                             readme, re.M) for name in names.split(",")]
    named = re.findall(r"`(convtri\.lenet(?:\.\w+)+)`", readme)
    assert "convtri.lenet.checkpoint.load_lenet" in imported and "convtri.lenet.models.LeNet" in named
    for dotted in imported + named:
        try:
            importlib.import_module(dotted)  # a module: convtri.lenet.data
        except ModuleNotFoundError:
            module, _, name = dotted.rpartition(".")
            assert hasattr(importlib.import_module(module), name), dotted
