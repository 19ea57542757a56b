"""``artent bench``: the command works end to end on CPU (toy sizes), its report and results.json have
the documented structure, the self-check passes, and argument errors are one line with exit code 2.

No timing is asserted (figures are measurements, not tests). The GPU run is benchmarks/gpu.sh.
"""

from __future__ import annotations

import json

import pytest
import torch

from artent_fast.bench.plan import SECTIONS, plan_for
from artent_fast.bench.table import Table, cell
from artent_fast.cli import main

TABLES = {
    "selfcheck": ["selfcheck"],
    "core": ["core_dense", "core_factored"],
    "eigvalsh": ["eigvalsh"],
    "attention": ["attention_fwd_float32", "attention_fwd_bwd_float32"],
    "tracking": ["tracking"],
    "sweep": ["sweep"],
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rc = main(["bench", "--tiny", "--device", "cpu", "--out", str(out)])
    return rc, out, json.loads((out / "results.json").read_text())


def test_tiny_run_writes_report_and_results(tiny_run):
    rc, out, results = tiny_run
    assert rc == 0 and results["errors"] == {}
    assert results["schema"] == 1 and results["device"] == "cpu" and results["mode"] == "tiny"
    assert results["sections"] == list(SECTIONS)
    assert results["selfcheck_passed"] is True
    expected = [name for section in SECTIONS for name in TABLES[section]]
    assert list(results["tables"]) == expected
    for name, table in results["tables"].items():
        assert table["rows"], name
        assert set(table["columns"]) >= set().union(*(row.keys() for row in table["rows"])), name
    report = (out / "report.md").read_text()
    assert "**Self-check: passed**" in report and "## Machine" in report
    for table in results["tables"].values():
        assert f"## {table['title']}" in report


def test_machine_lists_every_backend_with_a_reason_when_it_does_not_load(tiny_run):
    _, _, results = tiny_run
    machine = results["machine"]
    assert machine["packages"]["torch"] == torch.__version__
    backends = {b["name"]: b for b in machine["backends"]}
    assert set(backends) == {"torch", "triton", "cuda", "cupy"} and backends["torch"]["loaded"]
    for b in backends.values():
        assert b["loaded"] == (b["reason"] is None), b
        if not b["loaded"]:
            assert "Error" in b["reason"], b  # the exception's type and message


def test_selfcheck_covers_every_op_and_the_public_paths(tiny_run):
    _, _, results = tiny_run
    rows = results["tables"]["selfcheck"]["rows"]
    checked = {(r["check"], r["backend"], r["dtype"]) for r in rows if r["status"] == "pass"}
    for op in ("eigvalsh", "gram", "partial_trace", "partial_trace_chain", "entropy"):
        for dtype in ("float32", "float64"):
            assert (op, "torch", dtype) in checked
    assert {"entanglement_profile", "lowrank_profile"} <= {r["check"] for r in rows if r["backend"] == "auto"}
    assert all(r["error"] <= r["tolerance"] for r in rows if r["status"] == "pass")


def test_scaled_down_runs_say_so(tiny_run):
    _, _, results = tiny_run
    tables = results["tables"]
    assert any("scaled down" in n for n in tables["tracking"]["notes"])
    assert any("scaled down" in n for n in tables["sweep"]["notes"])
    assert {r["case"] for r in tables["sweep"]["rows"]} == {"q,v", "all linear"}
    assert all(0 <= r["io_share"] <= 1 for r in tables["sweep"]["rows"])
    assert "scaled down" in " ".join(plan_for("cpu", "quick").notes)


def test_only_runs_the_named_sections(tmp_path):
    assert main(["bench", "--tiny", "--device", "cpu", "--only", "eigvalsh", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["sections"] == ["eigvalsh"] and list(results["tables"]) == ["eigvalsh"]
    assert results["selfcheck_passed"] is None
    assert results["tables"]["eigvalsh"]["rows"][0]["dispatcher"] == "torch"  # CPU default


@pytest.mark.parametrize(
    "args, message",
    [
        (["--only", "core,nope"], "--only: unknown section(s) nope"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) if "tpu" in args else _returns():
        rc = main(["bench", "--tiny", "--out", str(tmp_path), *args])
        assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["bench", "--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA is not available" in err[0]
    assert not (tmp_path / "results.json").exists()


class _returns:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_table_prints_rows_as_they_come(capsys):
    t = Table("t", "A title", {"a": "A", "b": "B"}).start()
    t.add(a=1.23456, b=None)
    out = capsys.readouterr().out
    assert "## A title" in out and "| A | B |" in out and "| 1.23 | n/a |" in out
    assert t.to_json()["rows"] == [{"a": 1.23456, "b": None}]
    assert [cell(x) for x in (1234.5, 0.0, 1e-5, float("nan"), True)] == ["1234", "0", "1.00e-05", "nan", "True"]


@pytest.mark.gpu
def test_tiny_run_on_cuda_self_checks_every_loaded_backend(tmp_path):
    rc = main(["bench", "--tiny", "--device", "cuda", "--only", "selfcheck,eigvalsh", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert rc == 0 and results["selfcheck_passed"] is True, results["tables"]["selfcheck"]["rows"]
    rows = results["tables"]["selfcheck"]["rows"]
    loaded = {b["name"] for b in results["machine"]["backends"] if b["loaded"]}
    ran = {r["backend"] for r in rows if r["status"] == "pass"}
    assert loaded <= ran  # every loaded backend's kernels ran on the GPU and passed
    assert results["machine"]["gpu"]["name"] == torch.cuda.get_device_name()


@pytest.mark.parametrize("shape", [(64, 64), (128, 32), (12, 700), (3, 2, 256, 96)])
@pytest.mark.parametrize("reduce_elongated", [False, True])
def test_naive_profile_matches_the_float64_reference(shape, reduce_elongated):
    """The naive baseline (one svdvals per bond), with and without the QR step used on CUDA for
    elongated bond matrices, equals the exact float64 profile."""
    import artent_fast as af
    from artent_fast.bench.core import naive_profile
    from artent_fast.core.reference import reference_profiles

    g = torch.Generator().manual_seed(sum(shape))
    m = torch.randn(*shape, generator=g, dtype=torch.float64)
    got = naive_profile(m, reduce_elongated=reduce_elongated)
    want = torch.from_numpy(reference_profiles(m.numpy()))
    assert got.shape == want.shape == (*shape[:-2], af.sites(*shape[-2:]).num_bonds)
    assert torch.allclose(got, want, atol=1e-10), (got - want).abs().max()


def test_a_run_stopped_after_a_section_keeps_what_it_measured(tmp_path, monkeypatch):
    """results.json and report.md are written after every section: a run killed in the next one (here the
    tiny eigvalsh section, then a section that never returns) still leaves the first section's table."""
    from artent_fast.bench import runner

    class Killed(BaseException):  # not an Exception: like a kill, it passes the per-section guard
        pass

    def killed(plan, device, echo):
        saved = json.loads((tmp_path / "results.json").read_text())
        assert saved["complete"] is False and list(saved["tables"]) == ["eigvalsh"]
        assert "partial: sections done so far: eigvalsh" in saved["notes"]
        raise Killed

    monkeypatch.setitem(runner.SECTION_RUNNERS, "tracking", killed)
    with pytest.raises(Killed):
        main(["bench", "--tiny", "--device", "cpu", "--only", "eigvalsh,tracking", "--out", str(tmp_path)])
    assert "eigvalsh" in (tmp_path / "report.md").read_text().lower()
    assert main(["bench", "--tiny", "--device", "cpu", "--only", "eigvalsh", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["complete"] is True
