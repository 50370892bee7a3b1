"""Latent-space scatter plots: a grid of panels per component, one panel per colouring."""
from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.patheffects as path_effects
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, Normalize, to_hex
from matplotlib.lines import Line2D

from .embedding import embed_2d

#: Panels per row; more colourings wrap onto further rows instead of stretching into a strip.
MAX_COLUMNS = 3
#: Side of a panel's scatter area in inches.
PANEL_INCHES = 4.0
#: Categories up to which a legend is drawn; beyond it the category names sit on their centroids.
MAX_LEGEND_CATEGORIES = 40
#: A numeric column is heavy-tailed when its maximum exceeds this multiple of its positive median.
HEAVY_TAIL_RATIO = 20.0
#: ... or when its skewness exceeds this.
HEAVY_TAIL_SKEW = 5.0
#: Legend font size in points, used to estimate the width a legend needs.
LEGEND_FONTSIZE = 6.5


def _column(data: Any, key: str) -> pd.Series:
    if key in data.obs:
        return data.obs[key]
    return data.obs_column(key)


def _is_numeric(values: pd.Series) -> bool:
    # Booleans are two categories, not a scale.
    return (
        pd.api.types.is_numeric_dtype(values)
        and not pd.api.types.is_bool_dtype(values)
        and not isinstance(values.dtype, pd.CategoricalDtype)
    )


def _natural(text: str) -> list:
    # re.split with a group alternates text and digits, so two keys compare position by position.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def categories(values: pd.Series) -> pd.Categorical:
    """``values`` as strings, in a deliberate categorical order if they have one, else in natural order.

    Natural order puts ``type_2`` before ``type_10``, so legends follow the labels'
    numbering. A categorical order counts as deliberate when it is ``ordered`` or
    not plain alphabetical (pandas and anndata sort categories alphabetically by
    default). Unused categories are dropped and missing values become ``"nan"``.
    """
    strings = values.astype(str)
    present = set(strings)
    order = []
    if isinstance(values.dtype, pd.CategoricalDtype):
        given = [str(c) for c in values.cat.categories]
        if values.cat.ordered or given != sorted(given):
            order = [c for c in given if c in present]
    order += sorted(present - set(order), key=_natural)
    return pd.Categorical(strings, categories=order)


def palette(n: int) -> list[str]:
    """``n`` qualitative colours, distinct up to 60 categories.

    tab10 up to 10, tab20 up to 20, then tab20, tab20b and tab20c (60 distinct
    colours); beyond that, evenly spaced samples of ``turbo`` are appended.
    """
    if n <= 10:
        colors = list(plt.get_cmap("tab10").colors)
    elif n <= 20:
        colors = list(plt.get_cmap("tab20").colors)
    else:
        colors = [c for name in ("tab20", "tab20b", "tab20c") for c in plt.get_cmap(name).colors]
    if n > len(colors):
        colors += list(plt.get_cmap("turbo")(np.linspace(0.05, 0.95, n - len(colors))))
    return [to_hex(c) for c in colors[:n]]


def heavy_tailed(values: np.ndarray) -> bool:
    """Whether a colour scale linear from min to max would give nearly every value the same colour."""
    finite = values[np.isfinite(values)]
    positive = finite[finite > 0]
    if len(finite) < 3 or np.ptp(finite) == 0:
        return False
    if len(positive) and finite.max() > HEAVY_TAIL_RATIO * np.median(positive):
        return True
    return abs(float(pd.Series(finite).skew())) > HEAVY_TAIL_SKEW


def color_norm(values: np.ndarray) -> tuple[Normalize, str]:
    """A colour normalisation for ``values`` and the note the colour bar carries about it.

    Heavy-tailed non-negative values spanning two or more decades between their 1st
    and 99th percentiles get a log scale; other heavy-tailed values a linear scale
    clipped to the 1st-99th percentile; the rest a linear scale over their range.
    """
    finite = values[np.isfinite(values)]
    if not len(finite):
        return Normalize(0, 1), ""
    if not heavy_tailed(finite):
        return Normalize(finite.min(), finite.max()), ""
    low, high = np.percentile(finite, [1, 99])
    positive = finite[finite > 0]
    if finite.min() >= 0 and len(positive):
        floor = np.percentile(positive, 1)
        if high >= 100 * floor:
            return LogNorm(floor, high), "log scale, 1st-99th percentile"
    if high <= low:
        # Over 98% of values are equal: clipping would leave no scale at all.
        return Normalize(finite.min(), finite.max()), ""
    return Normalize(low, high), "clipped to 1st-99th percentile"


def default_title(column: str, component: str) -> str:
    """A readable name for the obs columns ``analyze`` writes, else the column name itself."""
    if column == f"cluster_{component}":
        return "cluster"
    prefix = f"attribution_{component}_"
    if column.startswith(prefix):
        return f"conditional attribution of z_{component} ({column[len(prefix):]})"
    return column


def _legend_inches(names: Sequence[str]) -> float:
    """Width a legend of ``names`` needs beside the axes, from the font size and longest name."""
    columns = 1 if len(names) <= 20 else 2
    longest = max((len(n) for n in names), default=0)
    # An average character is about half an em wide; the marker and padding about 2.5 em.
    per_column = (2.5 + 0.5 * longest) * LEGEND_FONTSIZE / 72
    return columns * per_column + 0.2


def _scatter_numeric(ax: plt.Axes, xy: np.ndarray, values: pd.Series, label: str, size: float) -> None:
    numbers = values.to_numpy(dtype=float)
    norm, note = color_norm(numbers)
    missing = ~np.isfinite(numbers)
    if missing.any():
        ax.scatter(xy[missing, 0], xy[missing, 1], s=size, color="0.85", rasterized=True, linewidths=0)
    # High values drawn last, so a rare high-scoring population is not hidden under the rest.
    order = np.flatnonzero(~missing)[np.argsort(numbers[~missing], kind="stable")]
    shown = np.clip(numbers[order], norm.vmin, norm.vmax)
    points = ax.scatter(xy[order, 0], xy[order, 1], c=shown, norm=norm, s=size, cmap="viridis",
                        rasterized=True, linewidths=0)
    extend = "neither"
    if note:
        above = numbers[order].max() > norm.vmax
        below = numbers[order].min() < norm.vmin
        extend = {(True, True): "both", (True, False): "max", (False, True): "min"}.get((above, below), "neither")
    bar = ax.figure.colorbar(points, ax=ax, shrink=0.8, extend=extend)
    bar.set_label(f"{label} ({note})" if note else label, fontsize=7)
    bar.ax.tick_params(labelsize=7)


def _scatter_categorical(ax: plt.Axes, xy: np.ndarray, values: pd.Series, size: float, seed: int) -> None:
    codes_of = categories(values)
    names = list(codes_of.categories)
    colors = np.array(palette(len(names)))
    codes = codes_of.codes
    # One scatter in random order: drawing category by category buries the first ones under the last.
    order = np.random.default_rng(seed).permutation(len(codes))
    ax.scatter(xy[order, 0], xy[order, 1], c=colors[codes[order]], s=size, rasterized=True, linewidths=0)
    if len(names) <= MAX_LEGEND_CATEGORIES:
        handles = [Line2D([], [], marker="o", linestyle="", markersize=4, color=c) for c in colors]
        ax.legend(handles, names, fontsize=LEGEND_FONTSIZE, loc="center left", bbox_to_anchor=(1.01, 0.5),
                  frameon=False, ncol=1 if len(names) <= 20 else 2, handletextpad=0.2, columnspacing=0.8,
                  borderaxespad=0.2, labelspacing=0.3)
        return
    # Too many categories for a legend anyone can match colours against: name each at its centroid.
    outline = [path_effects.withStroke(linewidth=2, foreground="white")]
    for i, name in enumerate(names):
        mask = codes == i
        if mask.any():
            x, y = np.median(xy[mask], axis=0)
            ax.text(x, y, name, fontsize=6, ha="center", va="center", path_effects=outline)


def _draw_warning(ax: plt.Axes, message: str) -> None:
    wrapped = "\n".join(textwrap.wrap(message, width=48))
    ax.text(0.02, 0.98, wrapped, transform=ax.transAxes, ha="left", va="top", fontsize=7, color="darkred",
            zorder=10, bbox={"boxstyle": "round", "facecolor": "mistyrose", "edgecolor": "red", "alpha": 0.9})


def plot_latents(
    data: Any,
    components: Sequence[str],
    color_by: Sequence[str] = (),
    method: str = "umap",
    seed: int = 0,
    key: str = "z",
    titles: Mapping[str, str] | None = None,
    warnings: Mapping[str, str] | None = None,
) -> plt.Figure:
    """Plot each component's latent (``obsm[f"{key}_{component}"]``) embedded in 2-D.

    Each component gets one panel per colouring: first its clusters
    (``obs["cluster_<component>"]``) when present, then each ``color_by`` column.
    A component's panels wrap into rows of at most :data:`MAX_COLUMNS`.

    Parameters
    ----------
    data
        A :class:`~cavachon_like.MultiModality`, or any object with ``obs``,
        ``obsm`` and ``obs_column(name)``.
    components
        Component names; the latent of ``c`` is ``obsm[f"{key}_{c}"]``.
    color_by
        Obs columns to colour by. Numeric columns get a colour bar, on a log or
        percentile-clipped scale when heavy-tailed (see :func:`color_norm`);
        other columns a legend, or labels at category centroids beyond
        :data:`MAX_LEGEND_CATEGORIES` categories.
    method, seed
        Embedding (``"umap"`` or ``"pca"``) and its seed; the seed also shuffles
        the drawing order of categorical points.
    key
        Prefix of the latents in ``obsm``.
    titles
        Human names of columns, e.g. ``{"attribution_rna_rna": "conditional
        attribution of z_rna"}``; other columns are named by :func:`default_title`.
    warnings
        Component -> message (e.g. from
        :func:`~cavachon_like.analysis.degenerate_clustering`), drawn in red on
        that component's cluster panel (its first panel).

    Returns
    -------
    matplotlib.figure.Figure
    """
    titles = dict(titles or {})
    warnings = dict(warnings or {})
    rows = []
    for component in components:
        colors = [f"cluster_{component}"] if f"cluster_{component}" in data.obs else []
        rows.append((component, colors + [c for c in color_by if c not in colors]))
    # ceil(sqrt(n)) columns keep a component's grid near square: 3 panels are 2 x 2, not a 1 x 3 strip.
    n_cols = min(MAX_COLUMNS, max(math.ceil(math.sqrt(max(len(c), 1))) for _, c in rows))
    grid_rows = [math.ceil(max(len(c), 1) / n_cols) for _, c in rows]
    values = {(component, c): _column(data, c) for component, colors in rows for c in colors}
    names = [list(categories(v).categories) for v in values.values() if not _is_numeric(v)]
    legends = [_legend_inches(n) for n in names if len(n) <= MAX_LEGEND_CATEGORIES]
    # Room beside each panel for its colour bar (about an inch) or its legend, whichever is wider.
    side = max([1.2, *legends])
    figure = plt.figure(figsize=(n_cols * (PANEL_INCHES + side), sum(grid_rows) * (PANEL_INCHES + 0.6)),
                        layout="constrained")
    axes = figure.subplots(sum(grid_rows), n_cols, squeeze=False)
    method_name = {"umap": "UMAP", "pca": "PCA"}.get(method, method)
    axis_name = {"umap": "UMAP", "pca": "PC"}.get(method, method)
    first_row = 0
    for (component, colors), n_rows in zip(rows, grid_rows):
        xy = embed_2d(data.obsm[f"{key}_{component}"], method=method, seed=seed)
        size = float(np.clip(4e4 / max(len(xy), 1), 0.5, 8.0))
        for i in range(n_rows * n_cols):
            ax = axes[first_row + i // n_cols, i % n_cols]
            if i >= len(colors):
                ax.axis("off")
                continue
            column = colors[i]
            name = titles.get(column) or default_title(column, component)
            if _is_numeric(values[component, column]):
                _scatter_numeric(ax, xy, values[component, column], name, size)
            else:
                _scatter_categorical(ax, xy, values[component, column], size, seed)
            ax.set_title(f"{key}_{component} ({method_name}): {name}", fontsize=9)
            ax.set_xlabel(f"{axis_name} 1", fontsize=8)
            ax.set_ylabel(f"{axis_name} 2", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_box_aspect(1)
        if component in warnings and colors:
            _draw_warning(axes[first_row, 0], warnings[component])
        first_row += n_rows
    return figure
