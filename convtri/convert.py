"""convert(model): swap torch's conv and pooling layers for convtri's, in place."""
from torch import nn

import convtri.nn as cnn

# torch class -> ours; exact classes only: a user's subclass may change behaviour we cannot see
OURS = {
    nn.Conv2d: cnn.Conv2d,
    nn.ConvTranspose2d: cnn.ConvTranspose2d,
    nn.MaxPool2d: cnn.MaxPool2d,
    nn.AvgPool2d: cnn.AvgPool2d,
    nn.AdaptiveAvgPool2d: cnn.AdaptiveAvgPool2d,
}


def _ours(module: nn.Module) -> nn.Module:
    """Our twin of ``module``: the same object state (hyper-parameters, parameters, buffers,
    hooks, train/eval mode), re-classed. Parameters are the very same tensors."""
    twin = OURS[type(module)].__new__(OURS[type(module)])
    twin.__dict__ = module.__dict__.copy()
    # containers are shared by a shallow copy; give the twin its own
    for key in ("_parameters", "_buffers", "_modules"):
        twin.__dict__[key] = dict(module.__dict__[key])
    return twin


def convert(model: nn.Module) -> nn.Module:
    """Replace every torch.nn.Conv2d, ConvTranspose2d, MaxPool2d, AvgPool2d and AdaptiveAvgPool2d in ``model``
    (recursively) with convtri's, keeping parameters (the same tensors: values, dtype and
    device), hyper-parameters and train/eval mode. Returns the model; a bare layer is
    returned converted. Subclasses of those layers, which we cannot represent exactly, raise."""
    if type(model) in OURS:
        return _ours(model)
    for name, child in model.named_children():
        for torch_class in OURS:
            if isinstance(child, torch_class) and type(child) is not torch_class and not isinstance(
                    child, tuple(OURS.values())):
                raise TypeError(f"convert: {name} is a {type(child).__qualname__}, a subclass of "
                                f"{torch_class.__qualname__} that convtri cannot represent exactly")
        if type(child) in OURS:
            setattr(model, name, _ours(child))
        else:
            convert(child)
    return model
