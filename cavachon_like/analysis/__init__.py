"""Analyses of a trained model: clustering, metrics, attribution, differential analysis, GSEA.

Every analysis takes the trained :class:`~cavachon_like.CAVACHON` and its
:class:`~cavachon_like.MultiModality` (or arrays) and returns tables;
:mod:`cavachon_like.plotting` draws them and :func:`analyze_run` does all of it
for a folder written by ``cavachon-like train``.
"""
from .attribution import attribution_by_cluster, conditional_attribution
from .clustering import cluster_assignments, cluster_summary, degenerate_clustering, neighbourhood_table
from .differential import (
    differential_analysis,
    one_vs_rest,
    ranking_score,
    resolve_groups,
)
from .enrichment import Enrichment, gsea
from .metrics import (
    batch_silhouette,
    cluster_agreement,
    evaluate_latent,
    ilisi,
    kmeans_agreement,
    knn_agreement,
    label_silhouette,
)

__all__ = [
    "Enrichment",
    "attribution_by_cluster",
    "batch_silhouette",
    "cluster_agreement",
    "cluster_assignments",
    "cluster_summary",
    "conditional_attribution",
    "degenerate_clustering",
    "differential_analysis",
    "evaluate_latent",
    "gsea",
    "ilisi",
    "kmeans_agreement",
    "knn_agreement",
    "label_silhouette",
    "neighbourhood_table",
    "one_vs_rest",
    "ranking_score",
    "resolve_groups",
]
