"""How one modality's library size predicts another's in the same cells.

In paired assays both modalities come from one droplet or nucleus, so a cell's capture
efficiency raises both totals together (on SNARE-seq the logs of the RNA and ATAC totals
correlate at about 0.5). A cell that lacks a modality has no library size for it; predicting
its log-normalised values needs one, and the one its other modality implies is closer to the
truth than the training median.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .backed import totals

#: Fewer cells measured in both modalities (with counts in both) than this fit nothing.
MIN_PAIRED_CELLS = 20


def library_sizes(mm: Any, modality: str) -> np.ndarray:
    """Total counts of each cell in ``modality``, read block by block (sparse and backed data stay so)."""
    return totals(mm.mod[modality].X, axis=1).ravel()


def library_size_specs(mm: Any, modalities: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What a model records of each modality's library sizes, reading each matrix once:
    ``median_library_size`` over the cells measured with counts (absent when none has any)
    and ``library_size_from``, its :func:`library_size_fits` (absent when it has none)."""
    sizes = {m: library_sizes(mm, m) for m in modalities}
    fits = _fits(mm, sizes)
    specs: dict[str, dict[str, Any]] = {}
    for m in modalities:
        counted = sizes[m][mm.mod[m].measured & (sizes[m] > 0)]
        specs[m] = {**({"median_library_size": float(np.median(counted))} if counted.size else {}),
                    **({"library_size_from": fits[m]} if m in fits else {})}
    return specs


def library_size_fits(mm: Any, modalities: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """``{target: {source: fit}}`` for every ordered pair of ``modalities`` with a fit.

    Each fit is the least-squares line of ``log(library size of target)`` on ``log(library
    size of source)`` over the cells measured in both with counts in both; a pair with fewer
    than :data:`MIN_PAIRED_CELLS` such cells has none. A fit holds ``intercept`` and
    ``slope``, ``sd`` of its residuals, ``r`` (the correlation of the two logs) and
    ``n_cells``, all plain numbers, so they serialise with a model.
    """
    return _fits(mm, {m: library_sizes(mm, m) for m in modalities})


def _fits(mm: Any, sizes: Mapping[str, np.ndarray]) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`library_size_fits` from the modalities' library sizes."""
    modalities = list(sizes)
    fits: dict[str, dict[str, dict[str, float]]] = {}
    for target in modalities:
        for source in modalities:
            if source == target:
                continue
            y, x = sizes[target], sizes[source]
            keep = mm.mod[target].measured & mm.mod[source].measured & (y > 0) & (x > 0)
            if keep.sum() < MIN_PAIRED_CELLS:
                continue
            y, x = np.log(y[keep]), np.log(x[keep])
            x_var, y_var = float(np.var(x)), float(np.var(y))
            slope = float(np.mean((x - x.mean()) * (y - y.mean())) / x_var) if x_var > 0 else 0.0
            intercept = float(y.mean() - slope * x.mean())
            r = slope * np.sqrt(x_var / y_var) if y_var > 0 else 0.0
            fits.setdefault(target, {})[source] = {
                "intercept": intercept, "slope": slope, "sd": float(np.std(y - intercept - slope * x)),
                "r": float(r), "n_cells": int(keep.sum())}
    return fits


def predicted_library_size(mm: Any, fits: Mapping[str, Mapping[str, float]]) -> np.ndarray:
    """Each cell's library size predicted from the modalities it has.

    ``fits`` maps source modalities to fits of one target (a value of :func:`library_size_fits`). Each cell uses the
    source with the largest ``|r|`` among those it is measured in with counts; cells with
    none get NaN, for the caller to fill.

    The prediction ``exp(intercept + slope * log(source size))`` is the median of the
    log-normal the fit describes, as the training median is for cells with no source.
    """
    predicted = np.full(mm.n_obs, np.nan)
    best = np.full(mm.n_obs, -1.0)
    for source, fit in fits.items():
        if source not in mm.mod:
            continue
        sizes = library_sizes(mm, source)
        usable = mm.mod[source].measured & (sizes > 0) & (abs(fit["r"]) > best)
        predicted[usable] = np.exp(fit["intercept"] + fit["slope"] * np.log(sizes[usable]))
        best[usable] = abs(fit["r"])
    return predicted
