"""Triton kernels of convtri and their autotune configs (installed as ``convtri.kernels``)."""
