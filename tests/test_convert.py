"""convert(): every layer kind it replaces, exactly (the very same parameters, hyper-parameters and mode),
and what it refuses."""
import pytest
import torch
from torch import nn

import convtri
import convtri.nn as cnn


class Block(nn.Module):
    """A nested module with every layer kind convert() replaces, and some it must keep."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1, dilation=1, groups=1, padding_mode="reflect"), nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
            nn.Sequential(nn.Conv2d(8, 8, 3, padding="same", groups=8, bias=False), nn.BatchNorm2d(8)),
            nn.AvgPool2d(2, count_include_pad=False, divisor_override=None),
        )
        self.head = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.head(self.features(x)).flatten(1))


def test_convert_replaces_every_layer_exactly():
    torch.manual_seed(0)
    model = Block().double().eval()
    x = torch.rand(2, 3, 17, 15, dtype=torch.float64)
    expected = model(x)
    params = {name: p for name, p in model.named_parameters()}
    hyper = {name: (type(m).__name__, m.extra_repr()) for name, m in model.named_modules()}
    assert convtri.convert(model) is model
    converted = dict(model.named_modules())
    for name, torch_class in [("features.0", nn.Conv2d), ("features.2", nn.MaxPool2d), ("features.3.0", nn.Conv2d),
                              ("features.4", nn.AvgPool2d), ("head", nn.AdaptiveAvgPool2d)]:
        module = converted[name]
        assert type(module).__module__ == "convtri.nn" and isinstance(module, torch_class)
        assert module.extra_repr() == hyper[name][1]  # the same hyper-parameters
    assert isinstance(converted["features.3.1"], nn.BatchNorm2d) and isinstance(converted["fc"], nn.Linear)
    for name, p in model.named_parameters():
        assert p is params[name]  # the very same tensors: values, dtype and device kept
    assert not any(m.training for m in model.modules())  # eval mode kept
    torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)


def test_convert_keeps_training_mode_and_bare_layers():
    layer = nn.Conv2d(1, 2, 3).train()
    ours = convtri.convert(layer)
    assert isinstance(ours, cnn.Conv2d) and ours.training and ours.weight is layer.weight


def test_convert_refuses_what_it_cannot_represent():
    class Custom(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    with pytest.raises(TypeError, match="Custom"):
        convtri.convert(nn.Sequential(Custom(1, 1, 3)))
    with pytest.raises(TypeError, match="LazyConv2d"):
        convtri.convert(nn.Sequential(nn.LazyConv2d(2, 3)))
