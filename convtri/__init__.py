"""convtri: convolution and pooling as hand-written Triton kernels, forward and backward."""
from convtri.conv2d import conv2d, corr2d
from convtri.conv1d import conv1d
from convtri.conv_transpose2d import conv_transpose2d
from convtri.pool2d import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from convtri import nn
from convtri import graphs
from convtri.convert import convert

__all__ = ["conv2d", "conv1d", "corr2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "nn", "graphs",
           "convert"]
