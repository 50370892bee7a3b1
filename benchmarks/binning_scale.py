"""Genomic binning at scale (issue 12: "Binning 10,000 cells x 200,000 peaks runs in seconds and
memory proportional to non-zeros").

    python benchmarks/binning_scale.py [--cells 10000] [--peaks 200000] [--densities 0.00384 0.00768]

Builds a synthetic sparse ATAC matrix (CSR, float32 counts, 98% ones as in SNARE-seq) of
``--cells`` x ``--peaks`` peaks named ``chrN_start_end`` over the mm10 chromosomes (peaks spread in
proportion to chromosome length, 200-1,000 bases wide; peak popularity and cell depth vary as in
real data), at each ``--densities`` (default: SNARE-seq ATAC's 0.384% of the cells x peaks, and twice
that), and bins it two ways:

- ``bin_counts``: ``cavachon_like.data.bin_counts`` (names parsed, counts summed into 10 kb bins);
- ``bin_genome``: the QC step ``{step: bin_genome, modality: atac, bin_size: 10000, top_bins: 25000}``
  on a MultiModality holding the matrix (parsing, binning, choosing and aligning the bins, the new
  modality).

Each is run in a fresh process (so that the peak resident size is its own) and reports seconds
(wall), the peak of traced Python/NumPy allocations during the call (``tracemalloc``, a second run,
as tracing slows it) and the growth of the peak resident set size during the first call over the
process's size before it (Linux ``VmHWM``, reset before the call; the warm-up runs on a small matrix), with both per million non-zeros of the input. The input matrix itself
(12 bytes per non-zero as CSR) is built before measuring and is not counted. Memory proportional to
the non-zeros shows as a constant MB per million non-zeros across densities; a dense cells x bins
array would be 10,000 x 25,000 x 4 bytes = 1 GB whatever the density.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time
import tracemalloc

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the package imports TensorFlow; its start-up notes are noise here

#: mm10 chromosome lengths (UCSC), the genome of the shipped SNARE-seq data.
MM10 = {
    "chr1": 195_471_971, "chr2": 182_113_224, "chr3": 160_039_680, "chr4": 156_508_116, "chr5": 151_834_684,
    "chr6": 149_736_546, "chr7": 145_441_459, "chr8": 129_401_213, "chr9": 124_595_110, "chr10": 130_694_993,
    "chr11": 122_082_543, "chr12": 120_129_022, "chr13": 120_421_639, "chr14": 124_902_244, "chr15": 104_043_685,
    "chr16": 98_207_768, "chr17": 94_987_271, "chr18": 90_702_639, "chr19": 61_431_566, "chrX": 171_031_299,
    "chrY": 91_744_698,
}
#: Non-zero fraction of SNARE-seq ATAC (10,309 cells x 25,734 peaks, 1,018,463 non-zeros).
SNARE_DENSITY = 1_018_463 / (10_309 * 25_734)
SLOT = 1_000  # peaks start on distinct 1 kb slots, so names are unique


def peaks_matrix(n_cells: int, n_peaks: int, density: float, seed: int = 0):
    """A cells x peaks AnnData (CSR float32) with ``chrN_start_end`` names, ~``density`` non-zero."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    chroms = list(MM10)
    slots = np.array([MM10[c] // SLOT - 1 for c in chroms])
    offsets = np.r_[0, np.cumsum(slots)]
    slot = np.sort(rng.choice(offsets[-1], n_peaks, replace=False))
    which = np.searchsorted(offsets, slot, side="right") - 1
    start = (slot - offsets[which]) * SLOT + rng.integers(0, SLOT // 2, n_peaks)
    end = start + rng.integers(200, 1_000, n_peaks)
    names = pd.Index(np.char.add(np.char.add(np.char.add(np.asarray(chroms)[which], "_"), start.astype(str)),
                                 np.char.add("_", end.astype(str))), dtype=object)
    # Depth per cell (log-normal) and popularity per peak (gamma), as in real ATAC; duplicates summed.
    nnz = round(density * n_cells * n_peaks)
    depth = rng.lognormal(0.0, 0.5, n_cells)
    rows = rng.choice(n_cells, nnz, p=depth / depth.sum())
    popularity = rng.gamma(0.5, 1.0, n_peaks)
    cols = rng.choice(n_peaks, nnz, p=popularity / popularity.sum())
    values = (1 + (rng.random(nnz) < 0.02)).astype(np.float32)
    x = sp.csr_matrix((values, (rows, cols)), shape=(n_cells, n_peaks), dtype=np.float32)
    x.sum_duplicates()
    obs = pd.DataFrame({"batch": "b0"}, index=[f"cell{i}" for i in range(n_cells)])
    return ad.AnnData(x, obs=obs, var=pd.DataFrame(index=names))


def _call(kind: str, adata):
    from cavachon_like.data import BinGenome, bin_counts

    if kind == "bin_counts":
        return lambda: bin_counts(adata, 10_000)
    import mudata as md

    from cavachon_like import MultiModality
    from cavachon_like.data import Modality

    with md.set_options(pull_on_update=False):
        mm = MultiModality(md.MuData({"atac": Modality(adata, likelihood="poisson", name="atac")}))
    step = BinGenome("atac", bin_size=10_000, top_bins=25_000)
    return lambda: step(mm)


def _peak_rss_kb(reset: bool = False) -> int:
    """The process's peak resident set size in kB; ``reset`` first lowers it to the current size
    (Linux ``/proc/self/clear_refs``), so that the peak is that of what follows. Elsewhere, the
    lifetime peak of ``getrusage`` (then the growth shows only above the earlier peaks)."""
    try:
        if reset:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")
        with open("/proc/self/status") as status:
            return int(next(line for line in status if line.startswith("VmHWM:")).split()[1])
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(kind: str, n_cells: int, n_peaks: int, density: float, queue) -> None:
    """In a fresh process: build the matrix, then time and measure one binning call."""
    import warnings

    warnings.simplefilter("ignore")
    _call(kind, peaks_matrix(200, 2_000, density, seed=1))()  # imports and first-call costs, on a small matrix
    adata = peaks_matrix(n_cells, n_peaks, density)
    call = _call(kind, adata)
    rss_before = _peak_rss_kb(reset=True)
    started = time.perf_counter()
    out = call()
    seconds = time.perf_counter() - started
    rss_peak = _peak_rss_kb()
    x = out.X if kind == "bin_counts" else out.modality("atac").X
    n_bins = x.shape[1]
    del out
    tracemalloc.start()
    result = call()
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del result
    queue.put({"kind": kind, "nnz": int(adata.X.nnz), "seconds": seconds, "traced_mb": traced / 2**20,
               "rss_growth_mb": max(0, rss_peak - rss_before) / 2**10, "bins": n_bins, "out_nnz": int(x.nnz),
               "dense": not hasattr(x, "nnz")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--peaks", type=int, default=200_000)
    parser.add_argument("--densities", type=float, nargs="+", default=[SNARE_DENSITY, 2 * SNARE_DENSITY])
    parser.add_argument("--kinds", nargs="+", default=["bin_counts", "bin_genome"], choices=["bin_counts", "bin_genome"])
    args = parser.parse_args()
    context = mp.get_context("spawn")
    print(f"{args.cells:,} cells x {args.peaks:,} peaks, 10 kb bins (top 25,000 for bin_genome)")
    print(f"{'step':<11} {'density':>8} {'nnz':>11} {'bins':>7} {'out nnz':>10} {'seconds':>8} {'traced MB':>10} "
          f"{'MB/M nnz':>9} {'RSS+ MB':>8} {'MB/M nnz':>9}")
    for kind in args.kinds:
        for density in args.densities:
            queue = context.Queue()
            worker = context.Process(target=measure, args=(kind, args.cells, args.peaks, density, queue))
            worker.start()
            row = queue.get()
            worker.join()
            million = row["nnz"] / 1e6
            print(f"{kind:<11} {density:>8.3%} {row['nnz']:>11,} {row['bins']:>7,} {row['out_nnz']:>10,} "
                  f"{row['seconds']:>8.2f} {row['traced_mb']:>10.1f} {row['traced_mb'] / million:>9.1f} "
                  f"{row['rss_growth_mb']:>8.1f} {row['rss_growth_mb'] / million:>9.1f}"
                  + ("  DENSE OUTPUT" if row["dense"] else ""), flush=True)


if __name__ == "__main__":
    main()
