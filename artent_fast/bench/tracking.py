"""Step-time overhead of ``artent_fast.track`` on a LoRA fine-tune (LoRA on q and v of every layer, tracked
every step). Tracked and untracked blocks of steps alternate on the same model so that machine noise
hits both alike; a block is timed as a whole (CUDA-synchronised at its end).

The model is ``transformers.LlamaForCausalLM`` with a peft LoRA when both are installed, else a plain
torch stand-in of the same shapes (attention projections and MLP per layer, peft-style LoRA layers).
:func:`measure_overhead` is ``artent bench``'s row; :func:`overhead_benchmark` is
``benchmarks/bench_tracking.py`` (also under torchrun, the model wrapped in FSDP2 or DDP).
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import time

import torch
from torch import nn

from artent_fast.testing.models import tiny_llama
from artent_fast.tracking import track

# A LLaMA's shape and its training step: hidden size, MLP size, layers, query and key/value heads, LoRA rank,
# vocabulary, and the batch of ``batch`` sequences of ``seq`` tokens.
SMALL = {  # the CPU target: 4 layers, hidden 256
    "hidden": 256,
    "intermediate": 688,
    "layers": 4,
    "heads": 8,
    "kv_heads": 4,
    "rank": 8,
    "vocab": 32000,
    "batch": 4,
    "seq": 128,
}
LLAMA_1B = {
    "hidden": 2048,
    "intermediate": 8192,
    "layers": 16,
    "heads": 32,
    "kv_heads": 8,
    "rank": 16,
    "vocab": 128256,
    "batch": 4,
    "seq": 512,
}
PRESETS = {"small": SMALL, "llama1b": LLAMA_1B}


class LoraLinear(nn.Module):
    """A linear layer with one peft-style LoRA adapter ("default"): ``W x + scaling * B A x``."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base_layer = base.requires_grad_(False)
        self.lora_A = nn.ModuleDict({"default": nn.Linear(base.in_features, rank, bias=False)})
        self.lora_B = nn.ModuleDict({"default": nn.Linear(rank, base.out_features, bias=False)})
        nn.init.zeros_(self.lora_B["default"].weight)
        self.scaling = {"default": alpha / rank}
        self.active_adapters = ["default"]

    def get_base_layer(self) -> nn.Linear:
        return self.base_layer

    def forward(self, x):
        return self.base_layer(x) + self.scaling["default"] * self.lora_B["default"](self.lora_A["default"](x))


class Block(nn.Module):
    def __init__(self, s: dict):
        super().__init__()
        h, kv = s["hidden"], s["hidden"] // s["heads"] * s["kv_heads"]
        self.heads, self.kv_heads = s["heads"], s["kv_heads"]
        self.q_proj, self.k_proj = nn.Linear(h, h, bias=False), nn.Linear(h, kv, bias=False)
        self.v_proj, self.o_proj = nn.Linear(h, kv, bias=False), nn.Linear(h, h, bias=False)
        self.gate_proj, self.up_proj = (
            nn.Linear(h, s["intermediate"], bias=False),
            nn.Linear(h, s["intermediate"], bias=False),
        )
        self.down_proj = nn.Linear(s["intermediate"], h, bias=False)
        self.norm1, self.norm2 = nn.RMSNorm(h), nn.RMSNorm(h)

    def forward(self, x):
        b, t, h = x.shape
        y = self.norm1(x)
        q = self.q_proj(y).view(b, t, self.heads, -1).transpose(1, 2)
        k = self.k_proj(y).view(b, t, self.kv_heads, -1).transpose(1, 2)
        v = self.v_proj(y).view(b, t, self.kv_heads, -1).transpose(1, 2)
        a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o_proj(a.transpose(1, 2).reshape(b, t, h))
        y = self.norm2(x)
        return x + self.down_proj(nn.functional.silu(self.gate_proj(y)) * self.up_proj(y))


class StandIn(nn.Module):
    """A LLaMA-shaped causal LM in plain torch (no transformers needed), LoRA on q_proj and v_proj."""

    def __init__(self, s: dict):
        super().__init__()
        self.embed = nn.Embedding(s["vocab"], s["hidden"])
        self.layers = nn.ModuleList(Block(s) for _ in range(s["layers"]))
        self.norm, self.head = nn.RMSNorm(s["hidden"]), nn.Linear(s["hidden"], s["vocab"], bias=False)
        self.requires_grad_(False)
        for layer in self.layers:
            layer.q_proj = LoraLinear(layer.q_proj, s["rank"], 2 * s["rank"])
            layer.v_proj = LoraLinear(layer.v_proj, s["rank"], 2 * s["rank"])

    def forward(self, input_ids, labels):
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x)
        logits = self.head(self.norm(x))
        return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten())


def build(s: dict, device: str, dtype: torch.dtype, *, hf: bool = True) -> tuple[nn.Module, str]:
    """transformers + peft when ``hf`` and both are installed, else the plain-torch stand-in."""
    torch.manual_seed(0)
    if hf and importlib.util.find_spec("transformers") and importlib.util.find_spec("peft"):
        import peft

        model = tiny_llama(
            vocab_size=s["vocab"],
            hidden_size=s["hidden"],
            intermediate_size=s["intermediate"],
            num_hidden_layers=s["layers"],
            num_attention_heads=s["heads"],
            num_key_value_heads=s["kv_heads"],
            max_position_embeddings=max(4096, s["seq"]),
        ).to(device=device, dtype=dtype)
        lora = peft.LoraConfig(r=s["rank"], lora_alpha=2 * s["rank"], target_modules=["q_proj", "v_proj"])
        return peft.get_peft_model(model, lora), "transformers LlamaForCausalLM + peft LoRA"
    why = "asked for" if not hf else "transformers/peft not installed"
    return StandIn(s).to(device=device, dtype=dtype), f"plain-torch LLaMA stand-in ({why})"


def wrap(model: nn.Module, strategy: str, device_type: str, world: int) -> nn.Module:
    """FSDP2: ``fully_shard`` every decoder layer, then the root; DDP: ``DistributedDataParallel``."""
    if strategy == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device_type, (world,))
    for layer in model.base_model.model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    if isinstance(model, StandIn):
        return model(ids, ids)
    return model(input_ids=ids, labels=ids).loss


def time_blocks(
    train_step, tracker, sync, *, blocks: int, block_steps: int, warmup: int = 2, progress=iter
) -> dict[str, list[float]]:
    """Alternate untracked and tracked blocks of ``block_steps`` calls of ``train_step()`` (``tracker.step()``
    after each in tracked blocks), after ``warmup`` tracked steps (so LoRA's B is nonzero). ``sync()`` runs
    before and after each block (device sync; a barrier under torch.distributed). Per-step seconds of each
    block: wall (``plain``, ``tracked``), process CPU (``plain_cpu``, ``tracked_cpu``), and each
    ``tracker.step()`` alone (``own``). A tracked block ends by waiting for the measurements still
    running (``tracker.wait()``), so work the tracker moved off the training thread is counted there."""
    out: dict[str, list[float]] = {k: [] for k in ("plain", "tracked", "plain_cpu", "tracked_cpu", "own")}

    def block(tracked: bool, steps: int) -> tuple[float, float]:
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            train_step()
            if tracked:
                t1 = time.perf_counter()
                tracker.step()
                out["own"].append(time.perf_counter() - t1)
        if tracked:
            tracker.wait()  # measurements still on the worker thread are paid for in this block
        sync()
        return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps

    block(True, warmup)
    out["own"].clear()
    for _ in progress(range(blocks)):
        for tracked, key in ((False, "plain"), (True, "tracked")):
            wall, cpu = block(tracked, block_steps)
            out[key].append(wall)
            out[f"{key}_cpu"].append(cpu)
    return out


def overhead_times(
    s: dict,
    device: str,
    dtype: torch.dtype,
    *,
    blocks: int,
    block_steps: int,
    hf: bool = True,
    background: bool | None = None,
    distributed: str | None = None,
    warmup: int = 2,
    profile: bool = True,
    progress=iter,
) -> dict:
    """Train ``s``'s model with AdamW, tracked blocks alternating with untracked ones (:func:`time_blocks`).

    ``distributed`` ("fsdp2" or "ddp", under an initialised process group): the model wrapped so, every rank
    trains and tracks, blocks start at a barrier. Returns the model's kind, the tracked units, whether the
    tracker measured on a worker thread, :func:`time_blocks`'s times, and (``profile``) one more due step
    under torch.profiler (:func:`profile_due_step`; else None, None)."""
    cuda = device.startswith("cuda")
    model, kind = build(s, device, dtype, hf=hf)
    if distributed:
        model = wrap(model, distributed, "cuda" if cuda else "cpu", torch.distributed.get_world_size())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    tracker = track(model, out=None, background=background)  # steps given explicitly, tracked blocks only
    gen = torch.Generator().manual_seed(0)

    def sync():
        if cuda:
            torch.cuda.synchronize()
        if distributed:
            torch.distributed.barrier()  # time blocks from a common start (outside the tracker)

    def train_step() -> None:
        ids = torch.randint(0, s["vocab"], (s["batch"], s["seq"]), generator=gen).to(device)
        _loss(model, ids).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    try:
        times = time_blocks(
            train_step, tracker, sync, blocks=blocks, block_steps=block_steps, warmup=warmup, progress=progress
        )
        units, background = len(tracker.units), tracker._launcher.background
        launches, top = profile_due_step(tracker, device) if profile else (None, None)
    finally:
        tracker.close()
    return {
        "model": kind,
        "units": units,
        "background": background,
        "times": times,
        "launches": launches,
        "top_ops": top,
    }


def measure_overhead(
    s: dict, device: str, dtype: torch.dtype, *, blocks: int, block_steps: int, hf: bool = True, progress=iter
) -> dict:
    """Median seconds per step untracked and tracked every step, and the tracker's own host time."""
    r = overhead_times(s, device, dtype, blocks=blocks, block_steps=block_steps, hf=hf, progress=progress)
    times = r["times"]
    plain, tracked, own = times["plain"], times["tracked"], times["own"]
    p, t = statistics.median(plain), statistics.median(tracked)
    return {
        "model": r["model"],
        "units": r["units"],
        "untracked_s": p,
        "tracked_s": t,
        "overhead_pct": 100 * (t / p - 1),
        "tracker_host_s": statistics.median(own),
        "tracker_host_pct": 100 * statistics.median(own) / p,
        "launches": r["launches"],
        "top_ops": r["top_ops"],
    }


def overhead_benchmark(
    preset: str = "small",
    *,
    vocab: int | None = None,
    rank: int | None = None,
    batch: int | None = None,
    seq_len: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    blocks: int = 6,
    block_steps: int = 5,
    distributed: str | None = None,
    background: bool | None = None,
) -> None:
    """``benchmarks/bench_tracking.py``: the overhead of :data:`PRESETS` ``[preset]`` (with the given
    changes) as a printed table; ``distributed``: under torchrun (the process group is set up and torn down
    here; rank 0 prints)."""
    s = {**PRESETS[preset]}
    s.update({k: v for k, v in (("vocab", vocab), ("rank", rank), ("batch", batch), ("seq", seq_len)) if v})
    cuda = device.startswith("cuda")
    world, me = 1, 0
    if distributed:
        import torch.distributed as dist

        if cuda:
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo")
        world, me = dist.get_world_size(), dist.get_rank()
    r = overhead_times(
        s,
        device,
        getattr(torch, dtype),
        blocks=blocks,
        block_steps=block_steps,
        background=background,
        distributed=distributed,
        warmup=3,
        profile=False,
    )
    if distributed:
        torch.distributed.destroy_process_group()
        if me != 0:
            return
    times = r["times"]
    p, t, o = (statistics.median(times[k]) for k in ("plain", "tracked", "own"))
    where = f"{device} ({torch.cuda.get_device_name()})" if cuda else f"cpu, {torch.get_num_threads()} threads"
    if distributed:
        where += f", {distributed.upper()} on {world} ranks ({'nccl' if cuda else 'gloo'}), rank 0's times"
    print(
        f"LoRA fine-tune, LLaMA preset {preset} (vocab {s['vocab']}, {dtype}), r={s['rank']} on q_proj+v_proj "
        f"({r['units']} tracked updates), batch {s['batch']}x{s['seq']}, {where}, "
        f"measuring {'on a worker thread' if r['background'] else 'on the training thread'}, "
        f"{blocks} x {block_steps} steps each"
    )
    print(f"{'':32}{'median s/step':>14}{'ratio':>8}")
    print(f"{'untracked':32}{p:14.4f}{1.0:8.3f}")
    print(f"{'tracked every step':32}{t:14.4f}{t / p:8.3f}")
    print(f"{'tracker.step() alone (host)':32}{o:14.4f}{o / p:8.3f}")
    cp, ct = statistics.median(times["plain_cpu"]), statistics.median(times["tracked_cpu"])
    print(f"{'process CPU time, untracked':32}{cp:14.4f}{1.0:8.3f}")
    print(f"{'process CPU time, tracked':32}{ct:14.4f}{ct / cp:8.3f}")
    print(
        f"overhead: {100 * (t / p - 1):+.1f}% by wall time per step, {100 * (ct / cp - 1):+.1f}% by process CPU "
        f"time (robust on a shared machine), {100 * o / p:.1f}% by the tracker's own time"
    )


def profile_due_step(tracker, device: str, rows: int = 12) -> tuple[int | None, str]:
    """One more due ``tracker.step()`` (and its wait) under torch.profiler: the number of device kernels it
    launches (None on CPU) and the profiler's table of its ops by self host time (the split of its cost).
    The rows ``tracker.step`` and ``tracker.wait`` give the training thread's time in each (CPU: the
    worker thread's measuring is not in the table)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        with record_function("tracker.step"):
            tracker.step()
        with record_function("tracker.wait"):
            tracker.wait()
        if cuda:
            torch.cuda.synchronize()
    launches = sum(e.device_type == torch.autograd.DeviceType.CUDA for e in prof.events()) if cuda else None
    return launches, prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
