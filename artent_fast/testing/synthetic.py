"""Synthetic checkpoints with LLaMA-3-8B tensor names and shapes (optionally scaled down).

Writes a base model, full fine-tuned checkpoints (``W = W0 + dW``, dense dW) and peft LoRA
adapter folders, as ``safetensors`` files (sharded with an index when asked). Tensors are made
one at a time from seeded generators, so memory stays at about one shard.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import torch

# LLaMA-3-8B: hidden 4096, 8 KV heads of 128 (k/v 1024 x 4096), MLP 14336 = 2^11 * 7, 32 layers.
LLAMA_8B = {
    "self_attn.q_proj": (4096, 4096),
    "self_attn.k_proj": (1024, 4096),
    "self_attn.v_proj": (1024, 4096),
    "self_attn.o_proj": (4096, 4096),
    "mlp.gate_proj": (14336, 4096),
    "mlp.up_proj": (14336, 4096),
    "mlp.down_proj": (4096, 14336),
}
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
LAYERS = 32


def parse_scale(scale: str | float | Fraction) -> Fraction:
    """``"1/16"``, ``0.0625`` or ``Fraction(1, 16)``; must be in (0, 1]."""
    value = Fraction(scale).limit_denominator(1 << 16) if not isinstance(scale, str) else Fraction(scale)
    if not 0 < value <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    return value


def _scaled(dim: int, scale: Fraction) -> int:
    value = dim * scale
    if value.denominator != 1 or value < 1:
        raise ValueError(f"scale {scale} does not divide the dimension {dim}")
    return int(value)


def llama8b_shapes(
    scale: str | float | Fraction = 1, layers: int = LAYERS, modules: Sequence[str] | None = None
) -> dict[str, tuple[int, int]]:
    """``{tensor name: shape}`` of the 8B projections (``modules``: short names such as "q_proj"; None: all)."""
    scale = parse_scale(scale)
    out = {}
    for layer in range(layers):
        for key, (m, n) in LLAMA_8B.items():
            if modules is None or key.split(".")[-1] in modules:
                out[f"model.layers.{layer}.{key}.weight"] = (_scaled(m, scale), _scaled(n, scale))
    return out


def _generator(seed: int, *keys: object) -> torch.Generator:
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def base_weight(name: str, shape: tuple[int, int], seed: int) -> torch.Tensor:
    """A Gaussian weight with ``1/sqrt(fan_in)`` scale, reproducible from (seed, name)."""
    return torch.randn(shape, generator=_generator(seed, "base", name)) / shape[1] ** 0.5


def dense_update(name: str, shape: tuple[int, int], step: int, seed: int, lr: float = 1e-3) -> torch.Tensor:
    """A full-rank update growing with ``step`` (FFT-like: no rank-pinned valley)."""
    return torch.randn(shape, generator=_generator(seed, "dW", name)) * (lr * step**0.5 / shape[1] ** 0.5)


def write_safetensors(
    folder: Path,
    named: Iterable[tuple[str, Callable[[], torch.Tensor]]],
    shards: int = 1,
    stem: str = "model",
    dtype: torch.dtype = torch.bfloat16,
) -> list[Path]:
    """Write tensors (made lazily, shard by shard) as one file or ``shards`` files plus an index."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    named = list(named)
    shards = max(1, min(shards, len(named)))
    per = -(-len(named) // shards)
    files, weight_map, total = [], {}, 0
    for s in range(shards):
        chunk = named[s * per : (s + 1) * per]
        fname = f"{stem}.safetensors" if shards == 1 else f"{stem}-{s + 1:05d}-of-{shards:05d}.safetensors"
        tensors = {name: make().to(dtype).contiguous() for name, make in chunk}
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        save_file(tensors, str(folder / fname), metadata={"format": "pt"})
        weight_map.update({name: fname for name in tensors})
        files.append(folder / fname)
        del tensors
    if shards > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / f"{stem}.safetensors.index.json").write_text(json.dumps(index, indent=1))
    return files


def _config(shapes: dict[str, tuple[int, int]], layers: int) -> dict:
    hidden = next(s for n, s in shapes.items() if "q_proj" in n)[1] if any("q_proj" in n for n in shapes) else 0
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "artent_synthetic": True,
    }


def make_synthetic(
    out: str | Path,
    *,
    scale: str | float | Fraction = Fraction(1, 16),
    layers: int = LAYERS,
    modules: Sequence[str] | None = ("q_proj", "v_proj"),
    steps: Sequence[int] = (100,),
    kinds: Sequence[str] = ("full", "lora"),
    rank: int = 16,
    lora_alpha: float = 32,
    lora_modules: Sequence[str] = ("q_proj", "v_proj"),
    shards: int = 1,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
) -> dict[str, list[Path]]:
    """Write ``out/base``, ``out/full/checkpoint-STEP`` (dense) and ``out/lora/checkpoint-STEP`` (adapters).

    Returns ``{"base": [folder], "full": [folders], "lora": [folders]}``.
    """
    out = Path(out)
    shapes = llama8b_shapes(scale, layers, modules)
    extras = {"model.norm.weight": (shapes and next(iter(shapes.values()))[1],)}
    paths: dict[str, list[Path]] = {"base": [out / "base"], "full": [], "lora": []}

    def base_items():
        for name, shape in shapes.items():
            yield name, (lambda name=name, shape=shape: base_weight(name, shape, seed))
        for name, shape in extras.items():
            yield name, (lambda shape=shape: torch.ones(shape))

    write_safetensors(out / "base", base_items(), shards, dtype=dtype)
    (out / "base" / "config.json").write_text(json.dumps(_config(shapes, layers), indent=1))
    for step in steps:
        if "full" in kinds:
            folder = out / "full" / f"checkpoint-{step}"

            def tuned_items(step=step):
                for name, shape in shapes.items():
                    yield (
                        name,
                        (
                            lambda name=name, shape=shape: (
                                base_weight(name, shape, seed).to(dtype).float() + dense_update(name, shape, step, seed)
                            )
                        ),
                    )
                for name, shape in extras.items():
                    yield name, (lambda shape=shape: torch.ones(shape))

            write_safetensors(folder, tuned_items(), shards, dtype=dtype)
            paths["full"].append(folder)
        if "lora" in kinds:
            folder = out / "lora" / f"checkpoint-{step}"
            write_lora_adapter(
                folder,
                {n: s for n, s in shapes.items() if n.split(".")[-2] in lora_modules},
                rank=rank,
                lora_alpha=lora_alpha,
                step=step,
                seed=seed,
                dtype=dtype,
            )
            paths["lora"].append(folder)
    return paths


def write_lora_adapter(
    folder: Path,
    shapes: dict[str, tuple[int, int]],
    *,
    rank: int,
    lora_alpha: float,
    step: int = 100,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    fan_in_fan_out: bool = False,
    use_rslora: bool = False,
) -> Path:
    """A peft LoRA adapter folder: adapter_config.json + adapter_model.safetensors with peft's key names."""
    targets = sorted({n.split(".")[-2] for n in shapes})

    def items():
        for name, (m, n) in shapes.items():
            module = name.removesuffix(".weight")
            if fan_in_fan_out:
                m, n = n, m  # the base stores (in, out): lora_A is (r, in), lora_B is (out, r)
            a_shape, b_shape = (rank, n), (m, rank)
            yield (
                f"base_model.model.{module}.lora_A.weight",
                (lambda name=name, s=a_shape: torch.randn(s, generator=_generator(seed, "A", name)) / s[1] ** 0.5),
            )
            yield (
                f"base_model.model.{module}.lora_B.weight",
                (lambda name=name, s=b_shape: torch.randn(s, generator=_generator(seed, "B", name, step)) * 1e-2),
            )

    write_safetensors(folder, items(), 1, stem="adapter_model", dtype=dtype)
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": lora_alpha,
        "target_modules": targets,
        "fan_in_fan_out": fan_in_fan_out,
        "use_rslora": use_rslora,
        "rank_pattern": {},
        "alpha_pattern": {},
        "bias": "none",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "synthetic-llama-8b",
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=1))
    return folder
