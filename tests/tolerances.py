"""One tolerance table per dtype, scaled by the length of the reduction behind each output.

With unit-variance inputs a sum of L products has magnitude ~sqrt(L), and so does its
rounding error, so both tolerances grow with sqrt(L). References are torch in float64,
computed from the very same (already rounded) inputs.
"""
import math

import torch

# dtype -> error per unit of sqrt(reduction length); fp16/bf16 are dominated by the final
# rounding to the output dtype, fp32/tf32 by the fp32/tf32 products.
TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 2e-6,
    "tf32": 2e-3,
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
}


def tolerance_key(t):
    if t.dtype == torch.float32 and t.device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return t.dtype


def assert_close(actual, expected, reduction_length, key=None):
    """actual (any dtype) against a float64 reference."""
    tol = TOLERANCE[key if key is not None else tolerance_key(actual)] * math.sqrt(max(reduction_length, 1))
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), rtol=tol, atol=tol)
