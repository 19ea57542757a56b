"""What is measured on a fine-tuned model: the internal profiles of its trained modules' updates (and their
valley depth and row/column-bond entropy), the external profiles of its attention matrices, and how far
``artent_fast.track``'s record of a run is from the direct measurement."""

from __future__ import annotations

import statistics
from typing import Any

import torch

from artent_fast.compare import attention_modules, capture_layers, internal_profile
from artent_fast.core.profile import entanglement_profile
from artent_fast.patterns import matches, module_name
from artent_fast.tracking.records import valley_depth
from experiments.top_view import TopView

TARGETS = ("q_proj", "v_proj")  # the trained modules' kinds


def target_pattern(layers: list[int] | range) -> str:
    """A regular expression (full match) for q_proj and v_proj of ``layers``: peft's form; the package's
    matcher (:mod:`artent_fast.patterns`) takes it as ``"re:" + pattern``."""
    return r"(.*\.)?layers\.(" + "|".join(str(i) for i in layers) + r")\.self_attn\.(q_proj|v_proj)"


def named(name: str, pattern: str) -> bool:
    return matches(name, "re:" + pattern)


def modules_of(model, pattern: str) -> dict[str, Any]:
    """The trained modules of ``model`` (plain, peft or MPS-adapted) by canonical name."""
    out = {}
    for n, m in model.named_modules():
        cn = module_name(n)
        if cn and named(cn, pattern) and not cn.endswith(("base_layer", ".base")):
            out.setdefault(cn, m)
    return out


def kind_of(name: str) -> str:
    return "q_proj" if name.endswith("q_proj") else "v_proj"


def shapes(mods: dict[str, Any]) -> dict[str, list[int]]:
    """Per kind: the (m, n) shape of the (plain) modules' weights."""
    return {kind_of(n): list(m.weight.shape) for n, m in mods.items()}


# -- internal profiles -----------------------------------------------------------------------------
def internal(mods: dict[str, Any], base) -> dict[str, list[float]]:
    """Internal profiles of the updates of ``mods`` (name -> module, looked up outside any :class:`TopView`)."""
    return {n: [float(x) for x in internal_profile(m, name=n, base=base)[1]] for n, m in mods.items()}


def mean_profile(profiles: dict[str, list[float]]) -> list[float]:
    """The mean over every module of ``profiles`` (q and v alike: the built model's are all one shape)."""
    t = torch.tensor(list(profiles.values()), dtype=torch.float64)
    return [float(x) for x in t.nanmean(0)]


def mean_profiles(profiles: dict[str, list[float]]) -> dict[str, list[float]]:
    """Per kind (q_proj, v_proj): the mean profile over the trained layers."""
    out = {}
    for kind in TARGETS:
        ps = [p for n, p in profiles.items() if kind_of(n) == kind]
        if ps:
            out[kind] = [float(x) for x in torch.tensor(ps, dtype=torch.float64).nanmean(0)]
    return out


def summarise(profiles: dict[str, list[float]], row_sites: dict[str, int]) -> dict[str, dict[str, float]]:
    """Per kind (q_proj, v_proj): mean valley depth, row/column-bond entropy and peak over the trained layers."""
    out: dict[str, dict[str, float]] = {}
    for kind in TARGETS:
        rows = [(p, row_sites[kind]) for n, p in profiles.items() if kind_of(n) == kind]
        if not rows:
            continue
        depth = [valley_depth(p, rs) for p, rs in rows]
        centre = [p[rs - 1] for p, rs in rows]
        out[kind] = {
            "valley_depth": statistics.fmean(depth),
            "center": statistics.fmean(centre),
            "peak": statistics.fmean(max(p) for p, _ in rows),
        }
    return out


def tracker_agreement(tracker, direct: dict[str, list[float]], step: int) -> float | None:
    """Largest |difference| between the tracker's and the direct profiles at ``step``."""
    if tracker is None:
        return None
    worst = None
    for rec in tracker.history(as_frame=False):
        if rec.get("step") != step:
            continue
        mine = direct.get(module_name(rec["module"]))
        if mine is None or rec.get("entropies") is None:
            continue
        diffs = [abs(a - b) for a, b in zip(rec["entropies"], mine, strict=False) if a is not None and b == b]
        if diffs:
            worst = max(worst or 0.0, max(diffs))
    return worst


# -- external profiles -----------------------------------------------------------------------------
def layer_means(model, ids: torch.Tensor) -> list[list[float]]:
    """Per layer: the mean over batch and heads of the attention matrices' profiles (compare's capture)."""
    layers = attention_modules(model)
    _, profiles = capture_layers(model, {"input_ids": ids}, layers)
    return [[float(x) for x in profiles[n]] for n, _ in layers]


def head_profiles(att: torch.Tensor) -> list[list[float]]:
    """Per head: the profile of the attention matrices ``att`` (B, H, T, T), mean over the batch."""
    prof = entanglement_profile(att.double(), on_zero="nan", check_finite=False)  # (B, H, bonds)
    return [[float(x) for x in row] for row in prof.nanmean(0)]


@torch.no_grad()
def external_all(model, probe: torch.Tensor) -> list[list[list[float]]]:
    """Every layer's per-head external profiles on the probe windows (the base model)."""
    att = model(input_ids=probe, output_attentions=True).attentions
    return [head_profiles(a) for a in att]


@torch.no_grad()
def external_top(model, h_probe: torch.Tensor, first: int) -> list[list[list[float]]]:
    """Per trained layer, per head: the profile of the attention matrix (mean over the probe windows)."""
    with TopView(model, first) as view:
        att = view.logits(h_probe, 1, output_attentions=True).attentions
    return [head_profiles(a) for a in att]


def flat_heads(ext: list[list[list[float]]]) -> list[list[float]]:
    return [h for layer in ext for h in layer]
