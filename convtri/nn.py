"""Drop-in modules: subclasses of torch's own, so constructors, parameters, state_dict and
repr are torch's, while forward runs convtri's kernels."""
import torch

from convtri.conv2d import conv2d


class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` on convtri's kernels, every padding_mode included. Non-zero padding
    modes are folded into the kernels' index arithmetic: no padded copy of the input is made."""

    def forward(self, input):
        return conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                      padding_mode=self.padding_mode)
