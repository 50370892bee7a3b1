"""GSEA figures: top pathways and the running enrichment score (paper Fig. S5b, c)."""
from __future__ import annotations

import textwrap
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt
import numpy as np


def plot_pathways(enrichment: Any, top: int = 10, title: str = "") -> plt.Figure:
    """Horizontal bars of the normalised enrichment score of the ``top`` gene sets, coloured by FDR."""
    table = enrichment.table.head(top).iloc[::-1]
    figure, ax = plt.subplots(figsize=(6.5, 0.4 * len(table) + 1.2))
    colors = plt.get_cmap("viridis_r")(np.clip(table["fdr"].to_numpy() / 0.25, 0, 1))
    ax.barh(np.arange(len(table)), table["nes"], color=colors)
    ax.set_yticks(np.arange(len(table)), [textwrap.shorten(t, 55) for t in table["term"]], fontsize=7)
    ax.axvline(0, color="0.5", lw=0.8)
    ax.set_xlabel("NES")
    scale = plt.cm.ScalarMappable(cmap="viridis_r", norm=plt.Normalize(0, 0.25))
    plt.colorbar(scale, ax=ax, label="FDR q-value", shrink=0.8)
    ax.set_title(title or "top gene sets", fontsize=10)
    figure.tight_layout()
    return figure


def plot_running_score(enrichment: Any, term: str | None = None) -> plt.Figure:
    """gseapy's running enrichment score plot of ``term`` (default the top gene set)."""
    from gseapy import gseaplot

    row = enrichment.table.iloc[0] if term is None else enrichment.table.set_index("term", drop=False).loc[term]
    details = enrichment.running[row["term"]]
    axes = gseaplot(
        term=row["term"],
        hits=details["hits"],
        nes=row["nes"],
        pval=row["pvalue"],
        fdr=row["fdr"],
        RES=details["running_score"],
        rank_metric=enrichment.ranking.to_numpy(),
        figsize=(6, 5.5),
    )
    return axes[0].get_figure()
