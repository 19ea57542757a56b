"""THE reader of a module's update: adapter types, units, and finding them in a model.

Tracking, comparison and sweeps read a layer's weight update through this package only;
:mod:`artent_fast.core.update_algebra` holds the tensor formulas (also used on adapter files).
"""

from artent_fast.updates.find import adapter_units, find_units, module_units, read_starts
from artent_fast.updates.types import ADAPTER_TYPES, AdapterType, adapter_type
from artent_fast.updates.unit import Part, Unit

__all__ = [
    "ADAPTER_TYPES",
    "AdapterType",
    "adapter_units",
    "Part",
    "Unit",
    "adapter_type",
    "find_units",
    "module_units",
    "read_starts",
]
