"""Latent-space scatter plots: one row per component, one column per colouring."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .embedding import embed_2d


def _column(data: Any, key: str) -> pd.Series:
    if key in data.obs:
        return data.obs[key]
    return data.obs_column(key)


def _scatter(ax: plt.Axes, xy: np.ndarray, values: pd.Series, title: str) -> None:
    if pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype):
        points = ax.scatter(xy[:, 0], xy[:, 1], c=values.to_numpy(), s=2, cmap="viridis", rasterized=True)
        plt.colorbar(points, ax=ax, shrink=0.7)
    else:
        categories = pd.Categorical(values.astype(str))
        cmap = plt.get_cmap("tab20" if len(categories.categories) > 10 else "tab10")
        for i, category in enumerate(categories.categories):
            mask = np.asarray(categories == category)
            ax.scatter(xy[mask, 0], xy[mask, 1], s=2, color=cmap(i % cmap.N), label=category, rasterized=True)
        if len(categories.categories) <= 30:
            ax.legend(markerscale=4, fontsize=6, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_latents(
    data: Any,
    components: Sequence[str],
    color_by: Sequence[str] = (),
    method: str = "umap",
    seed: int = 0,
    key: str = "z",
) -> plt.Figure:
    """Plot each component's latent (``obsm[f"{key}_{component}"]``) embedded in 2-D.

    Each row is a component; the first column is coloured by its cluster
    (``obs["cluster_<component>"]``) when present, the others by ``color_by``
    (obs columns, e.g. a cell-type label, batch, or a numeric score).
    """
    rows = []
    for component in components:
        colors = [f"cluster_{component}"] if f"cluster_{component}" in data.obs else []
        rows.append((component, colors + [c for c in color_by if c not in colors]))
    n_cols = max(1, max(len(c) for _, c in rows))
    figure, axes = plt.subplots(len(rows), n_cols, figsize=(4.6 * n_cols, 4 * len(rows)), squeeze=False)
    for r, (component, colors) in enumerate(rows):
        xy = embed_2d(data.obsm[f"{key}_{component}"], method=method, seed=seed)
        for c in range(n_cols):
            ax = axes[r, c]
            if c >= len(colors):
                ax.axis("off")
                continue
            _scatter(ax, xy, _column(data, colors[c]), f"{key}_{component} ({method}) by {colors[c]}")
    figure.tight_layout()
    return figure
