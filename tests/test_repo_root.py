"""Nothing at the repository root shadows an installed distribution (issue 20).

Whenever the repository root is on ``sys.path`` (``python -m pytest``, ``python -m artent_fast``, a
``python`` or Jupyter session started there), a package or module at the root is found before
site-packages. A top-level ``kernels/__init__.py`` once hid the ``kernels`` distribution that
transformers imports, and every model load failed. These tests run Python in a subprocess whose
working directory is the repository root, as a user would.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_at_root(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python *args`` with the repository root as working directory (so it is ``sys.path[0]``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ARTENT_FAST_BACKEND")}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def root_names() -> dict[str, str]:
    """Every top-level name importable from the repository root: ``{name: kind}``.

    kind is ``package`` (a folder with ``__init__.py``), ``module`` (a ``.py`` file) or ``namespace``
    (any other folder whose name is an identifier: Python imports it as a namespace package).
    """
    names: dict[str, str] = {}
    for entry in ROOT.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and entry.name.isidentifier():
            names[entry.name] = "package" if (entry / "__init__.py").is_file() else "namespace"
        elif entry.suffix == ".py" and entry.stem.isidentifier():
            names[entry.stem] = "module"
    return names


def installed_top_level_names() -> dict[str, list[str]]:
    """``{top-level name: [distributions]}`` of every installed distribution except artent_fast itself."""
    own = {"artent_fast", "artent-fast"}
    found = {}
    for name, dists in importlib.metadata.packages_distributions().items():
        others = [d for d in dists if d.lower().replace("_", "-") not in {o.replace("_", "-") for o in own}]
        if others:
            found[name] = others
    return found


def test_no_root_name_is_a_top_level_name_of_an_installed_distribution():
    installed = installed_top_level_names()
    names = root_names()
    clashes = {n: (kind, installed[n]) for n, kind in names.items() if n in installed and kind != "namespace"}
    assert not clashes, (
        f"these names at the repository root shadow installed distributions when the root is on sys.path: {clashes}"
    )


@pytest.mark.slow
def test_namespace_folders_at_the_root_do_not_win_over_installed_packages():
    """A folder without ``__init__.py`` (``kernels/``) loses to a regular package of the same name, unless the
    installed one is itself a namespace package (then the two merge): check where each such name resolves."""
    installed = installed_top_level_names()
    names = sorted(n for n, kind in root_names().items() if kind == "namespace" and n in installed)
    if not names:
        pytest.skip("no namespace folder at the root shares a name with an installed distribution")
    code = (
        "import importlib.util, json, sys\n"
        "out = {}\n"
        f"for name in {names!r}:\n"
        "    spec = importlib.util.find_spec(name)\n"
        "    out[name] = [spec.origin] if spec.origin else list(spec.submodule_search_locations or [])\n"
        "print(json.dumps(out))\n"
    )
    res = run_at_root("-c", code)
    assert res.returncode == 0, res.stderr
    for name, places in json.loads(res.stdout).items():
        inside = [p for p in places if p and Path(p).resolve().is_relative_to(ROOT)]
        assert not inside, f"{name!r} resolves (in part) to the repository root: {places}"


def test_only_artent_fast_is_a_regular_package_at_the_root():
    """Generic names (``kernels``, ``benchmarks``, ``tests``) are distributions' names too: the root keeps them as
    plain folders, so a regular package installed later is never hidden (the class, not only today's clash)."""
    packages = sorted(n for n, kind in root_names().items() if kind == "package")
    assert packages == ["artent_fast"], packages


def need(*modules: str) -> None:
    """Skip unless each module is installed: found, not imported (an import here could fail for the very reason
    these tests look for, and pytest.importorskip would then skip instead of fail)."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"not installed: {missing}")


def _kernels_distribution():
    try:
        return importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the kernels distribution is not installed (transformers >= 5.25 brings it)")


@pytest.mark.slow
def test_import_kernels_from_the_root_is_the_installed_distribution():
    dist = _kernels_distribution()
    res = run_at_root("-c", "import kernels; print(kernels.__file__)")
    assert res.returncode == 0, res.stderr
    where = Path(res.stdout.strip()).resolve()
    assert not where.is_relative_to(ROOT), f"import kernels found {where}, inside the repository"
    assert where.is_relative_to(Path(dist.locate_file("")).resolve()), where


@pytest.mark.slow
def test_transformers_loads_a_tiny_llama_from_the_root():
    need("transformers")
    code = (
        "import transformers\n"
        "from artent_fast.testing.models import tiny_llama_config\n"
        "model = transformers.LlamaForCausalLM(tiny_llama_config())\n"
        "print(type(model).__name__, sum(p.numel() for p in model.parameters()))\n"
    )
    res = run_at_root("-c", code)
    assert res.returncode == 0, res.stderr[-4000:]
    assert res.stdout.startswith("LlamaForCausalLM "), res.stdout


@pytest.mark.slow
@pytest.mark.skipif(sys.version_info < (3, 11), reason="python -P (no script folder on sys.path) is 3.11+")
def test_bare_pytest_runs_a_test_file_that_imports_the_tests_helpers():
    """``pytest tests/test_x.py`` (the console script: no working directory on sys.path, as ``python -P``) on a
    file that imports ``tests.matrices``."""
    res = run_at_root(
        "-P", "-m", "pytest", "tests/core/test_core_mps.py", "-k", "dtype_norm_and_repr", "-q", "-p", "no:cacheprovider"
    )
    assert res.returncode == 0, res.stdout[-3000:]
    assert "1 passed" in res.stdout


@pytest.mark.slow
def test_python_m_artent_fast_demo_from_the_root(tmp_path):
    need("transformers", "peft", "matplotlib")
    out = tmp_path / "demo"
    res = run_at_root("-m", "artent_fast", "demo", "--steps", "2", "--batch", "2", "--seq-len", "16", "--out", str(out))
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-4000:]}"
    for name in ("history.jsonl", "summary.md", "profile.png", "heatmap.png", "valley_depth.png", "loss.png"):
        assert (out / name).stat().st_size > 0, name
