"""A missing optional dependency and a broken one are different errors (artent_fast.extras, issue 20)."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

import pytest

from artent_fast.cli import main
from artent_fast.extras import BrokenImportError, MissingExtraError, optional, optional_imports, require

ABSENT = "artent_fast_test_absent_package"


def broken_package(tmp_path, monkeypatch, name: str, body: str):
    """An installed package ``name`` (on sys.path) whose ``__init__`` runs ``body`` and fails; its file."""
    pkg = tmp_path / name
    pkg.mkdir()
    init = pkg / "__init__.py"
    init.write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return init


def test_an_absent_package_names_the_extra():
    with pytest.raises(MissingExtraError) as info:
        require(ABSENT, "figures", extra="plot")
    assert str(info.value) == f"figures: {ABSENT} is not installed: pip install 'artent_fast[plot]'"
    assert optional(ABSENT, "figures", extra="plot") is None


def test_a_broken_package_shows_the_real_exception_and_no_install(tmp_path, monkeypatch):
    init = broken_package(
        tmp_path, monkeypatch, "artent_broken_pkg", "raise ImportError(\"cannot import name 'CUDAProperties'\")\n"
    )
    with pytest.raises(BrokenImportError) as info:
        require("artent_broken_pkg", "artent demo", extra="hf")
    text = str(info.value)
    assert text.startswith("artent demo: artent_broken_pkg is installed but importing failed: ImportError: ")
    assert "cannot import name 'CUDAProperties'" in text and f"{init}:1" in text
    assert "pip install" not in text
    assert isinstance(info.value.__cause__, ImportError)
    with pytest.raises(BrokenImportError):  # no silent fallback either
        optional("artent_broken_pkg", "progress bars", extra="progress")


def test_a_missing_dependency_of_an_installed_package_is_not_a_missing_extra(tmp_path, monkeypatch):
    broken_package(tmp_path, monkeypatch, "artent_broken_dep", f"import {ABSENT}_dep\n")
    with pytest.raises(BrokenImportError, match=f"ModuleNotFoundError: No module named '{ABSENT}_dep'") as info:
        with optional_imports("artent_broken_dep", "reading checkpoints", extra="hf"):
            import artent_broken_dep  # noqa: F401
    assert "pip install" not in str(info.value)


def test_a_module_blocked_in_sys_modules_counts_as_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(MissingExtraError, match=r"peft is not installed: pip install 'artent_fast\[hf\]'"):
        require("peft", "artent demo", extra="hf")


class _RaisingFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``name`` (so it counts as installed) and fails to import it, as a shadowed dependency does."""

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.name:
            return importlib.machinery.ModuleSpec(fullname, self, origin=f"/site-packages/{fullname}/__init__.py")
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ImportError("cannot import name 'CUDAProperties' from 'kernels' (/repo/kernels/__init__.py)")


def test_demo_with_a_broken_peft_shows_the_error_and_not_an_install(tmp_path, capsys, monkeypatch):
    pytest.importorskip("peft")
    monkeypatch.delitem(sys.modules, "peft")
    monkeypatch.setattr(sys, "meta_path", [_RaisingFinder("peft"), *sys.meta_path])
    assert main(["demo", "--out", str(tmp_path / "r"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "pip install" not in err, err
    assert "error: LoRA fine-tuning (the hf extra): peft, transformers are installed but importing failed" in err
    assert "ImportError: cannot import name 'CUDAProperties' from 'kernels' (/repo/kernels/__init__.py)" in err
    assert not (tmp_path / "r").exists()
