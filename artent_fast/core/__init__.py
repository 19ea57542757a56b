"""The numerical core: layouts, exact profiles, the factored path, MPS, theory curves."""
