"""Latents into an AnnData/MuData in scverse conventions, shared by models and query mappings."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def write_latents(data: Any, latents: dict[str, np.ndarray]) -> list[str]:
    """Write :meth:`~cavachon_like.model.MultimodalModel.get_latent_representation`'s arrays into ``data``.

    Matrices go to ``obsm[key]``, per-cell labels (``code_<latent>``) to categorical
    ``obs[key]``, and each ``cluster_probabilities_<latent>`` also to
    ``obs["cluster_<latent>"]`` (its argmax, categorical). Returns the keys written
    (``"obsm/z_rna"``, ``"obs/cluster_rna"``, ...).
    """
    written = []
    for key, value in latents.items():
        value = np.asarray(value)
        if value.ndim == 1:
            data.obs[key] = pd.Categorical(value.astype(str), categories=[str(v) for v in np.unique(value)])
            written.append(f"obs/{key}")
            continue
        data.obsm[key] = value
        written.append(f"obsm/{key}")
        if key.startswith("cluster_probabilities_"):
            name = key[len("cluster_probabilities_"):]
            data.obs[f"cluster_{name}"] = pd.Categorical(value.argmax(axis=1).astype(str))
            written.append(f"obs/cluster_{name}")
    return written
