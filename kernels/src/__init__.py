"""Triton kernels, shipped as ``artent_fast.kernels``; importing this never requires triton or a GPU.

A leaf: these modules import torch and triton only (never ``artent_fast``), each kernel with its plain
torch twin beside it (``*_reference``); ``_support`` holds the shared triton guard, interpreter check,
lazy jit and mask-argument helper. The backends (``artent_fast.backends.triton_ops``) and the attention
path import them, never the other way round.
"""
