"""Volcano plot of a Bayesian differential analysis (paper Fig. S5a)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def plot_volcano(table: pd.DataFrame, n_labels: int = 10, title: str | None = None) -> plt.Figure:
    """Mean log2 fold change against the Bayes factor of a difference, significant features in red.

    The y axis is ``max(K(A>B), K(B>A))``, the evidence for a difference in either
    direction; the ``n_labels`` strongest significant features are named.
    """
    evidence = np.maximum(table["bayes_factor_a_gt_b"], table["bayes_factor_b_gt_a"]).to_numpy()
    lfc = table["lfc_mean"].to_numpy()
    significant = table["significant"].to_numpy(dtype=bool)
    figure, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.scatter(lfc[~significant], evidence[~significant], s=4, color="0.6", rasterized=True, label="not significant")
    ax.scatter(lfc[significant], evidence[significant], s=6, color="tab:red", rasterized=True,
               label=f"significant ({int(significant.sum())})")
    # Bayes factors saturate, so many features share the top: name the strongest evidence on each side
    # (largest fold change first among ties), stacked down the plot's edge so that names do not overprint
    top = float(np.nanmax(evidence)) if len(evidence) else 1.0
    strongest = np.lexsort((-np.abs(lfc), -evidence))
    for side in (1, -1):
        chosen = [i for i in strongest if significant[i] and side * lfc[i] > 0][: n_labels // 2]
        for rank, i in enumerate(chosen):
            ax.annotate(str(table.index[i]), (lfc[i], evidence[i]), fontsize=6,
                        xytext=(0.98 if side > 0 else 0.02, 0.97 - 0.06 * rank), textcoords="axes fraction",
                        ha="right" if side > 0 else "left", va="top",
                        arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})
    ax.set_ylim(top=top * 1.05 + 0.5)
    attrs = table.attrs
    ax.set_xlabel(f"mean log2 fold change ({attrs.get('group_a', 'A')} / {attrs.get('group_b', 'B')})")
    ax.set_ylabel("Bayes factor of a difference")
    ax.set_title(title or f"{attrs.get('modality', '')}: {attrs.get('group_a', 'A')} vs {attrs.get('group_b', 'B')}",
                 fontsize=10)
    ax.axvline(0, color="0.8", lw=0.8, zorder=0)
    ax.legend(fontsize=7, markerscale=2, frameon=False, loc="lower right")
    figure.tight_layout()
    return figure
