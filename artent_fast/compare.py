"""The no-hair comparison (docs/definitions.md §4): do two differently fine-tuned models attend alike?

``compare_models(model_a, model_b, inputs)`` runs both models on the same inputs and reports per
attention layer:

- the relative Frobenius distance ``||o_a - o_b||_F / ||o_a||_F`` and the cosine similarity of
  the attention outputs (the self-attention module's output, captured with forward hooks);
- the external profiles: the entanglement profile of every head's attention matrix, averaged
  over batch and heads, for both models, with their Calabrese-Cardy fits;
- the internal profiles of both models' targeted projections (``q_proj``, ``v_proj``): LoRA from
  the peft factors, MPS Adaptation from its cores, full fine-tuning as ``W - W0`` against ``base``,
  and a dense fallback (peft's ``get_delta_weight``, else the weight itself).

The paper's claim: internal profiles differ, external profiles and attention outputs do not.
Attention matrices come from eager attention (the probabilities a transformers attention module
returns); a model running another implementation is switched to ``"eager"`` for the profiling
pass and switched back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from artent_fast.core.lowrank import lowrank_profile
from artent_fast.core.profile import entanglement_profile
from artent_fast.core.theory import fit_cardy
from artent_fast.patterns import check_patterns, matches_any, module_name
from artent_fast.plotting import integer_ticks, require_matplotlib, save_figure
from artent_fast.updates import Unit, adapter_units
from artent_fast.updates.types import base_weight

__all__ = [
    "CompareResult",
    "attention_modules",
    "capture_layers",
    "compare_models",
    "external_profile",
    "internal_profile",
]


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The self-attention modules in forward order: names ending in ``self_attn``, else the outermost
    modules whose class name ends with ``Attention``."""
    found = [(n, m) for n, m in model.named_modules() if n.endswith("self_attn")]
    if found:
        return found
    out: list[tuple[str, nn.Module]] = []
    for n, m in model.named_modules():
        if type(m).__name__.endswith("Attention") and not any(n.startswith(p + ".") for p, _ in out):
            out.append((n, m))
    return out


# -- internal profiles ---------------------------------------------------------------------------
def _effective_weight(module: nn.Module, units: list[Unit] | None = None) -> torch.Tensor | None:
    """The layer's weight as the forward pass uses it (base plus its unmerged adapters' updates; ``units``:
    the module's adapter units when the caller has them)."""
    units = adapter_units("", module) if units is None else units
    weight = base_weight(module)
    if weight is None:
        return None
    w = weight.detach()
    for unit in units:
        if unit.kind == "lora":
            B, A, scale, merged = unit.whole_factors()
            if not merged:
                w = w + (scale * (B @ A)).to(w.dtype)
        elif not unit.reader.merged(module, unit.adapter):
            w = w + unit.whole_dense().to(w.dtype)
    return w


def _base_weight(base: nn.Module | Mapping[str, torch.Tensor] | None, name: str) -> torch.Tensor | None:
    if base is None:
        return None
    key = module_name(name)
    if isinstance(base, Mapping):
        w = base.get(key + ".weight", base.get(key))
        return None if w is None else torch.as_tensor(w)
    modules = dict((module_name(n), m) for n, m in base.named_modules())
    module = modules.get(key)
    return None if module is None else _effective_weight(module)


def _update(
    module: nn.Module, name: str, base: nn.Module | Mapping[str, torch.Tensor] | None
) -> tuple[str, tuple[torch.Tensor, torch.Tensor, float] | torch.Tensor]:
    """``(kind, update)``: the factors ``(B, A, scale)`` of a layer with one factored adapter (kinds ``lora``,
    ``mps``), else a dense float64 update: ``W - W0`` against ``base`` (``fft``; ``lora`` for an adapter that
    did not start at zero, whose base layer holds ``W0 - s B0 A0``), the adapters' dense updates
    (``delta``), or the weight itself (``weight``)."""
    units = adapter_units(name, module)  # the adapters' whole updates (read by artent_fast.updates)
    w0 = _base_weight(base, name)
    kind = ("mps" if units[0].source == "mps" else "lora") if len(units) == 1 and units[0].kind == "lora" else None
    below = base_weight(module)
    if kind is not None and (w0 is None or below is None or torch.equal(below.detach(), w0.to(below.device))):
        B, A, scale, _ = units[0].whole_factors()
        return kind, (B.double(), A.double(), scale)
    # an adapter whose base layer is not the base model's weight (PiSSA, OLoRA, LoftQ moved their start
    # into it): its factors are not the change; the change is the effective weight minus the base's
    w = _effective_weight(module, units)
    if w is None:
        raise ValueError(f"module {name!r} ({type(module).__name__}) has no weight to profile")
    if w0 is not None:
        if w0.shape != w.shape:
            raise ValueError(f"module {name!r}: weight {tuple(w.shape)} but base weight {tuple(w0.shape)}")
        return kind or "fft", w.double() - w0.to(w.device).double()
    if units:
        return "delta", sum(u.whole_dense().double() if u.kind == "dense" else _product(u) for u in units)
    return "weight", w.double()


def _product(unit: Unit) -> torch.Tensor:
    B, A, scale, _ = unit.whole_factors()
    return scale * (B.double() @ A.double())


def internal_profile(
    module: nn.Module,
    *,
    name: str = "",
    base: nn.Module | Mapping[str, torch.Tensor] | None = None,
) -> tuple[str, torch.Tensor]:
    """``(kind, profile)`` of one layer's weight update; kinds ``lora``, ``mps``, ``fft``, ``delta``, ``weight``.

    LoRA, MPS and the other factored adapters use their factors (never ``dW``); FFT is ``W - W0``
    with ``W0`` from ``base`` (a model or a state dict, matched by name); ``delta`` is the sum of
    the adapters' dense updates (DoRA, IA3, ...); without any of these the weight itself is
    profiled. A zero update gives NaN.
    """
    with torch.no_grad():
        kind, update = _update(module, name, base)
        if isinstance(update, tuple):
            B, A, scale = update
            return kind, lowrank_profile(B, A, scale=scale, on_zero="nan")
        return kind, entanglement_profile(update, on_zero="nan")


def update_matrix(
    module: nn.Module,
    *,
    name: str = "",
    base: nn.Module | Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The dense weight update whose profile :func:`internal_profile` measures (float64): a factored
    adapter's ``scale * B @ A``, or ``W - W0`` with ``W0`` from ``base``.
    For spectra and null models of one layer; the profiles themselves never form it."""
    with torch.no_grad():
        kind, update = _update(module, name, base)
        if isinstance(update, tuple):
            B, A, scale = update
            return scale * (B @ A)
        if kind != "fft":
            raise ValueError(f"module {name!r} ({type(module).__name__}): no adapter, and no base weight of its shape")
        return update


# -- capture ---------------------------------------------------------------------------------------
def _run(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(inputs)


def _first_tensor(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _probs(out: Any) -> torch.Tensor | None:
    if isinstance(out, (tuple, list)) and len(out) > 1 and isinstance(out[1], torch.Tensor) and out[1].ndim == 4:
        return out[1]
    return None


def external_profile(probs: torch.Tensor) -> torch.Tensor:
    """Mean entanglement profile (float64, CPU) over batch and heads of attention matrices ``(B, H, T, S)``."""
    prof = entanglement_profile(probs.double(), on_zero="nan", check_finite=False)
    return prof.reshape(-1, prof.shape[-1]).nanmean(0).cpu()


def _capture(model: nn.Module, inputs: Any, layers: list[tuple[str, nn.Module]], want_profiles: bool):
    """Per layer: the attention output (float64, CPU) and, when asked and the module returns its attention
    probabilities (eager attention), their mean external profile (computed in the hook, so no layer's
    ``(B, H, T, T)`` probabilities outlive its forward call)."""
    outputs: dict[str, torch.Tensor] = {}
    profiles: dict[str, torch.Tensor | None] = {}

    def hook_for(name: str):
        def hook(module, args, out):
            outputs[name] = _first_tensor(out).detach().double().cpu()
            if want_profiles:
                p = _probs(out)
                profiles[name] = None if p is None else external_profile(p.detach())

        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _run(model, inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    missing = [n for n, _ in layers if n not in outputs]
    if missing:
        raise RuntimeError(f"attention modules {missing[:3]} did not run on these inputs")
    return outputs, profiles


def _attn_impl(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None)


def capture_layers(model: nn.Module, inputs: Any, layers: list[tuple[str, nn.Module]], profile: bool = True):
    """``(outputs, external profiles)`` per layer; a model whose attention returns no probabilities is switched
    to eager attention for one more pass (profiles only) and switched back."""
    outputs, profiles = _capture(model, inputs, layers, profile)
    if not profile or all(p is not None for p in profiles.values()):
        return outputs, profiles
    previous = _attn_impl(model)
    setter = getattr(model, "set_attn_implementation", None)
    if setter is None or previous is None:
        raise ValueError(
            "the model's attention modules return no attention probabilities and the model cannot be "
            "switched to eager attention: build it with attn_implementation='eager'"
        )
    setter("eager")
    try:
        _, profiles = _capture(model, inputs, layers, True)
    finally:
        setter(previous)
    missing = [n for n, p in profiles.items() if p is None]
    if missing:
        raise ValueError(f"attention modules {missing[:3]} return no probabilities even with eager attention")
    return outputs, profiles


# -- result ----------------------------------------------------------------------------------------
@dataclass
class CompareResult:
    """Per-layer rows of the no-hair comparison; ``names`` label the two models."""

    table: list[dict[str, Any]]
    names: tuple[str, str] = ("a", "b")
    meta: dict[str, Any] = field(default_factory=dict)

    SCALARS = (
        "layer",
        "module",
        "rel_distance",
        "cosine",
        "external_gap",
        "cardy_c_a",
        "cardy_c_b",
        "cardy_r2_a",
        "cardy_r2_b",
        "internal_gap",
    )

    def to_frame(self):
        """The table as a pandas DataFrame (profiles as list columns); needs pandas."""
        import pandas as pd

        return pd.DataFrame(self.table)

    def summary(self) -> dict[str, float]:
        """Means over layers of the scalar columns."""
        out = {}
        for key in ("rel_distance", "cosine", "external_gap", "internal_gap"):
            vals = [r[key] for r in self.table if r.get(key) is not None and not math.isnan(r[key])]
            out[key] = sum(vals) / len(vals) if vals else float("nan")
        return out

    def to_markdown(self, digits: int = 4) -> str:
        """A markdown table of the scalar columns."""
        cols = [c for c in self.SCALARS if any(c in r for r in self.table)]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in self.table:
            cells = []
            for c in cols:
                v = r.get(c)
                cells.append(f"{v:.{digits}g}" if isinstance(v, float) else str(v))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def plot(self, path: str | None = None):
        """Three panels: attention-output distance/cosine, external and internal profiles; saved to ``path``."""
        plt = require_matplotlib()
        a, b = self.names
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        layers = [r["layer"] for r in self.table]
        axes[0].plot(layers, [r["rel_distance"] for r in self.table], "o-", label="relative distance")
        axes[0].plot(layers, [1 - r["cosine"] for r in self.table], "s-", label="1 - cosine")
        axes[0].set(xlabel="layer", title=f"attention outputs: {a} vs {b}")
        axes[0].legend()
        for r in self.table:
            if "external_a" in r:
                bonds = range(1, len(r["external_a"]) + 1)
                axes[1].plot(bonds, r["external_a"], "-", color="C0", alpha=0.6)
                axes[1].plot(bonds, r["external_b"], "--", color="C3", alpha=0.6)
        axes[1].plot([], [], "-", color="C0", label=a)
        axes[1].plot([], [], "--", color="C3", label=b)
        axes[1].set(xlabel="bond", ylabel="S (nats)", title="external (attention) profiles, per layer")
        axes[1].legend()
        for side, style, color in (("a", "-", "C0"), ("b", "--", "C3")):
            for r in self.table:
                for prof in r.get(f"internal_{side}", {}).values():
                    axes[2].plot(range(1, len(prof) + 1), prof, style, color=color, alpha=0.5)
            kinds = ", ".join(sorted({r.get(f"internal_kind_{side}") for r in self.table} - {None}))
            name = self.names[side == "b"]
            axes[2].plot([], [], style, color=color, label=name if kinds in ("", name) else f"{name} ({kinds})")
        axes[2].set(xlabel="bond", ylabel="S (nats)", title="internal (weight-update) profiles")
        axes[2].legend()
        for ax in axes:
            integer_ticks(ax.xaxis)
        return save_figure(fig, plt, path)


def _as_list(t: torch.Tensor) -> list[float]:
    return [float(x) for x in t.reshape(-1)]


def _gap(pa: torch.Tensor, pb: torch.Tensor) -> float:
    d = (pa - pb).abs()
    return float(d[~torch.isnan(d)].max()) if (~torch.isnan(d)).any() else float("nan")


def compare_models(
    model_a: nn.Module,
    model_b: nn.Module,
    inputs: Any,
    *,
    layers: Sequence[int] | None = None,
    profile: bool = True,
    base: nn.Module | Mapping[str, torch.Tensor] | None = None,
    targets: Sequence[str] = ("q_proj", "v_proj"),
    names: tuple[str, str] = ("a", "b"),
) -> CompareResult:
    """No-hair comparison of two models on the same ``inputs`` (input ids, or a dict of forward kwargs).

    ``layers``: indices into the attention modules (default all). ``profile=False`` compares the
    attention outputs only. ``base``: the common pre-trained model (or its state dict) against
    which full fine-tuning updates ``W - W0`` are measured. See the module docstring.
    """
    targets = check_patterns(targets, "targets")
    all_a, all_b = attention_modules(model_a), attention_modules(model_b)
    if not all_a:
        raise ValueError("model_a has no attention module (no module named '*self_attn' or class '*Attention')")
    if len(all_a) != len(all_b):
        raise ValueError(f"model_a has {len(all_a)} attention modules but model_b has {len(all_b)}")
    idx = list(range(len(all_a))) if layers is None else [int(i) for i in layers]
    bad = [i for i in idx if not -len(all_a) <= i < len(all_a)]
    if bad:
        raise ValueError(f"layers {bad} out of range: the models have {len(all_a)} attention modules")
    sel_a, sel_b = [all_a[i] for i in idx], [all_b[i] for i in idx]
    out_a, ext_a = capture_layers(model_a, inputs, sel_a, profile)
    out_b, ext_b = capture_layers(model_b, inputs, sel_b, profile)
    mods_a, mods_b = dict(model_a.named_modules()), dict(model_b.named_modules())

    rows = []
    for i, (na, _), (nb, _) in zip(idx, sel_a, sel_b, strict=True):
        oa, ob = out_a[na], out_b[nb]
        if oa.shape != ob.shape:
            raise ValueError(f"layer {i}: attention outputs {tuple(oa.shape)} and {tuple(ob.shape)} differ in shape")
        norm_a = float(oa.norm())
        row: dict[str, Any] = {
            "layer": i % len(all_a),
            "module": module_name(na),
            "rel_distance": float((oa - ob).norm()) / norm_a if norm_a > 0 else float("nan"),
            "cosine": float(torch.nn.functional.cosine_similarity(oa.reshape(1, -1), ob.reshape(1, -1)).item()),
        }
        if profile:
            ea, eb = ext_a[na], ext_b[nb]
            fa, fb = fit_cardy(ea), fit_cardy(eb)
            row.update(
                external_a=_as_list(ea),
                external_b=_as_list(eb),
                external_gap=_gap(ea, eb),
                cardy_c_a=float(fa.c),
                cardy_c_b=float(fb.c),
                cardy_r2_a=float(fa.r2),
                cardy_r2_b=float(fb.r2),
            )
            gaps = []
            for side, prefix, mods in (("a", na, mods_a), ("b", nb, mods_b)):
                profiles, kinds = {}, set()
                for name, module in mods.items():
                    if name.startswith(prefix + ".") and matches_any(name[len(prefix) + 1 :], targets):
                        kind, prof = internal_profile(module, name=name, base=base)
                        profiles[name[len(prefix) + 1 :]] = _as_list(prof)
                        kinds.add(kind)
                row[f"internal_{side}"] = profiles
                row[f"internal_kind_{side}"] = ",".join(sorted(kinds)) or None
            for t, pa in row["internal_a"].items():
                pb = row["internal_b"].get(t)
                if pb is not None and len(pa) == len(pb):
                    gaps.append(_gap(torch.tensor(pa), torch.tensor(pb)))
            row["internal_gap"] = max(gaps) if gaps else float("nan")
        rows.append(row)
    return CompareResult(rows, names=tuple(names), meta={"targets": list(targets), "profile": profile})
