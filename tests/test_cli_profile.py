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
