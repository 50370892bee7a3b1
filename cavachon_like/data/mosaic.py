"""Mosaic data: modalities measured in different (overlapping) sets of cells.

The package keeps every modality over the same cells in the same order (row ``i`` of every
matrix is one cell), so a mosaic data set is padded: a cell that lacks a modality gets an
empty row there (no stored values, so a sparse matrix grows by its row pointer only) and a
``False`` in that modality's ``obs[MEASURED_KEY]``. Models read the column (as the batches'
``measured`` entry) to leave those rows out of the likelihood and out of the posterior.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError
from .groups import name_examples

#: Boolean ``obs`` column of a modality: whether each cell was measured in it (absent: all were).
MEASURED_KEY = "cavachon_like_measured"


def measured(adata: ad.AnnData) -> np.ndarray:
    """Whether each cell of ``adata`` was measured in it (all ``True`` for a paired modality)."""
    if MEASURED_KEY not in adata.obs.columns:
        return np.ones(adata.n_obs, dtype=bool)
    return adata.obs[MEASURED_KEY].to_numpy(dtype=bool)


def _placed(matrix: Any, rows: np.ndarray, n_rows: int) -> Any:
    """``matrix`` with its row ``i`` at row ``rows[i]`` of an ``n_rows``-row result, the other rows empty."""
    if sp.issparse(matrix):
        csr = sp.csr_matrix(matrix)
        # a selection matrix: one sparse product, so only the row pointer grows with the new rows
        place = sp.csr_matrix((np.ones(len(rows), csr.dtype), (rows, np.arange(len(rows)))),
                              shape=(n_rows, csr.shape[0]))
        return (place @ csr).tocsr()
    dense = np.asarray(matrix)
    out = np.zeros((n_rows,) + dense.shape[1:], dtype=dense.dtype)
    out[rows] = dense
    return out


def pad_cells(adata: ad.AnnData, cells: pd.Index, name: str, batch_key: Sequence[str],
              sources: Sequence[pd.DataFrame]) -> ad.AnnData:
    """``adata`` over ``cells`` (a superset of its barcodes, in that order): empty rows for the
    cells it lacks, ``obs[MEASURED_KEY]`` marking which are measured.

    ``X``, ``layers`` and ``obsm`` are placed (zeros elsewhere); ``obsp`` would need pairs of
    cells it never saw and is dropped. The ``obs`` values of the added cells come from the
    first of ``sources`` (other tables indexed by barcode: the global ``obs``, the other
    modalities' ``obs``) that has the column; the ``batch_key`` columns must be found, because
    decoding the modality for those cells needs their batch.

    Raises
    ------
    InputError
        If a batch column cannot be filled for some added cells.
    """
    rows = cells.get_indexer(adata.obs_names)
    was = measured(adata)
    obs = adata.obs.reindex(cells)
    added = np.ones(len(cells), dtype=bool)
    added[rows] = False
    # Cell annotations (batch, labels) are the cell's, not the modality's: the added cells take
    # theirs from the other tables, so a batch key set later (e.g. by a config) finds them too.
    for column in obs.columns:
        for source in sources:
            gaps = added & obs[column].isna().to_numpy()
            if column in source.columns and gaps.any():
                if isinstance(obs[column].dtype, pd.CategoricalDtype):
                    obs[column] = obs[column].astype(object)
                obs.loc[gaps, column] = source[column].reindex(cells).to_numpy()[gaps]
    for column in batch_key:
        unknown = added & (obs[column].isna().to_numpy() if column in obs.columns else True)
        if unknown.any():
            raise InputError(
                f"modality {name!r} lacks {int(added.sum())} of the {len(cells)} cells (mosaic data), and its batch "
                f"column {column!r} is unknown for {int(unknown.sum())} of them (e.g. "
                f"{name_examples(cells[unknown])}): decoding {name!r} for a cell needs its batch. Put {column!r} in "
                "the global obs (mdata.obs) or in another modality's obs for every cell."
            )
    flags = np.zeros(len(cells), dtype=bool)
    flags[rows] = was
    obs[MEASURED_KEY] = flags
    return ad.AnnData(
        X=None if adata.X is None else _placed(adata.X, rows, len(cells)),
        obs=obs,
        var=adata.var,
        uns=dict(adata.uns),
        layers={k: _placed(v, rows, len(cells)) for k, v in adata.layers.items()},
        obsm={k: _placed(np.asarray(v) if not sp.issparse(v) else v, rows, len(cells)) for k, v in adata.obsm.items()
              if not isinstance(v, pd.DataFrame)},
        varm=dict(adata.varm),
    )


def pad_modalities(adatas: Mapping[str, ad.AnnData], cells: pd.Index, tables: Sequence[pd.DataFrame],
                   batch_keys: Mapping[str, Sequence[str]]) -> dict[str, ad.AnnData]:
    """Every modality over ``cells`` (:func:`pad_cells`), annotations of added cells taken from
    ``tables`` (e.g. the global ``obs``) and the other modalities, then
    :func:`check_some_modality`."""
    padded = dict(adatas)
    for name, adata in adatas.items():
        if not adata.obs_names.equals(cells):
            others = list(tables) + [a.obs for other, a in adatas.items() if other != name]
            padded[name] = pad_cells(adata, cells, name, batch_keys.get(name, []), others)
    check_some_modality(padded, cells)
    return padded


def check_some_modality(adatas: Mapping[str, ad.AnnData], cells: pd.Index) -> None:
    """Raise an :class:`~cavachon_like.errors.InputError` naming the cells no modality measures."""
    covered = np.zeros(len(cells), dtype=bool)
    for adata in adatas.values():
        covered |= measured(adata)
    if not covered.all():
        raise InputError(
            f"{int((~covered).sum())} cells are measured in no modality (e.g. {name_examples(cells[~covered])}): "
            "they carry no data to train on or to encode. Remove them (mm[mask]) before training."
        )
