"""Compile the batched Jacobi eigensolver extension (``_cuda_jacobi``) with nvcc and a C++ compiler.

Two translation units keep the build fast: ``jacobi_eigvalsh.cu`` (kernels, nvcc, one target
architecture) and ``bindings.cpp`` (pybind11, the host C++ compiler); the shared object links the
static CUDA runtime only, never libtorch, so it imports on machines without a GPU and works with
any torch version. Used by ``setup.py`` (``ARTENT_FAST_BUILD_CUDA=1``), ``csrc/build.sh`` and the tests.

Usage: ``python csrc/build.py [OUT_DIR] [--arch sm_90]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULE = "_cuda_jacobi"
CU_SOURCE = HERE / "jacobi_eigvalsh.cu"
CPP_SOURCE = HERE / "bindings.cpp"
DEFAULT_ARCH = os.environ.get("ARTENT_FAST_CUDA_ARCH", "sm_90")


def find_nvcc() -> str | None:
    """nvcc from ``$CUDA_HOME/bin``, ``PATH`` or ``/usr/local/cuda/bin``, else None."""
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    found = shutil.which("nvcc")
    if found:
        return found
    default = Path("/usr/local/cuda/bin/nvcc")
    return str(default) if default.is_file() else None


def cuda_home(nvcc: str) -> Path:
    """The toolkit root: nvcc's real location two levels up (PATH entries may be wrapper scripts)."""
    real = Path(nvcc).resolve()
    root = real.parent.parent
    if not (root / "include" / "cuda_runtime.h").is_file():
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
        for cand in (Path("/usr/local/cuda"), *sorted(Path("/usr/local").glob("cuda-*"), reverse=True)):
            if (cand / "include" / "cuda_runtime.h").is_file():
                return cand
        raise FileNotFoundError(f"cannot find the CUDA toolkit next to {nvcc} (nvcc says: {out.strip()[-80:]})")
    return root


LIB_SUBDIRS = ("lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib")


def cudart_dir(home: Path) -> Path:
    """The folder holding ``libcudart_static.a`` (preferred) or, failing that, ``libcudart.so``."""
    for name in ("libcudart_static.a", "libcudart.so"):
        for sub in LIB_SUBDIRS:
            if (home / sub / name).is_file():
                return home / sub
    raise FileNotFoundError(f"neither libcudart_static.a nor libcudart.so found under {home}")


def cudart_libraries(libdir: Path) -> list[str]:
    """Link libraries: the static runtime when there is one (no runtime dependency), else the shared one."""
    if (libdir / "libcudart_static.a").is_file():
        return ["cudart_static", "dl", "rt", "pthread"]
    return ["cudart"]


def extension_suffix() -> str:
    return sysconfig.get_config_var("EXT_SUFFIX") or ".so"


def compile_cu(nvcc: str, obj: Path, arch: str = DEFAULT_ARCH) -> None:
    """nvcc -> position-independent object for one real architecture (fast: a few seconds)."""
    obj.parent.mkdir(parents=True, exist_ok=True)
    cmd = [nvcc, "-O3", f"-arch={arch}", "-std=c++17", "-Xcompiler", "-fPIC", "-c", str(CU_SOURCE), "-o", str(obj)]
    subprocess.run(cmd, check=True)


def build(out_dir: str | os.PathLike, arch: str = DEFAULT_ARCH, cxx: str | None = None) -> Path:
    """Build ``_cuda_jacobi<EXT_SUFFIX>`` into ``out_dir`` and return its path."""
    import pybind11

    nvcc = find_nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    out = Path(out_dir).resolve()
    tmp = out / "build_tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    cu_obj, cpp_obj = tmp / "jacobi_eigvalsh.o", tmp / "bindings.o"
    compile_cu(nvcc, cu_obj, arch)
    cxx = cxx or os.environ.get("CXX") or "c++"
    py_inc = sysconfig.get_paths()["include"]
    subprocess.run(
        [
            cxx,
            "-O2",
            "-fPIC",
            "-std=c++17",
            "-fvisibility=hidden",
            f"-I{pybind11.get_include()}",
            f"-I{py_inc}",
            "-c",
            str(CPP_SOURCE),
            "-o",
            str(cpp_obj),
        ],
        check=True,
    )
    target = out / f"{MODULE}{extension_suffix()}"
    libdir = cudart_dir(cuda_home(nvcc))
    rpath = [] if (libdir / "libcudart_static.a").is_file() else [f"-Wl,-rpath,{libdir}"]
    libs = [f"-l{name}" for name in cudart_libraries(libdir)]
    subprocess.run(
        [cxx, "-shared", str(cpp_obj), str(cu_obj), f"-L{libdir}", *libs, *rpath, "-o", str(target)], check=True
    )
    shutil.rmtree(tmp, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default=str(HERE.parent / "artent_fast"))
    parser.add_argument("--arch", default=DEFAULT_ARCH, help="nvcc -arch (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        path = build(args.out_dir, args.arch)
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
