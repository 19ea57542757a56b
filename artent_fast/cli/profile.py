"""``artent profile``: the entanglement profile of one matrix (a file or a built-in example)."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from artent_fast.api import entanglement_profile, lowrank_profile, page_curve, random_lowrank_profile, sites

EXAMPLES = ("lora", "gaussian", "kronecker")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="entanglement profile of a matrix (file or built-in example)")
    p.add_argument("--input", type=Path, help=".npy, .pt or .safetensors file (default: a built-in example)")
    p.add_argument("--tensor", help="tensor name inside a .safetensors/.pt dict")
    p.add_argument("--example", choices=EXAMPLES, default="lora", help="built-in example matrix (default: lora)")
    p.add_argument("--size", type=int, default=1024, help="example matrix size m = n (default 1024)")
    p.add_argument("--rank", type=int, default=16, help="rank of the lora example (default 16)")
    p.add_argument("--method", default="auto", choices=("auto", "naive", "sweep", "gram"))
    p.add_argument("--base", type=float, default=math.e, help="log base (default e: nats)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("artent_profile"), help="folder for profile.json and profile.png")
    p.set_defaults(func=run)


def load_matrix(path: Path, tensor: str | None) -> torch.Tensor:
    if not path.exists():
        raise FileNotFoundError(f"--input {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        import numpy as np

        return torch.from_numpy(np.load(path, allow_pickle=False))
    if suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
            name = tensor or (names[0] if len(names) == 1 else None)
            if name not in names:
                raise ValueError(f"{path}: pass --tensor, one of {names[:10]}{' ...' if len(names) > 10 else ''}")
            return f.get_tensor(name)
    if suffix in (".pt", ".pth"):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            if tensor not in obj:
                raise ValueError(f"{path} holds a dict: pass --tensor, one of {list(obj)[:10]}")
            obj = obj[tensor]
        return obj
    raise ValueError(f"--input {path}: unsupported file type {suffix!r} (use .npy, .pt or .safetensors)")


def example(name: str, size: int, rank: int, seed: int):
    """(label, matrix or (B, A) factors, theory overlays) of a built-in example."""
    gen = torch.Generator().manual_seed(seed)
    if name == "lora":
        B = torch.randn(size, rank, generator=gen)
        A = torch.randn(rank, size, generator=gen)
        return f"random LoRA update B@A ({size}x{size}, r={rank})", (B, A), {
            f"random rank-{rank} theory": random_lowrank_profile(size, size, rank, method="analytic"),
            "Page curve (Gaussian)": page_curve(size, size),
        }
    if name == "gaussian":
        M = torch.randn(size, size, generator=gen)
        return f"Gaussian matrix ({size}x{size})", M, {"Page curve": page_curve(size, size)}
    half = int(math.isqrt(size))
    a = torch.randn(half, half, generator=gen)
    b = torch.randn(size // half, size // half, generator=gen)
    return f"Kronecker product ({a.shape[0]}x{a.shape[0]}) (x) ({b.shape[0]}x{b.shape[0]})", torch.kron(a, b), {}


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if args.input is not None:
        matrix = load_matrix(args.input, args.tensor)
        label = f"{args.input.name}{':' + args.tensor if args.tensor else ''}"
        prof = entanglement_profile(matrix, method=args.method, base=args.base)
        m, n = matrix.shape[-2:]
        overlays = {"Page curve": page_curve(m, n)}
    elif args.example == "lora":
        label, (B, A), overlays = example("lora", args.size, args.rank, args.seed)
        prof = lowrank_profile(B, A, base=args.base)
        m = n = args.size
    else:
        label, matrix, overlays = example(args.example, args.size, args.rank, args.seed)
        prof = entanglement_profile(matrix, method=args.method, base=args.base)
        m, n = matrix.shape
    elapsed = time.perf_counter() - t0
    print_table(label, prof, overlays, sites(m, n), args.base, elapsed)
    write_outputs(args.out, label, prof, overlays, sites(m, n), elapsed)
    return 0


def print_table(label: str, prof: torch.Tensor, overlays: dict, layout, base: float, elapsed: float) -> None:
    unit = "nats" if base == math.e else f"log{base:g}"
    print(f"{label}: {layout.num_sites} sites {layout.dims}, {layout.num_bonds} bonds, {elapsed:.3f} s")
    names = "".join(f" {k[:22]:>22}" for k in overlays)
    print(f"{'bond':>4} {'left':>8} {'right':>8} {'S (' + unit + ')':>12}{names}")
    for k, ((left, right), s) in enumerate(zip(layout.bond_dims(), prof.tolist(), strict=True), start=1):
        mark = "  <- row/column bond" if layout.center_bond == k - 1 else ""
        extra = "".join(f" {float(v[k - 1]):22.4f}" for v in overlays.values())
        print(f"{k:4d} {left:8d} {right:8d} {s:12.4f}{extra}{mark}")


def write_outputs(out: Path, label: str, prof: torch.Tensor, overlays: dict, layout, elapsed: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    record = {"label": label, "dims": layout.dims, "row_sites": layout.row_sites, "entropies": prof.tolist(),
              "overlays": {k: [float(x) for x in v] for k, v in overlays.items()}, "seconds": elapsed}
    (out / "profile.json").write_text(json.dumps(record, indent=1))
    try:
        from artent_fast.plotting.profile import plot_profile

        plot_profile({label: prof}, overlays=overlays, center_bond=layout.center_bond, title=label,
                     path=out / "profile.png")
        print(f"wrote {out / 'profile.json'} and {out / 'profile.png'}")
    except ImportError as exc:
        print(f"wrote {out / 'profile.json'} (no figure: {exc})")
