"""MuData plumbing shared by the data layer: global annotations kept across rebuilds, mudata's options."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd


@contextlib.contextmanager
def no_pull() -> Iterator[None]:
    """Keep MuData from copying modality ``obs``/``var`` columns into the global tables.

    This is mudata's announced future default; applying it inside this package's own
    operations keeps the global ``obs`` exactly what was put there and silences
    mudata's FutureWarning on every update. ``mudata.set_options`` restores the
    user's setting on exit.
    """
    with md.set_options(pull_on_update=False):
        yield


def with_var_names(adata: ad.AnnData, names: pd.Index) -> ad.AnnData:
    """A new AnnData sharing ``adata``'s matrices, with feature names ``names``."""
    if adata.var_names.equals(names):
        return adata
    renamed = adata.copy() if adata.is_view else ad.AnnData(adata)
    renamed.var_names = names
    return renamed


def global_annotations(source: md.MuData, mods: Mapping[str, Any], var: pd.DataFrame) -> dict[str, Any]:
    """``source``'s global annotations as MuData arguments, with ``var`` as the global var."""
    # mudata recreates the per-modality membership masks, so they are not passed on
    return {
        "obs": source.obs,
        "var": var,
        "obsm": {k: v for k, v in source.obsm.items() if k not in mods},
        "varm": {k: v for k, v in source.varm.items() if k not in mods},
        "obsp": dict(source.obsp),
        "varp": dict(source.varp),
        "uns": dict(source.uns),
    }


def renamed_var(source: md.MuData, modalities: Mapping[str, ad.AnnData]) -> pd.DataFrame:
    """``source.var`` (rows in its own order, aligned with ``varm``/``varp``) under the
    modalities' new feature names, placed through ``source.varmap``."""
    index = np.empty(source.n_vars, dtype=object)
    placed = np.zeros(source.n_vars, dtype=bool)
    for name, mod in modalities.items():
        pos = np.asarray(source.varmap[name], dtype=np.int64) if name in source.varmap else np.zeros(0, np.int64)
        if pos.shape != (source.n_vars,) or int((pos > 0).sum()) != mod.n_vars:
            placed[:] = False
            break
        index[pos > 0] = mod.var_names.to_numpy()[pos[pos > 0] - 1]
        placed |= pos > 0
    if not placed.all():
        raise ValueError(
            "feature names are not unique across modalities and the MuData's global var does not map onto them; "
            "call mdata.var_names_make_unique() (mudata) or rename the features of one modality first."
        )
    var = source.var.copy()
    var.index = pd.Index(index)
    return var


def take_cells(mdata: md.MuData, keep: pd.Index) -> md.MuData:
    """``mdata`` restricted to and ordered by ``keep``, global annotations included."""
    pos = mdata.obs_names.get_indexer(keep) if mdata.obs_names.is_unique else np.array([-1])
    if (pos < 0).any():
        raise ValueError(
            "the global obs of the MuData does not list every cell of its modalities; call mdata.update() "
            "(or build the MultiModality from dict(mdata.mod)) first."
        )
    with no_pull():
        return mdata[pos].copy()
