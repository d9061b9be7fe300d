"""Drop-in modules: subclasses of torch's own, so constructors, parameters, state_dict and
repr are torch's, while forward runs convtri's kernels."""
import torch

from convtri.conv1d import conv1d
from convtri.conv2d import activation_code, conv2d
from convtri.conv_transpose2d import conv_transpose2d
from convtri.pool2d import adaptive_avg_pool2d, avg_pool2d, max_pool2d


class FusedActivation:
    """A convolution module's ``activation`` (keyword only: ``None`` or a name ``convtri.conv2d``
    takes, e.g. ``"relu"``, ``"silu"``, ``"gelu"``), fused into its kernels:
    ``Conv2d(..., activation="relu")`` computes ``Conv2d(...)`` then ``ReLU()``."""

    activation = None  # also for a twin that convert() re-classes from torch's module

    def __init__(self, *args, activation=None, **kwargs):
        super().__init__(*args, **kwargs)
        activation_code(activation)
        self.activation = activation

    def extra_repr(self):
        return super().extra_repr() + (f", activation={self.activation!r}" if self.activation else "")


class Conv2d(FusedActivation, torch.nn.Conv2d):
    """``torch.nn.Conv2d`` on convtri's kernels, every padding_mode included, with a fused
    ``activation`` (``FusedActivation``). Non-zero padding modes are folded into the kernels'
    index arithmetic: no padded copy of the input is made."""

    def forward(self, input):
        return conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                      padding_mode=self.padding_mode, activation=self.activation)


class Conv1d(FusedActivation, torch.nn.Conv1d):
    """``torch.nn.Conv1d`` on convtri's kernels (a one-row ``convtri.conv2d``), every
    padding_mode included, with a fused ``activation`` (``FusedActivation``)."""

    def forward(self, input):
        return conv1d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                      padding_mode=self.padding_mode, activation=self.activation)


class MaxPool2d(torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` on convtri's kernels."""

    def forward(self, input):
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                          ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool2d(torch.nn.AvgPool2d):
    """``torch.nn.AvgPool2d`` on convtri's kernels."""

    def forward(self, input):
        return avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool2d(torch.nn.AdaptiveAvgPool2d):
    """``torch.nn.AdaptiveAvgPool2d`` on convtri's kernels (output_size 1: global average pooling)."""

    def forward(self, input):
        return adaptive_avg_pool2d(input, self.output_size)


class ConvTranspose2d(torch.nn.ConvTranspose2d):
    """``torch.nn.ConvTranspose2d`` on convtri's kernels; ``output_size`` picks the output
    padding, as torch's does."""

    def forward(self, input, output_size=None):
        if self.padding_mode != "zeros":
            raise ValueError(f"Only 'zeros' padding mode is supported for {type(self).__name__}")
        num_spatial_dims = 2
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size,
                                              num_spatial_dims, self.dilation)
        return conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                                self.groups, self.dilation)
