"""Matching cells across modalities by barcode: unique barcodes, the shared ones, or all of them."""
from __future__ import annotations

from collections.abc import Mapping

import anndata as ad
import numpy as np
import pandas as pd

from .groups import name_examples


def union_barcodes(adatas: Mapping[str, ad.AnnData]) -> pd.Index:
    """Every barcode of any modality, in the order first seen (modalities in order)."""
    names = [a.obs_names for a in adatas.values()]
    return pd.Index(pd.unique(np.concatenate([n.to_numpy(dtype=object) for n in names])))


def check_unique_barcodes(adatas: Mapping[str, ad.AnnData]) -> None:
    """Raise a ValueError naming a modality with duplicated barcodes."""
    for name, adata in adatas.items():
        dup = adata.obs_names[adata.obs_names.duplicated()].unique()
        if len(dup):
            raise ValueError(
                f"modality {name!r} has {len(dup)} duplicated cell barcodes (e.g. {name_examples(dup)}); cells are "
                "matched across modalities by barcode, so make them unique consistently in every modality "
                "(e.g. prefix each with its sample)."
            )


def shared_barcodes(adatas: Mapping[str, ad.AnnData], join: str) -> tuple[pd.Index, dict[str, int]]:
    """Barcodes kept (in the first modality's order) and how many each modality loses."""
    names = {k: a.obs_names for k, a in adatas.items()}
    first = next(iter(names.values()))
    keep = first
    for other in names.values():
        keep = keep[keep.isin(other)]
    lost = {k: int(len(idx) - len(keep)) for k, idx in names.items()}
    if join == "strict" and any(lost.values()):
        lines = [
            f"  {k!r}: {n} of {len(names[k])} barcodes are missing from other modalities"
            + (f" (e.g. {name_examples(names[k][~names[k].isin(keep)])})" if n else "")
            for k, n in lost.items()
        ]
        raise ValueError(
            "modalities do not have the same cell barcodes (join='strict'):\n" + "\n".join(lines)
            + "\nPass join='inner' to keep only the cells present in every modality, or join='outer' to keep "
            "every cell and model the modalities each lacks as missing (mosaic data)."
        )
    if not len(keep):
        examples = "; ".join(f"{k!r}: {name_examples(idx)}" for k, idx in names.items())
        raise ValueError(
            f"no cell barcode is shared by all modalities ({examples}); check that barcodes are written the "
            "same way in every modality (prefixes, '-1' suffixes)."
        )
    return keep, lost
