"""One module-name matcher for track, sweep, compare and MPS Adaptation (artent_fast.patterns)."""

import pytest

from artent_fast.checkpoints.names import check_targets, is_target
from artent_fast.patterns import check_patterns, matches
from artent_fast.patterns import matches_any as mps_matches

NAME = "model.layers.10.self_attn.q_proj"
CASES = [
    ("q_proj", True),
    ("self_attn.q_proj", True),
    ("proj", False),  # whole components only
    ("layers.10.self_attn.q_proj", True),
    ("ayers.10.self_attn.q_proj", False),
    ("*_proj", True),
    ("model.layers.1[0-5].*", True),
    ("model.layers.1[6-9].*", False),
    ("re:.*q_proj", True),
    ("re:q_proj", False),  # a regex matches the FULL name
    ("v_proj", False),
]


@pytest.mark.parametrize(("pattern", "expected"), CASES)
def test_every_entry_point_means_the_same(pattern, expected):
    assert matches(NAME, pattern) is expected
    assert is_target(NAME, [pattern]) is expected  # artent sweep --target
    assert mps_matches(NAME, [pattern]) is expected  # adapters.mps.apply / compare


@pytest.mark.parametrize(
    ("patterns", "error", "text"),
    [
        ([], ValueError, "empty"),
        ([3], TypeError, "must hold strings"),
        ([""], ValueError, "empty pattern"),
        (["re:("], ValueError, "not a valid regular expression"),
    ],
)
def test_bad_patterns_are_refused_naming_the_argument(patterns, error, text):
    with pytest.raises(error, match=text) as info:
        check_patterns(patterns, "targets")
    assert "targets" in str(info.value)
    with pytest.raises(error, match="--target"):
        check_targets(patterns)


def test_track_refuses_a_bad_pattern():
    torch = pytest.importorskip("torch")
    from artent_fast.updates import find_units

    with pytest.raises(ValueError, match="targets"):
        find_units(torch.nn.Linear(4, 4), ["re:("])
