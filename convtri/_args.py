"""Argument checks shared by the ops, raising the exception types torch raises."""
import torch


def check_tensor(t, name):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def check_float_dtype(t, name, dtypes):
    """A RuntimeError, as torch raises for a convolution or pooling it does not implement for a dtype."""
    if t.dtype not in dtypes:
        names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise RuntimeError(f"{name} must have a floating-point dtype ({names}), got {t.dtype}")


def check_same_dtype_and_device(tensors: dict):
    """All tensors (name -> tensor) share the first one's dtype and device."""
    (first, ref), *rest = tensors.items()
    for name, t in rest:
        if t.dtype != ref.dtype:
            raise RuntimeError(f"{name} has dtype {t.dtype} but {first} has dtype {ref.dtype}; they must match")
        if t.device != ref.device:
            raise RuntimeError(f"{name} is on {t.device} but {first} is on {ref.device}; they must match")


def single(value, name):
    """An int or a sequence of one int (torch's _single for conv1d), as a 1-tuple."""
    if isinstance(value, (tuple, list, torch.Size)) and len(value) != 1 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise RuntimeError(f"{name} must be a single int or a list of 1 int, got {name}={list(value)}")
    return pair(value, name)[:1]


def pair(value, name):
    """An int or a sequence of one or two ints, as a pair (torch's expand_param_if_needed)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list, torch.Size)):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        if len(value) == 1:
            return (value[0], value[0])
        if len(value) == 2:
            return tuple(value)
        raise RuntimeError(f"{name} must be a single int or a list of 2 ints, got {name}={list(value)}")
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r} ({type(value).__name__})")


def batched(op, fn, input):
    """``fn`` on 4-D input; an unbatched (C, H, W) input goes through as a batch of one."""
    check_tensor(input, "input")
    if input.dim() not in (3, 4):
        raise RuntimeError(f"{op}: expected input to be 3-D (C, H, W) or 4-D (N, C, H, W), got input of size "
                           f"{list(input.shape)}")
    if input.dim() == 4:
        return fn(input)
    out = fn(input.unsqueeze(0))
    return tuple(t.squeeze(0) for t in out) if isinstance(out, tuple) else out.squeeze(0)


def check_dim(op, name, t, dim):
    if t.dim() != dim:
        raise RuntimeError(f"{op}: expected {name} to be {dim}-D, got {name} of size {list(t.shape)}")
