"""How a call reaches our kernels: plans per call signature, and the eager route.

An op's plan holds everything about a call but its tensors: the checked geometry, the output
sizes and layouts, and its kernel launches. It is built, by the code that validates the
arguments, on the first call with a given signature (sizes, strides, dtypes, devices and
the op's other arguments), and reused after: the same signature is valid or invalid in the
same way every time, so checking it again proves nothing.

In plain eager mode a public op calls its autograd Function, or with no gradient to record
the plan, directly. Whenever torch has to see the op (torch.compile, export, fake tensors,
autocast, dispatch or function modes, functorch transforms) it goes through its custom op
``torch.ops.convtri.*`` instead, whose implementation runs the very same plan.
"""
import torch
from torch.autograd.function import once_differentiable

MAX_PLANS = 4096  # signatures kept per op; more (shapes that never repeat) start the cache afresh
_NOT_CACHED = object()  # an argument of a type the cache does not trust: never equal to a key


def _any_autocast():
    return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


any_autocast = getattr(torch._C, "_is_any_autocast_enabled", _any_autocast)
PLAIN = (torch.Tensor, torch.nn.Parameter)


_is_functorch_wrapper = torch._C._functorch.is_functorch_wrapped_tensor


def is_eager(*tensors):
    """Whether nothing but our own code needs to see this call: nothing traces it (``traced``)
    and the tensors are plain (``None`` for an absent bias), none a functorch wrapper left
    over from a transform."""
    if torch.compiler.is_compiling():  # first: Dynamo folds it to True and traces nothing after it
        return False
    for t in tensors:
        if t is not None and (type(t) not in PLAIN or _is_functorch_wrapper(t)):
            return False
    return not traced()


def traced():
    """Whether torch must see our ops as ops: a compiler tracing, a dispatch or function
    mode, autocast, or a functorch transform."""
    return bool(torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack()
                or torch._C._is_torch_function_mode_enabled() or any_autocast()
                or torch._C._are_functorch_transforms_active())


def plain_backward(grad):
    """Whether a Function's backward may launch its plan's kernels itself: autograd does not
    record the backward (create_graph=False), nothing traces it, and ``grad`` is plain."""
    return not torch.is_grad_enabled() and type(grad) is torch.Tensor and not traced()


def eager_apply(function):
    """``function.apply`` for eager calls (``is_eager``): what Function.apply does when no
    functorch transform is active and no argument is a functorch wrapper, without the
    Python around it."""
    return super(torch.autograd.Function, function).apply


def records_grad(input, weight=None, bias=None):
    """Whether autograd records a call on these tensors (``None`` skipped)."""
    return torch.is_grad_enabled() and (input.requires_grad or (weight is not None and weight.requires_grad)
                                        or (bias is not None and bias.requires_grad))


def exact(value):
    """``value`` as part of a plan's key, when its type is one the key can trust: ints,
    strings, None, and tuples or lists of ints and Nones. 1.0 and True equal 1 and would
    find its plan, while torch refuses them, so anything else never matches a key."""
    kind = type(value)
    if kind is int or kind is str or value is None:
        return value
    if (kind is tuple or kind is list) and all(type(v) is int or v is None for v in value):
        return tuple(value)
    return _NOT_CACHED


def tensor_key(t):
    """What a plan depends on in a tensor: sizes, strides, dtype and device."""
    return None if t is None else (t.shape, t.stride(), t.dtype, t.device)


class Plans(dict):
    """One op's plans by call signature."""

    def __init__(self):
        super().__init__()
        _ALL_PLANS.append(self)

    def get_or_build(self, key, build, *args):
        """The plan of ``key``, built by ``build(*args)`` (which validates) on a miss."""
        try:
            return self[key]
        except (KeyError, TypeError):
            return self.build(key, build, *args)

    def build(self, key, build, *args):
        """A miss: the plan ``build(*args)`` makes (validating), kept unless ``key`` holds an
        argument the cache does not trust or symbolic sizes (torch.compile's dynamic shapes,
        which do not hash)."""
        plan = build(*args)
        try:
            if _NOT_CACHED not in key:
                if len(self) >= MAX_PLANS:
                    self.clear()
                self[key] = plan
        except TypeError:
            pass
        return plan


_ALL_PLANS = []


def clear_plans():
    """Forget every plan (tests that change what a plan is built from call this)."""
    for plans in _ALL_PLANS:
        plans.clear()


def other_backward(backward):
    """``backward`` for the calls ``plain_backward`` turns away. Our backward kernels are not
    themselves differentiable: when autograd records the backward (create_graph=True) it
    runs through ``once_differentiable``, so that a second derivative raises instead of
    returning zeros."""
    return once_differentiable(backward)
