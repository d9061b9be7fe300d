"""Our op against torch's: outputs and gradients from the same inputs, torch's in float64."""
import torch

from tolerances import assert_close


def cpu64(t):
    return None if t is None else t.detach().double().cpu()


def forward_and_grads(fn, tensors, dy, **kwargs):
    """fn(*tensors, **kwargs) and, for ``dy``, the gradient of every tensor (None skipped)."""
    leaves = [None if t is None else t.detach().requires_grad_() for t in tensors]
    y = fn(*leaves, **kwargs)
    return (y, *torch.autograd.grad(y, [t for t in leaves if t is not None], dy))


def check_parity(ours, theirs, tensors, lengths, **kwargs):
    """Our output and gradients against torch's in float64 (on CPU) for the same inputs and a
    random dy; ``lengths(y)`` are the reduction lengths behind each, from torch's output y."""
    x = tensors[0]
    y_ref = theirs(*map(cpu64, tensors), **kwargs)
    dy = torch.randn(y_ref.shape, dtype=x.dtype, device=x.device)
    got = forward_and_grads(ours, tensors, dy, **kwargs)
    want = forward_and_grads(theirs, list(map(cpu64, tensors)), cpu64(dy), **kwargs)
    for a, b, length in zip(got, want, lengths(y_ref)):
        assert a.dtype == x.dtype and a.device == x.device
        assert_close(a, b, length)
    return got
