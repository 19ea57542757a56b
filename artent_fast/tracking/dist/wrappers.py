"""The model wrappers the tracker refuses (FSDP1 without ``use_orig_params``, dense units under DeepSpeed ZeRO-3)
and the whole views of sharded parameters (FSDP1, ZeRO-3) while units are found."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


def is_zero3(tensor: object) -> bool:
    """A parameter partitioned by DeepSpeed ZeRO-3 (it carries ``ds_id``; its ``data`` is this rank's part)."""
    return hasattr(tensor, "ds_id")


def refuse_unsupported(model: nn.Module) -> None:
    """Clear errors for the wrappers the tracker cannot read: FSDP1 without ``use_orig_params``."""
    root_is_fsdp1 = type(model).__name__ == "FullyShardedDataParallel"
    inner = next((n for n, m in model.named_modules() if type(m).__name__ == "FullyShardedDataParallel"), None)
    flattened = any(getattr(p, "_fsdp_flattened", False) for p in model.parameters())
    if not root_is_fsdp1 and (inner is not None or flattened):
        where = f"it contains FSDP1 module {inner}" if inner is not None else "its parameters are FSDP1 flat views"
        raise ValueError(
            f"model is not the FullyShardedDataParallel root ({where}): pass the outermost "
            "FullyShardedDataParallel wrapper to artent_fast.track (the module inside it cannot be read "
            "without disturbing FSDP), or use FSDP2 (fully_shard)"
        )
    for name, module in model.named_modules():
        if type(module).__name__ == "FullyShardedDataParallel" and not getattr(module, "_use_orig_params", True):
            raise ValueError(
                f"model: FSDP1 module {name or '<root>'} was wrapped without use_orig_params=True; "
                "artent_fast.track reads the original parameters: wrap with "
                "FullyShardedDataParallel(..., use_orig_params=True), or use FSDP2 (fully_shard)"
            )


def fsdp1_owner(model: nn.Module, module_name: str) -> str | None:
    """The name of the innermost FSDP1 module around ``module_name`` (None: not under FSDP1)."""
    best = None
    for name, module in model.named_modules():
        if type(module).__name__ != "FullyShardedDataParallel":
            continue
        if name == "" or module_name == name or module_name.startswith(name + "."):
            if best is None or len(name) >= len(best):
                best = name
    return best


def refuse_zero3_dense(units: list) -> None:
    """Under ZeRO-3 the tracker reads factored adapters only: a dense update would need whole weights."""
    dense = [u.label for u in units if u.kind == "dense"]
    if dense:
        raise ValueError(
            f"model: DeepSpeed ZeRO-3 partitions the weights, and {dense[:3]} ({len(dense)} units) are dense "
            "updates (full fine-tuning, DoRA, IA3, ...) that need whole weights: artent_fast.track reads only "
            "factored adapters (LoRA, AdaLoRA, LoHa, LoKr, VeRA) under ZeRO-3; pass targets= that select them, "
            "or use ZeRO stage 1/2, DDP or FSDP"
        )


@contextlib.contextmanager
def gathered(params: list) -> Iterator[None]:
    """DeepSpeed ZeRO-3: ``params`` whole on every rank inside (one ``GatheredParameters`` call; every rank
    enters it with the same list); nothing when the list is empty."""
    if not params:
        yield
        return
    import deepspeed  # a ZeRO-3 parameter exists, so DeepSpeed is installed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def whole_model(model: nn.Module) -> contextlib.AbstractContextManager:
    """The whole parameters while units are found at construction: FSDP1's (offloaded to CPU), ZeRO-3's
    trainable ones (the adapters: frozen base weights are never read there); else nothing."""
    zero3 = [p for p in model.parameters() if is_zero3(p) and p.requires_grad]
    if zero3:
        return gathered(zero3)
    if not any(type(m).__name__ == "FullyShardedDataParallel" for m in model.modules()):
        return contextlib.nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    on_accelerator = any(p.device.type != "cpu" for p in model.parameters())  # offloading CPU params breaks FSDP1
    return FSDP.summon_full_params(model, writeback=False, offload_to_cpu=on_accelerator)
