"""Components: one latent variable and the modules around it."""
from .component import Component
from .spec import build_from_spec, per_modality, split_spec

__all__ = ["Component", "build_from_spec", "per_modality", "split_spec"]
