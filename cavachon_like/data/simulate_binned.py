"""Multi-channel counts on shared genomic bins with local structure, for the Conv1D modules (paper 004)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .bins import BINS_KEY
from .genome import sort_chromosomes
from .multimodality import MultiModality, no_pull

#: Bins per chromosome of the default genome: mouse (mm10) chromosome lengths scaled to 2,000 bins.
DEFAULT_CHROMOSOME_BINS = MappingProxyType({
    "chr1": 143, "chr2": 134, "chr3": 117, "chr4": 115, "chr5": 111, "chr6": 110, "chr7": 107, "chr8": 95,
    "chr9": 91, "chr10": 96, "chr11": 90, "chr12": 88, "chr13": 88, "chr14": 92, "chr15": 76, "chr16": 72,
    "chr17": 70, "chr18": 67, "chr19": 45, "chrX": 126, "chrY": 67})
#: Channels whose signal drops where a domain is active (Polycomb / heterochromatin marks).
REPRESSIVE_MARKS = ("h3k27me3", "h3k9me2", "h3k9me3")
_BASELINE_SD = 0.5  # per-bin log-rate differences (mappability, GC) that no cell type explains
_BATCH_SD = 0.2
_CELL_ACTIVITY_SD = 0.3  # per cell and domain, so cells of one type differ and neighbours co-vary within a type
_CELL_LIBRARY_SD = 0.3  # shared by a cell's channels (cell quality) ...
_CHANNEL_LIBRARY_SD = 0.2  # ... and per channel
#: Dense entries of one chunk of cells x bins, so memory follows the non-zeros, not cells x bins.
_CHUNK_ENTRIES = 2**22


def _chromosomes(chromosome_bins: Sequence[int] | Mapping[str, int] | None) -> list[tuple[str, int]]:
    if chromosome_bins is None:
        chromosome_bins = DEFAULT_CHROMOSOME_BINS
    if isinstance(chromosome_bins, Mapping):
        sizes = {str(k): v for k, v in chromosome_bins.items()}
        named = [(c, sizes[c]) for c in sort_chromosomes(sizes)]
    else:
        named = [(f"chr{i + 1}", n) for i, n in enumerate(chromosome_bins)]
    bad = [(c, n) for c, n in named if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1]
    if not named or bad:
        raise ValueError(f"simulate_binned: chromosome_bins must give a positive number of bins per chromosome, got "
                         f"{chromosome_bins!r}.")
    return [(c, int(n)) for c, n in named]


def _domains(rng: np.random.Generator, sizes: list[int], length: tuple[int, int],
             fraction: float) -> np.ndarray:
    """``(n_domains, 2)`` first and past-the-end global bin of each domain, each inside one chromosome.

    Gaps of at least one bin separate domains, so every domain is its own run of bins;
    their mean makes about ``fraction`` of the genome lie in domains.
    """
    mean_gap = (length[0] + length[1]) / 2 * (1 - fraction) / fraction
    domains, offset = [], 0
    for n in sizes:
        position = int(rng.integers(0, int(mean_gap) + 1))
        while position + length[0] <= n:
            # a domain near the chromosome's end is drawn no longer than the bins left
            size = int(rng.integers(length[0], min(length[1], n - position) + 1))
            domains.append((offset + position, offset + position + size))
            position += size + int(rng.integers(1, max(2, int(2 * mean_gap)) + 1))
        offset += n
    return np.asarray(domains, dtype=np.int64).reshape(-1, 2)


def _shapes(domains: np.ndarray, n_bins: int) -> sp.csr_matrix:
    """Domains x bins: a half-sine bump over each domain (1 at its centre, small at its edges, 0 outside),
    so activity changes smoothly along the bins of a domain."""
    lengths = domains[:, 1] - domains[:, 0]
    rows = np.repeat(np.arange(len(domains)), lengths)
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    values = np.sin(np.pi * (within + 0.5) / np.repeat(lengths, lengths))
    return sp.csr_matrix((values, (rows, np.repeat(domains[:, 0], lengths) + within)), shape=(len(domains), n_bins))


def simulate_binned(
    n_cells: int = 600,
    chromosome_bins: Sequence[int] | Mapping[str, int] | None = None,
    channels: Sequence[str] = ("atac", "h3k27ac"),
    n_cell_types: int = 5,
    n_batches: int = 2,
    bin_size: int = 10_000,
    domain_length: tuple[int, int] = (5, 50),
    domain_fraction: float = 0.4,
    active_fraction: float = 0.5,
    effect: float = 2.0,
    repressive: Sequence[str] = REPRESSIVE_MARKS,
    library_size: float | Sequence[float] = 500.0,
    dispersion: float | None = 5.0,
    seed: int = 0,
) -> MultiModality:
    """Simulate single-cell epigenome channels (ATAC, histone marks) counted on the same genomic bins.

    The genome is cut into ``bin_size`` bins; runs of 5-50 contiguous bins (``domain_length``),
    never crossing a chromosome boundary, are *domains*. Each cell type activates a random
    ``active_fraction`` of the domains, and each cell scales its type's activity per domain
    by a log-normal factor. The log-rate of channel ``c`` in bin ``j`` of cell ``i`` is
    ``baseline_c[j] + batch shift + sign_c * effect * sum_d activity[i, d] * bump_d[j]``,
    ``bump_d`` a half-sine over domain ``d`` (smooth within it, zero outside). Channels share
    the domains: accessibility and active marks (``sign = +1``) go up where a domain is
    active, repressive marks (``sign = -1``, ``repressive``) cover the domains and drop where
    they are active. Counts are negative binomial (``dispersion``; ``None``: Poisson) with
    mean ``library[i, c] * softmax_j(log-rate)``, the library log-normal per cell and channel.
    Cells are generated in chunks, so memory follows the non-zeros.

    Parameters
    ----------
    n_cells, n_cell_types, n_batches
        Cells, and the cell types and batches they are drawn from uniformly.
    chromosome_bins
        Bins per chromosome: a sequence (named ``chr1``, ``chr2``, ...) or a mapping from
        chromosome name to bins, put in genome order (chr1..chr19, chrX, chrY, ...). Default
        ``DEFAULT_CHROMOSOME_BINS``, the mouse chromosomes scaled to 2,000 bins.
    channels
        Modality names, one channel each, e.g. ``("atac", "h3k27ac", "h3k27me3")``.
    bin_size
        Bin width in bases (only the coordinates depend on it).
    domain_length
        Fewest and most bins of a domain.
    domain_fraction
        Fraction of bins in domains the spacing between them aims at.
    active_fraction
        Probability that a cell type activates a domain.
    effect
        Log-fold change of a channel at the centre of an active domain.
    repressive
        Channels (case-insensitive) whose signal drops where a domain is active.
    library_size
        Median counts per cell, for all channels or one per channel.
    dispersion
        Negative binomial dispersion (smaller: more overdispersed); ``None`` for Poisson.
    seed
        Seed of the one ``np.random.default_rng`` all draws come from.

    Returns
    -------
    MultiModality
        One modality per channel (likelihood ``"poisson"``, ``batch_key=["batch"]``), CSR
        float32 counts on the same bins in genome order. var has ``chrom``, ``start``, ``end``
        (BED), ``bin_index`` (within the chromosome) and ``domain`` (its index, -1 outside);
        bins are named ``chr1_0_10000`` as ``bin_genome`` names them (``atac:chr1_0_10000``
        with several channels). obs has categorical ``cell_type`` (``T0``, ...) and ``batch``
        (``batch0``, ...); ``uns["simulation"]`` the arguments, ``domains`` (first and
        past-the-end bin) and ``active`` (cell types x domains, 0/1).

    Examples
    --------
    >>> data = simulate_binned(n_cells=200, channels=("atac", "h3k27ac", "h3k27me3"), seed=1)
    >>> data.mod["h3k27me3"].shape, data.mod["h3k27me3"].var_names[0]
    ((200, 2000), 'h3k27me3:chr1_0_10000')
    """
    ints = {"n_cells": n_cells, "n_cell_types": n_cell_types, "n_batches": n_batches, "bin_size": bin_size}
    for key, value in ints.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"simulate_binned: {key} must be a positive integer, got {value!r}.")
    channels = [channels] if isinstance(channels, str) else [str(c) for c in channels]
    if not channels or len(set(channels)) != len(channels):
        raise ValueError(f"simulate_binned: channels must be distinct names, got {channels!r}.")
    low, high = (int(v) for v in domain_length)
    if not 1 <= low <= high:
        raise ValueError(f"simulate_binned: domain_length must be (fewest, most) bins, 1 <= fewest <= most, "
                         f"got {domain_length!r}.")
    if not (0 < domain_fraction < 1 and 0 < active_fraction <= 1):
        raise ValueError(f"simulate_binned: domain_fraction must be in (0, 1) and active_fraction in (0, 1], got "
                         f"{domain_fraction!r} and {active_fraction!r}.")
    libraries = np.broadcast_to(np.asarray(library_size, dtype=np.float64), (len(channels),))
    if (libraries <= 0).any() or (dispersion is not None and dispersion <= 0):
        raise ValueError(f"simulate_binned: library_size and dispersion must be positive, got {library_size!r} and "
                         f"{dispersion!r}.")
    genome = _chromosomes(chromosome_bins)
    sizes = [n for _, n in genome]
    n_bins = sum(sizes)
    rng = np.random.default_rng(seed)

    cell_type = rng.integers(n_cell_types, size=n_cells)
    batch = rng.integers(n_batches, size=n_cells)
    domains = _domains(rng, sizes, (low, high), float(domain_fraction))
    if not len(domains):
        raise ValueError(f"simulate_binned: no domain of {low}-{high} bins fits the chromosomes {sizes}; give longer "
                         "chromosomes or shorter domains.")
    active = (rng.random((n_cell_types, len(domains))) < active_fraction).astype(np.float64)
    bumps = _shapes(domains, n_bins)
    occupancy = np.asarray(bumps.sum(axis=0)).ravel()
    repressed = {r.lower() for r in repressive}
    sign = np.array([-1.0 if c.lower() in repressed else 1.0 for c in channels])
    baseline = rng.normal(0, _BASELINE_SD, (len(channels), n_bins))
    batch_shift = rng.normal(0, _BATCH_SD, (len(channels), n_batches, n_bins))
    library = libraries * np.exp(rng.normal(0, _CELL_LIBRARY_SD, (n_cells, 1))
                                 + rng.normal(0, _CHANNEL_LIBRARY_SD, (n_cells, len(channels))))
    # Independent streams, each drawn in cell order, make the counts independent of the chunk size.
    activity_rng, *count_rngs = rng.spawn(1 + 2 * len(channels))

    step = max(1, _CHUNK_ENTRIES // n_bins)
    chunks: list[list[sp.csr_matrix]] = [[] for _ in channels]
    for start in range(0, n_cells, step):
        rows = slice(start, min(start + step, n_cells))
        activity = active[cell_type[rows]] * np.exp(activity_rng.normal(0, _CELL_ACTIVITY_SD,
                                                                        (rows.stop - rows.start, len(domains))))
        signal = np.asarray(bumps.T @ activity.T).T
        for c in range(len(channels)):
            # a repressive mark covers every domain (occupancy) and is removed where one is active
            log_rate = baseline[c] + batch_shift[c, batch[rows]] + effect * (
                sign[c] * signal + (sign[c] < 0) * occupancy)
            rate = np.exp(log_rate - log_rate.max(axis=1, keepdims=True))
            mean = library[rows, c:c + 1] * rate / rate.sum(axis=1, keepdims=True)
            if dispersion is not None:
                mean = count_rngs[2 * c].gamma(dispersion, mean / dispersion)
            chunks[c].append(sp.csr_matrix(count_rngs[2 * c + 1].poisson(mean).astype(np.float32)))

    chrom = np.repeat([c for c, _ in genome], sizes).astype(object)
    bin_index = np.arange(n_bins) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    domain = np.full(n_bins, -1, dtype=np.int64)
    domain[bumps.indices] = np.repeat(np.arange(len(domains)), np.diff(bumps.indptr))
    names = [f"{c}_{s}_{s + bin_size}" for c, s in zip(chrom, (bin_index * bin_size).tolist())]
    var = pd.DataFrame({"chrom": chrom, "start": bin_index * bin_size, "end": (bin_index + 1) * bin_size,
                        "bin_index": bin_index, "domain": domain})
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical.from_codes(cell_type, categories=[f"T{t}" for t in range(n_cell_types)]),
         "batch": pd.Categorical.from_codes(batch, categories=[f"batch{b}" for b in range(n_batches)])},
        index=np.char.add("cell", np.char.zfill(np.arange(n_cells).astype(str), 6)),
    )
    mods = {}
    for c, channel in enumerate(channels):
        # several channels: <channel>:chrN_start_end, as bin_genome names bins (names are unique across modalities)
        index = pd.Index([f"{channel}:{n}" for n in names] if len(channels) > 1 else names, dtype=object)
        mods[channel] = ad.AnnData(sp.vstack(chunks[c], format="csr"), obs=obs.copy(), var=var.set_index(index),
                                   uns={BINS_KEY: {"bin_size": int(bin_size)}})
    args = dict(ints, channels=channels, chromosomes=[c for c, _ in genome], chromosome_bins=sizes,
                domain_length=[low, high], domain_fraction=float(domain_fraction),
                active_fraction=float(active_fraction), effect=float(effect), sign=sign.tolist(),
                library_size=libraries.tolist(), dispersion=None if dispersion is None else float(dispersion),
                seed=seed)
    if args["dispersion"] is None:
        del args["dispersion"]  # h5 files cannot hold None
    with no_pull():
        mdata = md.MuData(mods, obs=obs, uns={"simulation": {**args, "domains": domains,
                                                              "active": active.astype(np.int8)}})
    return MultiModality(mdata, likelihoods={c: "poisson" for c in channels}, batch_key="batch")
