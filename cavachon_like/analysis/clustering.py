"""Multi-facet clustering (paper Appendix F): cluster tables and neighbourhood agreement."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

from .metrics import neighbours

#: The k range of the original tool's neighbourhood table.
DEFAULT_K = tuple(range(5, 55, 5))


def _probabilities(data: Any, component: str) -> np.ndarray:
    key = f"cluster_probabilities_{component}"
    if key not in data.obsm:
        available = sorted(k[len("cluster_probabilities_"):] for k in data.obsm if k.startswith("cluster_probabilities_"))
        raise KeyError(
            f"no {key!r} in obsm; run model.annotate(data) first (components with a mixture prior: {available})."
        )
    return np.asarray(data.obsm[key])


def cluster_assignments(data: Any, component: str) -> pd.DataFrame:
    """Hard VaDE clusters of one component from ``p(c|z)`` (Eq. S5), as written by ``model.annotate``.

    Returns
    -------
    pandas.DataFrame
        Indexed by cell: ``cluster`` (argmax of ``p(c|z)``), ``probability`` (its
        value) and ``entropy`` of ``p(c|z)`` in nats (0 for a confident assignment).
    """
    p = _probabilities(data, component)
    clusters = p.argmax(axis=1)
    entropy = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
    return pd.DataFrame(
        {
            "cluster": pd.Categorical(clusters.astype(str), categories=[str(c) for c in np.unique(clusters)]),
            "probability": p[np.arange(len(p)), clusters],
            "entropy": entropy,
        },
        index=pd.Index(data.obs_names, name="cell"),
    )


#: A clustering is degenerate with fewer than this many clusters holding MIN_CLUSTER_FRACTION of cells.
MIN_USED_CLUSTERS = 3
MIN_CLUSTER_FRACTION = 0.01


def degenerate_clustering(clusters: Any, component: str) -> str | None:
    """A warning when fewer than 3 clusters each hold at least 1% of cells, else ``None``.

    Such a mixture prior has collapsed (VaDE's failure mode: a few components take
    every cell), and per-cluster results of that component say little.
    """
    counts = pd.Series(np.asarray(clusters).astype(str)).value_counts()
    used = int((counts >= MIN_CLUSTER_FRACTION * counts.sum()).sum())
    if used >= MIN_USED_CLUSTERS:
        return None
    return (
        f"component {component!r}: the mixture prior collapsed: only {used} cluster(s) hold >= 1% of cells "
        f"(the largest holds {counts.iloc[0] / counts.sum():.0%}), so its clusters and per-cluster analyses "
        "say little. Try: model.pretrain_epochs >= 10 (VaDE pre-training and GMM initialisation; 0 disables it), "
        "more epochs or a lower learning rate, a smaller latent_dim or n_clusters, and for accessibility "
        "likelihood 'bernoulli_depth'."
    )


def cluster_summary(clusters: Any, labels: Any) -> pd.DataFrame:
    """Each cluster's size, best-matching label and that label's precision, recall and F1 (as in paper Sec. 3.2).

    Sorted by F1, best first.
    """
    clusters = np.asarray(clusters).astype(str)
    labels = np.asarray(labels).astype(str)
    rows = []
    for cluster in np.unique(clusters):
        in_cluster = clusters == cluster
        counts = pd.Series(labels[in_cluster]).value_counts()
        best = counts.index[0]
        precision, recall, f1, _ = precision_recall_fscore_support(
            labels == best, in_cluster, average="binary", zero_division=0
        )
        rows.append({"cluster": cluster, "n_cells": int(in_cluster.sum()), "label": best,
                     "precision": precision, "recall": recall, "f1": f1})
    return pd.DataFrame(rows).sort_values("f1", ascending=False, ignore_index=True)


def neighbourhood_table(
    latent: Any, labels: Any, k: Iterable[int] = DEFAULT_K, index: Any | None = None
) -> pd.DataFrame:
    """For each cell and each ``k``, the fraction of its ``k`` nearest neighbours sharing its label.

    ``labels`` may be annotations or clusters. One neighbour search at the largest
    ``k`` serves every ``k``, since smaller neighbourhoods are its prefixes.

    Returns
    -------
    pandas.DataFrame
        Cells x ``k`` (columns named by ``k``), with a ``label`` column.
    """
    k = sorted({int(v) for v in k})
    labels = np.asarray(labels).astype(str)
    nearest = neighbours(latent, max(k))
    same = np.cumsum(labels[nearest] == labels[:, None], axis=1)
    table = pd.DataFrame({v: same[:, v - 1] / v for v in k}, index=index)
    table.columns.name = "k"
    table.insert(0, "label", labels)
    return table
