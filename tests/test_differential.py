"""The public model interface on data with planted differential genes: decoding, DE calls, GSEA, ORA."""
from __future__ import annotations

import anndata as ad
import keras
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from cavachon_like import CAVACHON, MultiModality
from cavachon_like.analysis import gsea, one_vs_rest, overrepresentation
from cavachon_like.data import resolve_groups
from cavachon_like.model import MultimodalModel
from cavachon_like.model.differential import expected_fdr, observed_summary

TINY = {"encoder": {"units": [64, 32]}, "decoder": {"units": [32, 64]}, "latent_dim": 4}


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
    direction = np.zeros(n_genes)
    direction[de] = np.where(np.arange(n_de) % 2 == 0, 1.0, -1.0)
    truth = pd.Series(direction, index=genes)  # +1 up in A, -1 down, 0 unchanged
    return MultiModality({"rna": rna}, likelihoods={"rna": "nb"}, batch_key="batch"), truth


@pytest.fixture(scope="module")
def de_run():
    data, truth = planted()
    # DE is under test, not the clustering recipe, but the model must have learned the groups.
    # Plain ELBO training from random mixture means (the paper) left the group out of the latent
    # at model seeds 0 and 4 of 0-5 (nothing called); five epochs of VaDE's
    # pre-training with its KL warm-up, then 15 of the ELBO, recovered every planted gene at
    # seeds 0-5 on Keras 3.8 and 3.15 alike.
    model = CAVACHON.from_data(data, [{"name": "rna", "modalities": ["rna"], **TINY}], seed=0, pretrain_epochs=5)
    model.compile(optimizer=keras.optimizers.Adam(5e-3))
    model.fit(data, epochs=15, batch_size=64, verbose=0)
    return model, data, truth


# ---------------------------------------------------------------- the interface
def test_model_implements_the_interface(de_run):
    model, data, _ = de_run
    assert isinstance(model, MultimodalModel)
    assert model.latent_names == ["rna"] and model.latent_modalities("rna") == ["rna"]
    assert model.batch_keys("rna") == ["batch"] and model.modality_support("rna") == "counts"
    assert model.attributable_latents == []
    with pytest.raises(ValueError, match="has no parents"):
        model.conditional_attribution(data, "rna")


def test_normalized_expression_batches_and_samples(de_run):
    model, data, _ = de_run
    cells = np.arange(0, 300, 3)
    own = model.get_normalized_expression(data, "rna", indices=cells)
    assert own.shape == (len(cells), 200) and own.dtype == np.float32
    # counts per 10,000: each cell's decoded means sum to the library size
    np.testing.assert_allclose(own.sum(axis=1), 1e4, rtol=1e-3)
    b0 = model.get_normalized_expression(data, "rna", indices=cells, transform_batch={"batch": "b0"})
    b1 = model.get_normalized_expression(data, "rna", indices=cells, transform_batch={"batch": "b1"})
    pooled = model.get_normalized_expression(data, "rna", indices=cells, transform_batch="all")
    np.testing.assert_allclose(pooled, (b0 + b1) / 2, rtol=1e-4)
    in_b0 = data.obs_column("batch").to_numpy()[cells] == "b0"
    np.testing.assert_allclose(own[in_b0], b0[in_b0], rtol=1e-4)
    assert np.abs(np.log(b0 / b1)).mean() > 0.05  # the model did learn a batch effect
    draws = model.get_normalized_expression(data, "rna", indices=cells, n_samples=3, return_samples=True, seed=4)
    assert draws.shape == (3, len(cells), 200) and not np.allclose(draws[0], draws[1])
    again = model.get_normalized_expression(data, "rna", indices=cells, n_samples=3, return_samples=True, seed=4)
    np.testing.assert_array_equal(draws, again)
    with pytest.raises(ValueError, match="no category 'b7'"):
        model.get_normalized_expression(data, "rna", transform_batch={"batch": "b7"})
    with pytest.raises(ValueError, match="exactly its batch columns"):
        model.get_normalized_expression(data, "rna", transform_batch={"sample": "b0"})


def test_posterior_predictive_sample(de_run):
    model, data, _ = de_run
    cells = np.arange(40)
    counts = model.posterior_predictive_sample(data, "rna", indices=cells, n_samples=20, seed=1)
    assert counts.shape == (20, 40, 200) and (counts >= 0).all() and np.array_equal(counts, np.round(counts))
    observed = data.mod["rna"].X[cells].toarray()
    # simulated and observed library sizes agree within the spread of the NB
    ratio = counts.sum(axis=2).mean(axis=0) / observed.sum(axis=1)
    assert 0.7 < np.median(ratio) < 1.4
    np.testing.assert_array_equal(counts, model.posterior_predictive_sample(data, "rna", indices=cells, n_samples=20,
                                                                            seed=1))


# ---------------------------------------------------------------- differential expression
def test_differential_expression_calls_planted_genes(de_run):
    model, data, truth = de_run
    # The 4x changes shift every other gene's share of the counts by 0.2-0.35 log2 in the data
    # (composition), so the margin sits above that and far below the planted log2 4 = 2.
    # 50 draws (of the default 100): at model seeds 0-5 all 30 planted genes and no other are called
    table = model.differential_expression(data, "rna", groupby="group", group_a="A", delta=0.6, seed=1, n_draws=50)
    planted_genes = truth[table.index] != 0
    called = table["is_de"]
    # recall and precision of the calls, each with margin below what a 4x change gives here
    assert called[planted_genes].mean() >= 0.8
    assert planted_genes[called].mean() >= 0.8
    assert roc_auc_score(planted_genes, table["score"].abs()) >= 0.95
    # directions and magnitudes (truth: |log2 4| = 2), and signs agree with the observed data
    hits = table[called & planted_genes]
    assert (np.sign(hits["lfc_median"]) == truth[hits.index]).all()
    assert (hits["lfc_median"].abs() > 1).all()
    agree = np.sign(table.loc[called, "lfc_median"]) == np.sign(table.loc[called, "observed_lfc"])
    assert agree.mean() >= 0.95
    # the calls' posterior expected FDR is the reported one, within the target
    fdr_list = table["expected_fdr"] <= table.attrs["fdr_target"]
    assert (1 - table.loc[fdr_list, "prob_de"]).mean() <= table.attrs["fdr_target"]
    assert table.attrs["n_a"] + table.attrs["n_b"] == data.n_obs
    assert table.attrs["units"] == "counts per 10,000"
    assert table.attrs["n_up"] + table.attrs["n_down"] == called.sum()
    # up calls first, down calls last, each by fold change
    block = np.where(called, np.where(table["direction"] == "up", 0, 2), 1)
    assert (np.diff(block) >= 0).all()
    assert all(table.loc[block == b, "lfc_median"].is_monotonic_decreasing for b in (0, 1, 2))
    # the same seed gives the same numbers; the groups may come as masks or as a two-valued column
    groups = data.obs_column("group").to_numpy()
    again = model.differential_expression(data, "rna", group_a=groups == "A", group_b=groups == "B", delta=0.6,
                                          seed=1, n_draws=50)
    pd.testing.assert_frame_equal(table, again.loc[table.index], check_exact=True)
    two_valued = model.differential_expression(data, "rna", groupby="group", n_draws=10)
    assert two_valued.attrs["group_a"] == "A" and two_valued.attrs["group_b"] == "B"


def test_differential_expression_options(de_run):
    model, data, _ = de_run
    # without a margin, prob_de is the probability of the more probable sign; 10 draws (the least
    # allowed) call 200 and 30 of the 200 genes at model seeds 0-5, as 50 draws do
    sign = model.differential_expression(data, "rna", groupby="group", group_a="A", delta=0.0, n_draws=10)
    assert (sign["prob_de"] >= 0.5).all()
    strict = model.differential_expression(data, "rna", groupby="group", group_a="A", delta=1.0, n_draws=10)
    assert strict["is_de"].sum() <= sign["is_de"].sum()
    with pytest.raises(ValueError, match="delta"):
        model.differential_expression(data, "rna", groupby="group", group_a="A", delta=-1)
    with pytest.raises(ValueError, match="fdr_target"):
        model.differential_expression(data, "rna", groupby="group", group_a="A", fdr_target=0)
    with pytest.raises(ValueError, match="no modality 'atac'"):
        model.differential_expression(data, "atac", groupby="group", group_a="A")
    table = one_vs_rest(model, data, "rna", "group", n_draws=10)
    assert set(table["group"]) == {"A", "B"} and len(table) == 2 * data.mod["rna"].n_vars


def test_expected_fdr_and_observed_summary():
    np.testing.assert_allclose(expected_fdr(np.array([0.5, 1.0, 0.1, 0.9])), [0.2, 0.0, 0.375, 0.05])
    # tied features are called together
    np.testing.assert_allclose(expected_fdr(np.array([0.6, 0.6, 1.0, 1.0])), [0.2, 0.2, 0.0, 0.0])
    x = sp.csr_matrix(np.array([[1.0, 0, 3], [0, 0, 2], [4, 0, 0]]))
    data = MultiModality({"rna": ad.AnnData(x)}, likelihoods={"rna": "nb"})
    detected, mean = observed_summary(data, "rna", np.array([0, 1, 2]), "counts", 10.0)
    np.testing.assert_allclose(detected, [2 / 3, 0, 2 / 3])
    np.testing.assert_allclose(mean, [(2.5 + 0 + 10) / 3, 0, (7.5 + 10 + 0) / 3])
    assert np.array_equal(observed_summary(data, "rna", np.array([0, 1]), "binary", 10.0)[1], [0.5, 0, 1])
    np.testing.assert_allclose(observed_summary(data, "rna", np.array([0, 2]), "real", 10.0)[1], [2.5, 0, 1.5])


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


# ---------------------------------------------------------------- gene set enrichment
def test_gsea_and_overrepresentation_find_the_planted_sets(de_run):
    model, data, truth = de_run
    table = model.differential_expression(data, "rna", groupby="group", group_a="A", n_draws=50)
    rng = np.random.default_rng(0)
    others = list(truth[truth == 0].index)
    sets = {"PLANTED_UP": [g.upper() for g in truth[truth > 0].index],
            "PLANTED_DOWN": [g.upper() for g in truth[truth < 0].index]}
    sets.update({f"RANDOM_{i}": [g.upper() for g in rng.choice(others, 15, replace=False)] for i in range(6)})
    # mouse-style symbols against upper-case sets are matched without being asked
    result = gsea(table, sets, permutations=200, min_size=5, seed=0)
    assert result.upper_cased
    assert result.up.loc[0, "term"] == "PLANTED_UP" and result.up.loc[0, "fdr"] < 0.05
    assert result.down.loc[0, "term"] == "PLANTED_DOWN" and result.down.loc[0, "nes"] < 0
    assert list(result.table["direction"]) == sorted(result.table["direction"], key=lambda d: d != "up")
    assert len(result.running["PLANTED_UP"]["hits"]) == 15
    assert result.warnings and "only 8 gene sets" in result.warnings[0]
    with pytest.raises(ValueError, match="upper_case=True"):
        gsea(table, sets, upper_case=False, min_size=5)
    ora = overrepresentation(table, sets)
    best = ora.groupby("direction").first()
    assert best.loc["up", "term"] == "PLANTED_UP" and best.loc["up", "fdr"] < 0.05
    assert best.loc["down", "term"] == "PLANTED_DOWN"


def test_overrepresentation_without_any_overlap_is_an_empty_direction():
    genes = [f"G{i}" for i in range(40)]
    table = pd.DataFrame({"is_de": [True] * 6 + [False] * 34,
                          "direction": ["up"] * 3 + ["down"] * 3 + ["up"] * 34}, index=genes)
    # Every set lies among the genes not called, so neither direction overlaps any set.
    sets = {"A": genes[10:20], "B": genes[20:30]}
    result = overrepresentation(table, sets)
    assert result.empty and list(result.columns)[:3] == ["direction", "term", "overlap"]
    # One direction overlapping, the other not: the first is reported, the second left out.
    sets["C"] = genes[0:3] + genes[30:35]
    assert set(overrepresentation(table, sets)["direction"]) == {"up"}
