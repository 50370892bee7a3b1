"""Volcano plot of a differential-expression table (paper Fig. S5a)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def plot_volcano(table: pd.DataFrame, n_labels: int = 12, title: str | None = None) -> plt.Figure:
    """Posterior median log2 fold change against the log Bayes factor of a change.

    Calls (``is_de``) up in group A are red, down blue; the ``n_labels // 2``
    strongest calls on each side (by ``|score|``) are named; dashed lines mark the
    fold-change margin ``delta``.
    """
    attrs = table.attrs
    lfc = table["lfc_median"].to_numpy()
    evidence = table["log_bayes_factor"].to_numpy()
    called = table["is_de"].to_numpy(dtype=bool)
    up = called & (lfc > 0)
    down = called & (lfc <= 0)
    figure, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.scatter(lfc[~called], evidence[~called], s=4, color="0.65", rasterized=True, label="not called")
    ax.scatter(lfc[up], evidence[up], s=7, color="tab:red", rasterized=True, label=f"up ({int(up.sum())})")
    ax.scatter(lfc[down], evidence[down], s=7, color="tab:blue", rasterized=True, label=f"down ({int(down.sum())})")
    strongest = np.argsort(-np.abs(table["score"].to_numpy()), kind="stable")
    # the log Bayes factor saturates for confident calls, so names stack down the plot's edge
    for side, mask in ((1, up), (-1, down)):
        chosen = [i for i in strongest if mask[i]][: n_labels // 2]
        for rank, i in enumerate(chosen):
            ax.annotate(str(table.index[i]), (lfc[i], evidence[i]), fontsize=6,
                        xytext=(0.98 if side > 0 else 0.02, 0.97 - 0.055 * rank), textcoords="axes fraction",
                        ha="right" if side > 0 else "left", va="top",
                        arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})
    delta = attrs.get("delta")
    if delta:
        for x in (-delta, delta):
            ax.axvline(x, color="0.5", lw=0.7, ls="--", zorder=0)
    name_a, name_b = attrs.get("group_a", "A"), attrs.get("group_b", "B")
    ax.set_xlabel(f"posterior median log2 fold change ({name_a} / {name_b})")
    margin = f"|LFC| > {delta:g}" if delta else "the sign of the LFC"
    ax.set_ylabel(f"log Bayes factor (natural log) of {margin}")
    sizes = f" (n = {attrs['n_a']:,} vs {attrs['n_b']:,} cells)" if "n_a" in attrs else ""
    fdr = f"; calls at expected FDR {attrs['fdr_target']:g}" if "fdr_target" in attrs else ""
    ax.set_title(title or f"{attrs.get('modality', '')}: {name_a} vs {name_b}{sizes}{fdr}", fontsize=9)
    ax.legend(fontsize=7, markerscale=2, frameon=False, loc="lower right")
    figure.tight_layout()
    return figure
