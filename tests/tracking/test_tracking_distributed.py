"""``track(model, optimizer=opt)`` under torchrun (2 ranks, gloo, CPU): DDP, FSDP2, FSDP1; faults; no idle collectives.

One ``torch.distributed.run`` launch runs every scenario of tests/tracking/dist_tracking_worker.py (a
subprocess timeout turns a hang into a failure). Rank 0's records are compared with float64
profiles of the whole updates (gathered by the harness, not the tracker) and with a single-process
run of the same model on the same data.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # torchrun launches
pytest.importorskip("peft")

import artent_fast  # noqa: E402
from artent_fast.testing.models import moved  # noqa: E402
from artent_fast.tracking import read_history  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import dist_tracking_worker as worker  # noqa: E402

SCENARIOS = [
    "ddp-lora",
    "fsdp2-lora",
    "fsdp2_keep-lora",
    "fsdp1-lora",
    "fsdp2-fft",
    "fsdp1-fft",
    "ddp-lora-raise",
    "ddp-lora-raiseall",
    "fsdp2-lora-nan",
    "fsdp2-lora-shardfail",
    "fsdp2-fft-readfail",
    "fsdp2-lora-every3",
    "fsdp2-lora-r3",
    "ddp-lora-everydiffers",
    "fsdp2-fft-targetsdiffer",
]
WRAPPER_PARTS = ("module.", "_fsdp_wrapped_module", "_orig_mod", "_checkpoint_wrapped_module")


def launch(worker_file: str, out: Path, modes: list[str]) -> dict[str, list[dict]]:
    """Run ``modes`` of a worker under ``torch.distributed.run`` (2 ranks, gloo); each mode's two rank reports.

    The subprocess timeout turns a hang into a failure.
    """
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        str(Path(__file__).parent / worker_file),
        str(out),
        *modes,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return {m: [json.loads((out / f"{m}.rank{r}.json").read_text()) for r in (0, 1)] for m in modes}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist_tracking")
    reports = launch("dist_tracking_worker.py", out, SCENARIOS)
    return {scenario: {"ranks": reports[scenario], "out": out / scenario} for scenario in SCENARIOS}


def single_process(kind: str) -> dict:
    """The same model and data in one process, tracked the same way."""
    model = worker.build(kind)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    tracker = artent_fast.track(model, optimizer=opt, out=None, dense_every=1, distributed=False)
    for x, y in worker.batches():
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        opt.zero_grad()
    tracker.close()
    return {(r["step"], r["module"]): r["entropies"] for r in tracker.history()}


@pytest.fixture(scope="module")
def singles():
    return {kind: single_process(kind) for kind in ("lora", "fft")}


def keyed(history: list[dict]) -> dict:
    return {(r["step"], r["module"]): r["entropies"] for r in history}


def assert_close(got: list[float], want: list[float], what: str, atol: float = 1e-4) -> None:
    assert len(got) == len(want), what
    for a, b in zip(got, want, strict=True):
        assert math.isfinite(a) and abs(a - b) <= atol, f"{what}: {got} vs {want}"


@pytest.mark.parametrize(
    "scenario", ["ddp-lora", "fsdp2-lora", "fsdp2_keep-lora", "fsdp1-lora", "fsdp2-fft", "fsdp1-fft"]
)
def test_rank0_records_match_float64_reference_and_single_process(runs, singles, scenario):
    rank0, rank1 = runs[scenario]["ranks"]
    kind = scenario.split("-")[1]
    history = rank0["history"]
    modules = {r["module"] for r in history}
    assert len(modules) == 4 and not any(part in m for m in modules for part in WRAPPER_PARTS), modules
    keys = [(r["step"], r["module"]) for r in history]
    assert len(keys) == len(set(keys)) == 4 * worker.STEPS  # every module exactly once per measured step
    for r in history:  # the float64 profile of the whole update, gathered outside the tracker
        assert_close(r["entropies"], rank0["refs"][str(r["step"])][r["module"]], f"{scenario} {r['module']}")
    single = singles[kind]
    assert keyed(history).keys() == single.keys()
    for key, entropies in keyed(history).items():
        assert_close(entropies, single[key], f"{scenario} vs single process {key}")
    assert rank1["history"] == history  # every rank holds every record
    assert read_history(runs[scenario]["out"]) == history  # rank 0 wrote the file
    assert set(rank0["owners"]) == {0, 1}  # the work was split


def test_uneven_shards_of_the_factors(runs):
    rank0, rank1 = runs["fsdp2-lora-r3"]["ranks"]  # lora_A (3, 24) on 2 ranks: 2 rows and 1 row
    assert len(rank0["history"]) == 4 * worker.STEPS and rank0["history"] == rank1["history"]
    for r in rank0["history"]:
        assert r["rank"] == 3
        assert_close(r["entropies"], rank0["refs"][str(r["step"])][r["module"]], f"r3 {r['module']}")


def test_exception_on_one_rank_skips_that_unit_on_all_ranks(runs):
    rank0, rank1 = runs["ddp-lora-raise"]["ranks"]
    owned_by_1 = {u for u, o in zip(rank0["all_units"], rank0["owners"], strict=True) if o == 1}
    assert owned_by_1
    steps = {}
    for r in rank0["history"]:
        steps.setdefault(r["module"], set()).add(r["step"])
    for module, seen in steps.items():
        assert seen == ({1, 3, 4} if module in owned_by_1 else {1, 2, 3, 4}), module
    assert rank0["skipped"] == rank1["skipped"] == len(owned_by_1) and not rank0["dropped"]
    assert rank0["history"] == rank1["history"]


def test_repeated_failures_on_one_rank_drop_the_units_on_all_ranks(runs):
    rank0, rank1 = runs["ddp-lora-raiseall"]["ranks"]
    owned_by_1 = sorted(u for u, o in zip(rank0["all_units"], rank0["owners"], strict=True) if o == 1)
    assert rank0["dropped"] == rank1["dropped"] == owned_by_1 and len(owned_by_1) == 2
    assert rank0["units"] == rank1["units"] and len(rank0["units"]) == 2  # the same units left everywhere
    assert {r["module"] for r in rank0["history"]} == set(rank0["units"])
    assert {r["step"] for r in rank0["history"]} == {1, 2, 3, 4}  # the others went on


def test_nan_on_one_shard_skips_that_unit_once(runs):
    rank0, rank1 = runs["fsdp2-lora-nan"]["ranks"]
    assert rank0["skipped"] == rank1["skipped"] == 1 and not rank0["dropped"]
    missing = {(s, m) for s in range(1, 5) for m in rank0["units"]} - set(keyed(rank0["history"]))
    assert missing == {(2, rank0["units"][0])}  # skipped at the NaN step only, measured again after
    assert all(math.isfinite(e) for r in rank0["history"] for e in r["entropies"])


def test_unreadable_shard_on_one_rank_skips_the_gathered_units_on_all_ranks(runs):
    rank0, rank1 = runs["fsdp2-lora-shardfail"]["ranks"]  # rank 1 fails before the gather at step 2: no hang
    assert rank0["skipped"] == rank1["skipped"] == 4 and not rank0["dropped"]
    assert sorted({r["step"] for r in rank0["history"]}) == [1, 3, 4]  # every gathered unit skipped together
    assert len(rank0["history"]) == 4 * 3 and rank0["history"] == rank1["history"]
    for r in rank0["history"]:
        assert_close(r["entropies"], rank0["refs"][str(r["step"])][r["module"]], f"shardfail {r['module']}")


def test_read_failing_on_a_helping_rank_skips_that_unit_on_all_ranks(runs):
    rank0, rank1 = runs["fsdp2-fft-readfail"]["ranks"]  # rank 1 raises before its all-gather of unit 0 at step 2
    first = rank0["units"][0]
    assert rank0["skipped"] == rank1["skipped"] == 1 and not rank0["dropped"]
    missing = {(s, m) for s in range(1, worker.STEPS + 1) for m in rank0["units"]} - set(keyed(rank0["history"]))
    assert missing == {(2, first)}  # whoever owns it: a helper's failure fails the unit, nobody hangs
    assert rank0["history"] == rank1["history"]
    for r in rank0["history"]:
        assert_close(r["entropies"], rank0["refs"][str(r["step"])][r["module"]], f"readfail {r['module']}")


def test_no_collective_on_steps_with_nothing_due(runs):
    rank0, rank1 = runs["fsdp2-lora-every3"]["ranks"]
    for calls in (rank0["calls"], rank1["calls"]):
        assert len(calls) == 6
        assert [calls[i] for i in (0, 1, 3, 4)] == [0, 0, 0, 0]
        assert calls[2] > 0 and calls[5] == calls[2]  # due steps: the same collectives each time
    assert sorted({r["step"] for r in rank0["history"]}) == [3, 6]


FRAMEWORKS = ["hf", "hf_fsdp", "lightning", "lightning_fsdp2", "attention_ddp", "attention_fsdp2"]


@pytest.fixture(scope="module")
def frameworks(tmp_path_factory):
    pytest.importorskip("transformers")
    pytest.importorskip("lightning")
    return launch("dist_frameworks_worker.py", tmp_path_factory.mktemp("dist_frameworks"), FRAMEWORKS)


@pytest.mark.parametrize(
    "framework,steps",
    [("hf", [2, 4]), ("hf_fsdp", [2, 4]), ("lightning", [1, 2, 3]), ("lightning_fsdp2", [1, 2, 3])],
)
def test_trainer_callbacks_under_torchrun(frameworks, framework, steps):
    rank0, rank1 = frameworks[framework]
    assert rank0["world"] == 2
    history = rank0["history"]
    assert sorted({r["step"] for r in history}) == steps
    keys = [(r["step"], r["module"]) for r in history]
    assert len(keys) == len(set(keys)) == 4 * len(steps)
    assert not any(part in r["module"] for r in history for part in WRAPPER_PARTS)
    assert {r["module"] for r in history} == set(rank0["refs"])
    for r in history:
        if r["step"] == steps[-1]:  # the final update, from the whole factors (gathered outside the tracker)
            assert_close(r["entropies"], rank0["refs"][r["module"]], f"{framework} {r['module']}")
    assert rank1["history"] == history
    if framework.startswith("hf"):  # summaries and per-module scalars reach log_history on rank 0
        logged = [e for e in rank0["log_history"] if "artent/q_proj/valley_depth_mean" in e]
        assert [e["step"] for e in logged] == [2, 4]
        assert any(k.endswith("/row_col_entropy") and "layers.0.q_proj" in k for k in logged[-1])


def test_lightning_fsdp2_shards_and_matches_ddp(frameworks):
    """ModelParallelStrategy really shards (DTensor factors) and records what DDP records on the same data."""
    fsdp2, ddp = frameworks["lightning_fsdp2"][0], frameworks["lightning"][0]
    assert fsdp2["sharded"] and not ddp["sharded"]
    assert keyed(fsdp2["history"]).keys() == keyed(ddp["history"]).keys()
    for key, entropies in keyed(fsdp2["history"]).items():
        assert_close(entropies, keyed(ddp["history"])[key], f"lightning fsdp2 vs ddp {key}")


def test_hf_trainer_fsdp_config_runs_as_ddp_on_cpu(frameworks):
    """What docs/tracking.md says: accelerate drops the Trainer's FSDP plugin on CPU (MULTI_CPU) and runs DDP.

    If this fails, accelerate now shards on CPU: the records test above then covers the Trainer's
    FSDP, and docs/tracking.md ("Distributed training") must say so.
    """
    rank0 = frameworks["hf_fsdp"][0]
    assert (rank0["fsdp_enabled"], rank0["sharded"]) == (False, False), rank0["distributed_type"]
    assert rank0["wrapper"] == "DistributedDataParallel"
    ddp = keyed(frameworks["hf"][0]["history"])
    assert keyed(rank0["history"]).keys() == ddp.keys()
    for key, entropies in keyed(rank0["history"]).items():
        assert_close(entropies, ddp[key], f"hf fsdp config vs ddp {key}")


@pytest.mark.parametrize("mode", ["attention_ddp", "attention_fsdp2"])
def test_attention_side_channel_is_rank0_only(frameworks, mode):
    """``attention=True`` on every rank: rank 0 records its own forwards' attention, the others none; no hang."""
    rank0, rank1 = frameworks[mode]
    attention = [r for r in rank0["history"] if r["kind"] == "attention"]
    assert {r["step"] for r in attention} == {1, 2, 3}
    assert len(attention) == 2 * 3  # each attention module once per captured forward (one per step)
    assert {r["module"] for r in attention} == set(rank0["attention_modules"])  # unwrapped names (no "module.")
    assert {r["step"] for r in attention if r.get("entropies")} == {2, 3}  # profiles requested at each due step
    assert not [r for r in rank1["history"] if r["kind"] == "attention"]
    assert rank0["file"] == rank0["history"]  # rank 0 writes its attention records with the others
    lora = [r for r in rank0["history"] if r["kind"] == "lora"]
    assert lora == rank1["history"]  # the LoRA records are still shared by every rank
    assert len({(r["step"], r["module"]) for r in lora}) == len(lora) == 4 * 3
    assert not any(part in r["module"] for r in lora for part in WRAPPER_PARTS)
    for r in lora:
        if r["step"] == 3:  # the final update, from the whole factors (gathered outside the tracker)
            assert_close(r["entropies"], rank0["refs"][r["module"]], f"{mode} {r['module']}")


def test_dense_units_under_zero3_and_fsdp1_without_orig_params_are_refused_clearly():
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    model = worker.build("fft")
    model.layers[0].q_proj.weight.ds_id = 7  # what DeepSpeed ZeRO-3 puts on its partitioned parameters
    with pytest.raises(ValueError, match="DeepSpeed ZeRO-3 partitions the weights, and .*are dense updates"):
        artent_fast.track(model, out=None, targets=["q_proj"])
    with pytest.raises(ValueError, match="distributed=True: torch.distributed is not initialised"):
        artent_fast.track(worker.build("fft"), out=None, distributed=True)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        from artent_fast.parallel import collective_device

        assert collective_device() == torch.device("cpu")  # gloo: CPU buffers (NCCL would want CUDA)
        plain = worker.build("fft")
        plain.requires_grad_(True)  # FSDP1 without use_orig_params needs uniform requires_grad
        wrapped = FSDP(plain, use_orig_params=False, device_id=torch.device("cpu"))
        with pytest.raises(ValueError, match="use_orig_params=True"):
            artent_fast.track(wrapped, out=None)
        # the module inside an FSDP1 wrapper (flat views, or FSDP units below it): refused before training starts
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        for policy in (None, ModuleWrapPolicy({worker.Block})):
            outer = FSDP(
                worker.build("lora"), use_orig_params=True, device_id=torch.device("cpu"), auto_wrap_policy=policy
            )
            with pytest.raises(ValueError, match="not the FullyShardedDataParallel root"):
                artent_fast.track(outer.module, out=None)
        # one rank: tracked as a single process (names unwrapped, no collectives)
        tracker = artent_fast.track(
            FSDP(worker.build("fft"), use_orig_params=True, device_id=torch.device("cpu")), out=None
        )
        assert not tracker.distributed and {u.module for u in tracker.units} == {
            "layers.0.q_proj",
            "layers.0.v_proj",
            "layers.1.q_proj",
            "layers.1.v_proj",
        }
        # FSDP2 on one rank: DTensor parameters are made whole on the one process (this failed with .tolist())
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        model = worker.build("lora")
        mesh = init_device_mesh("cpu", (1,))
        for block in worker.blocks_of(model):
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        with artent_fast.track(model, out=None) as single:
            moved(model)  # as training would: B != 0 only after tracking started
            single.step()
        assert len(single.history()) == 4 and not single.dropped
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    ("scenario", "named"),
    [
        ("ddp-lora-everydiffers", ["every (rank 0: 1, rank 1: 2)", "dense_every (rank 0: 10, rank 1: 20)"]),
        (
            "fsdp2-fft-targetsdiffer",
            ["rank 0 tracks 2 units, rank 1 4", "rank 1 has layers.0.v_proj", "targets: rank 0 ('q_proj',)"],
        ),
    ],
)
def test_ranks_that_disagree_get_one_clear_error_each_and_no_hang(runs, scenario, named):
    """``every`` or ``targets`` differing per rank: checked once when tracking starts, the same error on every rank
    naming what differs (not a hang until the job's timeout, nor a gloo "collective mismatch" abort)."""
    rank0, rank1 = runs[scenario]["ranks"]
    assert rank0["error"] == rank1["error"] and rank0["error"] is not None
    assert rank0["error"].startswith("artent_fast.track: the ranks disagree on ")
    for part in named:
        assert part in rank0["error"], rank0["error"]
