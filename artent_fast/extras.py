"""The one place that turns a failed import of an optional dependency into an error message.

A missing extra and a broken import are different errors. When the package is absent
(:func:`importlib.util.find_spec` does not find it), the message names what needs it and the
install command. When it is installed but importing it fails (a dependency of its own is missing or
too old, a folder in the working directory shadows a package it imports, ...), the message shows the
real exception (type, message, the file it was raised in) and suggests no install: installing
what is installed fixes nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says what to install."""


class BrokenImportError(ImportError):
    """An optional dependency is installed but importing it failed; the message shows the real exception."""


def install_hint(extra: str) -> str:
    return f"pip install 'artent_fast[{extra}]'"


def is_installed(module: str) -> bool:
    """Whether the top-level package of ``module`` can be found (without importing it)."""
    top = module.partition(".")[0]
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):  # a half-imported module without __spec__
        return False


def describe(exc: BaseException) -> str:
    """``Type: message (raised in file:line)``: the real exception, in one line."""
    text = f"{type(exc).__name__}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ is not None else []
    frames = [f for f in frames if not f.filename.startswith("<frozen importlib")]
    if frames:
        text += f" (raised in {frames[-1].filename}:{frames[-1].lineno})"
    elif getattr(exc, "path", None) and str(exc.path) not in text:
        text += f" ({exc.path})"
    return text


def missing_extra(
    modules: str | Sequence[str], purpose: str, extra: str | None = None, install: str | None = None
) -> MissingExtraError:
    """The error for ``modules`` (top-level names) not being installed: what needs them and the install command."""
    missing = list(dict.fromkeys(m.partition(".")[0] for m in ([modules] if isinstance(modules, str) else modules)))
    how = install or (install_hint(extra) if extra else f"pip install {' '.join(missing)}")
    verb = "is" if len(missing) == 1 else "are"
    return MissingExtraError(f"{purpose}: {', '.join(missing)} {verb} not installed: {how}")


def import_error(
    exc: ImportError, modules: Sequence[str], purpose: str, extra: str | None = None, install: str | None = None
) -> ImportError:
    """The error to raise for ``exc``, raised while importing ``modules`` for ``purpose``.

    :func:`missing_extra` when one of ``modules`` is not installed, else :class:`BrokenImportError` with the
    real exception.
    """
    missing = [m for m in modules if not is_installed(m)]
    if missing:
        return missing_extra(missing, purpose, extra, install)
    names = list(dict.fromkeys(m.partition(".")[0] for m in modules))
    verb = "is" if len(names) == 1 else "are"
    return BrokenImportError(f"{purpose}: {', '.join(names)} {verb} installed but importing failed: {describe(exc)}")


@contextmanager
def optional_imports(
    modules: str | Sequence[str], purpose: str, extra: str | None = None, install: str | None = None
) -> Iterator[None]:
    """Imports inside the block that fail raise :class:`MissingExtraError` or :class:`BrokenImportError`.

    ``modules``: the optional packages the block imports (their top-level names decide which error).
    """
    modules = [modules] if isinstance(modules, str) else list(modules)
    try:
        yield
    except (MissingExtraError, BrokenImportError):
        raise
    except ImportError as exc:
        raise import_error(exc, modules, purpose, extra, install) from exc


def require(module: str, purpose: str, extra: str | None = None, install: str | None = None) -> ModuleType:
    """``importlib.import_module(module)``, or the error of :func:`optional_imports`."""
    with optional_imports(module, purpose, extra, install):
        return importlib.import_module(module)


def optional(module: str, purpose: str, extra: str | None = None) -> ModuleType | None:
    """``module`` when installed, ``None`` when not (the caller falls back); installed but broken raises
    :class:`BrokenImportError` (a silent fallback would hide it)."""
    if not is_installed(module):
        return None
    return require(module, purpose, extra)
