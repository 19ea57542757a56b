"""Triton kernels, shipped as ``artent_fast.kernels``; importing this never requires triton or a GPU."""
