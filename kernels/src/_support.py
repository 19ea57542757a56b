"""What every kernel shares: the one optional triton import, the interpreter check, lazy jitting,
and the mask-argument helper of the attention kernels.

kernels/ is a leaf: it depends on torch and triton only (never on artent_fast), so the backends
can import it and not the other way round. Kernels are plain functions jitted on first use, keyed
on ``TRITON_INTERPRET``, so importing a kernel module needs no triton. The CPU interpreter needs
``TRITON_INTERPRET=1`` before triton is first imported (triton builds its own jitted helpers at import).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

try:  # triton is optional: the torch kernels cover machines without it
    import triton
    import triton.language as tl

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised on machines without triton
    triton = None
    tl = None
    AVAILABLE = False

# dtypes every engine kernel accepts (accumulation: float32, or float64 for float64 inputs)
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def available() -> bool:
    """triton is importable now (tests hide it with ``sys.modules["triton"] = None`` after this module loaded)."""
    if not AVAILABLE:
        return False
    try:
        import triton  # noqa: F401  (cached: costs a dict lookup)
    except ImportError:
        return False
    return True


def require(name: str) -> None:
    """RuntimeError naming the kernel module when triton is missing."""
    if not available():
        raise RuntimeError(f"kernels.{name} needs triton (pip install 'artent_fast[triton]')")


def interpreting() -> bool:
    """True when ``TRITON_INTERPRET=1`` (kernels then run on CPU tensors through numpy)."""
    if not AVAILABLE:
        return False
    from triton import knobs

    return bool(knobs.runtime.interpret)


@functools.cache
def _jitted(fn: Callable, interpret: bool):
    return triton.jit(fn)


def device_function(fn: Callable):
    """``triton.jit(fn)`` for a helper that kernels call (``fn`` itself without triton, never called then).

    Jitted at import, like triton's own ``tl`` helpers, so it follows the ``TRITON_INTERPRET`` in force
    when triton was first imported (the interpreter cannot be switched on later in any case).
    """
    return triton.jit(fn) if AVAILABLE else fn


def jit(fn: Callable):
    """``triton.jit(fn)``, built on first use and rebuilt if ``TRITON_INTERPRET`` changes."""
    if not AVAILABLE:
        raise RuntimeError("triton is not installed: pip install 'artent_fast[triton]'")
    return _jitted(fn, interpreting())


def runnable_on(t: torch.Tensor) -> bool:
    """Whether a kernel can run on ``t``'s device: CUDA, or CPU under the interpreter."""
    return AVAILABLE and (t.device.type == "cuda" or (t.device.type == "cpu" and interpreting()))


def check_runnable(t: torch.Tensor, name: str) -> None:
    if not runnable_on(t):
        raise RuntimeError(
            f"{name} is on {t.device}: triton kernels need a CUDA tensor, or TRITON_INTERPRET=1 (set before triton is"
            " first imported) for CPU tensors" + ("" if AVAILABLE else "; triton is not installed")
        )


MASK_NONE, MASK_BOOL, MASK_ADD = 0, 1, 2  # the attention kernels' MASK_KIND


def mask_args(mask: torch.Tensor | None, shape: tuple[int, ...]) -> tuple[int, torch.Tensor | None, tuple[int, ...]]:
    """``(MASK_KIND, mask expanded to shape or None, its strides)`` for a bool (keep) or additive float mask.

    A bool mask is reinterpreted as uint8 (a view, no copy); broadcasting is by zero strides.
    """
    if mask is None:
        return MASK_NONE, None, (0,) * len(shape)
    kind = MASK_BOOL if mask.dtype == torch.bool else MASK_ADD
    small = mask.view(torch.uint8) if kind == MASK_BOOL else mask
    full = small.expand(*shape)
    return kind, full, tuple(full.stride())


def mask_variants(dtype: torch.dtype) -> list[tuple[int, torch.dtype]]:
    """``(MASK_KIND, element type of the mask pointer)`` of every mask :func:`mask_args` passes to a kernel whose
    inputs are ``dtype``: additive float masks (widest first), bool masks as uint8, and no mask (the inputs
    then stand in for the unused pointer)."""
    return [(MASK_ADD, dt) for dt in reversed(DTYPES)] + [(MASK_BOOL, torch.uint8), (MASK_NONE, dtype)]


# triton's names of the element types that kernel arguments point to
TRITON_TYPES = {
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float32: "fp32",
    torch.float64: "fp64",
    torch.uint8: "u8",
    torch.int64: "i64",
}


def ptr(dtype: torch.dtype) -> str:
    """triton's signature type of a pointer to ``dtype`` (``"*bf16"``)."""
    return "*" + TRITON_TYPES[dtype]


@dataclass(frozen=True)
class Launch:
    """One configuration a launcher can launch a kernel with, as ``triton.compile`` takes it ahead of time.

    ``types``: the runtime arguments that are not ``i32`` (pointers, floats); ``constexprs`` and ``options``
    (num_warps, num_stages) as the launcher passes them; ``switches``: the constexprs that select code paths
    but no tile size, and the pointers those switches choose (the mask's). Each kernel module's
    ``launch_configs()`` lists every Launch its launcher can choose (on a GPU), switches at their heaviest
    first (the most loads: masks, causal bounds, entropy).
    """

    kernel: Callable
    types: tuple[tuple[str, str], ...]
    constexprs: tuple[tuple[str, object], ...]
    options: tuple[tuple[str, int], ...] = ()
    switches: tuple[str, ...] = ()

    @classmethod
    def of(cls, kernel: Callable, types: dict, constexprs: dict, options: dict, switches: tuple[str, ...] = ()):
        return cls(kernel, tuple(types.items()), tuple(constexprs.items()), tuple(options.items()), switches)

    def signature(self) -> dict[str, str]:
        """``{argument: triton type}`` of every parameter (``"constexpr"`` for the constexprs)."""
        types, consts = dict(self.types), dict(self.constexprs)
        params = inspect.signature(self.kernel).parameters
        return {p: "constexpr" if p in consts else types.get(p, "i32") for p in params}

    def resources(self) -> tuple:
        """What sizes the compiled kernel: everything but the switches, pointers by element size (fp16 = bf16)."""
        size = {"fp16": 2, "bf16": 2, "fp32": 4, "fp64": 8, "u8": 1, "i64": 8}
        types = tuple((k, size[v[1:]] if v[0] == "*" else v) for k, v in self.types if k not in self.switches)
        consts = tuple((k, v) for k, v in self.constexprs if k not in self.switches)
        return self.kernel.__name__, types, consts, self.options

    def name(self) -> str:
        """A short id: ``_attn_fwd-Q=bf16,...-BLOCK_M=128,...-num_warps=8,...``."""
        ptrs = [(k, v[1:]) for k, v in self.types if v.startswith("*")]
        types = ptrs[0][1] + "".join(f",{k}={v}" for k, v in ptrs[1:] if v != ptrs[0][1]) if ptrs else ""
        consts = ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in self.constexprs)
        opts = ",".join(f"{k}={v}" for k, v in self.options)
        return "-".join(x for x in (self.kernel.__name__, types, consts, opts) if x)


def unique(launches) -> list[Launch]:
    """``launches`` without repeats, in order (choosers map many sizes to one configuration)."""
    return list(dict.fromkeys(launches))
