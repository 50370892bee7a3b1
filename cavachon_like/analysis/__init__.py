"""Analyses of a trained model: clustering, metrics, attribution, differential analysis, GSEA."""
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
    "batch_silhouette",
    "cluster_agreement",
    "evaluate_latent",
    "ilisi",
    "kmeans_agreement",
    "knn_agreement",
    "label_silhouette",
]
