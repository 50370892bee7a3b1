"""Figures readable in a paper (sizes, legends, colour scales, warnings, labels) and the one-file HTML report."""
from __future__ import annotations

import base64
import html
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import LogNorm

from cavachon_like.analysis.html import Section, write_html_report
from cavachon_like.plotting import (
    plot_attribution_by_cluster,
    plot_latents,
    plot_neighbourhood,
)

N_CELLS = 400
WARNING = "component 'rna': the mixture prior collapsed: only 2 cluster(s) hold >= 1% of cells"


class Data:
    """The part of a MultiModality that plot_latents uses: obs, obsm and obs_column."""

    def __init__(self, obs: pd.DataFrame, obsm: dict[str, np.ndarray]):
        self.obs, self.obsm = obs, obsm

    def obs_column(self, name: str) -> pd.Series:
        return self.obs[name]


def make_data(n_categories: int = 15, seed: int = 0) -> Data:
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame(
        {
            "cluster_rna": pd.Categorical(rng.integers(0, 2, N_CELLS).astype(str)),
            "cell_type": [f"type {i}" for i in np.arange(N_CELLS) % n_categories],
            "batch": rng.choice(["b1", "b2"], N_CELLS),
            "attribution_rna_rna": rng.lognormal(0.0, 3.0, N_CELLS),
            "score": rng.normal(size=N_CELLS),
            "depth": rng.uniform(1.0, 2.0, N_CELLS),
        },
        index=[f"cell{i}" for i in range(N_CELLS)],
    )
    return Data(obs, {"z_rna": rng.normal(size=(N_CELLS, 6)), "z_atac": rng.normal(size=(N_CELLS, 6))})


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def panels(figure: plt.Figure) -> list[plt.Axes]:
    """The scatter panels (titled axes), without colour bars and empty grid cells."""
    return [ax for ax in figure.axes if ax.get_title()]


def panel(figure: plt.Figure, ending: str) -> plt.Axes:
    return next(ax for ax in panels(figure) if ax.get_title().endswith(ending))


def rendered_inches(figure: plt.Figure, tmp_path) -> tuple[float, float]:
    """Size of the PNG as the report saves it (tight bounding box, so legends outside the axes count)."""
    path = tmp_path / "figure.png"
    figure.savefig(path, dpi=40, bbox_inches="tight")
    height, width = plt.imread(path).shape[:2]
    return width / 40, height / 40


COLOURINGS = ["cell_type", "batch", "attribution_rna_rna", "score", "depth", "cell_type_2"]


@pytest.mark.parametrize("n_colourings", range(1, 7))
@pytest.mark.parametrize("n_categories", [15, 41])
def test_latent_figure_is_no_strip_and_panels_stay_wide(n_colourings, n_categories, tmp_path):
    data = make_data(n_categories)
    data.obs["cell_type_2"] = data.obs["cell_type"]
    # cluster_rna adds a panel, so 1-6 colourings make 2-7 panels
    figure = plot_latents(data, ["rna"], color_by=COLOURINGS[:n_colourings], method="pca")
    width, height = rendered_inches(figure, tmp_path)
    assert 1 / 3 <= width / height <= 3, (width, height)
    assert width <= 25 and height <= 25
    figure.canvas.draw()
    for ax in panels(figure):
        assert ax.get_window_extent().width / figure.dpi >= 3, ax.get_title()
    assert len(panels(figure)) == n_colourings + 1
    assert max(ax.get_subplotspec().colspan.start for ax in panels(figure)) < 3


def test_panel_titles_are_readable_and_overridable():
    figure = plot_latents(make_data(), ["rna"], color_by=["cell_type", "attribution_rna_rna", "score"],
                          method="pca", titles={"score": "my score (z-units)"})
    titles = [ax.get_title() for ax in panels(figure)]
    assert titles == ["z_rna (PCA): cluster", "z_rna (PCA): cell_type",
                      "z_rna (PCA): conditional attribution of z_rna (rna)", "z_rna (PCA): my score (z-units)"]
    assert all(ax.get_xlabel() == "PC 1" and ax.get_ylabel() == "PC 2" for ax in panels(figure))


def test_legend_has_every_category_and_distinct_colours():
    figure = plot_latents(make_data(15), ["rna"], color_by=["cell_type"], method="pca")
    legend = panel(figure, "cell_type").get_legend()
    # natural order: type 2 before type 10
    assert [t.get_text() for t in legend.get_texts()] == [f"type {i}" for i in range(15)]

    figure = plot_latents(make_data(30), ["rna"], color_by=["cell_type"], method="pca")
    legend = panel(figure, "cell_type").get_legend()
    colours = {handle.get_color() for handle in legend.legend_handles}
    assert len(legend.get_texts()) == 30 and len(colours) == 30


def test_many_categories_are_named_on_the_plot_instead_of_a_legend():
    figure = plot_latents(make_data(45), ["rna"], color_by=["cell_type"], method="pca")
    ax = panel(figure, "cell_type")
    assert ax.get_legend() is None
    assert sorted(t.get_text() for t in ax.texts) == sorted(f"type {i}" for i in range(45))


def test_heavy_tail_gets_log_or_clipped_colour_scale_and_says_so():
    data = make_data()
    figure = plot_latents(data, ["rna"], color_by=["attribution_rna_rna", "score"], method="pca")
    heavy = panel(figure, "(rna)").collections[-1]
    largest = data.obs["attribution_rna_rna"].max()
    assert isinstance(heavy.norm, LogNorm) or heavy.norm.vmax < largest
    assert heavy.norm.vmax < largest
    labels = [ax.get_ylabel() for ax in figure.axes]
    assert any("log scale" in label or "percentile" in label for label in labels)
    # a normal column keeps a plain linear scale over its whole range
    plain = panel(figure, "score").collections[-1]
    assert not isinstance(plain.norm, LogNorm) and plain.norm.vmax == pytest.approx(data.obs["score"].max())


def test_warning_is_drawn_on_the_cluster_panel_only():
    figure = plot_latents(make_data(), ["rna", "atac"], color_by=["cell_type"], method="pca",
                          warnings={"rna": WARNING})
    def text(ax):
        return " ".join(" ".join(t.get_text() for t in ax.texts).split())

    assert WARNING in text(panel(figure, "z_rna (PCA): cluster"))
    others = [ax for ax in panels(figure) if ax.get_title() != "z_rna (PCA): cluster"]
    assert others and all(WARNING not in text(ax) for ax in others)


def neighbourhood_tables(n_labels: int = 6) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(1)
    # label i has i + 1 shares of the cells, so the largest is the last label
    labels = rng.choice([f"L{i}" for i in range(n_labels)], 600, p=np.arange(1, n_labels + 1) / sum(range(n_labels + 1)))
    tables = {}
    for name in ("z_rna", "z_atac"):
        table = pd.DataFrame({k: rng.uniform(size=600) for k in (5, 10, 20, 50)})
        table.insert(0, "label", labels)
        tables[name] = table
    return tables


def test_neighbourhood_has_overview_and_one_panel_per_label():
    tables = neighbourhood_tables(6)
    figure = plot_neighbourhood(tables, label="cell_type")
    drawn = [ax for ax in figure.axes if ax.lines]
    assert len(drawn) == 6 + 1
    assert all(len(ax.lines) == 2 for ax in drawn)
    overview = drawn[0]
    assert "cell_type" in overview.get_ylabel() and "k" in overview.get_xlabel()
    assert [t.get_text() for t in overview.get_legend().get_texts()] == ["z_rna", "z_atac"]
    counts = tables["z_rna"]["label"].value_counts()
    titles = [ax.get_title() for ax in drawn[1:]]
    assert titles == [f"{label}\nn={n}" for label, n in counts.items()]
    assert list(counts) == sorted(counts, reverse=True)


def attribution_table(n_groups: int, quantiles: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    scores = pd.Series(rng.lognormal(size=2000))
    groups = rng.choice([f"group {i}" for i in range(n_groups)], 2000)
    grouped = scores.groupby(groups)
    table = pd.DataFrame({"n_cells": grouped.size(), "rna_mean": grouped.mean(), "rna_median": grouped.median()})
    if quantiles:
        table["rna_q25"], table["rna_q75"] = grouped.quantile(0.25), grouped.quantile(0.75)
    return table


@pytest.mark.parametrize("n_groups", [15, 25, 41])
def test_attribution_shows_cells_spread_and_unit_at_a_sensible_size(n_groups, tmp_path):
    table = attribution_table(n_groups)
    figure = plot_attribution_by_cluster(table, "rna_mean", top=n_groups, title="conditional attribution of z_rna",
                                         unit="mean squared change of log1p(counts per 10,000)",
                                         group_name="cell_type")
    ax = figure.axes[0]
    vertical = n_groups <= 25
    ticks = [t.get_text() for t in (ax.get_xticklabels() if vertical else ax.get_yticklabels())]
    assert len(ticks) == n_groups and all("n=" in t for t in ticks)
    value_label, group_label = (ax.get_ylabel(), ax.get_xlabel()) if vertical else (ax.get_xlabel(), ax.get_ylabel())
    assert "counts per 10,000" in " ".join(value_label.split()) and group_label.startswith("cell_type")
    # the largest mean comes first, and the median carries interquartile whiskers
    first = ticks[0].split("n=")[0].strip(" (\n")
    assert first == table["rna_mean"].idxmax()
    assert any(bar.has_yerr or bar.has_xerr for bar in ax.containers)
    width, height = rendered_inches(figure, tmp_path)
    assert 1 / 3 <= width / height <= 3 and max(width, height) <= 20, (width, height)


def test_attribution_without_quantiles_draws_the_mean():
    table = attribution_table(15, quantiles=False).drop(columns="rna_median")
    ax = plot_attribution_by_cluster(table, "rna_mean").axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["mean"]
    assert len(ax.get_xticklabels()) == 15


def test_html_report_is_one_file_with_every_figure_table_and_caption(tmp_path):
    figures = []
    for i in range(2):
        figure, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [i, 1 - i])
        figure.savefig(tmp_path / f"figure_{i}.png")
        figures.append((tmp_path / f"figure_{i}.png", f"caption of figure {i}"))
    csv = tmp_path / "metrics.csv"
    pd.DataFrame({"latent": ["z_rna", "z_atac"], "ari": [0.61234, 0.4]}).to_csv(csv, index=False)
    big = pd.DataFrame({"gene": [f"gene{i}" for i in range(100)], "lfc": np.arange(100.0)})
    sections = [
        Section("Latent spaces", text="First paragraph.\n\nSecond & last.", figures=figures,
                warnings=[WARNING]),
        Section("Tables <b>", tables=[(csv, "metrics per latent"), (big, "<script>alert(1)</script>", tmp_path / "de.csv")]),
    ]
    before = set(tmp_path.iterdir())
    path = write_html_report(tmp_path / "report.html", "Run <1>", sections, warnings=["run-wide problem"])
    assert set(tmp_path.iterdir()) - before == {path}
    page = path.read_text()

    for caption in ("caption of figure 0", "caption of figure 1", "metrics per latent"):
        assert caption in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2 and all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Run &lt;1&gt;" in page and "Tables &lt;b&gt;" in page and "Second &amp; last." in page
    # table rows: the CSV in full, the DataFrame's first 20 rows only, each with the name of its full file
    assert "z_atac" in page and "0.6123" in page and "gene19" in page and "gene20" not in page
    assert 'href="metrics.csv"' in page and 'href="de.csv"' in page and "first 20 of 100 rows" in page
    # warnings on top, before the contents; nothing loaded from elsewhere
    assert page.index(html.escape(WARNING)) < page.index("Contents")
    assert page.index("run-wide problem") < page.index("Contents")
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<link" not in page
