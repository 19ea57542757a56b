"""The attention side channel: per-layer statistics captured by the "artent" attention.

Two levels (docs/attention.md):

1. every captured forward appends a cheap record per attention module: the mean row entropy
   and mean log-sum-exp (kept as device tensors until :func:`drain`, so capture never waits
   for the GPU);
2. on sampled forwards the record also carries the external entanglement profile averaged
   over batch and heads (``entropies``, ``row_sites``) and its Cardy fit. Sampling:
   ``enable(profile_every=N)`` profiles each module's 0th, Nth, 2Nth... call, and
   :func:`request_profile` arms the next call of every module once.

Interface shared with ``artent_fast.tracking``: ``enable(model=None)``, ``disable(model=None)``,
``drain() -> list[dict]`` with keys ``module``, ``kind="attention"``, ``entropies``,
``row_sites`` plus extras (``entropy_mean``, ``lse_mean``, ``cardy_c``, ``cardy_r2``, ...).
A consumer that must see only its own model's records (a tracker) takes a :func:`subscribe`
handle instead: its own queue, its own names and profile requests, so two trackers with
``attention=True`` never take each other's records.
Capture never raises into the forward pass: the first failure of each kind is warned once.
"""

from __future__ import annotations

import collections
import threading
import warnings
import weakref
from typing import Any

import torch

from artent_fast.api import prime_factors, sites
from artent_fast.attention.external import attention_cardy, attention_profile

MAX_RECORDS = 100_000


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.everywhere = False
        self.names: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.calls: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.served: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.records: collections.deque = collections.deque(maxlen=MAX_RECORDS)
        self.profile_every = 0
        self.request = 0
        self.warned: set[str] = set()
        self.subscriptions: list[Subscription] = []


class Subscription:
    """One consumer's view of the channel: the records of ``model``'s modules only, in a queue of its own."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.names: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary(
            {module: name for name, module in model.named_modules()}
        )
        self.records: collections.deque = collections.deque(maxlen=MAX_RECORDS)
        self.request = 0
        self.served: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def drain(self) -> list[dict[str, Any]]:
        """This subscription's records (oldest first) as plain Python values, and clear them."""
        with _STATE.lock:
            raw = list(self.records)
            self.records.clear()
        return [{k: _plain(v) for k, v in r.items()} for r in raw]

    def request_profile(self) -> None:
        """Arm a profile on the next call of each of this subscription's attention modules."""
        with _STATE.lock:
            self.request += 1

    def disable(self, model: torch.nn.Module | None = None) -> None:
        """Stop this subscription (undrained records stay readable with :meth:`drain`)."""
        with _STATE.lock:
            if self in _STATE.subscriptions:
                _STATE.subscriptions.remove(self)

    close = disable


_STATE = _State()


def subscribe(model: torch.nn.Module) -> Subscription:
    """Capture ``model``'s attention modules into a queue of one's own (see :class:`Subscription`)."""
    sub = Subscription(model)
    with _STATE.lock:
        _STATE.subscriptions.append(sub)
    _check_implementation(model)
    return sub


def enable(model: torch.nn.Module | None = None, *, profile_every: int | None = None) -> None:
    """Start capturing: for ``model``'s modules (named as in ``named_modules()``), or everywhere.

    ``profile_every=N`` (N >= 1) computes profiles on every Nth call of each module; 0 turns
    periodic profiles off; None leaves the setting unchanged.
    """
    if profile_every is not None:
        if not isinstance(profile_every, int) or isinstance(profile_every, bool) or profile_every < 0:
            raise ValueError(f"profile_every must be a non-negative integer, got {profile_every!r}")
        _STATE.profile_every = profile_every
    with _STATE.lock:
        if model is None:
            _STATE.everywhere = True
            return
        for name, module in model.named_modules():
            _STATE.names[module] = name
    _check_implementation(model)


def _check_implementation(model: torch.nn.Module) -> None:
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if impl is not None and impl != "artent":
        _warn_once(
            f"impl-{impl}",
            f"attention capture enabled on a model with attn_implementation={impl!r}: "
            "no records will arrive until it runs on 'artent' (artent_fast.register_attention(), then "
            "model.set_attn_implementation('artent'))",
        )


def disable(model: torch.nn.Module | None = None) -> None:
    """Stop capturing for ``model``'s modules, or everywhere (None). Undrained records stay."""
    with _STATE.lock:
        if model is None:
            _STATE.everywhere = False
            _STATE.names.clear()
            _STATE.profile_every = 0
            return
        for module in model.modules():
            _STATE.names.pop(module, None)


def is_enabled(module: torch.nn.Module | None = None) -> bool:
    """Whether a forward of ``module`` (any module if None) would be captured."""
    if module is None:
        return _STATE.everywhere or len(_STATE.names) > 0 or bool(_STATE.subscriptions)
    return _STATE.everywhere or module in _STATE.names or any(module in s.names for s in _STATE.subscriptions)


def request_profile() -> None:
    """Arm a profile on the next captured call of every attention module."""
    with _STATE.lock:
        _STATE.request += 1


def drain() -> list[dict[str, Any]]:
    """Return the captured records (oldest first) as plain Python values, and clear them."""
    with _STATE.lock:
        raw = list(_STATE.records)
        _STATE.records.clear()
    return [{k: _plain(v) for k, v in r.items()} for r in raw]


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value


def module_name(module: torch.nn.Module) -> str:
    name = _STATE.names.get(module)
    if name is not None:
        return name
    idx = getattr(module, "layer_idx", None)
    return type(module).__name__ + (f".{idx}" if idx is not None else "")


def _wants_profile(module: torch.nn.Module) -> bool:
    with _STATE.lock:
        call = _STATE.calls.get(module, 0)
        _STATE.calls[module] = call + 1
        wanted = False
        if _STATE.served.get(module, 0) < _STATE.request:
            _STATE.served[module] = _STATE.request
            wanted = True
        for sub in _STATE.subscriptions:
            if module in sub.names and sub.served.get(module, 0) < sub.request:
                sub.served[module] = sub.request
                wanted = True
    return wanted or (_STATE.profile_every > 0 and call % _STATE.profile_every == 0)


def cheap_stats(stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mean row entropy and log-sum-exp over live rows (device tensors: no host sync).

    A fully masked row (lse = -inf) is dead and left out; a live row that is not finite (a NaN or Inf
    forward) makes both means NaN, as does a forward with no live row: never a made-up 0.
    """
    lse, ent = stats["lse"].detach(), stats["entropy"].detach()
    live = lse != float("-inf")
    bad = (live & ~(torch.isfinite(lse) & torch.isfinite(ent))).any()
    n = live.sum()  # 0 live rows: 0 / 0 = NaN
    nan = torch.full((), float("nan"), dtype=lse.dtype, device=lse.device)
    return {
        "entropy_mean": torch.where(bad, nan, torch.where(live, ent, 0).sum() / n),
        "lse_mean": torch.where(bad, nan, torch.where(live, lse, 0).sum() / n),
    }


def profile_fields(q, k, *, causal: bool, mask, scale) -> dict[str, Any]:
    """The sampled-step fields: profile averaged over batch and heads, per-head profiles, Cardy fit."""
    if len(prime_factors(q.shape[2])) + len(prime_factors(k.shape[2])) < 3:
        return {}  # fewer than 2 bonds (e.g. one decoding step over a prime number of keys): nothing to fit
    layout = sites(q.shape[2], k.shape[2])
    prof = attention_profile(q.detach(), k.detach(), causal=causal, mask=mask, scale=scale)
    fit = attention_cardy(prof)
    return {
        "entropies": fit.mean_profile.tolist(),
        "row_sites": layout.row_sites,
        "head_entropies": prof.double().nanmean(0).tolist(),
        "cardy_c": float(fit.mean.c),
        "cardy_s0": float(fit.mean.s0),
        "cardy_r2": float(fit.mean.r2),
    }


def capture(module: torch.nn.Module, q, k, stats: dict[str, torch.Tensor], *, causal: bool, mask, scale) -> None:
    """Record one forward of ``module``; never raises (the first failure of each kind is warned)."""
    try:
        name = module_name(module)
        record: dict[str, Any] = {
            "module": name,
            "kind": "attention",
            "entropies": [],
            "row_sites": None,
            "heads": q.shape[1],
            "q_len": q.shape[2],
            "kv_len": k.shape[2],
        }
        record.update(cheap_stats(stats))
        if _wants_profile(module):
            try:
                record.update(profile_fields(q, k, causal=causal, mask=mask, scale=scale))
            except Exception as exc:  # a non-finite forward, a solver failure: this record stays, unprofiled
                _warn_once(
                    f"profile-{type(exc).__name__}",
                    f"artent_fast attention profile of {name} failed; its record is kept without a profile: {exc}",
                )
        with _STATE.lock:
            queues = [(sub.records, sub.names[module]) for sub in _STATE.subscriptions if module in sub.names]
            if _STATE.everywhere or module in _STATE.names:
                queues.append((_STATE.records, name))
            for queue, own_name in queues:
                if len(queue) == queue.maxlen:
                    _warn_once("overflow", f"attention channel holds {MAX_RECORDS} undrained records: dropping oldest")
                queue.append({**record, "module": own_name})
    except Exception as exc:  # a monitoring tool never kills training
        _warn_once(type(exc).__name__, f"artent_fast attention capture failed (training goes on): {exc!r}")


def _warn_once(key: str, message: str) -> None:
    if key not in _STATE.warned:
        _STATE.warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def reset() -> None:
    """Forget all state (names, counters, records, warnings): for tests."""
    global _STATE
    _STATE = _State()


__all__ = [
    "Subscription",
    "capture",
    "disable",
    "drain",
    "enable",
    "is_enabled",
    "module_name",
    "request_profile",
    "reset",
    "subscribe",
]
