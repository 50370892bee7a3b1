"""Paired ATAC + RNA data with a known DAG (atac -> rna), for tests and demos."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .multimodality import MultiModality, no_pull

# Scales chosen so that ATAC is ~10% dense and the child factor moves RNA about as
# much as the parent factor does (it must be recoverable, not a rounding error).
_CENTRE_SD = 1.5
_WITHIN_SD = 0.3
_ATAC_BIAS = -3.0
_BATCH_SD = 0.4
_LIBRARY_MEAN = 2000.0
_LIBRARY_LOG_SD = 0.3
_DISPERSION = 3.0
#: Dense logits per chunk of cells while sampling ATAC, so memory follows the
#: non-zeros rather than cells x regions (the scaling benchmarks simulate 160k x 200k).
_CHUNK_ENTRIES = 2**24


def _names(prefix: str, n: int, width: int) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(np.arange(n).astype(str), width))


def _categorical(prefix: str, codes: np.ndarray, n: int) -> pd.Categorical:
    return pd.Categorical.from_codes(codes, categories=[f"{prefix}{i}" for i in range(n)])


def simulate(
    n_cells: int = 2000,
    n_batches: int = 3,
    n_atac: int = 1000,
    n_rna: int = 300,
    n_parent_types: int = 4,
    n_child_states: int = 2,
    parent_dim: int = 4,
    child_dim: int = 2,
    child_parent_types: Sequence[int] | None = None,
    atac_bias: float = _ATAC_BIAS,
    seed: int = 0,
) -> MultiModality:
    """Simulate SNARE-seq-like paired data where chromatin drives part of expression.

    A parent latent ``u`` (around ``n_parent_types`` cluster centres) generates ATAC
    as ``Bernoulli(sigmoid(W_a u + batch shift + bias))``. RNA is
    ``NB(library * softmax(W_r1 u + W_r2 v + batch shift + bias), dispersion)``
    where the child latent ``v`` (around ``n_child_states`` centres, independent of
    ``u``) does not touch ATAC. Library sizes are log-normal around 2000.

    Returns
    -------
    MultiModality
        Modalities ``"atac"`` (``"bernoulli"``) and ``"rna"`` (``"zinb"``), CSR
        float32, both with ``batch_key=["batch"]``. ``obs`` (global and per
        modality) has ``batch``, ``cell_type`` (e.g. ``"P2_C1"``),
        ``parent_type`` and ``child_state``; global ``obsm`` has ``true_parent``
        and ``true_child``; ``uns["simulation"]`` holds the DAG and the arguments.
    """
    args = dict(n_cells=n_cells, n_batches=n_batches, n_atac=n_atac, n_rna=n_rna, n_parent_types=n_parent_types,
                n_child_states=n_child_states, parent_dim=parent_dim, child_dim=child_dim, seed=seed)
    for key, value in args.items():
        if key != "seed" and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"simulate: {key} must be a positive integer, got {value!r}.")
    extra = {"atac_bias": float(atac_bias)}
    if child_parent_types is not None:
        extra["child_parent_types"] = [int(t) for t in child_parent_types]
    rng = np.random.default_rng(seed)

    parent = rng.integers(n_parent_types, size=n_cells)
    child = rng.integers(n_child_states, size=n_cells)
    if child_parent_types is not None:
        unknown = sorted(set(child_parent_types) - set(range(n_parent_types)))
        if unknown:
            raise ValueError(f"simulate: child_parent_types {unknown} are not parent types 0..{n_parent_types - 1}.")
        child[~np.isin(parent, list(child_parent_types))] = 0
    batch = rng.integers(n_batches, size=n_cells)
    u = rng.normal(0, _CENTRE_SD, (n_parent_types, parent_dim))[parent]
    u += rng.normal(0, _WITHIN_SD, u.shape)
    v = rng.normal(0, _CENTRE_SD, (n_child_states, child_dim))[child]
    v += rng.normal(0, _WITHIN_SD, v.shape)

    # loadings scaled by 1/sqrt(dim) so each factor contributes comparable variance
    w_atac = rng.normal(0, 1 / np.sqrt(parent_dim), (parent_dim, n_atac))
    batch_shift = rng.normal(0, _BATCH_SD, (n_batches, n_atac))
    region_bias = rng.normal(atac_bias, 0.5, n_atac)
    atac = _sample_bernoulli(
        rng, lambda rows: u[rows] @ w_atac + batch_shift[batch[rows]] + region_bias, n_cells, n_atac
    )

    w_parent = rng.normal(0, 1 / np.sqrt(parent_dim), (parent_dim, n_rna))
    w_child = rng.normal(0, 1 / np.sqrt(child_dim), (child_dim, n_rna))
    eta = u @ w_parent + v @ w_child + rng.normal(0, _BATCH_SD, (n_batches, n_rna))[batch] + rng.normal(0, 1, n_rna)
    expression = np.exp(eta - eta.max(axis=1, keepdims=True))
    library = rng.lognormal(np.log(_LIBRARY_MEAN), _LIBRARY_LOG_SD, n_cells)
    mean = library[:, None] * expression / expression.sum(axis=1, keepdims=True)
    dispersion = rng.lognormal(np.log(_DISPERSION), 0.3, n_rna)
    # negative binomial as a gamma-Poisson mixture
    rna = sp.csr_matrix(rng.poisson(rng.gamma(dispersion, mean / dispersion)).astype(np.float32))

    obs = pd.DataFrame(
        {
            "batch": _categorical("batch", batch, n_batches),
            "cell_type": pd.Categorical.from_codes(
                parent * n_child_states + child,
                categories=[f"P{p}_C{c}" for p in range(n_parent_types) for c in range(n_child_states)],
            ),
            "parent_type": _categorical("P", parent, n_parent_types),
            "child_state": _categorical("C", child, n_child_states),
        },
        index=_names("cell", n_cells, 6),
    )
    mods = {
        "atac": ad.AnnData(atac, obs=obs.copy(), var=pd.DataFrame(index=_names("peak", n_atac, 6))),
        "rna": ad.AnnData(rna, obs=obs.copy(), var=pd.DataFrame(index=_names("gene", n_rna, 5))),
    }
    with no_pull():
        mdata = md.MuData(
            mods,
            obs=obs,
            obsm={"true_parent": u, "true_child": v},
            uns={"simulation": {"dag": {"atac": [], "rna": ["atac"]}, **args, **extra}},
        )
    return MultiModality(mdata, likelihoods={"atac": "bernoulli", "rna": "zinb"}, batch_key="batch")


def _sample_bernoulli(
    rng: np.random.Generator, logits_of: Callable[[slice], np.ndarray], n_cells: int, n_features: int
) -> sp.csr_matrix:
    """CSR float32 draws of ``Bernoulli(sigmoid(logits_of(rows)))``, a chunk of cells at a time.

    Uniforms are drawn chunk by chunk in row order, which is the same stream as one
    ``(n_cells, n_features)`` draw, so the result does not depend on the chunk size.
    """
    step = max(1, _CHUNK_ENTRIES // max(n_features, 1))
    chunks = []
    for start in range(0, n_cells, step):
        logits = logits_of(slice(start, min(start + step, n_cells)))
        chunks.append(sp.csr_matrix((rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.float32)))
    return sp.vstack(chunks, format="csr")
