"""`artent profile` end to end (in process)."""

import json

import numpy as np
import pytest

from artent_fast.cli import main
from artent_fast.core.reference import reference_profile


def test_builtin_example_writes_json_and_figure(tmp_path, capsys):
    assert main(["profile", "--size", "64", "--rank", "4", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "row/column bond" in out
    record = json.loads((tmp_path / "profile.json").read_text())
    assert len(record["entropies"]) == 11 and record["row_sites"] == 6
    assert record["entropies"][5] <= np.log(4) + 1e-6  # the valley, pinned at ln r
    pytest.importorskip("matplotlib")
    assert (tmp_path / "profile.png").stat().st_size > 1000


def test_input_file_matches_reference(tmp_path, rng):
    m = rng.standard_normal((24, 36))
    np.save(tmp_path / "m.npy", m)
    assert main(["profile", "--input", str(tmp_path / "m.npy"), "--out", str(tmp_path / "o")]) == 0
    got = json.loads((tmp_path / "o" / "profile.json").read_text())["entropies"]
    np.testing.assert_allclose(got, reference_profile(m), atol=1e-5)


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["profile", "--input", str(tmp_path / "nope.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err


class ReaderGoneAfter:
    """A stdout whose reader stops after ``lines`` lines (``artent profile | head -2``): then BrokenPipeError."""

    def __init__(self, lines: int):
        self.lines, self.text = lines, ""

    def write(self, text: str) -> int:
        if self.text.count("\n") >= self.lines:
            raise BrokenPipeError(32, "Broken pipe")
        self.text += text
        return len(text)

    def flush(self) -> None:
        if self.text.count("\n") >= self.lines:
            raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_stdout_is_not_the_output_folders_fault(tmp_path, monkeypatch, capsys):
    stdout = ReaderGoneAfter(2)
    monkeypatch.setattr("sys.stdout", stdout)
    assert main(["profile", "--size", "64", "--rank", "4", "--out", str(tmp_path)]) == 0
    assert stdout.text.count("\n") == 2
    assert "cannot write" not in capsys.readouterr().err
    assert json.loads((tmp_path / "profile.json").read_text())["row_sites"] == 6


@pytest.mark.slow
def test_head_of_artent_profile_from_a_shell(tmp_path):
    """The real pipe: ``python -m artent_fast profile --out DIR | head -2`` exits 0, quietly, files written."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "artent_fast", "profile", "--size", "64", "--rank", "4", "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = [proc.stdout.readline() for _ in range(2)]
    proc.stdout.close()  # the reader goes away (the writer may or may not have finished by then)
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0, err
    assert first[1].split()[:1] == ["bond"], first
    assert "Broken pipe" not in err and "Traceback" not in err, err
    assert (tmp_path / "profile.json").is_file()
