"""Training-framework callbacks that drive :func:`artent_fast.track`.

``artent_fast.integrations.hf.ArtentCallback`` (Hugging Face ``Trainer``) and
``artent_fast.integrations.lightning.ArtentCallback`` (Lightning). Each lives in its own module
so that importing this package loads neither framework.
"""
