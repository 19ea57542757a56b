"""Triton kernels, shipped as ``artent_fast.kernels``; importing this never requires triton or a GPU.

A leaf: these modules import torch and triton only (never ``artent_fast``). Their torch references are
the registry's torch kernels (``artent_fast.backends.torch_ops``: one torch version of each op, which the
tests compare these kernels against); ``_support`` holds the shared triton guard, interpreter check,
lazy jit and mask-argument helper. The backends (``artent_fast.backends.triton_ops``) and the attention
path import them, never the other way round.
"""
