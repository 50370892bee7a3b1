"""Summaries of conditional attribution: per cell group, and the features behind it."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def attribution_by_cluster(scores: pd.DataFrame | pd.Series, clusters: Any) -> pd.DataFrame:
    """Per cluster: cell count and the mean, median and quartiles of each score, highest
    mean first (paper Fig. 4).

    A high mean marks a cluster whose variation the component's own latent explains
    rather than its ancestors'. Columns ``n_cells`` and ``<score>_{mean,median,q25,q75}``.
    """
    frame = scores.to_frame() if isinstance(scores, pd.Series) else scores
    frame = frame[[c for c in frame.columns if not str(c).endswith("_delta")]]
    clusters = np.asarray(clusters).astype(str)
    if len(clusters) != len(frame):
        raise ValueError(f"{len(clusters)} cluster labels for {len(frame)} cells.")
    grouped = frame.groupby(clusters, observed=True)
    table = pd.concat(
        [grouped.mean().add_suffix("_mean"), grouped.median().add_suffix("_median"),
         grouped.quantile(0.25).add_suffix("_q25"), grouped.quantile(0.75).add_suffix("_q75")],
        axis=1,
    )
    table.insert(0, "n_cells", grouped.size())
    table.index.name = "cluster"
    return table.sort_values(f"{frame.columns[0]}_mean", ascending=False)


def top_attributed_features(model: Any, data: Any, latent: str, modality: str, groups: Any, n_top: int = 20,
                            max_cells: int = 500, seed: int = 0, **kwargs: Any) -> pd.DataFrame:
    """The features a latent changes most in each group of cells (per-feature attribution).

    For up to ``max_cells`` cells per group (sampled with ``seed``),
    ``model.conditional_attribution(..., per_feature=True)`` gives each feature's
    change ``rho(1) - rho(0)`` (log1p of counts per 10,000 by default); features are
    ranked by the group mean of that change. Returns one row per group and rank:
    ``group``, ``rank``, ``feature``, ``mean_change``, ``fraction_positive`` (share of
    the group's cells where the latent raises the feature) and ``n_cells``.
    """
    groups = np.asarray(groups).astype(str)
    if len(groups) != data.n_obs:
        raise ValueError(f"{len(groups)} group labels for {data.n_obs} cells.")
    rng = np.random.default_rng(seed)
    if kwargs.get("baseline", "mean") == "mean":
        # the population-mean latent once, not one pass over all cells per group
        kwargs["baseline"] = model.get_latent_representation(data)[f"z_{latent}"].mean(axis=0)
    rows = []
    for group in sorted(set(groups)):
        cells = np.flatnonzero(groups == group)
        if len(cells) > max_cells:
            cells = np.sort(rng.choice(cells, max_cells, replace=False))
        change = model.conditional_attribution(data, latent, modalities=[modality], per_feature=True,
                                               indices=cells, **kwargs)[modality]
        mean = change.mean(axis=0)
        top = mean.abs().sort_values(ascending=False, kind="stable").index[:n_top]
        for rank, feature in enumerate(top, start=1):
            rows.append({"group": group, "rank": rank, "feature": feature, "mean_change": float(mean[feature]),
                         "fraction_positive": float((change[feature] > 0).mean()), "n_cells": len(cells)})
    return pd.DataFrame(rows)
