"""The chapter's LeNet, built from convtri.nn layers."""
import torch
from torch import nn

import convtri.nn as cnn

VARIANTS = ("d2l", "modern")


def LeNet(variant: str = "d2l", layers=cnn) -> nn.Sequential:
    """LeNet-5 as in the classic chapter: two 5x5 convolutions, each followed by an activation
    and 2x2/2 pooling, then three linear layers, for 1x28x28 inputs and 10 classes.

    ``variant="d2l"``: sigmoid and average pooling, as the chapter; ``"modern"``: ReLU and max
    pooling. ``layers`` is the module namespace for convolution and pooling: ``convtri.nn``
    (ours), or ``torch.nn`` for the twin that our checkpoints load into. Conv and linear
    weights get Xavier-uniform initialisation.
    """
    if variant not in VARIANTS:
        raise ValueError(f"LeNet: variant must be one of {VARIANTS}, got {variant!r}")
    act = nn.Sigmoid if variant == "d2l" else nn.ReLU
    pool = (lambda: layers.AvgPool2d(2, 2)) if variant == "d2l" else (lambda: layers.MaxPool2d(2, 2))
    net = nn.Sequential(
        layers.Conv2d(1, 6, kernel_size=5, padding=2), act(), pool(),
        layers.Conv2d(6, 16, kernel_size=5), act(), pool(),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), act(),
        nn.Linear(120, 84), act(),
        nn.Linear(84, 10),
    )
    for module in net:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
    return net


def TorchLeNet(variant: str = "d2l") -> nn.Sequential:
    """The same network from plain torch.nn layers (cuDNN's on a GPU): our checkpoints load into it."""
    return LeNet(variant, layers=torch.nn)
