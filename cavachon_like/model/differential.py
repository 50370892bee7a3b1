"""Bayesian differential expression through the public model interface.

The statistics follow scvi-tools' "change" mode (Boyeau et al., 2019): a log2
fold-change margin ``delta``, the posterior probability of a change beyond it, log
Bayes factors and a call that controls the posterior expected false discovery
rate. What is compared is the *group mean* of the decoded expression, the quantity
the observed fold change estimates from the data, so the two can be checked against
each other (``lfc_median`` against ``observed_lfc``). The paper's Eq. S7 compares
random cell pairs instead.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.groups import resolve_groups
from ..defaults import DEFAULT_DELTA, DEFAULT_FDR

#: Decoded values held in memory at once (cells x features), about 256 MB of float32.
_CHUNK_VALUES = 64_000_000


def _bootstrap_means(model: Any, data: Any, modality: str, cells: np.ndarray, n_draws: int, max_cells: int,
                     rng: np.random.Generator, **decode: Any) -> np.ndarray:
    """Group means of the decoded values, one per draw: a bootstrap sample of the group's
    cells, each with its own posterior sample. Shape draws x features."""
    size = min(len(cells), max_cells)
    draws = rng.choice(cells, (n_draws, size), replace=True)
    n_features = data.mod[modality].n_vars
    per_chunk = max(1, _CHUNK_VALUES // (size * n_features))
    means = np.empty((n_draws, n_features), dtype=np.float64)
    for start in range(0, n_draws, per_chunk):
        chunk = draws[start:start + per_chunk]
        values = model.get_normalized_expression(data, modality, indices=chunk.ravel(), n_samples=1,
                                                 seed=int(rng.integers(2**31)), **decode)
        means[start:start + len(chunk)] = values.reshape(len(chunk), size, n_features).mean(axis=1)
    return means


def observed_summary(data: Any, modality: str, cells: np.ndarray, support: str,
                     library_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Per feature, the fraction of ``cells`` where it is detected (non-zero) and its
    observed mean in the units of the decoded values: for ``"counts"`` each cell's
    counts scaled to ``library_size``, for ``"binary"`` the detection fraction, for
    ``"real"`` the plain mean. Sparse matrices stay sparse."""
    x = data.mod[modality].X[cells]
    x = x.tocsr() if sp.issparse(x) else np.asarray(x, dtype=np.float64)
    detected = np.asarray((x != 0).sum(axis=0)).ravel() / len(cells)
    if support == "binary":
        return detected, detected
    if support == "real":
        return detected, np.asarray(x.mean(axis=0)).ravel()
    totals = np.asarray(x.sum(axis=1)).ravel()
    scale = np.divide(library_size, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0)
    scaled = sp.diags(scale) @ x if sp.issparse(x) else x * scale[:, None]
    return detected, np.asarray(scaled.mean(axis=0)).ravel()


#: Units of decoded and observed means, by support.
UNITS = {"counts": "counts per {:,.0f}", "binary": "probability of detection", "real": "mean value"}


def expected_fdr(prob_de: np.ndarray) -> np.ndarray:
    """Posterior expected FDR of calling every feature at least as probable as each one.

    Features sorted by decreasing ``prob_de``: the mean of ``1 - prob_de`` over the
    list up to and including each feature and all features tied with it. It never
    decreases down the list, so thresholding it at a target calls the longest list
    whose expected FDR stays below the target.
    """
    order = np.argsort(-prob_de, kind="stable")
    ranked = prob_de[order]
    running = np.cumsum(1.0 - ranked) / np.arange(1, len(order) + 1)
    # a tie is called together or not at all: each takes the value at the tie's end
    last = np.searchsorted(-ranked, -ranked, side="right") - 1
    result = np.empty_like(running)
    result[order] = running[last]
    return result


def differential_expression(
    model: Any,
    data: Any,
    modality: str,
    groupby: str | None = None,
    group_a: Any = None,
    group_b: Any = None,
    delta: float = DEFAULT_DELTA,
    fdr_target: float = DEFAULT_FDR,
    n_draws: int = 100,
    max_cells: int = 500,
    library_size: float = 1e4,
    transform_batch: Any = "all",
    pseudocount: float | None = None,
    min_detected: float = 0.05,
    seed: int = 0,
    batch_size: int = 1024,
) -> pd.DataFrame:
    """Differential expression of ``modality`` between groups A and B (a fold-change test).

    Each of ``n_draws`` Monte Carlo draws takes a bootstrap sample of each group's
    cells (at most ``max_cells``; capping it overstates the uncertainty of larger
    groups, which errs on the safe side), one posterior sample per cell, decodes it
    with :meth:`~cavachon_like.model.MultimodalModel.get_normalized_expression`
    (averaged over batches by default) and averages over the cells. Per draw,
    ``lfc = log2(mean_A + c) - log2(mean_B + c)``.

    Parameters
    ----------
    model
        A trained model implementing :class:`~cavachon_like.model.base.MultimodalModel`.
    data
        A :class:`~cavachon_like.MultiModality` holding the cells.
    modality
        Modality whose features are compared.
    groupby, group_a, group_b
        The groups; see :func:`~cavachon_like.data.resolve_groups` (B defaults to
        every other cell).
    delta
        Log2 fold-change margin; ``prob_de = P(|lfc| > delta)``. With 0, ``prob_de``
        is the probability of the more probable sign (the paper's hypotheses).
    fdr_target
        Calls (``is_de``) are the longest list, by ``prob_de``, whose posterior
        expected FDR is at most this.
    n_draws, max_cells
        Monte Carlo draws and cells per group per draw.
    library_size, transform_batch
        Passed to ``get_normalized_expression``.
    pseudocount
        Added to group means before the log; default 1% of the average decoded value
        of a feature, which keeps features that are essentially absent in both
        groups from reaching large fold changes.
    min_detected
        A call also needs the feature detected (non-zero) in at least this fraction
        of the cells of the group where it is higher.
    seed
        Seeds the bootstrap and the posterior samples.

    Returns
    -------
    pandas.DataFrame
        One row per feature: up calls, then features not called, then down calls,
        each by decreasing ``lfc_median``:

        - ``lfc_mean``, ``lfc_median``, ``lfc_std``: posterior log2 fold change A / B;
        - ``prob_de``, ``log_bayes_factor`` (natural log of ``prob_de`` odds, with
          ``(k + 0.5) / (n_draws + 1)`` so that it stays finite), ``expected_fdr``
          (see :func:`expected_fdr`), ``is_de`` (the call), ``direction``
          (``"up"``/``"down"`` in A, the sign of ``lfc_median``);
        - ``score``: the ranking for GSEA, ``lfc_median`` (continuous, so genes do not
          tie the way saturated probabilities do; the decoder already smooths the
          fold changes of sparsely detected genes);
        - ``decoded_mean_a``/``_b``: group means of the decoded values, in the unit in
          ``attrs["units"]`` (counts per ``library_size`` for count modalities, the
          probability of detection for binary ones, see :data:`UNITS`);
        - ``observed_mean_a``/``_b``: the same from the data (see
          :func:`observed_summary`), ``observed_lfc`` (log2, same pseudocount) and
          ``detected_a``/``_b`` (fraction of cells with a non-zero value).

        ``attrs`` records the groups, their sizes and every setting.
    """
    if delta < 0:
        raise ValueError(f"delta is a margin on |log2 fold change| and must be >= 0, got {delta}.")
    if not 0 < fdr_target < 1:
        raise ValueError(f"fdr_target must be in (0, 1), got {fdr_target}.")
    if int(n_draws) < 10:
        raise ValueError(f"n_draws must be at least 10 for usable probabilities, got {n_draws}.")
    if modality not in model.modality_names:
        raise ValueError(f"the model has no modality {modality!r}; it has {model.modality_names}.")
    a, b, name_a, name_b = resolve_groups(data, group_a, group_b, groupby)
    rng = np.random.default_rng(seed)
    decode = {"library_size": library_size, "transform_batch": transform_batch, "batch_size": batch_size}
    mean_a = _bootstrap_means(model, data, modality, a, int(n_draws), int(max_cells), rng, **decode)
    mean_b = _bootstrap_means(model, data, modality, b, int(n_draws), int(max_cells), rng, **decode)
    if pseudocount is None:
        pseudocount = 0.01 * float(np.concatenate([mean_a, mean_b]).mean())
    lfc = np.log2(mean_a + pseudocount) - np.log2(mean_b + pseudocount)
    up, down = (lfc > delta).sum(axis=0), (lfc < -delta).sum(axis=0)
    hits = np.maximum(up, down) if delta == 0 else up + down
    n = lfc.shape[0]
    prob_de = hits / n
    smoothed = (hits + 0.5) / (n + 1)
    lfc_median = np.median(lfc, axis=0)
    support = model.modality_support(modality)
    detected_a, observed_a = observed_summary(data, modality, a, support, library_size)
    detected_b, observed_b = observed_summary(data, modality, b, support, library_size)
    higher_detected = np.where(lfc_median > 0, detected_a, detected_b)
    fdr = expected_fdr(prob_de)
    table = pd.DataFrame(
        {
            "lfc_mean": lfc.mean(axis=0),
            "lfc_median": lfc_median,
            "lfc_std": lfc.std(axis=0),
            "prob_de": prob_de,
            "log_bayes_factor": np.log(smoothed) - np.log1p(-smoothed),
            "expected_fdr": fdr,
            "is_de": (fdr <= fdr_target) & (higher_detected >= min_detected),
            "direction": np.where(lfc_median > 0, "up", "down"),
            "score": lfc_median,
            "decoded_mean_a": mean_a.mean(axis=0),
            "decoded_mean_b": mean_b.mean(axis=0),
            "observed_mean_a": observed_a,
            "observed_mean_b": observed_b,
            "observed_lfc": np.log2(observed_a + pseudocount) - np.log2(observed_b + pseudocount),
            "detected_a": detected_a,
            "detected_b": detected_b,
        },
        index=pd.Index(data.mod[modality].var_names, name="feature"),
    )
    units = UNITS.get(support, "mean value").format(library_size)
    table.attrs.update({
        "group_a": name_a, "group_b": name_b, "n_a": len(a), "n_b": len(b), "modality": modality,
        "delta": float(delta), "fdr_target": float(fdr_target), "n_draws": int(n_draws),
        "max_cells": int(max_cells), "pseudocount": float(pseudocount), "min_detected": float(min_detected),
        "units": units, "transform_batch": str(transform_batch), "seed": int(seed),
        "n_up": int((table["is_de"] & (table["direction"] == "up")).sum()),
        "n_down": int((table["is_de"] & (table["direction"] == "down")).sum()),
    })
    block = np.where(table["is_de"], np.where(table["direction"] == "up", 0, 2), 1)
    return table.iloc[np.lexsort((-table["lfc_median"].to_numpy(), block))]
