"""Analyses of a trained model: clustering, metrics, attribution, differential expression, GSEA,
latent traversal, gene-to-peak association.

Every analysis takes a trained model, through the public interface of
:class:`~cavachon_like.model.MultimodalModel` only, and its
:class:`~cavachon_like.data.MultiModality` (or arrays) and returns tables;
:mod:`cavachon_like.plotting` draws them and :func:`~cavachon_like.analysis.report.analyze_run` does all of it
for a folder written by ``cavachon-like train``.
"""
from .attribution import attribution_by_cluster, top_attributed_features
from .clustering import (
    cluster_assignments,
    cluster_summary,
    degenerate_clustering,
    neighbourhood_table,
)
from .differential import one_vs_rest
from .enrichment import Enrichment, gsea, overrepresentation
from .metrics import (
    batch_silhouette,
    cluster_agreement,
    evaluate_latent,
    ilisi,
    kmeans_agreement,
    knn_agreement,
    label_silhouette,
)
from .perturbation import gene_to_peak, peak_table, summarize_gene_to_peak
from .traversal import traversal_features

__all__ = [
    "Enrichment",
    "attribution_by_cluster",
    "batch_silhouette",
    "cluster_agreement",
    "cluster_assignments",
    "cluster_summary",
    "degenerate_clustering",
    "evaluate_latent",
    "gene_to_peak",
    "gsea",
    "ilisi",
    "kmeans_agreement",
    "knn_agreement",
    "label_silhouette",
    "neighbourhood_table",
    "one_vs_rest",
    "overrepresentation",
    "peak_table",
    "summarize_gene_to_peak",
    "top_attributed_features",
    "traversal_features",
]
