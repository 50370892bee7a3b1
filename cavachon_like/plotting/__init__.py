"""Plots."""
from .clustering import plot_attribution_by_cluster, plot_neighbourhood
from .differential import plot_volcano
from .embedding import embed_2d
from .enrichment import plot_pathways, plot_running_score
from .latent import color_norm, palette, plot_latents
from .perturbation import plot_gene_to_peak
from .traversal import plot_traversal

__all__ = [
    "color_norm",
    "embed_2d",
    "palette",
    "plot_attribution_by_cluster",
    "plot_gene_to_peak",
    "plot_latents",
    "plot_neighbourhood",
    "plot_pathways",
    "plot_running_score",
    "plot_traversal",
    "plot_volcano",
]
