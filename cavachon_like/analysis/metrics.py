"""Quality of a latent space against labels and batches (scikit-learn based).

Every function takes a latent matrix (cells x dims) and per-cell labels, so the
same numbers describe cavachon_like, scvi-tools or any other embedding.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import (
    adjusted_rand_score,
    normalized_mutual_info_score,
    silhouette_samples,
)
from sklearn.neighbors import NearestNeighbors

#: Silhouettes are quadratic in the number of cells; above this many they use a
#: seeded stratified subsample (the scIB default is a full computation, which takes
#: minutes and gigabytes at 100k cells for a change in the third decimal).
SILHOUETTE_MAX_CELLS = 20_000


def _labels(values: Any, n: int, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=object)
    if values.ndim != 1 or len(values) != n:
        raise ValueError(f"{name} must have one entry per cell ({n}), got shape {values.shape}.")
    missing = pd.isna(values)
    if missing.any():
        raise ValueError(f"{name} is missing for {int(missing.sum())} cells (e.g. position {int(missing.argmax())}); "
                         "drop those cells first.")
    return values.astype(str)


def _latent(latent: Any) -> np.ndarray:
    latent = np.asarray(latent, dtype=np.float32)
    if latent.ndim != 2:
        raise ValueError(f"latent must be cells x dims, got shape {latent.shape}.")
    if not np.isfinite(latent).all():
        raise ValueError("latent has NaN or infinite values.")
    return latent


def neighbours(latent: Any, k: int) -> np.ndarray:
    """Indices of each cell's ``k`` nearest other cells (Euclidean), ``(n, k)``."""
    latent = _latent(latent)
    if not 0 < k < len(latent):
        raise ValueError(f"k must be between 1 and {len(latent) - 1} (cells - 1), got {k}.")
    # one extra neighbour, because each cell is its own nearest neighbour
    index = NearestNeighbors(n_neighbors=k + 1).fit(latent).kneighbors(latent, return_distance=False)
    return _drop_self(index)


def _drop_self(index: np.ndarray) -> np.ndarray:
    """Remove each row's own index (usually first; duplicates of a cell may come before it)."""
    own = np.arange(len(index))[:, None]
    is_self = index == own
    # rows where the cell did not come back (many exact duplicates): drop the last neighbour
    is_self[~is_self.any(axis=1), -1] = True
    return index[~is_self].reshape(len(index), index.shape[1] - 1)


def knn_agreement(latent: Any, labels: Any, k: int = 20) -> float:
    """Mean fraction of each cell's ``k`` nearest neighbours that share its label (paper Fig. S3d)."""
    latent = _latent(latent)
    labels = _labels(labels, len(latent), "labels")
    index = neighbours(latent, k)
    return float((labels[index] == labels[:, None]).mean())


def cluster_agreement(clusters: Any, labels: Any) -> dict[str, float]:
    """ARI and NMI of a clustering against labels."""
    labels = _labels(labels, len(np.asarray(clusters)), "labels")
    clusters = np.asarray(clusters).astype(str)
    return {
        "ari": float(adjusted_rand_score(labels, clusters)),
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
    }


def kmeans_agreement(latent: Any, labels: Any, n_clusters: int | None = None, seed: int = 0) -> dict[str, float]:
    """ARI and NMI of k-means (k = number of labels unless given) against labels."""
    latent = _latent(latent)
    labels = _labels(labels, len(latent), "labels")
    k = n_clusters or len(np.unique(labels))
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(latent)
    return cluster_agreement(clusters, labels)


def _subsample(n: int, strata: np.ndarray, max_cells: int, seed: int) -> np.ndarray:
    if n <= max_cells:
        return np.arange(n)
    from sklearn.model_selection import train_test_split

    kept, _ = train_test_split(np.arange(n), train_size=max_cells, stratify=strata, random_state=seed)
    return np.sort(kept)


def label_silhouette(latent: Any, labels: Any, max_cells: int = SILHOUETTE_MAX_CELLS, seed: int = 0) -> float:
    """Cell-type silhouette rescaled to [0, 1] (scIB's ASW_label: ``(s + 1) / 2``); higher separates better."""
    latent = _latent(latent)
    labels = _labels(labels, len(latent), "labels")
    if len(np.unique(labels)) < 2:
        raise ValueError("a silhouette needs at least two labels.")
    keep = _subsample(len(latent), labels, max_cells, seed)
    return float((silhouette_samples(latent[keep], labels[keep]).mean() + 1) / 2)


def batch_silhouette(
    latent: Any, batch: Any, labels: Any | None = None, max_cells: int = SILHOUETTE_MAX_CELLS, seed: int = 0
) -> float:
    """Batch mixing as scIB's ASW_batch: ``1 - |s_batch|`` per cell, within each label; 1 is perfectly mixed.

    Within each label (cell type) with cells from at least two batches, the
    silhouette of the batch assignment is computed; its absolute value is 0 when
    batches overlap and 1 when they separate. Without labels, all cells form one group.
    """
    latent = _latent(latent)
    batch = _labels(batch, len(latent), "batch")
    labels = np.zeros(len(latent), dtype=str) if labels is None else _labels(labels, len(latent), "labels")
    keep = _subsample(len(latent), np.char.add(labels, batch), max_cells, seed)
    latent, batch, labels = latent[keep], batch[keep], labels[keep]
    per_label = []
    for label in np.unique(labels):
        mask = labels == label
        if len(np.unique(batch[mask])) < 2 or mask.sum() <= len(np.unique(batch[mask])):
            continue
        per_label.append(np.mean(1 - np.abs(silhouette_samples(latent[mask], batch[mask]))))
    if not per_label:
        raise ValueError("no label has cells from two or more batches, so batch mixing is undefined.")
    return float(np.mean(per_label))


def ilisi(latent: Any, batch: Any, k: int = 90, perplexity: float = 30.0) -> float:
    """Median integration LISI (Korsunsky et al. 2019), rescaled to [0, 1] like scIB.

    For each cell, the inverse Simpson index of batch frequencies among its ``k``
    nearest neighbours weighted by a Gaussian kernel of the given perplexity; 1 means
    one batch only, B means all B batches equally. Returned as ``(median - 1) / (B - 1)``.
    """
    latent = _latent(latent)
    batch = _labels(batch, len(latent), "batch")
    categories, codes = np.unique(batch, return_inverse=True)
    if len(categories) < 2:
        raise ValueError("iLISI needs at least two batches.")
    k = min(k, len(latent) - 1)
    distances, index = NearestNeighbors(n_neighbors=k + 1).fit(latent).kneighbors(latent)
    distances, index = distances[:, 1:] ** 2, index[:, 1:]
    weights = _perplexity_weights(distances, perplexity=min(perplexity, k / 3))
    one_hot = np.eye(len(categories))[codes[index]]  # (n, k, B)
    frequencies = np.einsum("nk,nkb->nb", weights, one_hot)
    simpson = 1.0 / np.maximum((frequencies**2).sum(axis=1), 1e-12)
    return float((np.median(simpson) - 1) / (len(categories) - 1))


def _perplexity_weights(distances: np.ndarray, perplexity: float, tol: float = 1e-5, steps: int = 50) -> np.ndarray:
    """Row-normalised Gaussian kernel weights whose entropy matches ``log(perplexity)``, by bisection on beta."""
    target = np.log(perplexity)
    n = len(distances)
    beta = np.ones(n)
    low, high = np.zeros(n), np.full(n, np.inf)
    shifted = distances - distances[:, :1]
    for _ in range(steps):
        p = np.exp(-shifted * beta[:, None])
        total = p.sum(axis=1)
        entropy = np.log(total) + beta * (shifted * p).sum(axis=1) / total
        too_flat = entropy > target
        low = np.where(too_flat, beta, low)
        high = np.where(too_flat, high, beta)
        beta = np.where(np.isinf(high), beta * 2, (low + high) / 2)
        if np.all(np.abs(entropy - target) < tol):
            break
    p = np.exp(-shifted * beta[:, None])
    return p / p.sum(axis=1, keepdims=True)


def evaluate_latent(
    latent: Any,
    labels: Any,
    batch: Any | None = None,
    clusters: Any | None = None,
    k: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    """All label and batch metrics of one latent space.

    Returns
    -------
    dict
        ``knn_agreement`` (``k`` neighbours), ``kmeans_ari``, ``kmeans_nmi``,
        ``label_silhouette``; with ``clusters`` (e.g. the model's own VaDE clusters)
        ``cluster_ari``, ``cluster_nmi`` and ``n_clusters``; with ``batch``
        ``batch_silhouette`` and ``ilisi``.
    """
    latent = _latent(latent)
    labels = _labels(labels, len(latent), "labels")
    result = {"knn_agreement": knn_agreement(latent, labels, k=k)}
    result.update({f"kmeans_{key}": value for key, value in kmeans_agreement(latent, labels, seed=seed).items()})
    result["label_silhouette"] = label_silhouette(latent, labels, seed=seed)
    if clusters is not None:
        result.update({f"cluster_{key}": value for key, value in cluster_agreement(clusters, labels).items()})
        result["n_clusters"] = len(np.unique(np.asarray(clusters).astype(str)))
    if batch is not None:
        result["batch_silhouette"] = batch_silhouette(latent, batch, labels, seed=seed)
        result["ilisi"] = ilisi(latent, batch)
    return result


__all__: Sequence[str] = [
    "batch_silhouette",
    "cluster_agreement",
    "evaluate_latent",
    "ilisi",
    "kmeans_agreement",
    "knn_agreement",
    "label_silhouette",
    "neighbours",
]
