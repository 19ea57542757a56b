"""Packaging: kernels/ ships as ``artent_fast.kernels``; the CUDA extension (csrc/) is optional.

``ARTENT_FAST_BUILD_CUDA=1 pip install -e .`` with nvcc on PATH builds the extension;
otherwise the package installs as pure Python and every op runs through torch (or Triton).
"""

from setuptools import find_packages, setup


def packages() -> tuple[list[str], dict[str, str]]:
    pkgs = find_packages(include=["artent_fast", "artent_fast.*"])
    kernel_pkgs = ["artent_fast.kernels" + ("." + p if p else "") for p in ["", *find_packages("kernels")]]
    return pkgs + kernel_pkgs, {"artent_fast.kernels": "kernels"}


def cuda_extensions() -> list:
    return []  # filled in by the CUDA backend (csrc/)


pkgs, pkg_dir = packages()
setup(packages=pkgs, package_dir=pkg_dir, ext_modules=cuda_extensions())
