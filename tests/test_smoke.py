import pytest
import torch

import artent_fast as af


def test_public_api_names():
    for name in [
        "entanglement_profile",
        "lowrank_profile",
        "mps_decompose",
        "sites",
        "page_curve",
        "random_lowrank_profile",
        "fit_cardy",
    ]:
        assert callable(getattr(af, name))


def test_profile_shape_and_center_bond():
    """16x8 has 4 + 3 sites (6 bonds); the row/column bond is the 4th (index 3) and holds the matrix's own
    singular-value entropy, at most ln(rank)."""
    m = torch.randn(16, 2, dtype=torch.float64) @ torch.randn(2, 8, dtype=torch.float64)  # rank 2
    prof = af.entanglement_profile(m)
    assert prof.shape == (6,)
    assert torch.isfinite(prof).all()
    layout = af.sites(16, 8)
    assert layout.row_sites == 4 and layout.row_col_bond == 3
    p = torch.linalg.svdvals(m) ** 2
    p = p[p > 1e-12 * p.sum()] / p.sum()
    assert abs(float(prof[layout.row_col_bond]) - float(-(p * p.log()).sum())) < 1e-9
    assert float(prof[layout.row_col_bond]) <= float(torch.log(torch.tensor(2.0))) + 1e-9


def test_lazy_names_and_subpackages():
    """Integration names resolve on first access; an unknown name is an AttributeError."""
    import pytest

    for name in [
        "track",
        "Tracker",
        "fused_attention",
        "attention_profile",
        "register_attention",
        "compare_models",
        "read_history",
        "run_sweep",
    ]:
        assert callable(getattr(af, name)), name
    assert callable(af.adapters.mps.apply)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        af.nope  # noqa: B018


@pytest.mark.slow
def test_import_needs_no_optional_extra():
    """``import artent_fast`` loads neither transformers, peft, matplotlib, pandas nor triton."""
    import subprocess
    import sys

    code = (
        "import sys, artent_fast as af; af.entanglement_profile(__import__('torch').randn(8, 8)); "
        "print([m for m in ('transformers', 'peft', 'matplotlib', 'pandas', 'triton') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_center_bond_is_a_deprecated_alias():
    import pytest

    layout = af.sites(16, 8)
    with pytest.warns(DeprecationWarning, match="row_col_bond"):
        assert layout.center_bond == layout.row_col_bond == 3
