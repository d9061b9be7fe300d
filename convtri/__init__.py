"""convtri: 2-D convolution and pooling as hand-written Triton kernels, forward and backward."""
from convtri.conv2d import conv2d, corr2d
from convtri import nn

__all__ = ["conv2d", "corr2d", "nn"]
