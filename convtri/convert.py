"""convert(model): swap torch's conv and pooling layers for convtri's, in place."""
from torch import nn

import convtri.nn as cnn

# torch class -> ours; exact classes only: a user's subclass may change behaviour we cannot see
OURS = {
    nn.Conv1d: cnn.Conv1d,
    nn.Conv2d: cnn.Conv2d,
    nn.ConvTranspose2d: cnn.ConvTranspose2d,
    nn.MaxPool2d: cnn.MaxPool2d,
    nn.AvgPool2d: cnn.AvgPool2d,
    nn.AdaptiveAvgPool2d: cnn.AdaptiveAvgPool2d,
}


# activation modules that a preceding convolution takes into its kernels (convert(fuse=True)),
# by exact class
FUSABLE = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.SiLU: "silu", nn.ReLU6: "relu6"}
FUSING_CONVOLUTIONS = (cnn.Conv1d, cnn.Conv2d)


def fused_name(module):
    """The name of ``module``'s activation as convolutions fuse it, or None: GELU by its
    approximation, Hardtanh only as ReLU6 (min 0, max 6)."""
    kind = type(module)
    if kind is nn.GELU:
        return {"none": "gelu", "tanh": "gelu_tanh"}.get(module.approximate)
    if kind is nn.Hardtanh:
        return "relu6" if (module.min_val, module.max_val) == (0., 6.) else None
    return FUSABLE.get(kind)


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
    """Replace every torch.nn.Conv1d, Conv2d, ConvTranspose2d, MaxPool2d, AvgPool2d and
    AdaptiveAvgPool2d in ``model`` (recursively) with convtri's, keeping parameters (the same
    tensors: values, dtype and device), hyper-parameters and train/eval mode. Returns the model;
    a bare layer is returned converted. Subclasses of those layers, which we cannot represent
    exactly, raise.

    ``fuse=True`` also folds each ReLU, Sigmoid, SiLU, GELU (either approximation), ReLU6 or
    Hardtanh(0, 6) that follows a Conv1d or Conv2d inside an nn.Sequential into the
    convolution's kernels (``convtri.nn.Conv2d(activation=...)``) and puts an nn.Identity in
    its place, so that indices and state_dict keys do not move."""
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
    """Each (our Conv1d or Conv2d without an activation, a fusable activation) pair of
    ``sequence``: the activation into the convolution, an nn.Identity in its slot."""
    names = list(sequence._modules)
    for conv_name, act_name in zip(names, names[1:]):
        conv, act = sequence._modules[conv_name], sequence._modules[act_name]
        if type(conv) in FUSING_CONVOLUTIONS and conv.activation is None and fused_name(act) is not None:
            conv.activation = fused_name(act)
            sequence._modules[act_name] = nn.Identity()
