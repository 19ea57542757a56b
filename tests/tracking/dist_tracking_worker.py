"""Worker for test_tracking_distributed.py: ``torchrun --nproc-per-node 2 dist_tracking_worker.py OUT S...``.

Each scenario S trains a small model (LoRA through peft, or full fine-tuning) under a strategy
(ddp, fsdp2, fsdp2_keep: reshard_after_forward=False, fsdp1), tracked by ``artent_fast.track``
called unchanged on every rank. After every optimizer step the harness itself gathers the whole
update (outside the tracker) and rank 0 stores its float64 reference profile. Every rank writes
``OUT/S.rank<r>.json``: its history, skipped/dropped, the references (rank 0) and, for the
``every3`` scenario, the number of collectives called inside each ``tracker.step()``.
Also importable: :func:`build` and :func:`batches` give the single-process run the same model and data.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

from artent_fast.patterns import module_name

STEPS = 4
D = 24


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(D, D, bias=False)
        self.v_proj = nn.Linear(D, D // 2, bias=False)
        self.up = nn.Linear(D // 2, D, bias=False)

    def forward(self, x):
        x = x + torch.tanh(self.q_proj(x))
        return x + self.up(self.v_proj(x))


class Tiny(nn.Module):
    def __init__(self, layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block() for _ in range(layers))
        self.head = nn.Linear(D, 4, bias=False)

    def forward(self, x):
        for block in self.layers:
            x = block(x)
        return self.head(x)


def build(kind: str, rank: int = 4) -> nn.Module:
    """The same model on every process: ``kind="lora"`` (peft, r=4, B != 0) or ``"fft"`` (q/v trainable)."""
    torch.manual_seed(0)
    model = Tiny()
    if kind == "lora":
        import peft

        config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"])
        return peft.get_peft_model(model, config)
    for name, p in model.named_parameters():
        p.requires_grad_(name.endswith(("q_proj.weight", "v_proj.weight")))
    return model


def batches(steps: int = STEPS) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, D, generator=g), torch.randn(8, 4, generator=g)) for _ in range(steps)]


def blocks_of(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, Block)]


def wrap(model: nn.Module, strategy: str) -> nn.Module:
    if strategy == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model)
    if strategy in ("fsdp2", "fsdp2_keep"):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (int(os.environ["WORLD_SIZE"]),))
        keep = strategy == "fsdp2_keep"
        for block in blocks_of(model):
            fully_shard(block, mesh=mesh, reshard_after_forward=not keep)
        fully_shard(model, mesh=mesh, reshard_after_forward=not keep)
        return model
    if strategy == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        return FSDP(
            model, use_orig_params=True, device_id=torch.device("cpu"), auto_wrap_policy=ModuleWrapPolicy({Block})
        )
    raise ValueError(strategy)


def whole_updates(model: nn.Module, w0: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The whole float64 update of every q/v module (every rank calls this: it may gather)."""
    from artent_fast.parallel import full_tensor

    fsdp1 = any(type(m).__name__ == "FullyShardedDataParallel" for m in model.modules())
    if fsdp1:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        context = FSDP.summon_full_params(model, writeback=False)
    else:
        import contextlib

        context = contextlib.nullcontext()
    out = {}
    with context:
        for path, module in model.named_modules():
            name = module_name(path)
            if not name.endswith(("q_proj", "v_proj")):
                continue
            if hasattr(module, "lora_A"):
                B = full_tensor(module.lora_B["default"].weight.detach()).double()
                A = full_tensor(module.lora_A["default"].weight.detach()).double()
                out[name] = module.scaling["default"] * B @ A
            elif w0 is not None and not name.endswith(("lora_A", "lora_B")) and module.weight.requires_grad:
                out[name] = full_tensor(module.weight.detach()).double() - w0[name]
    return out


def references(model: nn.Module, w0) -> dict[str, list[float]]:
    import artent_fast

    return {
        k: artent_fast.entanglement_profile(v, method="naive").tolist() for k, v in whole_updates(model, w0).items()
    }


class Counter:
    """Counts torch.distributed collectives and DTensor.full_tensor calls while installed."""

    NAMES = (
        "all_gather_object",
        "broadcast_object_list",
        "all_reduce",
        "all_gather",
        "gather_object",
        "broadcast",
        "all_gather_into_tensor",
        "reduce_scatter_tensor",
        "barrier",
    )

    def __init__(self) -> None:
        import torch.distributed as dist
        from torch.distributed.tensor import DTensor

        self.n = 0
        for name in self.NAMES:
            original = getattr(dist, name)
            setattr(dist, name, self.counted(original))
        DTensor.full_tensor = self.counted(DTensor.full_tensor)

    def counted(self, fn):
        def inner(*args, **kwargs):
            self.n += 1
            return fn(*args, **kwargs)

        return inner


class Unreadable:
    """A DTensor stand-in with the real global shape, dtype and device whose local shard cannot be read."""

    def __init__(self, tensor):
        self.shape, self.dtype, self.device = tensor.shape, tensor.dtype, tensor.device

    def detach(self):
        raise RuntimeError("injected: local shard unreadable")


def run(out: Path, scenario: str) -> None:
    import torch.distributed as dist

    import artent_fast
    from artent_fast.tracking import compute as tracker_module

    rank = dist.get_rank()
    strategy, kind, *flags = scenario.split("-")
    model = build(kind, 3 if "r3" in flags else 4)  # r=3: uneven shards of lora_A on 2 ranks
    w0 = None
    if kind == "fft":
        w0 = {
            module_name(n): m.weight.detach().double().clone()
            for n, m in model.named_modules()
            if n.endswith(("q_proj", "v_proj"))
        }
    model = wrap(model, strategy)
    if "everydiffers" in flags or "targetsdiffer" in flags:  # ranks that disagree: an error on each, no hang
        differs = {"every": 1 + rank} if "everydiffers" in flags else {"targets": ("q_proj", "v_proj")[: 1 + rank]}
        try:
            artent_fast.track(model, out=None, **differs)
            error = None
        except ValueError as exc:
            error = str(exc)
        (out / f"{scenario}.rank{rank}.json").write_text(json.dumps({"error": error}))
        return
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    explicit = bool(set(flags) - {"r3"})  # fault scenarios step the tracker themselves
    every = 3 if "every3" in flags else 1
    steps = 6 if "every3" in flags else STEPS
    tracker = artent_fast.track(
        model, optimizer=None if explicit else opt, out=out / scenario, every=every, dense_every=every
    )
    original = tracker_module.measure_lowrank
    counter = Counter() if "every3" in flags else None
    per_step_calls, refs = [], {}
    for step, (x, y) in enumerate(batches(steps), 1):
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        if explicit:
            restore = None
            if "raise" in flags and rank == 1 and step == 2:
                tracker_module.measure_lowrank = lambda *a: (_ for _ in ()).throw(RuntimeError("injected"))
            if "raiseall" in flags and rank == 1:
                tracker_module.measure_lowrank = lambda *a: (_ for _ in ()).throw(RuntimeError("injected"))
            if "readfail" in flags and rank == 1 and step == 2:  # rank 1 fails before its first all-gather
                victim = tracker.units[0]
                victim.dense = lambda *_: (_ for _ in ()).throw(RuntimeError("injected: read fails"))
            if "shardfail" in flags and rank == 1 and step == 2:  # rank 1 cannot read one of its local shards
                gathering = tracker._tracked[0].gathering
                restore_tensors = gathering.tensors
                gathering.tensors = [Unreadable(t) for t in restore_tensors]
            if "nan" in flags and step == 2:  # NaN in rank 1's shard (or rank 1's replica) of one factor
                weight = tracker.units[0].layer.lora_B["default"].weight
                local = weight.to_local() if hasattr(weight, "to_local") else weight
                if rank == 1:
                    restore = local.detach().clone()
                    with torch.no_grad():
                        local[0, 0] = float("nan")
            before = counter.n if counter else 0
            tracker.step()
            if counter:
                per_step_calls.append(counter.n - before)
            tracker_module.measure_lowrank = original
            if "readfail" in flags and rank == 1 and step == 2:
                del victim.dense  # the class's method again
            if "shardfail" in flags and rank == 1 and step == 2:
                gathering.tensors = restore_tensors
            if restore is not None:
                with torch.no_grad():
                    local.copy_(restore)
        if counter is None and step % every == 0:
            ref = references(model, w0)
            if rank == 0:
                refs[step] = ref
    tracker.close()
    report = {
        "history": tracker.history(),
        "skipped": tracker.skipped,
        "dropped": sorted(tracker.dropped),
        "units": [u.label for u in tracker.units],
        "refs": refs,
        "calls": per_step_calls,
        "owners": [t.owner for t in tracker._tracked],
        "all_units": [t.unit.label for t in tracker._tracked],
    }
    (out / f"{scenario}.rank{rank}.json").write_text(json.dumps(report))


def main() -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    out = Path(sys.argv[1])
    for scenario in sys.argv[2:]:
        run(out, scenario)
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
