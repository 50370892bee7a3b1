"""In-silico silencing (multiDGD's gene-to-peak) and its genome-track analysis."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from cavachon_like import CAVACHON, simulate
from cavachon_like.analysis import gene_to_peak, peak_table, summarize_gene_to_peak
from cavachon_like.plotting import plot_gene_to_peak


@pytest.fixture(scope="module")
def trained():
    data = simulate(n_cells=300, n_batches=2, n_atac=90, n_rna=40, seed=3)
    components = [{"name": "joint", "modalities": ["atac", "rna"], "posterior": "representation", "latent_dim": 6,
                   "n_clusters": 6, "decoder": {"units": [32, 32]}}]
    model = CAVACHON.from_data(data, components, seed=0, pretrain_epochs=2)
    model.compile()
    model.fit(data, epochs=6, batch_size=100, verbose=0)
    return data, model


def test_silencing_a_gene_lowers_its_own_prediction(trained):
    """One latent step towards ``x_j = 0`` lowers the decoded ``x_j`` for most genes (not every one: the
    step may raise ``p(x_j = 0)`` through the NB dispersion head instead of the mean)."""
    data, model = trained
    genes = list(data.mod["rna"].var_names[:8])
    effects = model.silencing_effects(data, genes, source="rna", target="rna", max_cells=80)
    assert effects.shape == (40, 8)
    own = np.array([effects.loc[g, g] for g in genes])
    assert (own > 0).sum() >= 5  # measured 7 of 8
    # the silenced gene is among the most lowered genes of its own column
    ranks = [int((effects[g] > effects.loc[g, g]).sum()) for g in genes]
    assert np.median(ranks) < 5


def test_effects_on_peaks_count_the_expressing_cells_and_vanish_without_a_step(trained):
    data, model = trained
    genes = list(data.mod["rna"].var_names[:3])
    effects = model.silencing_effects(data, genes, source="rna", target="atac", max_cells=50)
    assert list(effects.index) == list(data.mod["atac"].var_names) and np.isfinite(effects.to_numpy()).all()
    expressing = (data.mod["rna"].X[:, :3].toarray() > 0).sum(axis=0)
    assert effects.attrs["n_cells"] == {g: int(min(n, 50)) for g, n in zip(genes, expressing)}
    assert np.abs(effects.to_numpy()).max() > 0
    still = model.silencing_effects(data, genes, source="rna", target="atac", max_cells=50, learning_rate=0.0)
    np.testing.assert_array_equal(still.to_numpy(), 0.0)
    together = model.silencing_effects(data, genes, source="rna", target="atac", max_cells=50, together=True)
    assert list(together.columns) == ["+".join(genes)]
    with pytest.raises(KeyError, match="no features"):
        model.silencing_effects(data, ["nope"], source="rna", target="atac")


def _peaks(n: int) -> pd.Index:
    chroms = np.array(["chr1", "chr2", "chr3"])[np.arange(n) % 3]
    starts = (np.arange(n) // 3) * 20_000 + 1_000
    return pd.Index([f"{c}_{s}_{s + 500}" for c, s in zip(chroms, starts)])


def test_gene_to_peak_finds_planted_near_peaks_and_not_random_ones():
    rng = np.random.default_rng(0)
    peaks = _peaks(600)
    genes = pd.DataFrame({"chrom": ["chr1", "chr2"], "start": [200_000, 400_000], "end": [210_000, 410_000],
                          "strand": ["+", "-"]}, index=["near", "random"])
    effects = pd.DataFrame({"near": rng.normal(0, 1e-3, 600), "random": rng.normal(0, 1e-3, 600)}, index=peaks)
    table = peak_table(effects, "near", genes)
    close = table.index[table["distance"] <= 10_000]
    assert len(close) > 0
    effects.loc[close, "near"] *= 20
    result = gene_to_peak(effects, genes, window=10_000, n_permutations=500)
    assert result.loc["near", "ratio"] > 5 and result.loc["near", "p_value"] < 0.01
    assert result.loc["random", "p_value"] > 0.01
    summary = summarize_gene_to_peak(result)
    assert summary["n_genes"] == 2 and summary["ratio"] > 1 and summary["p_value"] < 0.01
    fig = plot_gene_to_peak(peak_table(effects, "near", genes), "near", genes, flank=100_000, window=10_000)
    shown = peak_table(effects, "near", genes)
    assert len(fig.axes[0].containers[0]) == int((shown["distance"] <= 100_000).sum())
