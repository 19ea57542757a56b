"""Packaging: kernels/src/ ships as ``artent_fast.kernels``; the CUDA extension (csrc/) is optional.

``kernels/`` itself has no ``__init__.py``: a top-level package named ``kernels`` at the repository root
would shadow the ``kernels`` distribution (which transformers imports) whenever the root is on ``sys.path``.

``artent_fast._cpu_densities`` (csrc/lowrank_densities.c, the tracker's compiled CPU path) is built
wherever a C compiler is found, and skipped (pure Python, torch path) where not.
``ARTENT_FAST_BUILD_CUDA=1 pip install --no-build-isolation -e .`` with nvcc on PATH (and pybind11
installed) builds ``artent_fast._cuda_jacobi``; otherwise the package installs as pure Python and
every op runs through torch (or Triton). ``ARTENT_FAST_CUDA_ARCH`` picks the nvcc target (sm_90).
"""

import importlib.util
import os
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
KERNELS = "kernels/src"  # the importable code, one folder down (see the docstring)


def packages() -> tuple[list[str], dict[str, str]]:
    pkgs = find_packages(include=["artent_fast", "artent_fast.*"])
    kernel_pkgs = ["artent_fast.kernels" + ("." + p if p else "") for p in ["", *find_packages(KERNELS)]]
    return pkgs + kernel_pkgs, {"artent_fast.kernels": KERNELS}


def _csrc_build():
    """``csrc/build.py`` as a module (csrc/ is not a package)."""
    spec = importlib.util.spec_from_file_location("artent_fast_csrc_build", ROOT / "csrc" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class NvccBuildExt(build_ext):
    """build_ext that compiles each extension's ``.cu`` sources with nvcc and links the objects."""

    def build_extension(self, ext):
        cu = [s for s in ext.sources if s.endswith(".cu")]
        if cu:
            csrc = _csrc_build()
            nvcc = csrc.find_nvcc()
            ext.sources = [s for s in ext.sources if not s.endswith(".cu")]
            for src in cu:
                obj = Path(self.build_temp) / (Path(src).stem + ".cu.o")
                csrc.compile_cu(nvcc, obj)
                ext.extra_objects.append(str(obj))
        super().build_extension(ext)


def cuda_extensions() -> list:
    """The CUDA eigensolver, only with ``ARTENT_FAST_BUILD_CUDA=1``, nvcc and pybind11 present."""
    if os.environ.get("ARTENT_FAST_BUILD_CUDA", "") != "1":
        return []
    csrc = _csrc_build()
    nvcc = csrc.find_nvcc()
    if nvcc is None:
        print("ARTENT_FAST_BUILD_CUDA=1 but nvcc was not found: skipping the CUDA extension")
        return []
    try:
        import pybind11
    except ImportError:
        print("ARTENT_FAST_BUILD_CUDA=1 needs pybind11 (pip install pybind11; --no-build-isolation): skipping")
        return []
    from setuptools import Extension

    try:
        libdir = csrc.cudart_dir(csrc.cuda_home(nvcc))
    except FileNotFoundError as exc:
        print(f"ARTENT_FAST_BUILD_CUDA=1 but the CUDA runtime library was not found ({exc}): skipping")
        return []
    return [
        Extension(
            "artent_fast._cuda_jacobi",
            sources=["csrc/bindings.cpp", "csrc/jacobi_eigvalsh.cu"],
            include_dirs=[pybind11.get_include()],
            library_dirs=[str(libdir)],
            libraries=csrc.cudart_libraries(libdir),
            runtime_library_dirs=[] if (libdir / "libcudart_static.a").is_file() else [str(libdir)],
            extra_compile_args=["-std=c++17", "-O2", "-fvisibility=hidden"],
            language="c++",
        )
    ]


def cpu_extensions() -> list:
    """The compiled CPU path of the tracker's due step (csrc/lowrank_densities.c, plain C and Python's API).

    ``optional``: where no C compiler is found the install goes on, pure Python, and the torch path runs
    (``artent_fast.backends.native.load_error()`` says why). ``ARTENT_FAST_BUILD_CPU=0`` skips it."""
    if os.environ.get("ARTENT_FAST_BUILD_CPU", "1") == "0":
        return []
    from setuptools import Extension

    return [
        Extension(
            "artent_fast._cpu_densities",
            sources=["csrc/lowrank_densities.c"],
            extra_compile_args=["-O3", "-fvisibility=hidden"],
            optional=True,
        )
    ]


pkgs, pkg_dir = packages()
setup(
    packages=pkgs,
    package_dir=pkg_dir,
    ext_modules=cpu_extensions() + cuda_extensions(),
    cmdclass={"build_ext": NvccBuildExt},
)
