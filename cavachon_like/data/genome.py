"""Genomic coordinates of features: peak names, var columns, gene tables and intervals.

Coordinates follow BED: 0-based starts, ends exclusive (``[start, end)``). Peak names
``chr1_3000_3500`` and ``chr1:3000-3500`` are read that way (as 10x and SnapATAC
write them); a gene table in GTF convention (1-based, inclusive) is converted on reading.
Chromosomes sort in genome order (chr1, chr2, ..., chrX, chrY, chrM, then other contigs).
Fixed-width bins over these coordinates are in :mod:`cavachon_like.data.bins`.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from os import PathLike
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from ..errors import InputError, warn_data
from .groups import name_examples
from .modality import UNS_KEY

logger = logging.getLogger(__name__)

#: Feature name formats :func:`parse_coordinates` reads, for messages.
NAME_FORMATS = "'chr1_3000_3500' or 'chr1:3000-3500' (0-based start, exclusive end, as BED)"
#: Where a gene sits when placed on the genome, see :func:`attach_gene_coordinates`.
GENE_ANCHORS = ("tss", "body")

_NAME_PATTERN = r"^(?:(?P<c1>\S+)_(?P<s1>\d+)_(?P<e1>\d+)|(?P<c2>\S+):(?P<s2>\d+)-(?P<e2>\d+))$"
_COLUMNS = ["chrom", "start", "end"]
_SPECIAL_CHROMS = {"X": 1, "Y": 2, "M": 3, "MT": 3}


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
        warn_data(f"{message}; dropped them (their counts are not binned).", logger)
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
    return placed_coordinates(adata, drop_invalid, name)[0]


def placed_coordinates(adata: ad.AnnData, drop_invalid: bool = False,
                       name: str | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """:func:`coordinates`, and a boolean mask of the features they are for (all of them unless
    ``drop_invalid`` dropped some)."""
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
        warn_data(f"{message}; dropped them.", logger)
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
