"""Gene set enrichment (GSEA prerank with gseapy) on differential-analysis rankings, offline."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .differential import ranking_score


@dataclass
class Enrichment:
    """Result of :func:`gsea`.

    Attributes
    ----------
    table
        One row per gene set, most significant first: ``term``, ``es``, ``nes``,
        ``pvalue``, ``fdr``, ``fwer``, ``size`` (genes of the set in the ranking),
        ``leading_edge``.
    ranking
        The ranked genes and their scores (descending), as passed to gseapy.
    running
        Per term, ``hits`` (positions of the set's genes in ``ranking``) and
        ``running_score`` (the running enrichment score), for
        :func:`cavachon_like.plotting.plot_running_score`.
    """

    table: pd.DataFrame
    ranking: pd.Series
    running: dict[str, dict[str, Any]] = field(repr=False)


def _ranking(scores: pd.Series | pd.DataFrame, upper_case: bool) -> pd.Series:
    ranking = ranking_score(scores) if isinstance(scores, pd.DataFrame) else scores.astype(float).copy()
    ranking.index = ranking.index.astype(str)
    if upper_case:
        ranking.index = ranking.index.str.upper()
    ranking = ranking[~ranking.index.isna() & np.isfinite(ranking.to_numpy())]
    # symbols that collide (after upper-casing, or duplicated features) keep their strongest score
    ranking = ranking.loc[ranking.abs().groupby(level=0).idxmax().to_numpy()] if ranking.index.has_duplicates else ranking
    return ranking.sort_values(ascending=False)


def _gene_sets(gene_sets: str | Path | Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    if isinstance(gene_sets, Mapping):
        return {str(k): [str(g) for g in v] for k, v in gene_sets.items()}
    path = Path(gene_sets)
    if not path.is_file():
        raise FileNotFoundError(f"gene set file {path} does not exist (give a GMT file or a dict of gene lists).")
    from gseapy import read_gmt

    return read_gmt(str(path))


def gsea(
    scores: pd.Series | pd.DataFrame,
    gene_sets: str | Path | Mapping[str, Sequence[str]],
    upper_case: bool = False,
    permutations: int = 1000,
    min_size: int = 15,
    max_size: int = 500,
    seed: int = 0,
    threads: int = 1,
) -> Enrichment:
    """Preranked GSEA (gseapy) of genes ranked by Bayes factor.

    Parameters
    ----------
    scores
        A table from :func:`~cavachon_like.analysis.differential_analysis` (ranked by
        its signed Bayes factor, see :func:`~cavachon_like.analysis.differential.ranking_score`)
        or any Series of scores indexed by gene symbol.
    gene_sets
        A GMT file or ``{set name: [genes]}``; nothing is downloaded.
    upper_case
        Upper-case gene symbols first, so that mouse symbols (``Pvalb``) match
        human gene sets (``PVALB``).
    permutations, min_size, max_size, seed, threads
        Passed to :func:`gseapy.prerank` (gene-set permutations are seeded).

    Raises
    ------
    ValueError
        If no gene set keeps ``min_size`` genes of the ranking (e.g. mouse symbols
        against human sets without ``upper_case``).
    """
    import gseapy

    ranking = _ranking(scores, upper_case)
    sets = _gene_sets(gene_sets)
    genes = set(ranking.index)
    usable = {name: members for name, members in sets.items()
              if min_size <= len(genes.intersection(members)) <= max_size}
    if not usable:
        overlap = max((len(genes.intersection(m)) for m in sets.values()), default=0)
        hint = "" if upper_case else " Mouse symbols against human sets need upper_case=True."
        raise ValueError(f"no gene set has between {min_size} and {max_size} genes of the ranking ({len(genes)} "
                         f"genes; the best set overlaps {overlap}).{hint}")
    result = gseapy.prerank(
        rnk=ranking,
        gene_sets=usable,
        permutation_num=int(permutations),
        min_size=min_size,
        max_size=max_size,
        seed=seed,
        threads=threads,
        outdir=None,
        no_plot=True,
        verbose=False,
    )
    table = result.res2d.rename(columns={
        "Term": "term", "ES": "es", "NES": "nes", "NOM p-val": "pvalue", "FDR q-val": "fdr", "FWER p-val": "fwer",
        "Lead_genes": "leading_edge",
    })
    for column in ("es", "nes", "pvalue", "fdr", "fwer"):
        table[column] = table[column].astype(float)
    table["size"] = [len(genes.intersection(usable[t])) for t in table["term"]]
    table = table[["term", "es", "nes", "pvalue", "fdr", "fwer", "size", "leading_edge"]]
    table = (table.assign(order=-table["nes"].abs()).sort_values(["fdr", "pvalue", "order"], ignore_index=True)
             .drop(columns="order"))
    running = {term: {"hits": list(r["hits"]), "running_score": list(r["RES"])} for term, r in result.results.items()}
    return Enrichment(table=table, ranking=ranking, running=running)
