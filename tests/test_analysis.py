"""Analyses on data with planted truth: metrics, neighbourhoods, attribution, differential analysis, GSEA, CLI."""
from __future__ import annotations

import numpy as np
import pytest

from cavachon_like import CAVACHON, simulate
from cavachon_like.analysis import (
    attribution_by_cluster,
    batch_silhouette,
    cluster_summary,
    evaluate_latent,
    ilisi,
    knn_agreement,
    label_silhouette,
    neighbourhood_table,
    top_attributed_features,
)

TINY = {"encoder": {"units": [64, 32]}, "decoder": {"units": [32, 64]}, "latent_dim": 4}


# ---------------------------------------------------------------- metrics and neighbourhoods
@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    labels = rng.integers(3, size=600)
    batch = rng.integers(2, size=600)
    latent = np.eye(3)[labels] * 6 + rng.normal(size=(600, 3))
    return latent, labels.astype(str), batch.astype(str)


def test_metrics_separate_good_from_bad_latents(blobs):
    latent, labels, batch = blobs
    shuffled = np.random.default_rng(1).permutation(labels)
    assert knn_agreement(latent, labels) > 0.95
    assert knn_agreement(latent, shuffled) < 0.5
    assert label_silhouette(latent, labels) > 0.7 > label_silhouette(latent, shuffled)
    split = latent + 8 * (batch == "1")[:, None]
    assert batch_silhouette(latent, batch, labels) > 0.9
    assert batch_silhouette(split, batch, labels) < 0.3
    assert ilisi(latent, batch) > 0.8 and ilisi(split, batch) < 0.05
    scores = evaluate_latent(latent, labels, batch=batch, clusters=labels)
    assert scores["cluster_ari"] == pytest.approx(1.0) and scores["kmeans_ari"] > 0.95
    assert set(scores) >= {"knn_agreement", "kmeans_nmi", "label_silhouette", "batch_silhouette", "ilisi"}


def test_metrics_reject_bad_input(blobs):
    latent, labels, _ = blobs
    with pytest.raises(ValueError, match="one entry per cell"):
        knn_agreement(latent, labels[:-1])
    with pytest.raises(ValueError, match="missing for 1 cells"):
        knn_agreement(latent, np.where(np.arange(600) == 5, None, labels))
    with pytest.raises(ValueError, match="NaN"):
        knn_agreement(np.where(np.arange(600)[:, None] == 0, np.nan, latent), labels)


def test_neighbourhood_table_matches_brute_force():
    rng = np.random.default_rng(2)
    latent, labels = rng.normal(size=(40, 2)), rng.integers(2, size=40).astype(str)
    table = neighbourhood_table(latent, labels, k=[1, 5, 10])
    distances = ((latent[:, None] - latent[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    order = np.argsort(distances, axis=1)
    for k in (1, 5, 10):
        expected = (labels[order[:, :k]] == labels[:, None]).mean(axis=1)
        np.testing.assert_allclose(table[k].to_numpy(), expected)
    assert list(table["label"]) == list(labels)


def test_cluster_summary_scores_best_label():
    clusters = np.array(["0"] * 4 + ["1"] * 4)
    labels = np.array(["a", "a", "a", "b", "b", "b", "b", "a"])
    summary = cluster_summary(clusters, labels).set_index("cluster")
    assert summary.loc["0", "label"] == "a" and summary.loc["0", "precision"] == pytest.approx(0.75)
    assert summary.loc["1", "recall"] == pytest.approx(0.75)


# ---------------------------------------------------------------- conditional attribution
@pytest.fixture(scope="module")
def child_only_run():
    # only P0 cells vary in the child state, so P0_C1 differs from every other cell in RNA alone
    data = simulate(n_cells=1200, n_batches=2, n_atac=400, n_rna=150, child_parent_types=[0], seed=7)
    components = [
        {"name": "atac", "modalities": ["atac"], **TINY},
        {"name": "rna", "modalities": ["rna"], "parents": ["atac"], **TINY},
    ]
    # Attribution is under test, not the clustering recipe: 15 plain ELBO epochs, as in the paper.
    model = CAVACHON.from_data(data, components, seed=0, pretrain_epochs=0)
    model.compile()
    model.fit(data, epochs=15, batch_size=128, verbose=0)
    return model, data


def test_attribution_ranks_the_child_only_cluster_first(child_only_run):
    model, data = child_only_run
    scores = model.conditional_attribution(data, "rna", steps=20)
    # completeness of integrated gradients: the dimensions sum to the exact output change
    np.testing.assert_allclose(scores["rna"], scores["rna_delta"], rtol=0.05, atol=1e-3 * scores["rna_delta"].max())
    by_type = attribution_by_cluster(scores, data.obs_column("cell_type"))
    # P0_C1 and P0_C0 share their ATAC (parent type 0) and differ only in the RNA-only
    # state: the one that differs from the population gets the attribution. (Across model
    # seeds 0-2 P0_C1 is first or second of the 5 types and 1.9-2.7x P0_C0.)
    assert "P0_C1" in by_type.index[:2]
    assert by_type.loc["P0_C1", "rna_mean"] > 1.5 * by_type.loc["P0_C0", "rna_mean"]
    assert list(by_type.columns) == ["n_cells", "rna_mean", "rna_median", "rna_q25", "rna_q75"]
    assert (by_type["rna_q25"] <= by_type["rna_median"]).all() and (by_type["rna_median"] <= by_type["rna_q75"]).all()


def test_attribution_per_feature(child_only_run):
    model, data = child_only_run
    cells = np.arange(0, data.n_obs, 7)
    scores = model.conditional_attribution(data, "rna", steps=4, indices=cells)
    change = model.conditional_attribution(data, "rna", per_feature=True, indices=cells)["rna"]
    assert change.shape == (len(cells), data.mod["rna"].n_vars) and list(change.index) == list(data.obs_names[cells])
    # per-feature changes are what the per-cell score integrates: its exact value is their mean square
    np.testing.assert_allclose((change**2).mean(axis=1), scores["rna_delta"], rtol=1e-4)
    top = top_attributed_features(model, data, "rna", "rna", data.obs_column("cell_type"), n_top=5, max_cells=60)
    assert set(top["rank"]) == {1, 2, 3, 4, 5} and (top["n_cells"] <= 60).all()
    strongest = top[top["rank"] == 1].set_index("group")["mean_change"].abs()
    # The RNA-only state shows in features too: P0_C1's strongest change is among the two
    # largest and above its ATAC twin's (1.2-1.6x across model seeds 0-2).
    assert "P0_C1" in strongest.nlargest(2).index
    assert strongest["P0_C1"] > strongest["P0_C0"]
    with pytest.raises(ValueError, match="has no parents"):
        model.conditional_attribution(data, "atac")


def test_attribution_options(child_only_run):
    model, data = child_only_run
    # the paper's linear scale and blend-out baseline (Eq. S6) stay available
    paper = model.conditional_attribution(data, "rna", steps=10, baseline="zero", transform="linear")
    np.testing.assert_allclose(paper["rna"], paper["rna_delta"], rtol=0.05, atol=1e-3 * paper["rna_delta"].max())
    z = model.get_latent_representation(data)["z_rna"]
    # a baseline at the cell's own latent attributes nothing to it
    own = model.conditional_attribution(data, "rna", steps=4, baseline=z[0], indices=[0])
    assert abs(own["rna"].iloc[0]) < 1e-6
    with pytest.raises(ValueError, match="shape \\(4,\\)"):
        model.conditional_attribution(data, "rna", baseline=[0.0, 1.0])
    with pytest.raises(ValueError, match="baseline must be"):
        model.conditional_attribution(data, "rna", baseline="median")
    with pytest.raises(ValueError, match="transform must be"):
        model.conditional_attribution(data, "rna", transform="sqrt")
    with pytest.raises(KeyError, match="unknown component"):
        model.conditional_attribution(data, "protein")
