"""Every error path of the ops, run once: the exception type, and a message that names the
argument, the value received and what was expected. (test_conv2d.py, test_pool2d.py and
test_conv_transpose2d.py check that the types are torch's.)"""
import numpy as np
import pytest
import torch
import triton

import convtri
from convtri import _launch

ops = torch.ops.convtri
t = lambda *shape, **kw: torch.randn(*shape, **kw)
meta = lambda *shape: torch.empty(*shape, device="meta")

# (id, call, exception type, the substrings the message must hold)
CASES = [
    # conv2d: the arguments' forms
    ("input not a tensor", lambda: convtri.conv2d([[1.0]], t(1, 1, 1, 1)), TypeError,
     ["input must be a torch.Tensor", "got list"]),
    ("weight not a tensor", lambda: convtri.conv2d(t(1, 1, 3, 3), 2.0), TypeError,
     ["weight must be a torch.Tensor", "got float"]),
    ("bias not a tensor", lambda: convtri.conv2d(t(1, 1, 3, 3), t(1, 1, 1, 1), [0.0]), TypeError,
     ["bias must be a torch.Tensor", "got list"]),
    ("float stride", lambda: convtri.conv2d(t(1, 1, 3, 3), t(1, 1, 1, 1), stride=1.5), TypeError,
     ["stride must be an int or a pair of ints", "got 1.5"]),
    ("three strides", lambda: convtri.conv2d(t(1, 1, 3, 3), t(1, 1, 1, 1), stride=(1, 2, 3)), RuntimeError,
     ["stride must be a single int or a list of 2 ints", "stride=[1, 2, 3]"]),
    ("float groups", lambda: convtri.conv2d(t(1, 1, 3, 3), t(1, 1, 1, 1), groups=1.0), TypeError,
     ["groups must be an int", "got 1.0"]),
    ("padding_mode not a string", lambda: convtri.conv2d(t(1, 1, 3, 3), t(1, 1, 1, 1), padding_mode=0), TypeError,
     ["padding_mode must be a string", "got 0"]),
    ("unknown padding string", lambda: convtri.conv2d(t(1, 1, 3, 3), t(1, 1, 1, 1), padding="full"), RuntimeError,
     ["padding must be an int, a pair, 'same' or 'valid'", "got 'full'"]),
    ("'same' with stride 2", lambda: convtri.conv2d(t(1, 1, 3, 3), t(1, 1, 1, 1), padding="same", stride=2),
     RuntimeError, ["padding='same' is not supported for strided convolutions", "stride=(2, 2)"]),
    ("2-D input", lambda: convtri.conv2d(t(8, 8), t(1, 1, 1, 1)), RuntimeError,
     ["expected input to be 3-D (C, H, W) or 4-D (N, C, H, W)", "input of size [8, 8]"]),
    ("3-D weight", lambda: convtri.conv2d(t(1, 4, 8, 8), t(6, 4, 3)), RuntimeError,
     ["expected weight to be 4-D", "weight of size [6, 4, 3]"]),
    ("2-D bias", lambda: convtri.conv2d(t(1, 4, 8, 8), t(6, 4, 3, 3), t(6, 1)), RuntimeError,
     ["expected bias to be 1-D", "bias of size [6, 1]"]),
    # conv2d: dtypes and devices
    ("integer input", lambda: convtri.conv2d(torch.ones(1, 1, 3, 3, dtype=torch.long), t(1, 1, 1, 1)), RuntimeError,
     ["input must have a floating-point dtype", "float16, bfloat16, float32, float64", "got torch.int64"]),
    ("weight dtype", lambda: convtri.conv2d(t(1, 1, 3, 3), t(1, 1, 1, 1, dtype=torch.float64)), RuntimeError,
     ["weight has dtype torch.float64 but input has dtype torch.float32", "must match"]),
    ("weight device", lambda: convtri.conv2d(t(1, 1, 3, 3), meta(1, 1, 1, 1)), RuntimeError,
     ["weight is on meta but input is on cpu", "must match"]),
    # conv2d: the values
    ("zero stride", lambda: convtri.conv2d(t(1, 1, 3, 3), t(1, 1, 1, 1), stride=0), RuntimeError,
     ["stride must be positive", "stride=(0, 0)"]),
    ("zero dilation", lambda: convtri.conv2d(t(1, 1, 3, 3), t(1, 1, 1, 1), dilation=(1, 0)), RuntimeError,
     ["dilation must be positive", "dilation=(1, 0)"]),
    ("negative padding", lambda: convtri.conv2d(t(1, 1, 3, 3), t(1, 1, 1, 1), padding=-1), RuntimeError,
     ["padding must be non-negative", "padding=(-1, -1, -1, -1)"]),
    ("zero groups", lambda: convtri.conv2d(t(1, 1, 3, 3), t(1, 1, 1, 1), groups=0), RuntimeError,
     ["groups must be positive", "groups=0"]),
    ("unknown padding_mode", lambda: convtri.conv2d(t(1, 1, 3, 3), t(1, 1, 1, 1), padding_mode="mirror"), ValueError,
     ["padding_mode must be one of ['circular', 'reflect', 'replicate', 'zeros']", "got 'mirror'"]),
    ("no filters", lambda: convtri.conv2d(t(1, 4, 3, 3), t(0, 4, 1, 1)), RuntimeError,
     ["expected weight to have at least one filter", "weight of size [0, 4, 1, 1]"]),
    ("groups not dividing K", lambda: convtri.conv2d(t(1, 4, 3, 3), t(5, 2, 1, 1), groups=2), RuntimeError,
     ["groups=2 must divide the weight's output channels", "weight of size [5, 2, 1, 1]"]),
    ("channels", lambda: convtri.conv2d(t(1, 4, 3, 3), t(6, 3, 1, 1)), RuntimeError,
     ["expected input to have 3 channels, got 4 channels", "weight of size [6, 3, 1, 1]"]),
    ("groups past the grid", lambda: convtri.conv2d(t(1, 70000, 1, 1), t(70000, 1, 1, 1), groups=70000),
     RuntimeError, ["groups=70000", "must not exceed 65535"]),
    ("bias size", lambda: convtri.conv2d(t(1, 4, 3, 3), t(6, 4, 1, 1), t(5)), RuntimeError,
     ["expected bias to be 1-D with 6 elements", "bias of size [5]"]),
    ("kernel larger than the input", lambda: convtri.conv2d(t(1, 1, 8, 8), t(1, 1, 9, 9)), RuntimeError,
     ["kernel of size (9 x 9) is larger than the padded input (8 x 8)"]),
    ("reflect padding", lambda: convtri.conv2d(t(1, 1, 4, 4), t(1, 1, 3, 3), padding=4, padding_mode="reflect"),
     RuntimeError, ["reflect padding (4, 4, 4, 4) must be smaller than the input size (4 x 4)"]),
    ("circular padding", lambda: convtri.conv2d(t(1, 1, 4, 4), t(1, 1, 3, 3), padding=5, padding_mode="circular"),
     RuntimeError, ["circular padding (5, 5, 5, 5) must not exceed the input size (4 x 4)"]),
    ("too many pixels", lambda: convtri.conv2d(meta(2 ** 16, 1, 256, 256), meta(1, 1, 1, 1)), RuntimeError,
     ["input of size [65536, 1, 256, 256] gives 4294967296 pixels", "at most 2146435071"]),
    ("weight span", lambda: convtri.conv2d(meta(1, 1, 4, 4), meta(2 ** 32).as_strided((2, 1, 1, 1), (2 ** 31, 1, 1, 1))),
     RuntimeError, ["weight of size [2, 1, 1, 1] and strides [2147483648, 1, 1, 1] spans 2147483648",
                    "at most 2147483647"]),
    ("corr2d", lambda: convtri.corr2d(t(3), t(2, 2)), RuntimeError,
     ["expected 2-D X and K", "X of size [3]", "K of size [2, 2]"]),
    # the ops called directly
    ("op padding", lambda: ops.conv2d(t(1, 1, 3, 3), t(1, 1, 1, 1), None, [1, 1], [1, 1], [1, 1], 1, "zeros"),
     RuntimeError, ["expected 4 values for padding", "padding=[1, 1]"]),
    ("op 3-D input", lambda: ops.conv2d(t(1, 3, 3), t(1, 1, 1, 1), None, [1, 1], [0] * 4, [1, 1], 1, "zeros"),
     RuntimeError, ["expected input to be 4-D", "input of size [1, 3, 3]"]),
    ("dgrad grad_output", lambda: ops.conv2d_dgrad(t(1, 2, 3, 3), t(2, 1, 1, 1), [1, 1, 4, 4], False, [1, 1],
                                                   [0] * 4, [1, 1], 1, "zeros"), RuntimeError,
     ["expected grad_output of size [1, 2, 4, 4], got [1, 2, 3, 3]"]),
    ("wgrad grad_output", lambda: ops.conv2d_wgrad(t(1, 1, 4, 4), t(1, 3, 4, 4), t(2, 1, 1, 1), [1, 1], [0] * 4,
                                                   [1, 1], 1, "zeros", True, False), RuntimeError,
     ["expected grad_output of size [1, 2, 4, 4], got [1, 3, 4, 4]"]),
    # conv_transpose2d
    ("transpose float groups", lambda: convtri.conv_transpose2d(t(1, 2, 3, 3), t(2, 1, 1, 1), groups=2.0), TypeError,
     ["groups must be an int", "got 2.0"]),
    ("output_padding", lambda: convtri.conv_transpose2d(t(1, 2, 3, 3), t(2, 1, 3, 3), stride=2, output_padding=2),
     RuntimeError, ["output_padding must be smaller than either stride or dilation", "output_padding=(2, 2)",
                    "stride=(2, 2)", "dilation=(1, 1)"]),
    ("negative output_padding", lambda: convtri.conv_transpose2d(t(1, 2, 3, 3), t(2, 1, 3, 3), output_padding=-1),
     RuntimeError, ["output_padding must be non-negative", "output_padding=(-1, -1)"]),
    ("transpose groups", lambda: convtri.conv_transpose2d(t(1, 4, 3, 3), t(4, 1, 3, 3), groups=3), RuntimeError,
     ["groups must be positive and divide the weight's input channels", "groups=3", "weight of size [4, 1, 3, 3]"]),
    ("transpose channels", lambda: convtri.conv_transpose2d(t(1, 3, 3, 3), t(4, 1, 3, 3)), RuntimeError,
     ["weight of size [4, 1, 3, 3] expects input with 4 channels", "input of size [1, 3, 3, 3]"]),
    ("transpose no output channels", lambda: convtri.conv_transpose2d(t(1, 4, 3, 3), t(4, 0, 3, 3)), RuntimeError,
     ["expected weight to have at least one output channel", "weight of size [4, 0, 3, 3]"]),
    ("transpose output size", lambda: convtri.conv_transpose2d(t(1, 1, 1, 1), t(1, 1, 1, 1), padding=1),
     RuntimeError, ["input of size [1, 1, 1, 1] gives a non-positive output size [-1, -1]"]),
    ("transpose bias", lambda: convtri.conv_transpose2d(t(1, 4, 3, 3), t(4, 2, 3, 3), t(4)), RuntimeError,
     ["expected bias to be 1-D with 2 elements", "bias of size [4]"]),
    ("transpose backward grad_output", lambda: ops.conv_transpose2d_backward(
        t(1, 2, 4, 4), t(1, 4, 3, 3), t(4, 2, 3, 3), [1, 1], [0, 0], [0, 0], 1, [1, 1], True, True, True),
     RuntimeError, ["expected grad_output of size [1, 2, 5, 5], got [1, 2, 4, 4]"]),
    # pooling
    ("zero kernel", lambda: convtri.max_pool2d(t(1, 1, 4, 4), 0), RuntimeError,
     ["kernel_size must be greater than zero", "kernel_size=(0, 0)"]),
    ("zero stride, pool", lambda: convtri.avg_pool2d(t(1, 1, 4, 4), 2, stride=(1, 0)), RuntimeError,
     ["stride must be greater than zero", "stride=(1, 0)"]),
    ("zero dilation, pool", lambda: convtri.max_pool2d(t(1, 1, 4, 4), 2, dilation=0), RuntimeError,
     ["dilation must be greater than zero", "dilation=(0, 0)"]),
    ("negative padding, pool", lambda: convtri.max_pool2d(t(1, 1, 4, 4), 2, padding=-1), RuntimeError,
     ["padding must be non-negative", "padding=(-1, -1)"]),
    ("padding past half the kernel", lambda: convtri.max_pool2d(t(1, 1, 4, 4), 3, padding=2), RuntimeError,
     ["padding must be at most half of kernel_size", "padding=(2, 2)", "kernel_size=(3, 3)"]),
    ("zero divisor_override", lambda: convtri.avg_pool2d(t(1, 1, 4, 4), 2, divisor_override=0), RuntimeError,
     ["divisor_override must not be zero", "divisor_override=0"]),
    ("float divisor_override", lambda: convtri.avg_pool2d(t(1, 1, 4, 4), 2, divisor_override=2.0), TypeError,
     ["divisor_override must be an int or None", "got 2.0"]),
    ("empty pool output", lambda: convtri.max_pool2d(t(1, 2, 5, 5), 6), RuntimeError,
     ["output size is too small", "input of size (2x5x5)", "output of size (2x0x0)"]),
    ("no channels, pool", lambda: convtri.max_pool2d(t(1, 0, 4, 4), 2), RuntimeError,
     ["expected input with non-zero sizes except for the batch dimension", "input of size [1, 0, 4, 4]"]),
    ("2-D input, avg", lambda: convtri.avg_pool2d(t(5, 5), 2), IndexError,
     ["expected input to be 3-D (C, H, W) or 4-D (N, C, H, W)", "input of size [5, 5]"]),
    ("three output sizes", lambda: convtri.adaptive_avg_pool2d(t(1, 1, 4, 4), (1, 2, 3)), RuntimeError,
     ["output_size must be an int or a pair", "output_size=[1, 2, 3]"]),
    ("negative output size", lambda: convtri.adaptive_avg_pool2d(t(1, 1, 4, 4), -1), RuntimeError,
     ["output_size must be a pair of non-negative ints", "output_size=[-1, -1]"]),
    ("too many pixels, pool", lambda: convtri.max_pool2d(meta(2 ** 16, 1, 256, 256), 2), RuntimeError,
     ["input of size [65536, 1, 256, 256] has more than 2146435071 pixels"]),
    ("indices dtype", lambda: ops.max_pool2d_backward(t(1, 1, 2, 2), t(1, 1, 2, 2), [1, 1, 4, 4], False, [2, 2],
                                                      [2, 2], [0, 0], [1, 1], False), RuntimeError,
     ["expected int64 indices of size [1, 1, 2, 2] on cpu", "got torch.float32 of size [1, 1, 2, 2] on cpu"]),
    ("pool grad_output", lambda: ops.avg_pool2d_backward(t(1, 1, 3, 3), [1, 1, 4, 4], False, [2, 2], [2, 2], [0, 0],
                                                         False, True, None), RuntimeError,
     ["expected grad_output of size [1, 1, 2, 2], got [1, 1, 3, 3]"]),
]


@pytest.mark.parametrize("call, error, words", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_error_message(call, error, words):
    with pytest.raises(error) as raised:
        call()
    for word in words:
        assert word in str(raised.value), (word, str(raised.value))


def test_old_triton_with_new_numpy_is_refused(monkeypatch):
    # triton < 3.8's interpreter fails with numpy >= 2.4: a clear error, not a crash inside it
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    monkeypatch.setattr(np, "__version__", "2.4.0")
    _launch._check_interpreter.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r"triton 3.6.0 fails with numpy 2.4.0; install numpy<2.4 or triton>=3.8"):
            convtri.conv2d(t(1, 1, 3, 3), t(1, 1, 1, 1))
    finally:
        _launch._check_interpreter.cache_clear()
