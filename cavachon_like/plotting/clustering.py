"""Figures of the clustering and attribution analyses."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def plot_neighbourhood(tables: dict[str, pd.DataFrame]) -> plt.Figure:
    """Mean fraction of same-label neighbours against k, one line per latent space (paper Fig. S3d)."""
    figure, ax = plt.subplots(figsize=(5, 4))
    for name, table in tables.items():
        ks = [c for c in table.columns if c != "label"]
        ax.plot(ks, table[ks].mean().to_numpy(), marker="o", ms=3, label=name)
    ax.set_xlabel("k nearest neighbours")
    ax.set_ylabel("fraction sharing the label")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, frameon=False)
    figure.tight_layout()
    return figure


def plot_attribution_by_cluster(table: pd.DataFrame, column: str, top: int = 20, title: str = "") -> plt.Figure:
    """Mean conditional attribution per cluster, highest first (paper Fig. 4b)."""
    table = table.sort_values(column, ascending=False).head(top)
    figure, ax = plt.subplots(figsize=(0.35 * len(table) + 1.5, 3.5))
    ax.bar(np.arange(len(table)), table[column], color="tab:purple")
    ax.set_xticks(np.arange(len(table)), table.index.astype(str), rotation=90, fontsize=7)
    ax.set_ylabel(f"mean attribution ({column.removesuffix('_mean')})")
    ax.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure
