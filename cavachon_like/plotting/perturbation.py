"""Genome track of a gene's silencing: how each peak around the gene changes (multiDGD Fig. 6b)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

#: Bases shown either side of the gene's TSS.
DEFAULT_FLANK = 250_000


def plot_gene_to_peak(table: pd.DataFrame, gene: str, genes: pd.DataFrame, flank: int = DEFAULT_FLANK,
                      window: int | None = None) -> plt.Figure:
    """Each peak within ``flank`` bases of ``gene`` as a bar at its position, of height its predicted
    change when the gene is silenced (``delta``: positive where silencing closes the peak), with the
    gene's body and TSS drawn underneath.

    Parameters
    ----------
    table
        :func:`~cavachon_like.analysis.perturbation.peak_table` for ``gene``.
    genes
        The gene coordinates the table was made with.
    window
        If given, shades the ``window`` around the TSS that counts as near in
        :func:`~cavachon_like.analysis.perturbation.gene_to_peak`.
    """
    row = genes.loc[gene]
    minus = str(row.get("strand", "+")) == "-"
    tss = int(row["end"]) - 1 if minus else int(row["start"])
    shown = table[table["same_chromosome"] & (table["distance"] <= flank)]
    fig, (track, body) = plt.subplots(2, 1, figsize=(8, 3.2), sharex=True, gridspec_kw={"height_ratios": [4, 1]})
    centre = (shown["start"].to_numpy() + shown["end"].to_numpy()) / 2
    colours = np.where(shown["delta"].to_numpy() >= 0, "#b2182b", "#2166ac")
    width = max(float(np.median(shown["end"] - shown["start"])) if len(shown) else 500.0, flank / 400)
    track.bar(centre, shown["delta"].to_numpy(), width=width, color=colours)
    track.axhline(0, color="0.5", lw=0.6)
    if window:
        track.axvspan(tss - window, tss + window, color="0.9", zorder=0)
    track.set_ylabel("predicted change of\naccessibility")
    track.set_title(f"{gene} silenced: peaks on {row['chrom']} within {flank // 1000} kb "
                    f"({len(shown)} peaks)")
    body.hlines(0, int(row["start"]), int(row["end"]), color="k", lw=6)
    body.annotate("", xy=(tss + (-1 if minus else 1) * flank / 15, 0.5), xytext=(tss, 0.5),
                  arrowprops={"arrowstyle": "->", "lw": 1.2})
    body.vlines(tss, 0, 0.5, color="k", lw=1.2)
    body.set_ylim(-1, 1)
    body.set_yticks([])
    body.set_xlim(tss - flank, tss + flank)
    body.set_xlabel(f"{row['chrom']} position (bp)")
    for spine in ("top", "right", "left"):
        body.spines[spine].set_visible(False)
    fig.tight_layout()
    return fig
