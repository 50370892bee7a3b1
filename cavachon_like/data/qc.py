"""Quality-control filters (paper, Appendix D) as configurable steps.

Each step filters one named modality of a :class:`MultiModality` and returns a
new one. Cells removed in one modality are removed from all of them, because the
data are paired. What every step removed is logged and appended to
``uns["cavachon_like"]["qc"]``. Everything works on sparse matrices through
non-zero counts and row/column sums; no matrix is densified.

Steps can be listed in YAML and built with :func:`from_config`::

    qc:
      - {step: filter_cells, modality: rna, min_features: 20}
      - {step: filter_features, modality: atac, min_cells: 5, max_cells_fraction: 0.1}
      - {step: bin_genome, modality: atac, bin_size: 10000, top_bins: 25000}
"""
from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .._registry import Registry, register_subclass
from ..errors import InputError
from . import bins, genome
from .backed import blockwise, totals
from .groups import name_examples
from .modality import UNS_KEY

if TYPE_CHECKING:  # only for annotations: MultiModality applies these steps, so importing it would circle
    from .multimodality import MultiModality

logger = logging.getLogger(__name__)

#: QC steps by alias (``step:`` of an entry of ``data.qc`` in YAML); a subclass of
#: :class:`QCStep` that sets ``alias`` joins it.
#:
#: :meta hide-value:
QC_STEPS = Registry("QC step")


def _expressed(x: Any, axis: int) -> np.ndarray:
    """Number of entries > 0 per row (``axis=1``) or column (``axis=0``); a matrix on disk block by block."""
    # compare rather than getnnz(): explicitly stored zeros must not count as expressed
    return blockwise(x, lambda block: (block > 0).sum(axis=axis), axis)


class QCStep:
    """Base class of QC steps; subclasses set ``alias`` to be usable from configs.

    Parameters
    ----------
    modality
        Name of the modality the step looks at.
    """

    alias: ClassVar[str] = ""

    def __init__(self, modality: str) -> None:
        if not isinstance(modality, str) or not modality:
            raise ValueError(f"{type(self).__name__}: modality must be a modality name, got {modality!r}.")
        self.modality = modality

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_subclass(QC_STEPS, cls)

    def __call__(self, mm: MultiModality) -> MultiModality:
        mod = mm.modality(self.modality)
        x, measured = mod.X, mod.measured
        # In mosaic data a cell's empty row in a modality it was not measured in says nothing
        # about it: the step judges only measured cells, and features only on them.
        keep_cells = self.keep_cells(x, mm) | ~measured
        keep_features = self.keep_features(x if measured.all() else x[measured], mm)
        n_cells, n_features = int((~keep_cells).sum()), int((~keep_features).sum())
        if n_cells == len(keep_cells):
            raise ValueError(f"{self!r} would remove all {n_cells} cells of modality {self.modality!r}; "
                             "loosen its thresholds.")
        if n_features == len(keep_features):
            raise ValueError(f"{self!r} would remove all {n_features} features of modality {self.modality!r}; "
                             "loosen its thresholds.")
        if n_cells or n_features:
            result = mm.subset(keep_cells, features={self.modality: keep_features})
        else:
            # a new wrapper (sharing the matrices) so the record does not land in the caller's object
            result = type(mm)(mm)
        record = {"step": self.alias, "modality": self.modality,
                  "n_cells_removed": n_cells, "n_features_removed": n_features}
        meta = result.uns.setdefault(UNS_KEY, {})
        meta["qc"] = [*meta.get("qc", []), record]
        logger.info("%r removed %d cells (all modalities) and %d features of %r.",
                    self, n_cells, n_features, self.modality)
        return result

    def keep_cells(self, x: Any, mm: MultiModality) -> np.ndarray:
        """Boolean mask of the cells to keep; by default all."""
        return np.ones(x.shape[0], dtype=bool)

    def keep_features(self, x: Any, mm: MultiModality) -> np.ndarray:
        """Boolean mask of the modality's features to keep; by default all."""
        return np.ones(x.shape[1], dtype=bool)

    def get_config(self) -> dict[str, Any]:
        """The config that :func:`from_config` turns back into this step."""
        params = inspect.signature(type(self).__init__).parameters
        return {"step": self.alias, **{k: getattr(self, k) for k in params if k != "self"}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "step" and v is not None)
        return f"{self.alias}({args})"


def _check_count(owner: str, name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0):
        raise ValueError(f"{owner}: {name} must be a non-negative integer or None, got {value!r}.")


def _check_fraction(owner: str, name: str, value: Any) -> None:
    if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ValueError(f"{owner}: {name} must be a fraction in [0, 1] or None, got {value!r}.")


class FilterCells(QCStep):
    """Remove cells with too few (or too many) expressed features, or too large a library.

    Parameters
    ----------
    modality
        Modality whose features are counted.
    min_features
        Minimum number of features with a count > 0.
    max_features
        Optional maximum, e.g. against doublets.
    max_counts
        Optional maximum of a cell's total count in the modality (its library size),
        e.g. against the extreme cells :func:`library_size_report` warns about.
    """

    alias = "filter_cells"

    def __init__(self, modality: str, min_features: int = 20, max_features: int | None = None,
                 max_counts: int | None = None) -> None:
        super().__init__(modality)
        _check_count(self.alias, "min_features", min_features)
        _check_count(self.alias, "max_features", max_features)
        _check_count(self.alias, "max_counts", max_counts)
        self.min_features = min_features
        self.max_features = max_features
        self.max_counts = max_counts

    def keep_cells(self, x: Any, mm: MultiModality) -> np.ndarray:
        n = _expressed(x, axis=1)
        keep = n >= self.min_features
        if self.max_features is not None:
            keep &= n <= self.max_features
        if self.max_counts is not None:
            keep &= totals(x, axis=1) <= self.max_counts
        return keep


class FilterCellsByFraction(QCStep):
    """Remove cells whose counts come too much from some features (mitochondrial, ERCC spike-ins).

    Cells without any counts have a fraction of 0 and are kept. When no feature
    matches ``pattern`` nothing is removed (and that is logged).

    Parameters
    ----------
    modality
        Modality to look at.
    pattern
        Regular expression searched in the feature names.
    max_fraction
        Largest allowed share of a cell's total count in matching features.
    """

    alias = "filter_cells_by_fraction"

    def __init__(self, modality: str, pattern: str = r"^(ERCC-|mt-|MT-)", max_fraction: float = 0.2) -> None:
        super().__init__(modality)
        try:
            re.compile(pattern)
        except (re.error, TypeError) as err:
            raise ValueError(f"{self.alias}: pattern {pattern!r} is not a valid regular expression: {err}") from None
        _check_fraction(self.alias, "max_fraction", max_fraction)
        self.pattern = pattern
        self.max_fraction = max_fraction

    def keep_cells(self, x: Any, mm: MultiModality) -> np.ndarray:
        names = mm.modality(self.modality).var_names
        # plain search rather than str.contains, which warns about capture groups such as the default's
        search = re.compile(self.pattern).search
        matching = np.fromiter((search(str(n)) is not None for n in names), dtype=bool, count=len(names))
        if not matching.any():
            logger.info("%r: no feature of %r matches %r; no cell removed.", self, self.modality, self.pattern)
            return np.ones(x.shape[0], dtype=bool)
        # a sparse matrix-vector product touches only the non-zeros
        in_matching = blockwise(x, lambda block: block @ matching.astype(np.float64), axis=1)
        total = totals(x, axis=1)
        fraction = np.divide(in_matching, total, out=np.zeros_like(total), where=total > 0)
        return fraction <= self.max_fraction


class FilterFeatures(QCStep):
    """Remove features that are too rare or too common.

    Parameters
    ----------
    modality
        Modality whose features are filtered.
    min_counts
        Minimum total count over all cells.
    min_cells
        Minimum number of cells with a count > 0.
    max_cells_fraction
        Maximum fraction of cells with a count > 0 (e.g. 0.1 for ATAC peaks).
    """

    alias = "filter_features"

    def __init__(
        self,
        modality: str,
        min_counts: int | None = None,
        min_cells: int | None = None,
        max_cells_fraction: float | None = None,
    ) -> None:
        super().__init__(modality)
        _check_count(self.alias, "min_counts", min_counts)
        _check_count(self.alias, "min_cells", min_cells)
        _check_fraction(self.alias, "max_cells_fraction", max_cells_fraction)
        if min_counts is None and min_cells is None and max_cells_fraction is None:
            raise ValueError(f"{self.alias} on {modality!r}: set at least one of min_counts, min_cells, "
                             "max_cells_fraction.")
        self.min_counts = min_counts
        self.min_cells = min_cells
        self.max_cells_fraction = max_cells_fraction

    def keep_features(self, x: Any, mm: MultiModality) -> np.ndarray:
        keep = np.ones(x.shape[1], dtype=bool)
        if self.min_counts is not None:
            keep &= totals(x, axis=0) >= self.min_counts
        if self.min_cells is not None or self.max_cells_fraction is not None:
            n_cells = _expressed(x, axis=0)
            if self.min_cells is not None:
                keep &= n_cells >= self.min_cells
            if self.max_cells_fraction is not None:
                keep &= n_cells <= self.max_cells_fraction * x.shape[0]
        return keep


class BinGenome(QCStep):
    """Sum counts into fixed-width genomic bins shared by modalities, as channels (paper 004).

    Unlike the filters this replaces the modalities' features by bins; the logic, its
    conventions and the parameters are those of
    :func:`cavachon_like.data.bins.bin_multimodality`. ``modality`` may be a list, e.g.
    ``{step: bin_genome, modality: [atac, rna], gene_table: mm10_genes.tsv.gz, genes: rna}``.
    """

    alias = "bin_genome"

    def __init__(self, modality: str | Sequence[str], bin_size: int = 10_000, top_bins: int | None = None,
                 blacklist: str | None = None, gene_table: str | None = None, genes: str | Sequence[str] | None = None,
                 gene_anchor: str = "tss", likelihood: str | None = None, drop_unplaced: bool = False) -> None:
        names = [modality] if isinstance(modality, str) else modality
        if not isinstance(names, Sequence) or not names:
            raise ValueError(f"{self.alias}: modality must be a modality name or a list of them, got {modality!r}.")
        for name in names:
            super().__init__(name)  # checks each name
        _check_count(self.alias, "bin_size", bin_size)
        _check_count(self.alias, "top_bins", top_bins)
        if not bin_size or (top_bins is not None and not top_bins):
            raise ValueError(f"{self.alias}: bin_size and top_bins must be positive, got {bin_size!r}, {top_bins!r}.")
        if gene_anchor not in genome.GENE_ANCHORS:
            raise ValueError(f"{self.alias}: gene_anchor must be one of {genome.GENE_ANCHORS}, got {gene_anchor!r}.")
        self.modality = modality if isinstance(modality, str) else list(modality)
        self.bin_size, self.top_bins, self.blacklist = bin_size, top_bins, blacklist
        self.gene_table, self.genes, self.gene_anchor = gene_table, genes, gene_anchor
        self.likelihood, self.drop_unplaced = likelihood, drop_unplaced

    def __call__(self, mm: MultiModality) -> MultiModality:
        if mm.on_disk:
            raise InputError(f"{self!r}: binning reads whole matrices and the data are on disk (read with "
                             "backed=True); bin the peaks of a file that fits in memory once, write it, and train on "
                             "disk from the binned file.")
        config = self.get_config()
        del config["step"]
        return bins.bin_multimodality(mm, modalities=config.pop("modality"), **config)


#: A cell's library size (its total count in one modality) is *extreme* when it is above
#: both ``EXTREME_LIBRARY_RATIO`` times the median library size of the modality's cells with
#: counts and ``EXTREME_LIBRARY_MADS`` scaled median absolute deviations (MAD x 1.4826) above
#: the median on the log scale. Either rule alone misfires: a fixed ratio on data sets mixing
#: small and large cell types, the MADs on very uniform data (simulated ATAC: a MAD of 0.19,
#: so 8 MADs are 4.6x the median). Real data stay far below both: in SNARE-seq the largest
#: cell is 6x the median and 2.8 MADs above it, in both modalities.
EXTREME_LIBRARY_RATIO = 20.0
EXTREME_LIBRARY_MADS = 8.0


def library_size_report(mm: MultiModality, modality: str) -> dict[str, Any]:
    """Cells of ``modality`` with no counts at all, and cells with an extreme library size.

    Only row sums are computed, so sparse matrices stay sparse.

    Returns
    -------
    dict
        ``n_cells``; ``zero_cells`` (names of the cells whose total is 0); ``median``
        (median library size of the cells with counts, NaN if none has any);
        ``threshold`` (library sizes above it are extreme, see
        :data:`EXTREME_LIBRARY_RATIO`); ``extreme_cells`` and ``extreme_sizes``.
    """
    mod = mm.modality(modality)
    sizes = totals(mod.X, axis=1)[mod.measured]  # mosaic data: unmeasured cells' rows are empty
    names = mod.obs_names[mod.measured]
    zero = sizes == 0
    positive = sizes[sizes > 0]
    median = threshold = float("nan")
    extreme = np.zeros(len(sizes), dtype=bool)
    if positive.size:
        logs = np.log(positive)
        centre = float(np.median(logs))
        mad = 1.4826 * float(np.median(np.abs(logs - centre)))
        median = float(np.median(positive))
        threshold = max(EXTREME_LIBRARY_RATIO * median, float(np.exp(centre + EXTREME_LIBRARY_MADS * mad)))
        extreme = sizes > threshold
    return {"n_cells": len(sizes), "zero_cells": list(names[zero]), "median": median,
            "threshold": threshold, "extreme_cells": list(names[extreme]),
            "extreme_sizes": sizes[extreme].tolist()}


def library_size_warnings(mm: MultiModality, modality: str) -> list[str]:
    """Messages (none for ordinary data) about the cells :func:`library_size_report` finds."""
    report = library_size_report(mm, modality)
    label = f"modality {modality!r} (likelihood {mm.modality(modality).likelihood!r})"
    messages = []
    zero, n = report["zero_cells"], report["n_cells"]
    if zero:
        messages.append(
            f"{label}: {len(zero)} of {n} cells have no counts at all (e.g. {name_examples(zero)}); they tell the "
            f"model nothing about {modality!r}. Remove them, e.g. with the QC step {{step: filter_cells, modality: "
            f"{modality}, min_features: 1}}."
        )
    extreme = report["extreme_cells"]
    if extreme:
        examples = ", ".join(f"{str(c)!r} ({s:.3g})" for c, s in zip(extreme[:5], report["extreme_sizes"][:5]))
        more = f" and {len(extreme) - 5} more" if len(extreme) > 5 else ""
        messages.append(
            f"{label}: {len(extreme)} of {n} cells have an extreme library size (total count above "
            f"{report['threshold']:.3g}, i.e. over {EXTREME_LIBRARY_RATIO:g}x the median {report['median']:.3g} and "
            f"{EXTREME_LIBRARY_MADS:g} MADs above it on the log scale), e.g. {examples}{more}; such cells can dominate "
            f"the loss. Check them (wrong units, merged cells) or remove them, e.g. with {{step: filter_cells, "
            f"modality: {modality}, min_features: 0, max_counts: {int(report['threshold'])}}}."
        )
    return messages


def from_config(config: Mapping[str, Any]) -> QCStep:
    """Build a step from ``{"step": name, **parameters}``.

    Raises
    ------
    ValueError
        For a missing or unknown step name, or a parameter the step does not take.
    """
    params = dict(config)
    name = params.pop("step", None)
    if name is None:
        raise ValueError(f"QC config {dict(config)} has no 'step'; known steps: {QC_STEPS.names()}.")
    if name not in QC_STEPS:
        raise ValueError(f"unknown QC step {name!r}; known steps: {QC_STEPS.names()}.")
    cls = QC_STEPS.get(name)
    accepted = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"QC step {name!r} does not take parameter(s) {unknown}; it takes {accepted}.")
    missing = [k for k, p in inspect.signature(cls.__init__).parameters.items()
               if k != "self" and p.default is inspect.Parameter.empty and k not in params]
    if missing:
        raise ValueError(f"QC step {name!r} needs parameter(s) {missing}.")
    return cls(**params)


#: The filters of the paper's Appendix D for modalities "rna" and "atac".
PAPER_QC: list[dict[str, Any]] = [
    {"step": "filter_cells", "modality": "rna", "min_features": 20},
    {"step": "filter_cells_by_fraction", "modality": "rna", "pattern": r"^(ERCC-|mt-|MT-)", "max_fraction": 0.2},
    {"step": "filter_features", "modality": "rna", "min_counts": 10, "min_cells": 5},
    {"step": "filter_features", "modality": "atac", "min_cells": 5, "max_cells_fraction": 0.1},
]
