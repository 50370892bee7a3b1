"""GSEA figures: top gene sets up and down, and the running enrichment score (paper Fig. S5b, c)."""
from __future__ import annotations

import textwrap
from typing import Any

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np


def _fdr_text(fdr: float, floor: float) -> str:
    # gseapy reports 0 when no permutation reached the observed score: the FDR is below 1 / permutations
    return f"FDR < {floor:.2g}" if fdr < floor else f"FDR {fdr:.2g}"


def plot_pathways(enrichment: Any, top: int = 10, title: str = "", permutations: int = 1000) -> plt.Figure:
    """Normalised enrichment scores of the ``top`` sets up in group A (top panel) and down (bottom).

    Bars are coloured by FDR on a log scale over its full range (0 is drawn at
    ``1 / permutations``, the resolution of the permutation test) and labelled
    with the FDR.
    """
    floor = 1.0 / permutations
    panels = [("up in A", enrichment.up.head(top)), ("down in A", enrichment.down.head(top))]
    heights = [max(1, len(t)) for _, t in panels]
    figure, axes = plt.subplots(2, 1, figsize=(8, 0.32 * sum(heights) + 2.6), squeeze=False,
                                gridspec_kw={"height_ratios": heights, "hspace": 0.45})
    norm = mcolors.LogNorm(vmin=floor, vmax=1.0)
    cmap = plt.get_cmap("viridis")
    for ax, (name, table) in zip(axes[:, 0], panels):
        table = table.iloc[::-1]
        fdr = np.clip(table["fdr"].to_numpy(dtype=float), floor, 1.0)
        y = np.arange(len(table))
        ax.barh(y, table["nes"], color=cmap(norm(fdr)))
        for i, (nes, value) in enumerate(zip(table["nes"], table["fdr"])):
            ax.text(nes, i, f" {_fdr_text(float(value), floor)} ", va="center", fontsize=6,
                    ha="left" if nes > 0 else "right")
        ax.set_yticks(y, [textwrap.shorten(str(t), 60) for t in table["term"]], fontsize=7)
        ax.axvline(0, color="0.5", lw=0.8)
        ax.set_xlabel("normalised enrichment score (NES)")
        ax.set_title(f"{name}: {len(table)} of {len(enrichment.up if 'up' in name else enrichment.down)} sets",
                     fontsize=9)
        if not len(table):
            ax.text(0.5, 0.5, "no gene sets", transform=ax.transAxes, ha="center", color="0.4")
        else:
            span = float(np.abs(table["nes"]).max())
            ax.set_xlim(*((-0.05 * span, 1.6 * span) if "up" in name else (-1.6 * span, 0.05 * span)))
    figure.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[:, 0].tolist(),
                    label="FDR q-value (log scale)", shrink=0.8)
    figure.suptitle(title or "GSEA", fontsize=10)
    return figure


def plot_running_score(enrichment: Any, term: str | None = None, permutations: int = 1000) -> plt.Figure:
    """Running enrichment score of ``term`` (default the top set up in A), its hits and the ranking."""
    table = enrichment.up if term is None and len(enrichment.up) else enrichment.table
    row = table.iloc[0] if term is None else enrichment.table.set_index("term", drop=False).loc[term]
    details = enrichment.running[row["term"]]
    ranking = enrichment.ranking.to_numpy()
    positions = np.arange(len(details["running_score"]))
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(6, 5), sharex=True,
                                                 gridspec_kw={"height_ratios": [3, 0.6, 1.4]})
    top.plot(positions, details["running_score"], color="tab:green", lw=1.2)
    top.axhline(0, color="0.5", lw=0.7)
    top.set_ylabel("running enrichment score")
    middle.vlines(details["hits"], 0, 1, color="k", lw=0.5)
    middle.set_yticks([])
    middle.set_ylabel("hits", rotation=0, ha="right", va="center", fontsize=8)
    bottom.fill_between(np.arange(len(ranking)), ranking, color="0.6", lw=0)
    bottom.set_ylabel("ranking score")
    bottom.set_xlabel("genes ranked from up in A (left) to down in A (right)")
    title = textwrap.fill(str(row["term"]), 70)
    stats = f"NES {row['nes']:.2f}, {_fdr_text(float(row['fdr']), 1.0 / permutations)}, {row['size']} genes"
    top.set_title(f"{title}\n{stats}", fontsize=8)
    figure.tight_layout()
    return figure
