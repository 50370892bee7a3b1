"""Figures of the clustering and attribution analyses."""
from __future__ import annotations

import math
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

#: Small multiples per row of the per-label neighbourhood panels.
MAX_LABEL_COLUMNS = 5
#: Above this many groups the attribution figure turns horizontal, so that names stay readable.
MAX_VERTICAL_GROUPS = 25


def _k_columns(table: pd.DataFrame) -> tuple[list, np.ndarray]:
    """A neighbourhood table's k columns, by increasing k, and their k as integers.

    Tables read back from CSV name the columns by strings, hence the conversion.
    """
    columns = [c for c in table.columns if c != "label"]
    ks = np.array([int(c) for c in columns])
    order = np.argsort(ks)
    return [columns[i] for i in order], ks[order]


def _line_colors(names: list[str]) -> dict[str, str]:
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def plot_neighbourhood(tables: dict[str, pd.DataFrame], label: str = "cell_type") -> plt.Figure:
    """Fraction of each cell's k nearest neighbours sharing its label, against k (paper Fig. 3c/d, S3d).

    An overview panel shows the mean over all cells, and one small panel per label
    the mean over that label's cells; each panel has one line per latent space.

    Parameters
    ----------
    tables
        Latent name -> table from :func:`~cavachon_like.analysis.neighbourhood_table`:
        one row per cell, a ``label`` column and one column per k.
    label
        Name of the obs column the labels came from (e.g. ``"cell_type"``, or
        ``"cluster_rna"`` when clusters stood in for annotations); the axis labels name it.

    Returns
    -------
    matplotlib.figure.Figure
        The overview on top, then the labels from most to fewest cells, each
        titled with its number of cells (the largest over the tables, should
        their labels differ).
    """
    counts = pd.concat([t["label"].astype(str).value_counts() for t in tables.values()], axis=1).max(axis=1)
    counts = counts.astype(int).sort_values(ascending=False, kind="stable")
    colors = _line_colors(list(tables))
    n_cols = max(1, min(MAX_LABEL_COLUMNS, len(counts)))
    n_rows = max(1, math.ceil(len(counts) / n_cols))
    figure = plt.figure(figsize=(max(7.0, 2.3 * n_cols), 4.2 + 2.1 * n_rows), layout="constrained")
    top, bottom = figure.subfigures(2, 1, height_ratios=[4.2, 2.1 * n_rows])
    sharing = f"fraction of k nearest neighbours\nwith the same {label}"

    overview = top.subplots()
    for name, table in tables.items():
        columns, ks = _k_columns(table)
        overview.plot(ks, table[columns].mean().to_numpy(), marker="o", ms=3, color=colors[name], label=name)
    overview.set_xlabel("k (nearest neighbours)")
    overview.set_ylabel(sharing)
    overview.set_ylim(0, 1.02)
    overview.set_title(f"all cells (n={len(next(iter(tables.values())))}): mean over cells", fontsize=10)
    overview.legend(title="latent space", fontsize=8, title_fontsize=8, frameon=False,
                    loc="center left", bbox_to_anchor=(1.01, 0.5))
    overview.set_box_aspect(0.75)

    axes = bottom.subplots(n_rows, n_cols, sharex=True, sharey=True, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(counts):
            ax.axis("off")
            continue
        name = counts.index[i]
        for latent, table in tables.items():
            cells = table["label"].astype(str) == name
            if cells.any():
                columns, ks = _k_columns(table)
                ax.plot(ks, table.loc[cells, columns].mean().to_numpy(), lw=1.2, color=colors[latent])
        # A 2.3-inch panel holds about 28 characters of 8 pt text.
        ax.set_title("\n".join([*textwrap.wrap(name, 28), f"n={counts.iloc[i]}"]), fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
    bottom.supxlabel("k (nearest neighbours)", fontsize=9)
    bottom.supylabel(f"fraction of k nearest neighbours with the same {label}", fontsize=9)
    bottom.suptitle(f"per {label}: mean over its cells", fontsize=10)
    return figure


def plot_attribution_by_cluster(
    table: pd.DataFrame,
    column: str,
    top: int = 20,
    title: str = "",
    unit: str = "",
    group_name: str = "cluster",
) -> plt.Figure:
    """Conditional attribution per group: median with interquartile range, and mean (paper Fig. 4b).

    Parameters
    ----------
    table
        From :func:`~cavachon_like.analysis.attribution_by_cluster`: indexed by group,
        with ``n_cells`` and ``<score>_mean``, and optionally ``<score>_median``,
        ``<score>_q25`` and ``<score>_q75`` (only what is present is drawn).
    column
        The ``<score>_mean`` column; groups are sorted by it, highest first.
    top
        Groups shown.
    title
        Figure title.
    unit
        Unit of the score, appended to the axis label.
    group_name
        What the groups are (``"cluster"``, ``"cell_type"``), the label of the group axis.

    Returns
    -------
    matplotlib.figure.Figure
        Vertical for up to :data:`MAX_VERTICAL_GROUPS` groups, each tick labelled
        with the group's number of cells; horizontal beyond, so that names stay level.
    """
    score = column.removesuffix("_mean")
    shown = table.sort_values(column, ascending=False).head(top)
    positions = np.arange(len(shown))
    names = shown.index.astype(str)
    sizes = shown["n_cells"].astype(int).to_numpy() if "n_cells" in shown else None
    vertical = len(shown) <= MAX_VERTICAL_GROUPS
    if vertical:
        # About 8 characters of 7 pt text fit under a tick; longer names are turned upright, on one line.
        rotate = max((len(n) for n in names), default=0) > 8
        if sizes is None:
            ticks = names
        else:
            ticks = [f"{n} (n={s})" if rotate else f"{n}\nn={s}" for n, s in zip(names, sizes)]
        width = max(5.0, 0.42 * len(shown) + 1.8)
        # Taller as it widens, so that many groups do not make a strip.
        figure, ax = plt.subplots(figsize=(width, max(4.8 if rotate else 4.0, width / 2.8)), layout="constrained")
    else:
        ticks = names if sizes is None else [f"{n} (n={s})" for n, s in zip(names, sizes)]
        figure, ax = plt.subplots(figsize=(6.5, 0.24 * len(shown) + 1.6), layout="constrained")

    def draw(values: pd.Series, error: np.ndarray | None = None, **style) -> None:
        # One call for either orientation: the values run along y when vertical, along x when horizontal.
        values = values.to_numpy(dtype=float)
        if vertical:
            ax.errorbar(positions, values, yerr=error, linestyle="", **style)
        else:
            ax.errorbar(values, positions, xerr=error, linestyle="", **style)

    median, q25, q75 = (f"{score}_{s}" for s in ("median", "q25", "q75"))
    if {median, q25, q75} <= set(shown.columns):
        spread = np.vstack([(shown[median] - shown[q25]).to_numpy(), (shown[q75] - shown[median]).to_numpy()])
        draw(shown[median], spread, marker="o", ms=5, color="tab:purple", ecolor="tab:purple", elinewidth=1.5,
             capsize=2, label="median (interquartile range)")
    elif median in shown.columns:
        draw(shown[median], marker="o", ms=5, color="tab:purple", label="median")
    draw(shown[column], marker="D", ms=4, color="black", markerfacecolor="white", label="mean")

    # Wrapped, since a unit such as "mean squared change of log1p(counts per 10,000)" outgrows a 4-inch axis.
    value_label = textwrap.fill(f"attribution score ({score})" + (f" [{unit}]" if unit else ""), 45)
    group_label = group_name + ("" if sizes is None else " (n = number of cells)")
    if vertical:
        ax.axhline(0, color="0.7", lw=0.8, zorder=0)
        ax.set_xticks(positions, ticks, fontsize=7, rotation=90 if rotate else 0)
        ax.set_xlabel(group_label)
        ax.set_ylabel(value_label)
    else:
        ax.axvline(0, color="0.7", lw=0.8, zorder=0)
        ax.set_yticks(positions, ticks, fontsize=7)
        ax.invert_yaxis()
        ax.set_ylabel(group_label)
        ax.set_xlabel(value_label)
    subtitle = f"top {len(shown)} of {len(table)} {group_name}s by mean" if len(table) > len(shown) else ""
    ax.set_title("\n".join(t for t in (title, subtitle) if t), fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    return figure
