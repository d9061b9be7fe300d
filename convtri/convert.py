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


# activation modules that a preceding convolution takes into its kernels (convert(fuse=True))
FUSABLE = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid"}


def _ours(module: nn.Module) -> nn.Module:
    """Our twin of ``module``: the same object state (hyper-parameters, parameters, buffers,
    hooks, train/eval mode), re-classed. Parameters are the very same tensors."""
    twin = OURS[type(module)].__new__(OURS[type(module)])
    twin.__dict__ = module.__dict__.copy()
    # containers are shared by a shallow copy; give the twin its own
    for key in ("_parameters", "_buffers", "_modules"):
        twin.__dict__[key] = dict(module.__dict__[key])
    return twin


def convert(model: nn.Module, fuse: bool = False) -> nn.Module:
    """Replace every torch.nn.Conv2d, ConvTranspose2d, MaxPool2d, AvgPool2d and AdaptiveAvgPool2d in ``model``
    (recursively) with convtri's, keeping parameters (the same tensors: values, dtype and
    device), hyper-parameters and train/eval mode. Returns the model; a bare layer is
    returned converted. Subclasses of those layers, which we cannot represent exactly, raise.

    ``fuse=True`` also folds each ReLU or Sigmoid that follows a Conv2d inside an
    nn.Sequential into the convolution's kernels (``convtri.nn.Conv2d(activation=...)``) and
    puts an nn.Identity in its place, so that indices and state_dict keys do not move."""
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
            convert(child, fuse)
    if fuse and isinstance(model, nn.Sequential):
        _fuse_activations(model)
    return model


def _fuse_activations(sequence: nn.Sequential):
    """Each (our Conv2d without an activation, ReLU or Sigmoid) pair of ``sequence``: the
    activation into the convolution, an nn.Identity in its slot."""
    names = list(sequence._modules)
    for conv_name, act_name in zip(names, names[1:]):
        conv, act = sequence._modules[conv_name], sequence._modules[act_name]
        if type(conv) is cnn.Conv2d and conv.activation is None and type(act) in FUSABLE:
            conv.activation = FUSABLE[type(act)]
            sequence._modules[act_name] = nn.Identity()
