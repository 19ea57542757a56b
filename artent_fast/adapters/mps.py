"""MPS Adaptation (docs/definitions.md §7): a frozen Linear plus ``(alpha / r) * B @ A_mps``.

``A_mps`` (``r x d_in``) is the contraction of a chain of trainable cores over the factors
``dims = (d_1, ..., d_k)`` of ``d_in`` (``d_1`` the most significant, as in a row-major reshape):

- core 1: ``(r, d_1, chi)`` -- it carries the rank index;
- cores 2..k-1: ``(chi, d_j, chi)``;
- core k: ``(chi, d_k)``  (with a single factor, core 1 is ``(r, d_1)``: plain LoRA).

Parameter count: ``d_out * r + r * d_1 * chi + sum_middle chi * d_j * chi + chi * d_k``.
The paper's example (4096 x 4096, r=256, chi=32, dims=(64, 64)):
``4096*256 + 256*64*32 + 32*64 = 1,048,576 + 524,288 + 2,048 = 1,574,912``
against LoRA's ``2 * 4096 * 256 = 2,097,152``.

The forward pass contracts ``x`` with the cores from the last to the first, then with ``B``; it
never forms ``dW`` (``d_out x d_in``) nor even ``A_mps``. ``B = 0`` at start (LoRA init), so the
adapted model starts equal to the base model.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from artent_fast.atomic import atomic_path, atomic_write
from artent_fast.core.lowrank import lowrank_profile
from artent_fast.extras import optional_imports
from artent_fast.patterns import check_patterns, matches_any

CONFIG_NAME = "mps_adapter_config.json"
WEIGHTS_NAME = "mps_adapter_model.safetensors"
INITS = ("lora", "random")


def _split_in_two(n: int) -> tuple[int, int]:
    """The factor pair ``(a, n // a)`` with ``a <= n // a`` closest to the square root."""
    a = math.isqrt(n)
    while n % a:
        a -= 1
    return (a, n // a)


def check_dims(dims: Sequence[int] | None, d_in: int, name: str = "dims") -> tuple[int, ...]:
    """Validate the factors of ``d_in`` (default: the two factors closest to its square root)."""
    if dims is None:
        dims = _split_in_two(d_in)
    dims = tuple(int(d) for d in dims)
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"{name} must be positive integers, got {dims}")
    if math.prod(dims) != d_in:
        raise ValueError(f"{name}={dims} multiply to {math.prod(dims)}, but the layer's input size d_in is {d_in}")
    return dims


def core_shapes(r: int, chi: int, dims: Sequence[int]) -> list[tuple[int, ...]]:
    """Shapes of the tensor-train cores of ``A_mps`` (see the module docstring)."""
    if len(dims) == 1:
        return [(r, dims[0])]
    return [(r, dims[0], chi), *[(chi, d, chi) for d in dims[1:-1]], (chi, dims[-1])]


def count_parameters(d_out: int, d_in: int, *, r: int, chi: int, dims: Sequence[int] | None = None) -> int:
    """Trainable parameters of one MPS-adapted ``d_out x d_in`` layer, without allocating anything."""
    shapes = core_shapes(r, chi, check_dims(dims, d_in))
    return d_out * r + sum(math.prod(s) for s in shapes)


def contract_cores(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """``A_mps`` (``r x d_in``) from the cores: a plain, obviously-right contraction (``r x d_in`` memory)."""
    a = cores[0]
    if len(cores) == 1:
        return a
    r = a.shape[0]
    for core in cores[1:]:  # a: (r, D, chi) -> (r, D * d, chi') or (r, D * d)
        a = torch.tensordot(a, core, dims=([a.ndim - 1], [0]))
        a = a.reshape(r, -1, *a.shape[3:]) if a.ndim == 4 else a.reshape(r, -1)
    return a


def apply_cores(x: torch.Tensor, cores: Sequence[torch.Tensor], dims: Sequence[int]) -> torch.Tensor:
    """``x @ A_mps^T`` for ``x (N, d_in)``, contracting the last core first; returns ``(N, r)``."""
    n = x.shape[0]
    if len(cores) == 1:
        return x @ cores[0].T
    t = x.reshape(n, -1, dims[-1]) @ cores[-1].T  # (N, d_1..d_{k-1}, chi)
    for j in range(len(cores) - 2, 0, -1):  # middle cores (chi, d_j, chi)
        t = t.reshape(n, -1, dims[j] * t.shape[-1])  # (N, d_1..d_{j-1}, d_j * chi)
        t = t @ cores[j].reshape(cores[j].shape[0], -1).T  # (N, d_1..d_{j-1}, chi)
    return t.reshape(n, -1) @ cores[0].reshape(cores[0].shape[0], -1).T  # core 1 (r, d_1 * chi)


class MPSLinear(nn.Module):
    """A frozen ``nn.Linear`` plus the trainable MPS update ``(alpha / r) * B @ A_mps``."""

    def __init__(
        self,
        base: nn.Linear,
        *,
        r: int,
        chi: int,
        dims: Sequence[int] | None = None,
        alpha: float | None = None,
        init: str = "lora",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"MPS Adaptation wraps nn.Linear modules, got {type(base).__name__}")
        for name, v in (("r", r), ("chi", chi)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.base = base
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        self.d_out, self.d_in = base.out_features, base.in_features
        self.r, self.chi = r, chi
        self.dims = check_dims(dims, self.d_in)
        self.alpha = float(alpha if alpha is not None else r)
        self.scale = self.alpha / r
        self.merged = False
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.B = nn.Parameter(torch.zeros(self.d_out, r, **kw))
        self.cores = nn.ParameterList([nn.Parameter(torch.empty(s, **kw)) for s in core_shapes(r, chi, self.dims)])
        self.reset_parameters(init, generator)

    def get_base_layer(self) -> nn.Linear:
        """The wrapped layer (peft's name for it)."""
        return self.base

    def reset_parameters(self, init: str = "lora", generator: torch.Generator | None = None) -> None:
        """Cores Gaussian with ``Var(A_mps entries) = 1 / d_in`` (as Kaiming for LoRA's A); ``B = 0`` or random."""
        k = len(self.cores)
        std = (1.0 / (self.d_in * self.chi ** (k - 1))) ** (0.5 / k)
        with torch.no_grad():
            for core in self.cores:
                core.copy_(torch.randn(core.shape, generator=generator, dtype=torch.float64) * std)
            if init == "random":
                self.B.copy_(torch.randn(self.B.shape, generator=generator, dtype=torch.float64) / math.sqrt(self.r))
            else:
                self.B.zero_()

    # -- the update -------------------------------------------------------------------------------
    def a_mps(self) -> torch.Tensor:
        """``A_mps`` (``r x d_in``): the only matrix the profile needs."""
        return contract_cores(list(self.cores))

    def delta_weight(self) -> torch.Tensor:
        """The dense update ``dW = (alpha / r) * B @ A_mps`` (``d_out x d_in``): for merging and references."""
        return self.scale * (self.B @ self.a_mps())

    def adapter(self, x: torch.Tensor) -> torch.Tensor:
        """``(alpha / r) * x @ A_mps^T @ B^T`` without forming ``dW``."""
        shape = x.shape
        h = x.reshape(-1, self.d_in).to(self.B.dtype)
        h = apply_cores(h, list(self.cores), self.dims) @ self.B.T
        return (self.scale * h).reshape(*shape[:-1], self.d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        return out + self.adapter(x).to(out.dtype)

    # -- merging ----------------------------------------------------------------------------------
    @torch.no_grad()
    def merge(self) -> None:
        """Add ``dW`` to the base weight (idempotent); the forward pass then skips the adapter."""
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract ``dW`` from the base weight again (idempotent)."""
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    def config(self) -> dict[str, Any]:
        return {"r": self.r, "chi": self.chi, "dims": list(self.dims), "alpha": self.alpha}

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_out={self.d_out}, r={self.r}, chi={self.chi}, dims={self.dims}, alpha={self.alpha}"


# -- model-level helpers --------------------------------------------------------------------------
def mps_modules(model: nn.Module) -> dict[str, MPSLinear]:
    """Every MPS-adapted layer of ``model`` by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, MPSLinear)}


def _set_child(model: nn.Module, name: str, child: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, child)


def apply(
    model: nn.Module,
    targets: Sequence[str] = ("q_proj", "v_proj"),
    *,
    r: int = 8,
    chi: int = 8,
    dims: Sequence[int] | None = None,
    alpha: float | None = None,
    init: str = "lora",
    freeze: bool = True,
    seed: int | None = None,
) -> nn.Module:
    """Wrap the ``nn.Linear`` modules of ``model`` named by ``targets`` with :class:`MPSLinear`, in place.

    ``dims`` factor each target's ``d_in`` (default: the two factors nearest its square root);
    ``alpha`` defaults to ``r`` (scale 1). With ``freeze`` every other parameter of the model is
    frozen, as peft does. Returns ``model``.
    """
    targets = check_patterns(targets, "targets")
    chosen = [(n, m) for n, m in model.named_modules() if n and matches_any(n, targets) and isinstance(m, nn.Linear)]
    if not chosen:
        linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:8]
        raise ValueError(f"targets={list(targets)} match no nn.Linear module of the model (some Linear: {linear})")
    if freeze:
        for p in model.parameters():
            p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    for name, module in chosen:
        try:
            wrapped = MPSLinear(module, r=r, chi=chi, dims=dims, alpha=alpha, init=init, generator=gen)
        except ValueError as exc:
            raise ValueError(f"module {name!r}: {exc}") from exc
        _set_child(model, name, wrapped)
    return model


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model`` that require gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merge(model: nn.Module) -> nn.Module:
    """Merge every MPS update into its base weight (see :meth:`MPSLinear.merge`)."""
    for m in mps_modules(model).values():
        m.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Undo :func:`merge`."""
    for m in mps_modules(model).values():
        m.unmerge()
    return model


def mps_update_profile(module: MPSLinear, **kwargs: Any) -> torch.Tensor:
    """Internal entanglement profile of the module's ``dW`` from ``B`` and ``A_mps`` (never forms ``dW``).

    Keywords go to :func:`artent_fast.lowrank_profile` (``alpha``, ``base``, ``on_zero``, ...);
    the default ``on_zero="nan"`` keeps a fresh (``B = 0``) adapter from raising.
    """
    if not isinstance(module, MPSLinear):
        raise TypeError(f"mps_update_profile needs an MPSLinear module, got {type(module).__name__}")
    kwargs.setdefault("on_zero", "nan")
    with torch.no_grad():
        return lowrank_profile(module.B.detach(), module.a_mps().detach(), scale=module.scale, **kwargs)


def _safetensors():
    with optional_imports("safetensors", "saving/loading MPS adapters", extra="hf"):
        import safetensors.torch
    return safetensors.torch


def save(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the adapter weights (safetensors) and a JSON config into the folder ``path``."""
    save_file = _safetensors().save_file
    modules = mps_modules(model)
    if not modules:
        raise ValueError("the model has no MPS-adapted modules to save (call artent_fast.adapters.mps.apply first)")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, m in modules.items():
        tensors[f"{name}.B"] = m.B.detach().cpu().contiguous()
        for j, core in enumerate(m.cores):
            tensors[f"{name}.cores.{j}"] = core.detach().cpu().contiguous()
    config = {
        "format": "artent_fast.mps/1",
        "modules": {name: m.config() for name, m in modules.items()},
        "merged": any(m.merged for m in modules.values()),
    }
    with atomic_path(folder / WEIGHTS_NAME) as tmp:  # weights first: the config names a complete file
        save_file(tensors, str(tmp))
    atomic_write(folder / CONFIG_NAME, json.dumps(config, indent=2))
    return folder


def load(model: nn.Module, path: str | os.PathLike, *, freeze: bool = True) -> nn.Module:
    """Load an adapter written by :func:`save` into ``model``, wrapping the saved modules first if needed."""
    load_file = _safetensors().load_file
    folder = Path(path)
    for fname in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / fname).is_file():
            raise FileNotFoundError(f"{folder / fname} not found: not an MPS adapter folder written by save()")
    config = json.loads((folder / CONFIG_NAME).read_text())
    tensors = load_file(str(folder / WEIGHTS_NAME))
    present = mps_modules(model)
    if freeze and not present:
        for p in model.parameters():
            p.requires_grad_(False)
    for name, cfg in config["modules"].items():
        module = present.get(name)
        if module is None:
            try:
                base = model.get_submodule(name)
            except AttributeError as exc:
                raise ValueError(f"{folder}: the adapter's module {name!r} is not in the model") from exc
            module = MPSLinear(base, r=cfg["r"], chi=cfg["chi"], dims=cfg["dims"], alpha=cfg["alpha"])
            _set_child(model, name, module)
        elif module.config() != cfg:
            raise ValueError(f"{folder}: module {name!r} has config {module.config()} but the file says {cfg}")
        with torch.no_grad():
            was_merged = module.merged
            module.unmerge()
            module.B.copy_(tensors[f"{name}.B"])
            for j, core in enumerate(module.cores):
                core.copy_(tensors[f"{name}.cores.{j}"])
            if was_merged:
                module.merge()
    return model
