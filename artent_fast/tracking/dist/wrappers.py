"""The model wrappers the tracker cannot read (DeepSpeed, FSDP1 without ``use_orig_params``) and FSDP1's whole view."""

from __future__ import annotations

import contextlib

from torch import nn


def refuse_unsupported(model: nn.Module) -> None:
    """Clear errors for the wrappers the tracker cannot read: DeepSpeed, FSDP1 without ``use_orig_params``."""
    cls = type(model)
    if (
        "deepspeed" in cls.__module__
        or any("deepspeed" in type(m).__module__ for m in model.modules())
        or any(hasattr(p, "ds_id") for p in model.parameters())
    ):
        raise ValueError(
            "model: DeepSpeed engines are not supported by artent_fast.track (untested: ZeRO-3 "
            "parameters are partitioned outside torch.distributed's FSDP/DTensor); use DDP or FSDP"
        )
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


def whole_model(model: nn.Module) -> contextlib.AbstractContextManager:
    """FSDP1: the whole parameters (offloaded to CPU) while units are found at construction; else nothing."""
    if not any(type(m).__name__ == "FullyShardedDataParallel" for m in model.modules()):
        return contextlib.nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    on_accelerator = any(p.device.type != "cpu" for p in model.parameters())  # offloading CPU params breaks FSDP1
    return FSDP.summon_full_params(model, writeback=False, offload_to_cpu=on_accelerator)
