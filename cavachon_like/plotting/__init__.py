"""Plots."""
from .embedding import embed_2d
from .latent import plot_latents

__all__ = ["embed_2d", "plot_latents"]
