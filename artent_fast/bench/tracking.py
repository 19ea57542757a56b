"""Step-time overhead of ``artent_fast.track`` on a LoRA fine-tune (LoRA on q and v of every layer, tracked
every step). Tracked and untracked blocks of steps alternate on the same model so that machine noise
hits both alike; a block is timed as a whole (CUDA-synchronised at its end).

The model is ``transformers.LlamaForCausalLM`` with a peft LoRA when both are installed, else a plain
torch stand-in of the same shapes (attention projections and MLP per layer, peft-style LoRA layers).
"""

from __future__ import annotations

import importlib.util
import statistics
import time

import torch
from torch import nn

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
        import transformers

        config = transformers.LlamaConfig(
            vocab_size=s["vocab"],
            hidden_size=s["hidden"],
            intermediate_size=s["intermediate"],
            num_hidden_layers=s["layers"],
            num_attention_heads=s["heads"],
            num_key_value_heads=s["kv_heads"],
            max_position_embeddings=max(4096, s["seq"]),
        )
        model = transformers.LlamaForCausalLM(config).to(device=device, dtype=dtype)
        lora = peft.LoraConfig(r=s["rank"], lora_alpha=2 * s["rank"], target_modules=["q_proj", "v_proj"])
        return peft.get_peft_model(model, lora), "transformers LlamaForCausalLM + peft LoRA"
    why = "asked for" if not hf else "transformers/peft not installed"
    return StandIn(s).to(device=device, dtype=dtype), f"plain-torch LLaMA stand-in ({why})"


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


def measure_overhead(
    s: dict, device: str, dtype: torch.dtype, *, blocks: int, block_steps: int, hf: bool = True, progress=iter
) -> dict:
    """Median seconds per step untracked and tracked every step, and the tracker's own host time."""
    import artent_fast

    model, kind = build(s, device, dtype, hf=hf)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    tracker = artent_fast.track(model, out=None)
    gen = torch.Generator().manual_seed(0)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def train_step() -> None:
        ids = torch.randint(0, s["vocab"], (s["batch"], s["seq"]), generator=gen).to(device)
        _loss(model, ids).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    try:
        times = time_blocks(train_step, tracker, sync, blocks=blocks, block_steps=block_steps, progress=progress)
        units = len(tracker.units)
        launches, top = profile_due_step(tracker, device)
    finally:
        tracker.close()
    plain, tracked, own = times["plain"], times["tracked"], times["own"]
    p, t = statistics.median(plain), statistics.median(tracked)
    return {
        "model": kind,
        "units": units,
        "untracked_s": p,
        "tracked_s": t,
        "overhead_pct": 100 * (t / p - 1),
        "tracker_host_s": statistics.median(own),
        "tracker_host_pct": 100 * statistics.median(own) / p,
        "launches": launches,
        "top_ops": top,
    }


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
