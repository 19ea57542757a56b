"""``artent profile``: the entanglement profile of one matrix (a file or a built-in example)."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from artent_fast.api import entanglement_profile, lowrank_profile, page_curve, random_lowrank_profile, sites
from artent_fast.atomic import atomic_write
from artent_fast.checkpoints.pickles import PickleRefused, load_weights_only
from artent_fast.cli._common import add_command
from artent_fast.paths import not_usable
from artent_fast.plotting.profile_figure import plot_profile

EXAMPLES = ("lora", "gaussian", "kronecker")


DESCRIPTION = """\
Entanglement profile of one matrix: the entropy at every bond of the matrix viewed as a matrix
product state (rows and columns factored into prime sites, rows first). Give a file with
--input, or use a built-in example. Prints a table with theory overlays and writes
profile.json (and profile.png when matplotlib is installed) to --out.

Bad input (a missing, truncated or unreadable file, a tensor that is not a real matrix,
--size/--rank out of range, an --out that is a file) ends with one line naming it and exit code 2.
"""

# Largest example side: dense examples hold size x size entries, the LoRA example only its factors.
MAX_DENSE_SIZE = 8192
MAX_LORA_SIZE = 2**20


HELP = "entanglement profile of a matrix (file or built-in example)"


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "profile", HELP, DESCRIPTION)
    p.add_argument("--input", type=Path, help=".npy, .pt or .safetensors file (default: a built-in example)")
    p.add_argument("--tensor", help="tensor name inside a .safetensors/.pt dict (needed when it holds several)")
    p.add_argument("--example", choices=EXAMPLES, default="lora", help="built-in example matrix")
    p.add_argument(
        "--size",
        type=int,
        default=1024,
        help=f"example matrix size m = n (2 to {MAX_DENSE_SIZE}; lora: {MAX_LORA_SIZE})",
    )
    p.add_argument("--rank", type=int, default=16, help="rank r of the lora example (1 to --size)")
    p.add_argument(
        "--method",
        default="auto",
        choices=("auto", "naive", "sweep", "gram"),
        help="how the profile is computed; all are exact: naive (one SVD per bond), sweep (TT-SVD, as in the "
        "paper), gram (Gram products and partial traces, fastest), auto (= gram)",
    )
    p.add_argument("--base", type=float, default=math.e, help="log base (default: e, i.e. nats; 2 gives bits)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the built-in example")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("artent_profile"),
        help="folder for profile.json and profile.png (default: ./artent_profile/)",
    )
    p.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> None:
    """Argument errors as ValueErrors naming the flag (the CLI prints one line and exits 2)."""
    if not (math.isfinite(args.base) and args.base > 0 and args.base != 1):
        raise ValueError(f"--base must be a finite positive number other than 1, got {args.base}")
    if args.input is None:
        limit = MAX_LORA_SIZE if args.example == "lora" else MAX_DENSE_SIZE
        if not 2 <= args.size <= limit:
            raise ValueError(f"--size must be between 2 and {limit} for the {args.example} example, got {args.size}")
        if args.example == "lora" and not 1 <= args.rank <= args.size:
            raise ValueError(f"--rank must be between 1 and --size ({args.size}), got {args.rank}")
    out = args.out
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is an existing file: give a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out {out} lies under {parent}, which is a file")
            break


def load_matrix(path: Path, tensor: str | None) -> torch.Tensor:
    if not path.is_file():
        raise not_usable(f"--input {path}", path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".safetensors", ".pt", ".pth"):
        raise ValueError(f"--input {path}: unsupported file type {suffix!r} (use .npy, .pt or .safetensors)")
    try:
        obj = _read(path, suffix, tensor)
    except PickleRefused as exc:
        raise ValueError(f"--input {path}: {exc.reason}") from None
    except Exception as exc:
        if isinstance(exc, ValueError) and str(path) in str(exc):
            raise  # already names the file; else a truncated file, corrupt header, refused pickle: one line
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"--input {path}: not a readable {suffix[1:]} file ({detail[:200]})") from None
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"--input {path}{':' + tensor if tensor else ''} is a {type(obj).__name__}, not a tensor")
    if obj.ndim != 2:
        raise ValueError(f"--input {path}{':' + tensor if tensor else ''} has shape {tuple(obj.shape)}: need a matrix")
    return obj


def _read(path: Path, suffix: str, tensor: str | None):
    if suffix == ".npy":
        import numpy as np

        array = np.load(path, allow_pickle=False)
        if array.dtype.kind not in "fiu":
            raise ValueError(f"--input {path} has dtype {array.dtype}: need a real matrix")
        return torch.from_numpy(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("=")))
    if suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
            name = tensor or (names[0] if len(names) == 1 else None)
            if name not in names:
                raise ValueError(f"{path}: pass --tensor, one of {names[:10]}{' ...' if len(names) > 10 else ''}")
            return f.get_tensor(name)
    obj = load_weights_only(path, map_location="cpu")
    if isinstance(obj, dict):
        if tensor not in obj:
            raise ValueError(f"{path} holds a dict: pass --tensor, one of {list(obj)[:10]}")
        obj = obj[tensor]
    return obj


def example(name: str, size: int, rank: int, seed: int):
    """(label, matrix or (B, A) factors, theory overlays) of a built-in example."""
    gen = torch.Generator().manual_seed(seed)
    if name == "lora":
        B = torch.randn(size, rank, generator=gen)
        A = torch.randn(rank, size, generator=gen)
        return (
            f"random LoRA update B@A ({size}x{size}, r={rank})",
            (B, A),
            {
                f"random rank-{rank} theory": random_lowrank_profile(size, size, rank, method="analytic"),
                "Page curve (Gaussian)": page_curve(size, size),
            },
        )
    if name == "gaussian":
        M = torch.randn(size, size, generator=gen)
        return f"Gaussian matrix ({size}x{size})", M, {"Page curve": page_curve(size, size)}
    half = int(math.isqrt(size))
    a = torch.randn(half, half, generator=gen)
    b = torch.randn(size // half, size // half, generator=gen)
    return f"Kronecker product ({a.shape[0]}x{a.shape[0]}) (x) ({b.shape[0]}x{b.shape[0]})", torch.kron(a, b), {}


def run(args: argparse.Namespace) -> int:
    check_args(args)
    t0 = time.perf_counter()
    if args.input is not None:
        matrix = load_matrix(args.input, args.tensor)
        if not (matrix.is_floating_point() or matrix.dtype == torch.bool or matrix.is_complex()):
            matrix = matrix.double()  # integer matrices: exact in float64
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
    try:
        write_outputs(args.out, label, prof, overlays, sites(m, n), elapsed)
    except OSError as exc:
        raise ValueError(f"--out {args.out}: cannot write ({exc.strerror or exc})") from None
    return 0


def print_table(label: str, prof: torch.Tensor, overlays: dict, layout, base: float, elapsed: float) -> None:
    unit = "nats" if base == math.e else f"log{base:g}"
    print(f"{label}: {layout.num_sites} sites {layout.dims}, {layout.num_bonds} bonds, {elapsed:.3f} s")
    names = "".join(f" {k[:22]:>22}" for k in overlays)
    print(f"{'bond':>4} {'left':>8} {'right':>8} {'S (' + unit + ')':>12}{names}")
    for k, ((left, right), s) in enumerate(zip(layout.bond_dims(), prof.tolist(), strict=True), start=1):
        mark = "  <- row/column bond" if k == layout.row_sites else ""
        extra = "".join(f" {float(v[k - 1]):22.4f}" for v in overlays.values())
        print(f"{k:4d} {left:8d} {right:8d} {s:12.4f}{extra}{mark}")


def write_outputs(out: Path, label: str, prof: torch.Tensor, overlays: dict, layout, elapsed: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "label": label,
        "dims": layout.dims,
        "row_sites": layout.row_sites,
        "entropies": prof.tolist(),
        "overlays": {k: [float(x) for x in v] for k, v in overlays.items()},
        "seconds": elapsed,
    }
    atomic_write(out / "profile.json", json.dumps(record, indent=1))
    try:
        plot_profile(
            {label: prof}, overlays=overlays, row_sites=layout.row_sites, title=label, path=out / "profile.png"
        )
        print(f"wrote {out / 'profile.json'} and {out / 'profile.png'}")
    except ImportError as exc:
        print(f"wrote {out / 'profile.json'} (no figure: {exc})")
