"""Heatmaps of a latent traversal: how each dimension's top features change along it (scMM Fig. 4e)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm

#: Panels per row.
MAX_COLUMNS = 3
#: Step labels along a panel's x axis; more would overlap at the panel's width.
MAX_STEP_TICKS = 5


def _step_ticks(steps: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Tick positions (step indices) and labels in SDs, spaced evenly and always showing both ends."""
    positions = np.unique(np.round(np.linspace(0, len(steps) - 1, min(len(steps), MAX_STEP_TICKS))).astype(int))
    labels = ["0" if abs(steps[i]) < 1e-9 else f"{steps[i]:+g}σ" for i in positions]
    return positions, labels


def _panel_features(table: pd.DataFrame, modality: str, dim: int, top: int) -> list[str]:
    rows = table[(table["modality"] == modality) & (table["dim"] == dim)].sort_values("rank", kind="stable")
    return [str(f) for f in rows["feature"].head(int(top))]


def plot_traversal(traversal: Any, features_table: pd.DataFrame, modality: str, dims: Sequence[int] | None = None,
                   top: int = 5) -> plt.Figure:
    """Per latent dimension, a heatmap of its top features along the traversal.

    Each panel shows the ``top`` features of one dimension (by the rank of ``features_table``,
    strongest on top) against the traversal's steps, from ``-span`` to ``+span`` standard
    deviations. Colours are decoded values on the traversal's comparison scale (``log1p`` for
    counts and probabilities, see ``traversal.transformed``) minus each feature's mean along the path,
    on one diverging scale shared by all panels, so panels compare: a pale panel is a dimension
    that changes little.

    Parameters
    ----------
    traversal
        A :class:`~cavachon_like.model.traversal.LatentTraversal`.
    features_table
        From :func:`~cavachon_like.analysis.traversal_features` on that traversal.
    modality
        One of the modalities the traversed latent decodes.
    dims
        Dimensions to draw (default every dimension the table has for ``modality``).
    top
        Features per panel.

    Returns
    -------
    matplotlib.figure.Figure
        One heatmap axes per dimension, in a grid of at most :data:`MAX_COLUMNS` columns, and
        one colour bar.
    """
    if modality not in traversal.decoded:
        raise KeyError(f"the traversal of {traversal.latent!r} decodes {list(traversal.decoded)}, not {modality!r}.")
    decoded = np.asarray(traversal.decoded[modality])
    available = sorted(set(features_table.loc[features_table["modality"] == modality, "dim"].astype(int)))
    dims = available if dims is None else [int(d) for d in dims]
    missing = [d for d in dims if d not in available or not 0 <= d < decoded.shape[0]]
    if not dims or missing:
        raise ValueError(f"dimensions {missing or dims} of modality {modality!r} are not in the features table "
                         f"(it has {available}).")
    names = traversal.features[modality]
    comparable = traversal.transformed(modality)
    panels = []
    for d in dims:
        features = _panel_features(features_table, modality, d, top)
        index = pd.Index(names).get_indexer(features)
        if (index < 0).any():
            raise ValueError(f"features {[f for f, i in zip(features, index) if i < 0]} of the table are not "
                             f"features of modality {modality!r} in the traversal: table and traversal differ.")
        values = comparable[d][:, index].T  # features x steps
        panels.append((d, features, values - values.mean(axis=1, keepdims=True)))
    limit = max(float(np.abs(v).max()) if v.size else 0.0 for _, _, v in panels) or 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    n_cols = min(MAX_COLUMNS, len(dims))
    n_rows = math.ceil(len(dims) / n_cols)
    longest = max((len(f) for _, features, _ in panels for f in features), default=4)
    # Room for the feature names on the left of each panel: about 0.07 inch per character at 7 pt.
    width = n_cols * (2.6 + 0.07 * longest) + 1.0
    height = n_rows * (0.8 + 0.22 * max(int(top), 1)) + 0.6
    figure = plt.figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    positions, labels = _step_ticks(np.asarray(traversal.steps))
    image, used = None, []
    for i, ax in enumerate(axes.flat):
        if i >= len(panels):
            figure.delaxes(ax)  # an empty grid cell is no panel
            continue
        used.append(ax)
        d, features, values = panels[i]
        image = ax.imshow(values, aspect="auto", cmap="RdBu_r", norm=norm, interpolation="nearest")
        ax.set_yticks(np.arange(len(features)), features, fontsize=7)
        ax.set_xticks(positions, labels, fontsize=7)
        ax.set_xlabel("step along the dimension", fontsize=7)
        ax.set_title(f"z_{traversal.latent} dimension {d}", fontsize=8)
    bar = figure.colorbar(image, ax=used, shrink=0.8)
    bar.set_label(f"{traversal.transform_label(modality)}\nminus the feature's mean", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    figure.suptitle(f"{modality}: top {int(top)} features of each dimension of z_{traversal.latent} "
                    f"(steps in SD of the cells' posterior means)", fontsize=9)
    return figure
