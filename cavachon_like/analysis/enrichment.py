"""Gene set enrichment of a differential-expression table, offline: preranked GSEA and
over-representation of the calls (both with gseapy)."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: Fewer testable gene sets than this and a warning says the results mean little.
FEW_SETS = 10


@dataclass
class Enrichment:
    """Result of :func:`gsea`.

    Attributes
    ----------
    table
        One row per gene set: ``term``, ``direction`` (``"up"``: enriched among genes
        up in group A, NES > 0; ``"down"``: among genes down), ``es``, ``nes``,
        ``pvalue``, ``fdr`` (unclipped), ``fwer``, ``size`` (genes of the set in the
        ranking), ``leading_edge``. Up sets first, each direction by decreasing ``|NES|``.
    ranking
        The ranked genes and their scores (descending), as passed to gseapy.
    running
        Per term, ``hits`` (positions of the set's genes in ``ranking``) and
        ``running_score``, for :func:`cavachon_like.plotting.plot_running_score`.
    upper_cased
        Whether gene symbols were upper-cased to match the gene sets.
    warnings
        Problems a reader should know about (few testable sets, case mapping).
    """

    table: pd.DataFrame
    ranking: pd.Series
    running: dict[str, dict[str, Any]] = field(repr=False)
    upper_cased: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def up(self) -> pd.DataFrame:
        """Sets enriched among genes up in group A, most significant first."""
        return self.table[self.table["direction"] == "up"].reset_index(drop=True)

    @property
    def down(self) -> pd.DataFrame:
        """Sets enriched among genes down in group A, most significant first."""
        return self.table[self.table["direction"] == "down"].reset_index(drop=True)


def read_gene_sets(gene_sets: str | Path | Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """``{set name: [genes]}`` from a GMT file or a mapping."""
    if isinstance(gene_sets, Mapping):
        return {str(k): [str(g) for g in v] for k, v in gene_sets.items()}
    path = Path(gene_sets)
    if not path.is_file():
        raise FileNotFoundError(f"gene set file {path} does not exist (give a GMT file or a dict of gene lists).")
    from gseapy import read_gmt

    return read_gmt(str(path))


def match_case(genes: Sequence[str], sets: Mapping[str, Sequence[str]], upper_case: bool | None) -> bool:
    """Whether to upper-case ``genes`` to match ``sets``: as given, or (``None``) when
    upper-casing at least doubles the overlap, e.g. mouse symbols (``Pvalb``) against
    human gene sets (``PVALB``)."""
    if upper_case is not None:
        return bool(upper_case)
    members = set().union(*map(set, sets.values())) if sets else set()
    as_is = len(members.intersection(genes))
    upper = len(members.intersection(g.upper() for g in genes))
    return upper >= 2 * max(as_is, 1)


def _ranking(scores: pd.Series | pd.DataFrame, upper_case: bool) -> pd.Series:
    ranking = (scores["score"] if isinstance(scores, pd.DataFrame) else scores).astype(float).copy()
    ranking.index = ranking.index.astype(str)
    if upper_case:
        ranking.index = ranking.index.str.upper()
    ranking = ranking[np.isfinite(ranking.to_numpy())]
    # symbols that collide (after upper-casing, or duplicated features) keep their strongest score
    ranking = ranking.loc[ranking.abs().groupby(level=0).idxmax().to_numpy()] if ranking.index.has_duplicates else ranking
    return ranking.sort_values(ascending=False, kind="stable")


def _usable(genes: set[str], sets: Mapping[str, Sequence[str]], min_size: int, max_size: int,
            upper_case: bool) -> dict[str, list[str]]:
    usable = {name: members for name, members in sets.items()
              if min_size <= len(genes.intersection(members)) <= max_size}
    if not usable:
        overlap = max((len(genes.intersection(m)) for m in sets.values()), default=0)
        hint = "" if upper_case else " Mouse symbols against human sets need upper_case=True."
        raise ValueError(f"no gene set has between {min_size} and {max_size} genes of the ranking ({len(genes)} "
                         f"genes; the best set overlaps {overlap}).{hint}")
    return usable


def _few_sets_warning(n: int, n_genes: int) -> list[str]:
    if n >= FEW_SETS:
        return []
    message = (f"only {n} gene sets have enough genes among the {n_genes} ranked, so FDRs rest on very few "
               "tests; use a larger gene panel or smaller min_size.")
    logger.warning(message)
    return [message]


def gsea(
    scores: pd.Series | pd.DataFrame,
    gene_sets: str | Path | Mapping[str, Sequence[str]],
    upper_case: bool | None = None,
    permutations: int = 1000,
    min_size: int = 15,
    max_size: int = 500,
    seed: int = 0,
    threads: int = 1,
) -> Enrichment:
    """Preranked GSEA (gseapy) of a differential-expression table.

    Parameters
    ----------
    scores
        A table from ``model.differential_expression`` (ranked by its ``score``,
        the posterior median log2 fold change, so no two genes tie at a saturated
        probability), or any Series of scores indexed by gene symbol.
    gene_sets
        A GMT file or ``{set name: [genes]}``; nothing is downloaded.
    upper_case
        Upper-case gene symbols first; ``None`` decides from the overlap (see
        :func:`match_case`).
    permutations, min_size, max_size, seed, threads
        Passed to :func:`gseapy.prerank` (gene-set permutations are seeded).

    Raises
    ------
    ValueError
        If no gene set keeps ``min_size`` genes of the ranking.
    """
    import gseapy

    sets = read_gene_sets(gene_sets)
    upper = match_case(list(scores.index.astype(str)), sets, upper_case)
    ranking = _ranking(scores, upper)
    genes = set(ranking.index)
    usable = _usable(genes, sets, min_size, max_size, upper)
    warnings = _few_sets_warning(len(usable), len(genes))
    result = gseapy.prerank(
        rnk=ranking, gene_sets=usable, permutation_num=int(permutations), min_size=min_size, max_size=max_size,
        seed=seed, threads=threads, outdir=None, no_plot=True, verbose=False,
    )
    table = result.res2d.rename(columns={
        "Term": "term", "ES": "es", "NES": "nes", "NOM p-val": "pvalue", "FDR q-val": "fdr", "FWER p-val": "fwer",
        "Lead_genes": "leading_edge",
    })
    for column in ("es", "nes", "pvalue", "fdr", "fwer"):
        table[column] = table[column].astype(float)
    table["size"] = [len(genes.intersection(usable[t])) for t in table["term"]]
    table["direction"] = np.where(table["nes"] > 0, "up", "down")
    table = table[["term", "direction", "es", "nes", "pvalue", "fdr", "fwer", "size", "leading_edge"]]
    # Within a direction by |NES|, as GSEA's own reports: gseapy's FDR is not monotone in the
    # p-value and, on a small gene panel, near 1 for every set, so it orders sets by noise.
    table = (table.assign(down=table["direction"] == "down", order=-table["nes"].abs())
             .sort_values(["down", "order", "pvalue"], ignore_index=True, kind="stable")
             .drop(columns=["down", "order"]))
    running = {term: {"hits": list(r["hits"]), "running_score": list(r["RES"])} for term, r in result.results.items()}
    return Enrichment(table=table, ranking=ranking, running=running, upper_cased=upper, warnings=warnings)


def overrepresentation(
    table: pd.DataFrame,
    gene_sets: str | Path | Mapping[str, Sequence[str]],
    upper_case: bool | None = None,
    min_size: int = 5,
    max_size: int = 500,
) -> pd.DataFrame:
    """Over-representation (Enrichr-style hypergeometric test, offline) of the calls of a
    differential-expression table, up and down calls separately, against every gene
    of the table as background.

    Returns one row per direction and gene set with at least one called gene:
    ``direction``, ``term``, ``overlap`` (called genes in the set / set genes in the
    background), ``pvalue``, ``fdr`` (Benjamini-Hochberg within a direction),
    ``odds_ratio`` and ``genes``; empty when nothing is called.
    """
    import gseapy

    sets = read_gene_sets(gene_sets)
    upper = match_case(list(table.index.astype(str)), sets, upper_case)
    symbol = (lambda g: str(g).upper()) if upper else str
    background = sorted({symbol(g) for g in table.index})
    present = set(background)
    sets = {name: sorted(present.intersection(members)) for name, members in sets.items()}
    sets = {name: members for name, members in sets.items() if min_size <= len(members) <= max_size}
    frames = []
    for direction in ("up", "down"):
        called = table.index[table["is_de"] & (table["direction"] == direction)]
        genes = sorted({symbol(g) for g in called})
        if not genes or not sets:
            continue
        result = gseapy.enrich(gene_list=genes, gene_sets=sets, background=background, outdir=None, no_plot=True)
        if not isinstance(result.results, pd.DataFrame) or result.results.empty:
            continue  # no set holds any of this direction's calls (gseapy then returns a list)
        frame = result.results.rename(columns={
            "Term": "term", "Overlap": "overlap", "P-value": "pvalue", "Adjusted P-value": "fdr",
            "Odds Ratio": "odds_ratio", "Genes": "genes",
        })[["term", "overlap", "pvalue", "fdr", "odds_ratio", "genes"]]
        frames.append(frame.sort_values(["fdr", "pvalue"], kind="stable").assign(direction=direction))
    columns = ["direction", "term", "overlap", "pvalue", "fdr", "odds_ratio", "genes"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
