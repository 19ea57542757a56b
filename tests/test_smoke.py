import torch

import artent_fast as af


def test_public_api_names():
    for name in ["entanglement_profile", "lowrank_profile", "mps_decompose", "sites", "page_curve",
                 "random_lowrank_profile", "fit_cardy"]:
        assert callable(getattr(af, name))


def test_profile_shape_and_center_bond():
    m = torch.randn(16, 8)
    prof = af.entanglement_profile(m)
    assert prof.shape == (6,)
    assert torch.isfinite(prof).all()


def test_lazy_names_and_subpackages():
    """Integration names resolve on first access; an unknown name is an AttributeError."""
    import pytest

    for name in ["track", "Tracker", "attention", "attention_profile", "register_attention", "compare",
                 "read_history", "run_sweep"]:
        assert callable(getattr(af, name)), name
    assert callable(af.adapters.mps.apply)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        af.nope  # noqa: B018


def test_import_needs_no_optional_extra():
    """``import artent_fast`` loads neither transformers, peft, matplotlib, pandas nor triton."""
    import subprocess
    import sys

    code = ("import sys, artent_fast as af; af.entanglement_profile(__import__('torch').randn(8, 8)); "
            "print([m for m in ('transformers', 'peft', 'matplotlib', 'pandas', 'triton') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
