"""Host cost of one due ``tracker.step()`` on a small LoRA model, and of its measurement alone.

The case: a 4-layer LLaMA with hidden 256 (8 heads), LoRA r=8 on q_proj and v_proj:
8 tracked updates, q 256x256 and v (kv_heads * 32)x256 (2 key/value heads: 64x256; 4: 128x256, the small
preset of :mod:`artent_fast.bench.tracking`). Between timed calls the LoRA factors are nudged (as an optimizer
step would), so nothing can be served from a cache of old results.
The tracker runs with ``background=False`` (the whole due step on the calling thread). The command line
is ``benchmarks/bench_step_cost.py``.
"""

from __future__ import annotations

import statistics
import time

import torch

from artent_fast.api import lowrank_profile
from artent_fast.bench.tracking import SMALL
from artent_fast.bench.tracking import build as build_lora_llama
from artent_fast.core.lowrank_mixed import mixed_plan, pad_factors
from artent_fast.tracking import compute, track


def build(kv_heads: int, rank: int):
    """The small preset (:data:`~artent_fast.bench.tracking.SMALL`, vocab 256) with ``kv_heads`` key/value heads
    and LoRA rank ``rank``; B = 0, as peft starts it (track it, then :func:`train_lora_b`)."""
    model, _ = build_lora_llama({**SMALL, "kv_heads": kv_heads, "vocab": 256, "rank": rank}, "cpu", torch.float32)
    return model


def train_lora_b(model) -> None:
    """B != 0, as after some training. Called after ``track()``: the tracker then measures ``B A`` of rank r, as in
    a real fine-tune (a non-zero B at ``track()`` would make it measure the change since, of rank 2r)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02)


def time_measurement(kv_heads: int, rank: int, repeats: int) -> None:
    """Thread CPU time of one due step's measurement (snapshot and profile), on random factors of the shapes.

    Alternates, call by call, the tracker's path (every unit in one call, ``core/lowrank_mixed``) and
    the per-shape-group path it replaced (one batched ``lowrank_profile`` per shape), so the ratio
    holds on a machine whose speed drifts.
    """
    gen = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(out, rank, generator=gen), torch.randn(rank, 256, generator=gen))
             for out in (256,) * 4 + (32 * kv_heads,) * 4]  # fmt: skip
    groups = [pairs[:4], pairs[4:]]

    def one_call() -> None:
        compute.lowrank_measure(pairs)(*compute.snapshot_lowrank(pairs))

    def per_group() -> None:
        for items in groups:
            B, A = torch.stack([b for b, _ in items]), torch.stack([a for _, a in items])
            lowrank_profile(B, A, on_zero="nan", check_finite=False)

    times: dict = {one_call: [], per_group: []}
    for i in range(20 + repeats):
        for fn in (one_call, per_group) if i % 2 else (per_group, one_call):
            t0 = time.thread_time()
            fn()
            if i >= 20:
                times[fn].append(time.thread_time() - t0)
    print(f"measurement of one due step, 8 units (4 x 256x256, 4 x {32 * kv_heads}x256, r={rank}), "
          f"thread CPU time over {repeats} alternating repeats:")  # fmt: skip
    for fn, label in ((per_group, "per shape group (before)"), (one_call, "one call (tracker)")):
        t = sorted(times[fn])
        print(f"  {label:26} min {1e3 * t[0]:.3f}  p25 {1e3 * t[len(t) // 4]:.3f}  "
              f"median {1e3 * statistics.median(t):.3f} ms")  # fmt: skip
    ratio = statistics.median(b / a for a, b in zip(times[one_call], times[per_group], strict=True))
    print(f"  median per-repeat ratio per-group / one-call: {ratio:.2f}x")
    # the floor: the exact float64 eigensolves of the same bond densities (one batched call per size)
    B, A = pad_factors(pairs)
    plan = mixed_plan(tuple((b.shape[0], a.shape[1]) for b, a in pairs), rank, B.shape[1], A.shape[2]).plan
    dens = torch.randn(sum(c * s * s for s, c, _ in plan.buckets), dtype=torch.float64)
    blocks = [dens[st : st + c * s * s].view(c, s, s) for s, c, st in plan.buckets]
    blocks = [b @ b.mT for b in blocks]
    eig = []
    for i in range(20 + repeats):
        t0 = time.thread_time()
        for b in blocks:
            torch.linalg.eigvalsh(b)
        if i >= 20:
            eig.append(time.thread_time() - t0)
    sizes = ", ".join(f"{c} x {s}x{s}" for s, c, _ in plan.buckets)
    print(f"  floor: eigvalsh alone ({sizes}): min {1e3 * min(eig):.3f}  median {1e3 * statistics.median(eig):.3f} ms")


def step_cost(kv_heads: int, rank: int, steps: int, *, profile: bool = False) -> None:
    """Median host time of ``steps`` due ``tracker.step()`` calls (``background=False``: the whole due step on
    this thread) and of the measurement alone, printed; ``profile``: also a cProfile of 100 due steps."""
    model = build(kv_heads, rank)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    tracker = track(model, out=None, background=False)  # the due step measured in full, inline
    train_lora_b(model)
    shapes = sorted({(u.layer.lora_B[u.adapter].weight.shape[0], u.layer.lora_A[u.adapter].weight.shape[1])
                     for u in tracker.units})  # fmt: skip
    gen = torch.Generator().manual_seed(1)

    def nudge() -> None:
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn(p.shape, generator=gen), alpha=1e-4)

    cpu: list[float] = []

    def timed(fn, n: int) -> list[float]:
        out = []
        cpu.clear()
        for _ in range(n):
            nudge()
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        return out

    timed(tracker.step, 20)  # warm-up
    step_times = timed(tracker.step, steps)
    step_cpu = list(cpu)
    pairs = [u.factors()[:2] for u in tracker.units]

    def measure_only() -> None:
        compute.lowrank_measure(pairs)(*compute.snapshot_lowrank(pairs))

    measure_times = timed(measure_only, steps)
    measure_cpu = list(cpu)
    print(f"{len(tracker.units)} LoRA r={rank} units, shapes {shapes}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print(f"tracker.step() (due, every=1): median {1e3 * statistics.median(step_times):.3f} ms, "
          f"p10 {1e3 * sorted(step_times)[len(step_times) // 10]:.3f} ms")  # fmt: skip
    print(f"  process CPU time per step: median {1e3 * statistics.median(step_cpu):.3f} ms")
    print(f"measurement alone (snapshot + profile): median {1e3 * statistics.median(measure_times):.3f} ms, "
          f"process CPU {1e3 * statistics.median(measure_cpu):.3f} ms")  # fmt: skip
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        timed(tracker.step, 100)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    tracker.close()
