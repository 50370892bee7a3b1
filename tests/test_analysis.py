"""Analyses on data with planted truth: metrics, neighbourhoods, attribution, differential analysis, GSEA, CLI."""
from __future__ import annotations

import anndata as ad
import keras
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from cavachon_like import CAVACHON, MultiModality, simulate
from cavachon_like.analysis import (
    attribution_by_cluster,
    batch_silhouette,
    cluster_summary,
    conditional_attribution,
    differential_analysis,
    evaluate_latent,
    gsea,
    ilisi,
    knn_agreement,
    label_silhouette,
    neighbourhood_table,
    one_vs_rest,
    ranking_score,
    resolve_groups,
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


# ---------------------------------------------------------------- differential analysis
def planted(n_cells: int = 1500, n_genes: int = 200, n_de: int = 30, seed: int = 0):
    """Two groups (A/B) and two batches; ``n_de`` genes 4x up or down in A, the rest differ only by noise."""
    rng = np.random.default_rng(seed)
    group, batch = rng.integers(2, size=n_cells), rng.integers(2, size=n_cells)
    nuisance = rng.normal(size=(n_cells, 2)) @ rng.normal(0, 0.2, (2, n_genes))
    eta = rng.normal(0, 1, n_genes) + nuisance + rng.normal(0, 0.4, (2, n_genes))[batch]
    de = rng.choice(n_genes, n_de, replace=False)
    eta[:, de] += np.outer(group == 1, np.where(np.arange(n_de) % 2 == 0, 1.0, -1.0) * np.log(4))
    p = np.exp(eta)
    p /= p.sum(axis=1, keepdims=True)
    library = rng.lognormal(np.log(3000), 0.3, n_cells)
    counts = rng.poisson(rng.gamma(5, library[:, None] * p / 5)).astype(np.float32)
    obs = pd.DataFrame(
        {"group": pd.Categorical(np.where(group == 1, "A", "B")), "batch": pd.Categorical(np.char.add("b", batch.astype(str)))},
        index=[f"cell{i}" for i in range(n_cells)],
    )
    genes = [f"Gene{i}" for i in range(n_genes)]
    rna = ad.AnnData(sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=genes))
    truth = pd.Series(np.isin(np.arange(n_genes), de), index=genes)
    return MultiModality({"rna": rna}, likelihoods={"rna": "nb"}, batch_key="batch"), truth


@pytest.fixture(scope="module")
def de_run():
    data, truth = planted()
    model = CAVACHON.from_data(data, [{"name": "rna", "modalities": ["rna"], **TINY}], seed=0)
    model.compile(optimizer=keras.optimizers.Adam(5e-3))
    model.fit(data, epochs=30, batch_size=64, verbose=0)
    return model, data, truth


def test_differential_analysis_ranks_planted_genes_first(de_run):
    model, data, truth = de_run
    table = differential_analysis(model, data, "rna", groupby="group", group_a="A", n_samples=2000, seed=1)
    evidence = np.maximum(table["bayes_factor_a_gt_b"], table["bayes_factor_b_gt_a"])
    assert roc_auc_score(truth[table.index], evidence) >= 0.9
    planted_up = truth[table.index] & (table["lfc_mean"] > 0)
    assert planted_up.sum() >= 10 and (table.loc[planted_up, "lfc_mean"] > 1).all()  # truth: log2(4) = 2
    assert table.attrs["n_a"] + table.attrs["n_b"] == data.n_obs
    np.testing.assert_allclose(table["prob_a_gt_b"] + table["prob_b_gt_a"], 1.0, atol=1e-3)
    # a fold-change margin (scVI's change mode) removes the softmax's small compositional shifts
    margin = differential_analysis(model, data, "rna", groupby="group", group_a="A", n_samples=2000, delta=0.5)
    margin_evidence = np.maximum(margin["bayes_factor_a_gt_b"], margin["bayes_factor_b_gt_a"])
    assert roc_auc_score(truth[margin.index], margin_evidence) >= 0.98
    # the same seed gives the same numbers; the groups may come as masks or as a two-valued column
    again = differential_analysis(model, data, "rna", group_a=data.obs_column("group").to_numpy() == "A",
                                  group_b=data.obs_column("group").to_numpy() == "B", n_samples=2000, seed=1)
    pd.testing.assert_frame_equal(table, again.loc[table.index], check_exact=True)
    two_valued = differential_analysis(model, data, "rna", groupby="group", n_samples=500)
    assert two_valued.attrs["group_a"] == "A" and two_valued.attrs["group_b"] == "B"


def test_one_vs_rest_and_ranking(de_run):
    model, data, truth = de_run
    table = one_vs_rest(model, data, "rna", "group", n_samples=500)
    assert set(table["group"]) == {"A", "B"} and len(table) == 2 * data.mod["rna"].n_vars
    a = table[table["group"] == "A"].set_index("feature")
    score = ranking_score(a)
    assert score.loc[truth[truth].index].abs().mean() > 2 * score.loc[truth[~truth].index].abs().mean()


def test_group_errors_name_the_problem(de_run):
    _, data, _ = de_run
    with pytest.raises(ValueError, match="has no cells with \\['C'\\]"):
        resolve_groups(data, group_a="C", groupby="group")
    with pytest.raises(ValueError, match="both groups"):
        resolve_groups(data, group_a=np.arange(data.n_obs))
    with pytest.raises(ValueError, match="in both groups"):
        resolve_groups(data, group_a=[0, 1], group_b=[1, 2])
    with pytest.raises(ValueError, match="not in the data"):
        resolve_groups(data, group_a=["cell0", "nope"])


def test_gsea_finds_the_planted_set(de_run):
    model, data, truth = de_run
    table = differential_analysis(model, data, "rna", groupby="group", group_a="A", n_samples=1000)
    up = [g for g in truth[truth].index if table.loc[g, "lfc_mean"] > 0]
    rng = np.random.default_rng(0)
    others = list(truth[~truth].index)
    sets = {"PLANTED_UP": [g.upper() for g in up]}
    sets.update({f"RANDOM_{i}": [g.upper() for g in rng.choice(others, 15, replace=False)] for i in range(8)})
    result = gsea(table, sets, upper_case=True, permutations=200, min_size=5, seed=0)
    assert result.table.loc[0, "term"] == "PLANTED_UP" and result.table.loc[0, "nes"] > 0
    assert result.table.loc[0, "fdr"] < 0.05
    assert len(result.running["PLANTED_UP"]["hits"]) == len(up)
    with pytest.raises(ValueError, match="upper_case=True"):
        gsea(table, sets, min_size=5)


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
    scores = conditional_attribution(model, data, "rna", steps=20)
    # completeness of integrated gradients: the dimensions sum to the exact output change
    np.testing.assert_allclose(scores["rna"], scores["rna_delta"], rtol=0.05, atol=1e-3 * scores["rna_delta"].max())
    by_type = attribution_by_cluster(scores, data.obs_column("cell_type"))
    assert by_type.index[0] == "P0_C1"
    assert by_type["rna_mean"].iloc[0] > 2 * by_type["rna_mean"].iloc[1]
    assert list(by_type.columns) == ["n_cells", "rna_mean", "rna_median"]


def test_attribution_options(child_only_run):
    model, data = child_only_run
    paper = conditional_attribution(model, data, "rna", steps=10, baseline="zero")
    np.testing.assert_allclose(paper["rna"], paper["rna_delta"], rtol=0.05, atol=1e-3 * paper["rna_delta"].max())
    z = model.get_latent_representation(data)["z_rna"]
    # a baseline at the cell's own latent attributes nothing to it
    own = conditional_attribution(model, data.subset([0]), "rna", steps=4, baseline=z[0])
    assert abs(own["rna"].iloc[0]) < 1e-6
    with pytest.raises(ValueError, match="shape \\(4,\\)"):
        conditional_attribution(model, data, "rna", baseline=[0.0, 1.0])
    with pytest.raises(ValueError, match="baseline must be"):
        conditional_attribution(model, data, "rna", baseline="median")
    with pytest.raises(KeyError, match="unknown component"):
        conditional_attribution(model, data, "protein")
