"""conv1d: a view of conv2d with one row (H = 1), so that every conv2d kernel serves it, the
direct depthwise ones included. The views (``unsqueeze``) copy nothing, and autograd takes the
gradients back through them."""
from convtri import _args
from convtri.conv2d import conv2d

OP = "conv1d"


def conv1d_args(weight, stride, padding, dilation):
    """torch's conv1d argument forms as conv2d's, with a first axis of one row: (stride,
    padding, dilation) pairs, or padding 'same' / 'valid'."""
    _args.check_tensor(weight, "weight")
    if weight.dim() != 3:
        raise RuntimeError(f"{OP}: expected weight to be 3-D (out_channels, in_channels / groups, kernel), got weight "
                           f"of size {list(weight.shape)}")
    stride, dilation = _args.single(stride, "stride"), _args.single(dilation, "dilation")
    if not isinstance(padding, str):
        padding = (0, *_args.single(padding, "padding"))
    return (1, *stride), padding, (1, *dilation)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros",
           activation=None):
    """``torch.nn.functional.conv1d`` on convtri's kernels: input (N, C, L) or unbatched (C, L),
    weight (K, C/groups, R); ``padding`` an int, a 1-tuple, ``'same'`` or ``'valid'``.
    ``padding_mode`` and ``activation`` (keyword only) as ``convtri.conv2d``'s.

    The output follows conv2d's layout rule on the one-row view: an input whose channels are
    contiguous (an (N, L, C) tensor transposed to (N, C, L), as Mamba's) gives an output laid
    out so too, as cuDNN gives it, with no copy either way; torch's CPU conv1d returns it
    contiguous. Mamba's causal short convolution is
    ``conv1d(x, w, b, padding=R - 1, groups=C, activation="silu")[..., :L]``. Errors about
    sizes come from the one-row conv2d and name it."""
    _args.check_tensor(input, "input")
    if input.dim() not in (2, 3):
        raise RuntimeError(f"{OP}: expected input to be 2-D (C, L) or 3-D (N, C, L), got input of size "
                           f"{list(input.shape)}")
    stride, padding, dilation = conv1d_args(weight, stride, padding, dilation)
    y = conv2d(input.unsqueeze(-2), weight.unsqueeze(-2), bias, stride, padding, dilation, groups,
               padding_mode=padding_mode, activation=activation)
    return y.squeeze(-2)

