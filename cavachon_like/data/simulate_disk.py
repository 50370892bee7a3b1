"""Large paired ATAC + RNA data written straight to an ``.h5mu`` file, a chunk of cells at a time.

For testing and measuring training from disk (``read_h5mu(..., backed=True)``) at sizes
that do not fit in memory. Memory grows with one chunk of cells and the per-type
profiles, never with the whole matrix.
"""
from __future__ import annotations

from os import PathLike
from pathlib import Path

import anndata as ad
import h5py
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .annotations import no_pull
from .backed import CSRWriter
from .multimodality import MultiModality
from .simulate import _categorical, _names


def _profiles(rng: np.random.Generator, n_types: int, n_batches: int, n_features: int,
              type_sd: float, batch_sd: float) -> np.ndarray:
    """Cumulative sampling distributions over features, one per (cell type, batch), stacked so that
    distribution ``g`` spans ``(g, g + 1]``: one ``searchsorted`` then samples every group at once."""
    base = rng.normal(0.0, 1.0, n_features)
    types = rng.normal(0.0, type_sd, (n_types, n_features)) * (rng.random((n_types, n_features)) < 0.2)
    batches = rng.normal(0.0, batch_sd, (n_batches, n_features))
    logits = base + types[:, None, :] + batches[None, :, :]          # (types, batches, features)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True)).reshape(n_types * n_batches, n_features)
    cdf = np.cumsum(weights, axis=1)
    cdf /= cdf[:, -1:]
    return (cdf + np.arange(len(cdf))[:, None]).ravel()


def _draw(rng: np.random.Generator, cdf: np.ndarray, n_features: int, group: np.ndarray,
          draws: np.ndarray) -> sp.csr_matrix:
    """Cells x features counts of ``draws[i]`` features drawn for cell ``i`` from its group's distribution."""
    owner = np.repeat(np.arange(len(draws)), draws)
    g = group[owner]
    column = np.searchsorted(cdf, g + rng.random(len(owner)) * (1 - 1e-12), side="right") - g * n_features
    column = np.clip(column, 0, n_features - 1)
    counts = sp.csr_matrix((np.ones(len(owner), np.float32), (owner, column)), shape=(len(draws), n_features))
    counts.sum_duplicates()
    return counts


def simulate_to_disk(
    path: str | PathLike,
    n_cells: int = 1_000_000,
    n_atac: int = 200_000,
    n_rna: int = 20_000,
    atac_per_cell: float = 1000.0,
    rna_library: float = 1500.0,
    n_types: int = 10,
    n_batches: int = 4,
    chunk_cells: int = 20_000,
    seed: int = 0,
) -> Path:
    """Write paired data of ``n_cells`` cells to the ``.h5mu`` file ``path`` without holding it in memory.

    Each cell has a type and a batch. Its ATAC draws about ``atac_per_cell`` regions
    (Poisson, log-normal spread across cells) from its (type, batch) profile, duplicates
    counted once (``bernoulli`` data); its RNA draws a log-normal library around
    ``rna_library`` from the (type, batch) expression profile, duplicates summed (counts,
    ``zinb``). A type changes a fifth of the features' log-weights; batches shift all of
    them a little. Cells are written in chunks of ``chunk_cells``.

    Returns
    -------
    pathlib.Path
        ``path``; read it with ``read_h5mu(path, backed=True)``. ``obs`` has ``batch``
        and ``cell_type``.
    """
    for key, value in dict(n_cells=n_cells, n_atac=n_atac, n_rna=n_rna, n_types=n_types, n_batches=n_batches,
                           chunk_cells=chunk_cells).items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"simulate_to_disk: {key} must be a positive integer, got {value!r}.")
    path = Path(path)
    rng = np.random.default_rng(seed)
    cell_type = rng.integers(n_types, size=n_cells)
    batch = rng.integers(n_batches, size=n_cells)
    obs = pd.DataFrame({"batch": _categorical("batch", batch, n_batches),
                        "cell_type": _categorical("type", cell_type, n_types)}, index=_names("cell", n_cells, 8))
    sizes = {"atac": n_atac, "rna": n_rna}
    prefixes = {"atac": "peak", "rna": "gene"}
    # the annotations are written with empty matrices of the right shape, which are then filled
    shells = {k: ad.AnnData(sp.csr_matrix((n_cells, n), dtype=np.float32), obs=obs.copy(),
                            var=pd.DataFrame(index=_names(prefixes[k], n, 7)))
              for k, n in sizes.items()}
    with no_pull():
        shell = MultiModality(md.MuData(shells, obs=obs), likelihoods={"atac": "bernoulli", "rna": "zinb"},
                              batch_key="batch")
    shell.write_h5mu(path)
    del shells, shell

    cdf = {"atac": _profiles(rng, n_types, n_batches, n_atac, 1.5, 0.3),
           "rna": _profiles(rng, n_types, n_batches, n_rna, 1.0, 0.2)}
    mean = {"atac": atac_per_cell, "rna": rna_library}
    with h5py.File(path, "r+") as f:
        writers = {k: CSRWriter(f[f"mod/{k}/X"], n) for k, n in sizes.items()}
        for start in range(0, n_cells, chunk_cells):
            rows = slice(start, min(start + chunk_cells, n_cells))
            group = cell_type[rows] * n_batches + batch[rows]
            for k, writer in writers.items():
                draws = rng.poisson(mean[k] * rng.lognormal(0.0, 0.3, len(group)))
                counts = _draw(rng, cdf[k], sizes[k], group, draws)
                if k == "atac":
                    counts.data[:] = 1.0  # accessible or not
                writer.append(counts)
        for writer in writers.values():
            writer.close()
    return path
