"""Reading checkpoints: weight files, peft adapter folders and module names, never outside the folder given.

- :mod:`~artent_fast.checkpoints.reader`: safetensors (and, when allowed, pickled) weight files of a model
  folder, sharded index or single file, read lazily one tensor at a time (:func:`open_weights`, a read-only
  mapping of tensor name -> tensor); run folders of ``checkpoint-*`` (:func:`expand_checkpoints`).
- :mod:`~artent_fast.checkpoints.adapter`: peft adapter folders (LoRA/DoRA factors, scales, checked config; one
  small class per other peft type: AdaLoRA, LoHa, LoKr, VeRA, IA3).
- :mod:`~artent_fast.checkpoints.confine`: every path a checkpoint's own files name stays inside its folder.
- :mod:`~artent_fast.checkpoints.names`: steps, layers and target patterns from names; a checkpoint's module
  names mapped to its base's.
- :mod:`~artent_fast.checkpoints.pickles`: the one ``torch.load(weights_only=True)``, refusals in one line.

Used by the sweep and by ``load_model``. See docs/sweep.md.
"""

from __future__ import annotations

from artent_fast.checkpoints.adapter import FILE_TYPES, AdapterFolder, FileType, LoraModule, TypedModule, lora_scale
from artent_fast.checkpoints.confine import Escape, confine, roots_of
from artent_fast.checkpoints.names import (
    DEFAULT_TARGETS,
    NameMap,
    check_targets,
    choose_name_map,
    is_target,
    module_name,
    parse_layer,
    parse_step,
)
from artent_fast.checkpoints.pickles import PickleRefused, load_weights_only
from artent_fast.checkpoints.reader import (
    CheckpointError,
    WeightFiles,
    expand_checkpoints,
    has_weights,
    is_adapter,
    open_weights,
)

__all__ = [
    "DEFAULT_TARGETS",
    "FILE_TYPES",
    "AdapterFolder",
    "CheckpointError",
    "Escape",
    "FileType",
    "LoraModule",
    "NameMap",
    "PickleRefused",
    "TypedModule",
    "WeightFiles",
    "check_targets",
    "choose_name_map",
    "confine",
    "expand_checkpoints",
    "has_weights",
    "is_adapter",
    "is_target",
    "load_weights_only",
    "lora_scale",
    "module_name",
    "open_weights",
    "parse_layer",
    "parse_step",
    "roots_of",
]
