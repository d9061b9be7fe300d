"""convtri's ops as PyTorch custom ops, ``torch.ops.convtri.*``, so that torch.compile, export,
autocast and opcheck treat them as they treat torch's own.

Each op is a ``torch.library.triton_op``: its implementation (validation, allocation, our
kernel launches through ``wrap_triton``) is also its fake implementation, where the launches
run nothing (convtri/_launch.py), so output shapes, strides and dtypes come from the very code
that allocates them.
"""
import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch._subclasses.functional_tensor import FunctionalTensor, FunctionalTensorMode
from torch.utils import _pytree

NAMESPACE = "convtri"
_library = torch.library.Library(NAMESPACE, "FRAGMENT")
AUTOCAST_KEYS = {"cuda": "AutocastCUDA", "cpu": "AutocastCPU"}


def triton_op(name, low_precision_autocast=False):
    """Register the decorated function as ``torch.ops.convtri.<name>``, a triton_op; with
    ``low_precision_autocast``, autocast runs it in its low dtype, as torch's convolutions."""
    def register(fn):
        op = torch.library.triton_op(f"{NAMESPACE}::{name}", mutates_args=())(fn)
        op.register_torch_dispatch(FunctionalTensorMode, _decompose_on_cuda(fn))
        if low_precision_autocast:
            _register_low_precision_autocast(name)
        return op
    return register


def _decompose_on_cuda(fn):
    """The rule torch.compile meets when it functionalises the op. triton_op's own rule
    decomposes the op into its kernel launches so that the compiler sees the kernels; we do
    the same on CUDA. On CPU our kernels run in Triton's interpreter, which cannot be traced,
    so there the op stays whole in the graph and runs as in eager mode. torch.export keeps
    the op whole everywhere, as triton_op does."""
    def rule(mode, op, types, args, kwargs):
        if any(t not in (torch.Tensor, FunctionalTensor) and not issubclass(t, FakeTensor) for t in types):
            return NotImplemented  # tensor subclasses other than torch's tracing ones: not ours to handle
        tensors = [t for t in _pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if _export_keeps_ops_whole() or any(t.device.type != "cuda" for t in tensors):
            return mode.__torch_dispatch__(op, types, args, kwargs)
        with mode:
            return fn(*args, **kwargs)
    return rule


def _export_keeps_ops_whole():
    try:
        from torch.export._trace import custom_triton_ops_decomposition_disabled
    except ImportError:  # a torch without it decomposes triton ops in export too
        return False
    return custom_triton_ops_decomposition_disabled()


def _register_low_precision_autocast(name):
    """Under ``torch.autocast``, run the op in the autocast dtype, as torch runs its own
    convolutions: floating-point tensors on the autocast device, except float64, are cast
    first (torch's ``lower_precision_fp`` policy). ``torch.library.register_autocast`` casts
    to one fixed dtype instead, which would ignore ``autocast(dtype=...)``."""
    for device_type, key in AUTOCAST_KEYS.items():
        _library.impl(name, _autocast_kernel(name, device_type, key), key, with_keyset=True)


def _autocast_kernel(name, device_type, key):
    def kernel(keyset, *args):
        op = getattr(torch.ops.convtri, name).default
        dtype = torch.get_autocast_dtype(device_type)

        def cast(t):
            eligible = (isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64
                        and t.device.type == device_type)
            return t.to(dtype) if eligible else t
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))):
            return op(*[cast(a) for a in args])
    return kernel
