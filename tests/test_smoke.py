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
