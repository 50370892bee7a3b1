"""Fixed-width genomic bins shared by modalities (paper 004).

Binning assigns every feature to the bin holding its midpoint, ``(start + end) // 2``,
bin ``k`` covering ``[k * bin_size, (k + 1) * bin_size)``; counts are summed with one
sparse product (cells x features @ features x bins), so memory follows the non-zeros.
Bins are kept in genome order (chromosomes chr1, chr2, ..., chrX, chrY, chrM, then other
contigs) with ``var["chrom"]`` so that convolutions can be kept from spanning two
chromosomes (:func:`chromosome_boundaries`). Coordinates come from
:mod:`cavachon_like.data.genome`.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError, warn_data
from .genome import attach_gene_coordinates, placed_coordinates, read_gene_table, read_intervals, sort_chromosomes
from .groups import name_examples
from .modality import UNS_KEY, Modality
from .support import support_of

logger = logging.getLogger(__name__)

#: ``uns`` key of binned data (its bin size), kept as plain data so it survives h5 files.
BINS_KEY = "genome_bins"


def _overlapping(var: pd.DataFrame, intervals: pd.DataFrame) -> np.ndarray:
    """Which rows of ``var`` (chrom/start/end) overlap any of ``intervals``."""
    hit = np.zeros(len(var), dtype=bool)
    chrom = var["chrom"].to_numpy()
    for c, group in intervals.groupby("chrom", sort=False):
        rows = np.flatnonzero(chrom == c)
        if not rows.size:
            continue
        group = group.sort_values("start")
        # the running maximum of ends makes one binary search per bin enough, overlapping intervals included
        reach = np.maximum.accumulate(group["end"].to_numpy())
        last = np.searchsorted(group["start"].to_numpy(), var["end"].to_numpy()[rows], side="left") - 1
        hit[rows] = (last >= 0) & (reach[np.maximum(last, 0)] > var["start"].to_numpy()[rows])
    return hit


def _bins_var(chroms: Sequence[str], keys: np.ndarray, stride: int, bin_size: int) -> pd.DataFrame:
    chrom = np.asarray(chroms, dtype=object)[keys // stride]
    index = keys % stride
    start = index * bin_size
    names = [f"{c}_{s}_{s + bin_size}" for c, s in zip(chrom, start.tolist())]
    return pd.DataFrame({"chrom": chrom, "start": start, "end": start + bin_size, "bin_index": index},
                        index=pd.Index(names, dtype=object))


def _summed(x: Any, rows: np.ndarray, cols: np.ndarray, n_cols: int) -> sp.csr_matrix:
    """``x @ indicator``, the indicator (features x bins) holding ones at ``(rows, cols)``: the sums
    over each bin's features, touching only the non-zeros of ``x``."""
    x = sp.csr_matrix(x)
    out = sp.csr_matrix(x @ sp.csr_matrix((np.ones(len(rows), x.dtype), (rows, cols)), shape=(x.shape[1], n_cols)))
    out.eliminate_zeros()
    out.sort_indices()
    return out


def _uns(adata: ad.AnnData, bin_size: int) -> dict[str, Any]:
    uns = dict(adata.uns)  # a new dict (and a new package record) so the source's uns is left alone
    if UNS_KEY in uns:
        uns[UNS_KEY] = dict(uns[UNS_KEY])
    uns[BINS_KEY] = {"bin_size": int(bin_size)}
    return uns


def bin_counts(adata: ad.AnnData, bin_size: int = 10_000, *, drop_invalid: bool = False,
               name: str | None = None) -> ad.AnnData:
    """Sum ``adata``'s counts into the genomic bins its features fall in.

    Each feature goes to the bin of its midpoint ``(start + end) // 2`` (a gene placed by
    its TSS: the TSS bin); a midpoint exactly on a bin edge belongs to the bin starting there.

    Parameters
    ----------
    adata
        Cells x features with coordinates (see :func:`coordinates`).
    bin_size
        Bin width in bases.
    drop_invalid, name
        As in :func:`coordinates`.

    Returns
    -------
    ad.AnnData
        CSR cells x the bins holding a feature, in genome order, named ``chrN_start_end``; var has
        ``chrom``, ``start``, ``end``, ``bin_index`` (within the chromosome) and
        ``n_features`` (features summed into the bin); obs, obsm and uns are kept and
        ``uns["genome_bins"]["bin_size"]`` is set.
    """
    if not isinstance(bin_size, (int, np.integer)) or isinstance(bin_size, bool) or bin_size < 1:
        raise InputError(f"bin_size must be a positive number of bases, got {bin_size!r}.")
    coords, placed = placed_coordinates(adata, drop_invalid, name)
    chroms = sort_chromosomes(coords["chrom"].unique())
    rank = pd.Categorical(coords["chrom"], categories=chroms).codes.astype(np.int64)
    index = ((coords["start"].to_numpy() + coords["end"].to_numpy()) // 2) // bin_size
    stride = int(index.max()) + 1 if len(index) else 1
    keys, inverse = np.unique(rank * stride + index, return_inverse=True)
    var = _bins_var(chroms, keys, stride, int(bin_size)).assign(n_features=np.bincount(inverse, minlength=len(keys)))
    return ad.AnnData(_summed(adata.X, placed, inverse, len(keys)), obs=adata.obs.copy(), var=var,
                      obsm=dict(adata.obsm), uns=_uns(adata, bin_size))


def align_bins(modalities: Mapping[str, ad.AnnData] | Sequence[ad.AnnData], top_bins: int | None = None,
               blacklist: str | PathLike | pd.DataFrame | None = None) -> dict[str, ad.AnnData] | list[ad.AnnData]:
    """Put binned modalities (from :func:`bin_counts`) on one shared, genome-ordered list of bins.

    The bins of all modalities are pooled; those overlapping ``blacklist`` are dropped,
    then the ``top_bins`` with the largest raw count summed over cells and modalities
    are kept (ties: the earlier bin; a modality with many more counts dominates the
    choice), in genome order. A bin where a modality has no feature is an implicit zero.

    Parameters
    ----------
    modalities
        Binned AnnData of one bin size, by name (for messages) or as a list.
    top_bins
        Number of bins to keep (paper 004: 25,000); ``None`` keeps all.
    blacklist
        Regions whose overlapping bins are dropped, see :func:`read_intervals`.

    Returns
    -------
    dict or list
        Like ``modalities``: each re-indexed (CSR) onto the kept bins, with the same names
        and ``chrom``, ``start``, ``end``, ``bin_index``, and its own ``n_features``.

    Raises
    ------
    InputError
        For unbinned data, mixed bin sizes, or a modality sharing no bin with the others
        (another genome build or chromosome naming).
    """
    named = dict(modalities) if isinstance(modalities, Mapping) else {str(i): m for i, m in enumerate(modalities)}
    if top_bins is not None and (not isinstance(top_bins, (int, np.integer)) or isinstance(top_bins, bool)
                                 or top_bins < 1):
        raise InputError(f"top_bins must be a positive number of bins or None, got {top_bins!r}.")
    unbinned = [k for k, a in named.items() if not {"chrom", "start", "end", "bin_index"} <= set(a.var.columns)]
    if unbinned or not named:
        raise InputError(f"modalities {unbinned} are not binned (var lacks chrom/start/end/bin_index); pass them "
                         "through bin_counts first." if named else "align_bins needs at least one binned modality.")
    widths = {k: sorted(set((a.var["end"] - a.var["start"]).tolist())) for k, a in named.items()}
    if len({w for ws in widths.values() for w in ws}) > 1:
        raise InputError(f"modalities have different bin sizes {widths}; bin them all with one bin_size.")
    bin_size = next(w for ws in widths.values() for w in ws)
    chroms = sort_chromosomes(np.concatenate([a.var["chrom"].astype(str).to_numpy() for a in named.values()]))
    stride = max(int(a.var["bin_index"].to_numpy().max(initial=0)) for a in named.values()) + 1
    own = {k: pd.Categorical(a.var["chrom"].astype(str), categories=chroms).codes.astype(np.int64) * stride
           + a.var["bin_index"].to_numpy(np.int64) for k, a in named.items()}
    for k, mine in own.items():
        others = [v for j, v in own.items() if j != k]
        if others and not np.isin(mine, np.concatenate(others)).any():
            seen = {j: sort_chromosomes(a.var["chrom"])[:4] for j, a in named.items()}
            raise InputError(f"modality {k!r} shares no genomic bin with the others (chromosomes {seen}); are they on "
                             "the same genome build, with the same chromosome names ('chr1' or '1')?")
    keys, inverse = np.unique(np.concatenate(list(own.values())), return_inverse=True)
    totals = np.bincount(inverse, np.concatenate([np.asarray(a.X.sum(axis=0), np.float64).ravel()
                                                  for a in named.values()]), minlength=len(keys))
    var = _bins_var(chroms, keys, stride, bin_size)
    keep = np.ones(len(keys), dtype=bool)
    if blacklist is not None:
        keep &= ~_overlapping(var, read_intervals(blacklist))
        logger.info("the blacklist removed %d of %d bins.", int((~keep).sum()), len(keys))
    if top_bins is not None and keep.sum() > top_bins:
        candidates = np.flatnonzero(keep)
        keep[candidates[np.argsort(-totals[candidates], kind="stable")[top_bins:]]] = False
    position, var = np.cumsum(keep) - 1, var[keep]
    out, offset = {}, 0
    for k, adata in named.items():
        mine, offset = inverse[offset:offset + adata.n_vars], offset + adata.n_vars
        rows = np.flatnonzero(keep[mine])
        counts = np.zeros(len(var), dtype=np.int64)
        if "n_features" in adata.var.columns:
            counts[position[mine[rows]]] = adata.var["n_features"].to_numpy()[rows]
        out[k] = ad.AnnData(_summed(adata.X, rows, position[mine[rows]], len(var)), obs=adata.obs.copy(),
                            var=var.assign(n_features=counts), obsm=dict(adata.obsm), uns=_uns(adata, bin_size))
    return out if isinstance(modalities, Mapping) else list(out.values())


def chromosome_boundaries(var: pd.DataFrame) -> pd.Series:
    """Position of each chromosome's first bin, e.g. for padding so that kernels do not span two.

    Returns
    -------
    pd.Series
        Start positions indexed by chromosome, in order; chromosome ``i`` covers
        ``starts[i]:starts[i + 1]`` (the last one up to ``len(var)``).
    """
    if "chrom" not in var.columns:
        raise InputError("var has no 'chrom' column; bin the data with bin_counts/align_bins first.")
    chrom = var["chrom"].astype(str).to_numpy()
    starts = np.flatnonzero(np.r_[True, chrom[1:] != chrom[:-1]]) if len(chrom) else np.zeros(0, dtype=np.int64)
    if len(set(chrom[starts])) != len(starts):
        repeated = pd.Series(chrom[starts]).value_counts()
        raise InputError(f"bins are not grouped by chromosome (e.g. {name_examples(repeated.index[repeated > 1])} "
                         "appear in several runs); order them with align_bins.")
    return pd.Series(starts, index=pd.Index(chrom[starts], name="chrom"), name="start")


def bin_multimodality(mm: Any, modalities: str | Sequence[str], bin_size: int = 10_000, top_bins: int | None = None,
                      blacklist: str | PathLike | pd.DataFrame | None = None,
                      gene_table: str | PathLike | pd.DataFrame | None = None, genes: str | Sequence[str] | None = None,
                      gene_anchor: str = "tss", likelihood: str | None = None, drop_unplaced: bool = False) -> Any:
    """The QC step ``bin_genome``: a MultiModality with ``modalities`` replaced by their aligned bins.

    Modalities in ``genes`` are placed by ``gene_table`` (:func:`attach_gene_coordinates`),
    the others by var columns or names (:func:`bin_counts`), then all are aligned
    (:func:`align_bins`). Cells, obs, batch keys and likelihoods (unless ``likelihood``
    is given) are kept; global ``varm``/``varp`` are dropped, as they index the old
    features. With several modalities the bins are named ``<modality>:chrN_start_end``,
    as feature names must be unique across modalities. Each modality adds a record to
    ``uns["cavachon_like"]["qc"]``; ``n_features_removed`` counts the features whose
    counts are in no kept bin.
    """
    names = [modalities] if isinstance(modalities, str) else list(modalities)
    gene_mods = [] if genes is None else [genes] if isinstance(genes, str) else list(genes)
    unknown = [n for n in dict.fromkeys([*names, *gene_mods]) if n not in mm.mod or n not in names]
    if unknown:
        raise InputError(f"bin_genome: modalities {unknown} are not among the data's {list(mm.mod)} or not binned "
                         f"({names}); genes must name binned modalities.")
    if bool(gene_mods) != (gene_table is not None):
        raise InputError("bin_genome: pass both gene_table (gene coordinates) and genes (the modalities whose features "
                         "are gene names, e.g. [rna]), or neither.")
    table = read_gene_table(gene_table) if gene_table is not None else None
    binned = {}
    for n in names:
        adata = mm.modality(n)
        if n in gene_mods:
            adata = attach_gene_coordinates(adata, table, anchor=gene_anchor, drop_missing=drop_unplaced, name=n)
        binned[n] = bin_counts(adata, bin_size, drop_invalid=drop_unplaced, name=n)
    mods, records = dict(mm.mod), []
    for n, adata in align_bins(binned, top_bins=top_bins, blacklist=blacklist).items():
        old = mm.modality(n)
        if len(names) > 1:
            adata.var_names = (n + ":") + adata.var_names.astype(str)
        mods[n] = new = Modality(adata, likelihood=likelihood or old.likelihood, batch_key=old.batch_key, name=n)
        records.append({"step": "bin_genome", "modality": n, "n_cells_removed": 0,
                        "n_features_removed": old.n_vars - int(new.var["n_features"].sum()), "n_bins": new.n_vars,
                        "bin_size": int(bin_size)})
        logger.info("bin_genome: %r: %d features -> %d bins of %d bases holding %.4g of %.4g counts.",
                    n, old.n_vars, new.n_vars, bin_size, float(new.X.sum()), float(old.X.sum()))
        largest = float(new.X.max()) if new.X.nnz else 0.0
        if support_of(new.likelihood) == "binary" and largest > 1:
            warn_data(f"modality {n!r}: binned counts reach {largest:g}, but its likelihood {new.likelihood!r} only "
                      "sees whether a bin has any; for counts per bin set likelihood: poisson (paper 004) or nb in "
                      "bin_genome.", logger)
    with md.set_options(pull_on_update=False):
        mdata = md.MuData(mods, obs=mm.obs.copy(), obsm={k: v for k, v in mm.obsm.items() if k not in mm.mod},
                          obsp=dict(mm.obsp), uns=dict(mm.uns))
    result = type(mm)(mdata)
    meta = result.uns.setdefault(UNS_KEY, {})
    meta["qc"] = [*meta.get("qc", []), *records]
    return result
