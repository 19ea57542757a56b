"""artent_fast: fast artificial-entanglement profiles of weights, updates and attention.

The core (profiles, factored path, MPS, theory) imports with torch and numpy alone; the
integrations (tracking, attention, sweeps, adapters) load lazily on first use.
"""

from __future__ import annotations

import importlib as _importlib

from artent_fast.api import *  # noqa: F403
from artent_fast.api import __all__ as _core_all

__version__ = "0.1.0"

# name -> module that defines it; imported on first access so optional extras stay optional.
_LAZY = {
    "track": "artent_fast.tracking",
    "Tracker": "artent_fast.tracking",
    "fused_attention": "artent_fast.attention",
    "attention_profile": "artent_fast.attention",
    "register_attention": "artent_fast.attention",
    "compare_models": "artent_fast.compare",
    "read_history": "artent_fast.tracking.records",
    "run_sweep": "artent_fast.sweep",
    "load_model": "artent_fast.integrations.models",
}
# subpackages reachable as attributes (``artent_fast.adapters.mps.apply``) without an explicit import
_SUBPACKAGES = ("adapters", "attention", "compare", "integrations", "backends", "plotting", "sweep", "tracking")

__all__ = [*_core_all, *_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return _importlib.import_module(f"artent_fast.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'artent_fast' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names (the lazy ones included) and the subpackages, nothing imported for our own use."""
    return sorted({*__all__, *_SUBPACKAGES})
