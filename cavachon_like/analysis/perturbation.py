"""Gene-to-peak association from in-silico silencing (multiDGD, paper 001 Fig. 6).

:meth:`CAVACHON.silencing_effects <cavachon_like.CAVACHON.silencing_effects>` gives the
predicted change of every peak when a gene is silenced. Here the changes are put on the
genome: each peak's distance to the gene's TSS, and the test the paper's figure makes
visible: do the peaks near the silenced gene change more than peaks elsewhere? Near peaks
(within ``window`` of the TSS) are compared with the peaks on other chromosomes by the ratio
of their mean absolute change, and a permutation p-value: the fraction of random peak sets of the
same size, drawn from the other chromosomes, whose mean absolute change is at least the near peaks'.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..data.genome import parse_coordinates

#: Peaks within this many bases of a gene's TSS count as near it (the issue's and paper's 10 kb).
DEFAULT_WINDOW = 10_000


def _tss(genes: pd.DataFrame) -> pd.Series:
    """TSS of each gene in a :func:`~cavachon_like.data.genome.read_gene_table` table (strand-aware)."""
    minus = genes["strand"].astype(str).to_numpy() == "-"
    return pd.Series(np.where(minus, genes["end"].to_numpy() - 1, genes["start"].to_numpy()), index=genes.index)


def peak_table(effects: pd.DataFrame, gene: str, genes: pd.DataFrame, peaks: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every peak's change when ``gene`` is silenced, with its position relative to the gene.

    Parameters
    ----------
    effects
        Peaks x silenced genes, from ``silencing_effects``.
    genes
        Gene coordinates (:func:`~cavachon_like.data.genome.read_gene_table`).
    peaks
        Peak coordinates (``chrom``, ``start``, ``end``) indexed like ``effects``; default parsed
        from the peak names (``chrN_start_end`` or ``chrN:start-end``).

    Returns
    -------
    pandas.DataFrame
        ``chrom``, ``start``, ``end``, ``delta``, ``same_chromosome`` and ``distance`` (bases from
        the peak's centre to the TSS; NaN on other chromosomes), sorted by ``|delta|``.
    """
    if gene not in effects.columns:
        raise KeyError(f"no silencing of {gene!r} in the effects; silenced: {list(effects.columns)[:10]}.")
    if gene not in genes.index:
        raise KeyError(f"gene {gene!r} is not in the gene table; give a table that has it (e.g. mm10_genes.tsv.gz).")
    coords = parse_coordinates(effects.index, name="peaks") if peaks is None else peaks.loc[effects.index]
    table = pd.DataFrame({"chrom": coords["chrom"].to_numpy(), "start": coords["start"].to_numpy(),
                          "end": coords["end"].to_numpy(), "delta": effects[gene].to_numpy()}, index=effects.index)
    tss = _tss(genes.loc[[gene]]).iloc[0]
    same = table["chrom"].to_numpy() == str(genes.loc[gene, "chrom"])
    centre = (table["start"].to_numpy() + table["end"].to_numpy()) / 2
    table["same_chromosome"] = same
    table["distance"] = np.where(same, np.abs(centre - tss), np.nan)
    return table.iloc[np.argsort(-np.abs(table["delta"].to_numpy()), kind="stable")]


def gene_to_peak(effects: pd.DataFrame, genes: pd.DataFrame, peaks: pd.DataFrame | None = None,
                 window: int = DEFAULT_WINDOW, n_permutations: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per silenced gene: are the peaks within ``window`` of its TSS the ones that change?

    Returns
    -------
    pandas.DataFrame
        One row per gene with near peaks: ``n_near``, ``near_mean_abs`` and ``far_mean_abs`` (mean
        absolute change of the near peaks and of the peaks on other chromosomes), their ``ratio`` and the
        permutation ``p_value`` (see the module docstring). Genes missing from ``genes`` or without
        a near peak are left out (``attrs["skipped"]`` lists them).
    """
    rng = np.random.default_rng(seed)
    rows, skipped, nulls = {}, [], []
    for gene in effects.columns:
        if gene not in genes.index:
            skipped.append(gene)
            continue
        table = peak_table(effects, gene, genes, peaks)
        change = np.abs(table["delta"].to_numpy())
        near = change[table["distance"].to_numpy() <= window]
        far = change[~table["same_chromosome"].to_numpy()]
        if not near.size or not far.size:
            skipped.append(gene)
            continue
        draws = np.array([far[rng.choice(far.size, near.size, replace=False)].mean() for _ in range(n_permutations)])
        nulls.append(draws)
        rows[gene] = {"n_near": int(near.size), "near_mean_abs": float(near.mean()), "far_mean_abs": float(far.mean()),
                      "ratio": float(near.mean() / max(far.mean(), 1e-30)),
                      "p_value": float((1 + np.sum(draws >= near.mean())) / (1 + n_permutations))}
    result = pd.DataFrame.from_dict(rows, orient="index")
    result.index.name = "gene"
    result.attrs["skipped"] = skipped
    # every gene's permutation draws (genes x permutations), for the p-value across genes
    result.attrs["null_means"] = np.array(nulls).reshape(len(rows), n_permutations)
    return result


def summarize_gene_to_peak(result: pd.DataFrame) -> dict[str, Any]:
    """Across genes: the mean over genes of the near peaks' mean absolute change and of the far peaks', their
    ``ratio``, the share of genes whose near peaks change more (``fraction_above``), and ``p_value``:
    the permutation p-value of the near mean, each permutation drawing every gene's near set at
    random from its far peaks (the draws :func:`gene_to_peak` made)."""
    if result.empty:
        raise ValueError("no gene had peaks near it; widen the window or silence other genes.")
    near = float(result["near_mean_abs"].mean())
    null = np.asarray(result.attrs["null_means"]).mean(axis=0)
    return {"n_genes": len(result), "near_mean_abs": near, "far_mean_abs": float(result["far_mean_abs"].mean()),
            "ratio": near / max(float(result["far_mean_abs"].mean()), 1e-30),
            "fraction_above": float((result["ratio"] > 1).mean()),
            "p_value": float((1 + np.sum(null >= near)) / (1 + null.size))}
