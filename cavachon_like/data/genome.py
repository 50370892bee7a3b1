"""Genomic coordinates of features and fixed-width genomic bins shared by modalities (paper 004).

Coordinates follow BED: 0-based starts, ends exclusive (``[start, end)``). Peak names
``chr1_3000_3500`` and ``chr1:3000-3500`` are read that way (as 10x and SnapATAC
write them); a gene table in GTF convention (1-based, inclusive) is converted on reading.

Binning assigns every feature to the bin holding its midpoint, ``(start + end) // 2``,
bin ``k`` covering ``[k * bin_size, (k + 1) * bin_size)``; counts are summed with one
sparse product (cells x features @ features x bins), so memory follows the non-zeros.
Bins are kept in genome order (chromosomes chr1, chr2, ..., chrX, chrY, chrM, then other
contigs) with ``var["chrom"]`` so that convolutions can be kept from spanning two
chromosomes (:func:`chromosome_boundaries`).
"""
from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import DataWarning, InputError
from .groups import name_examples
from .modality import UNS_KEY, Modality
from .support import support_of

logger = logging.getLogger(__name__)

#: Feature name formats :func:`parse_coordinates` reads, for messages.
NAME_FORMATS = "'chr1_3000_3500' or 'chr1:3000-3500' (0-based start, exclusive end, as BED)"
#: Where a gene sits when placed on the genome, see :func:`attach_gene_coordinates`.
GENE_ANCHORS = ("tss", "body")
#: ``uns`` key of binned data (its bin size), kept as plain data so it survives h5 files.
BINS_KEY = "genome_bins"

_NAME_PATTERN = r"^(?:(?P<c1>\S+)_(?P<s1>\d+)_(?P<e1>\d+)|(?P<c2>\S+):(?P<s2>\d+)-(?P<e2>\d+))$"
_COLUMNS = ["chrom", "start", "end"]
_SPECIAL_CHROMS = {"X": 1, "Y": 2, "M": 3, "MT": 3}


def _warn(message: str) -> None:
    logger.warning(message)
    warnings.warn(message, DataWarning, stacklevel=3)


def _label(adata: ad.AnnData | None, name: str | None) -> str:
    name = name or (adata.uns.get(UNS_KEY, {}).get("name") if adata is not None else None)
    return f"modality {name!r}" if name else "features"


def _chromosome_key(chrom: str) -> tuple[int, int, str]:
    core = chrom[3:] if chrom.lower().startswith("chr") else chrom
    if core.isdigit():
        return (0, int(core), "")
    if core.upper() in _SPECIAL_CHROMS:
        return (1, _SPECIAL_CHROMS[core.upper()], "")
    return (2, 0, chrom)


def sort_chromosomes(chroms: Sequence[Any]) -> list[str]:
    """Distinct chromosome names in natural order: chr1..chr22 by number, chrX, chrY, chrM, others by name."""
    return sorted({str(c) for c in chroms}, key=_chromosome_key)


def _checked(index: pd.Index, chrom: Any, start: Any, end: Any, label: str, drop_invalid: bool = False,
             fix: str = "Fix or remove those rows.") -> tuple[pd.DataFrame, np.ndarray]:
    """Coordinates of the rows with a chromosome and ``0 <= start < end``, and their positions;
    the other rows raise or, with ``drop_invalid``, are dropped with a warning."""
    chrom = np.asarray(chrom, dtype=object)
    start, end = (pd.to_numeric(pd.Series(v), errors="coerce").to_numpy(np.float64) for v in (start, end))
    valid = pd.notna(chrom) & (start >= 0) & (end > start)
    if not valid.all():
        message = (f"{label}: {int((~valid).sum())} of {len(index)} entries have no valid genomic coordinates (a "
                   f"chromosome and 0 <= start < end), e.g. {name_examples(index[~valid])}")
        if not drop_invalid:
            raise InputError(f"{message}. {fix}")
        _warn(f"{message}; dropped them (their counts are not binned).")
    keep = np.flatnonzero(valid)
    frame = pd.DataFrame({"chrom": chrom[keep].astype(str).astype(object), "start": start[keep].astype(np.int64),
                          "end": end[keep].astype(np.int64)}, index=index[keep])
    return frame, keep


_DIGITS = "0123456789"


def _split_names(names: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised ``_NAME_PATTERN``: chromosome, start, end (float64) and which names it read.

    ``chr1_3000_3500`` is split at its last two ``_``, ``chr1:3000-3500`` at its last ``-``
    and the ``:`` before it, as the pattern's greedy ``\\S+`` does; a name is read only when
    its numbers are ASCII digits and it has no whitespace, else left to the pattern itself.
    """
    read = np.zeros(len(names), dtype=bool)
    chrom = np.full(len(names), None, dtype=object)
    start, end = np.full(len(names), np.nan), np.full(len(names), np.nan)
    if not len(names):
        return chrom, start, end, read
    spaced = np.zeros(len(names), dtype=bool)
    if re.search(r"\s", "".join(names.tolist())):
        spaced = np.array([re.search(r"\s", n) is not None for n in names.tolist()])
    for first, second in (("_", "_"), ("-", ":")):  # the pattern's order of alternatives
        todo = np.flatnonzero(~read & ~spaced)
        if not todo.size:
            break
        head, _, last = np.strings.rpartition(names[todo], first)
        c, sep, s = np.strings.rpartition(head, second)
        ok = ((sep != "") & (c != "") & (s != "") & (last != "") & (np.strings.strip(s, _DIGITS) == "")
              & (np.strings.strip(last, _DIGITS) == ""))
        rows = todo[ok]
        chrom[rows], start[rows], end[rows] = c[ok].astype(object), s[ok].astype(np.float64), last[ok].astype(np.float64)
        read[rows] = True
    return chrom, start, end, read


def _parse(names: Sequence[Any], label: str, drop_invalid: bool, fix: str) -> tuple[pd.DataFrame, np.ndarray]:
    index = pd.Index(names)
    text = np.asarray(index.astype(str), dtype=str)
    if hasattr(np, "strings") and hasattr(np.strings, "rpartition"):  # NumPy >= 2.3
        # pandas' str.extract and to_numeric took 2.4 s of the 4.4 s of binning 200,000 peaks
        # (benchmarks/binning_scale.py); this, 0.3 s.
        chrom, start, end, read = _split_names(text)
    else:
        chrom, start, end = np.full(len(text), None, dtype=object), np.full(len(text), np.nan), np.full(len(text), np.nan)
        read = np.zeros(len(text), dtype=bool)
    rest = np.flatnonzero(~read)
    if rest.size:  # the pattern itself, for what the vectorised split did not read
        parts = pd.Series(text[rest], dtype=object).str.extract(_NAME_PATTERN)
        chrom[rest] = parts["c1"].fillna(parts["c2"]).to_numpy(object)
        for column, values in ((start, parts["s1"].fillna(parts["s2"])), (end, parts["e1"].fillna(parts["e2"]))):
            column[rest] = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
    return _checked(index, chrom, start, end, label, drop_invalid,
                    f"Feature names must read {NAME_FORMATS}, or var must have columns 'chrom', 'start', 'end'. {fix}")


def parse_coordinates(names: Sequence[Any], *, drop_invalid: bool = False, name: str | None = None) -> pd.DataFrame:
    """Genomic coordinates from feature names such as ``chr1_3000_3500`` or ``chr1:3000-3500``.

    Positions are read as BED (0-based start, end exclusive); the chromosome is all
    before the last two numbers, so contigs such as ``chrUn_GL456239`` work.

    Parameters
    ----------
    names
        Feature names.
    drop_invalid
        Drop names that do not parse, with a warning saying how many, instead of raising.
    name
        Modality name for messages.

    Returns
    -------
    pd.DataFrame
        Indexed by the parsed names: ``chrom`` (str), ``start``, ``end`` (int64).

    Raises
    ------
    InputError
        Naming a few names that do not parse (or have ``end <= start``) and the accepted formats.
    """
    return _parse(names, _label(None, name), drop_invalid, "Rename them, or pass drop_invalid=True.")[0]


def coordinates(adata: ad.AnnData, *, drop_invalid: bool = False, name: str | None = None) -> pd.DataFrame:
    """Coordinates of ``adata``'s features: var columns ``chrom``/``start``/``end`` if present, else the names.

    Columns are taken as BED (0-based start, end exclusive). See :func:`parse_coordinates`
    for the parameters, return value and errors.
    """
    return _coordinates(adata, drop_invalid, name)[0]


def _coordinates(adata: ad.AnnData, drop_invalid: bool, name: str | None) -> tuple[pd.DataFrame, np.ndarray]:
    label = _label(adata, name)
    present = [c for c in _COLUMNS if c in adata.var.columns]
    if not present:
        return _parse(adata.var_names, label, drop_invalid, "Genes are placed by attach_gene_coordinates (QC step "
                      "bin_genome: gene_table, genes); else rename them, or drop them with drop_invalid=True (QC step "
                      "bin_genome: drop_unplaced: true).")
    if len(present) < 3:
        raise InputError(f"{label}: var has {present} but not {sorted(set(_COLUMNS) - set(present))}; genomic "
                         "coordinates need all of 'chrom', 'start', 'end' (or none, to parse the feature names).")
    var = adata.var
    return _checked(adata.var_names, var["chrom"].to_numpy(object), var["start"], var["end"], label, drop_invalid,
                    "Fill or fix those var columns, or pass drop_invalid=True.")


def read_gene_table(source: str | PathLike | pd.DataFrame, *, one_based: bool = True) -> pd.DataFrame:
    """A gene coordinate table, e.g. ``../shared/data/mm10_genes.tsv.gz`` (mouse mm10).

    Parameters
    ----------
    source
        Tab-separated file (gzip allowed) or DataFrame with columns ``gene_name``, ``chrom``,
        ``start``, ``end`` and optionally ``strand`` (``+``/``-``).
    one_based
        ``start``/``end`` are 1-based and inclusive (GTF, the shipped file); ``False`` for BED.

    Returns
    -------
    pd.DataFrame
        Indexed by gene name: ``chrom``, ``start``, ``end`` (BED), ``strand``. A name
        listed twice keeps its longest entry.
    """
    table = source if isinstance(source, pd.DataFrame) else pd.read_csv(source, sep="\t", dtype={"chrom": str})
    missing = [c for c in ["gene_name", *_COLUMNS] if c not in table.columns]
    if missing:
        raise InputError(f"gene table has no column(s) {missing} (columns: {list(table.columns)}); it needs "
                         "'gene_name', 'chrom', 'start', 'end' and optionally 'strand', tab-separated with a header.")
    start = pd.to_numeric(table["start"], errors="coerce") - (1 if one_based else 0)
    frame, _ = _checked(pd.Index(table["gene_name"]), table["chrom"], start, table["end"], "gene table")
    frame["strand"] = table["strand"].to_numpy() if "strand" in table.columns else "."
    frame = frame.iloc[np.argsort(frame["start"].to_numpy() - frame["end"].to_numpy(), kind="stable")]
    return frame[~frame.index.duplicated()].rename_axis("gene_name")


def attach_gene_coordinates(adata: ad.AnnData, table: str | PathLike | pd.DataFrame, *, anchor: str = "tss",
                            drop_missing: bool = False, name: str | None = None) -> ad.AnnData:
    """A copy of ``adata`` (sharing ``X`` unless genes are dropped) with gene positions in var.

    ``anchor="tss"`` (default) places a gene at its transcription start site (its start
    on ``+``, its end on ``-``), where promoter accessibility sits, so RNA and ATAC meet
    in one bin; a long gene's body midpoint can lie hundreds of kb from its promoter.
    ``anchor="body"`` uses the whole gene body.

    Parameters
    ----------
    adata
        Features named by gene symbol, matched exactly (case-sensitive) to ``table``.
    table
        :func:`read_gene_table` output, or what it reads.
    anchor
        ``"tss"`` or ``"body"``.
    drop_missing
        Drop genes absent from the table, with a warning, instead of raising.
    name
        Modality name for messages.

    Returns
    -------
    ad.AnnData
        var gets ``chrom``, ``start``, ``end`` (the anchor, BED) and the gene's
        ``gene_start``, ``gene_end`` (BED) and ``strand``.
    """
    if anchor not in GENE_ANCHORS:
        raise InputError(f"gene anchor must be one of {GENE_ANCHORS}, got {anchor!r}.")
    genes = table if isinstance(table, pd.DataFrame) and "gene_name" not in table.columns else read_gene_table(table)
    label = _label(adata, name)
    found = adata.var_names.isin(genes.index)
    if not found.all():
        missing = adata.var_names[~found]
        message = (f"{label}: {len(missing)} of {adata.n_vars} genes are not in the gene table, e.g. "
                   f"{name_examples(missing)}")
        if not drop_missing:
            raise InputError(f"{message}. Pass a table for this genome (same gene symbols), or drop them "
                             "(drop_missing=True; QC step bin_genome: drop_unplaced: true).")
        _warn(f"{message}; dropped them.")
    out = adata[:, found].copy() if not found.all() else ad.AnnData(adata.copy() if adata.is_view else adata)
    rows = genes.loc[out.var_names]
    start, end, strand = rows["start"].to_numpy(), rows["end"].to_numpy(), rows["strand"].to_numpy()
    if anchor == "tss":
        unknown = ~np.isin(strand, ["+", "-"])
        if unknown.any():
            raise InputError(f"{label}: the gene table gives no strand (+/-) for {int(unknown.sum())} genes, e.g. "
                             f"{name_examples(out.var_names[unknown])}, so their TSS is unknown; add a 'strand' "
                             "column or use anchor='body'.")
        start = np.where(strand == "-", end - 1, start)
        end = start + 1
    out.var = out.var.assign(chrom=rows["chrom"].to_numpy(), start=start, end=end, gene_start=rows["start"].to_numpy(),
                             gene_end=rows["end"].to_numpy(), strand=strand)
    return out


def read_intervals(source: str | PathLike | pd.DataFrame) -> pd.DataFrame:
    """Genomic intervals (e.g. the ENCODE blacklist) from a BED-like file or a DataFrame.

    A file (gzip allowed) has chromosome, start, end (BED: 0-based, end exclusive) as its
    first three whitespace-separated fields; ``#``, ``track`` and ``browser`` lines and a
    header line are skipped. A DataFrame needs columns ``chrom``, ``start``, ``end``.
    """
    if isinstance(source, pd.DataFrame):
        if any(c not in source.columns for c in _COLUMNS):
            raise InputError(f"intervals need columns 'chrom', 'start', 'end'; got {list(source.columns)}.")
        return _checked(source.index, source["chrom"], source["start"], source["end"], "intervals")[0]
    frame = pd.read_csv(source, sep=r"\s+", header=None, comment="#", usecols=[0, 1, 2], names=_COLUMNS, dtype=str)
    frame = frame[~frame["chrom"].isin(["track", "browser"])]
    if len(frame) and not str(frame["start"].iloc[0]).isdigit():
        frame = frame.iloc[1:]  # a header line
    return _checked(frame.index, frame["chrom"], frame["start"], frame["end"], f"intervals in {source}")[0]


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
    coords, placed = _coordinates(adata, drop_invalid, name)
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
            _warn(f"modality {n!r}: binned counts reach {largest:g}, but its likelihood {new.likelihood!r} only sees "
                  "whether a bin has any; for counts per bin set likelihood: poisson (paper 004) or nb in bin_genome.")
    with md.set_options(pull_on_update=False):
        mdata = md.MuData(mods, obs=mm.obs.copy(), obsm={k: v for k, v in mm.obsm.items() if k not in mm.mod},
                          obsp=dict(mm.obsp), uns=dict(mm.uns))
    result = type(mm)(mdata)
    meta = result.uns.setdefault(UNS_KEY, {})
    meta["qc"] = [*meta.get("qc", []), *records]
    return result
