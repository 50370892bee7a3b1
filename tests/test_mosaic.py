"""Mosaic data (issue 10): modalities measured in different cells, padded and masked, not joined away."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import tensorflow as tf
from scipy import stats

from cavachon_like import CAVACHON, MultiModality, read_h5mu, simulate
from cavachon_like.analysis import knn_agreement
from cavachon_like.data import FilterCells
from cavachon_like.data.mosaic import MEASURED_KEY
from cavachon_like.errors import InputError
from cavachon_like.nn import log_mixture_density


@pytest.fixture(scope="module")
def paired():
    # one child state: RNA is a function of the ATAC-driven parent latent, a relation to recover
    return simulate(n_cells=800, n_batches=2, n_atac=300, n_rna=80, n_child_states=1, seed=0)


@pytest.fixture(scope="module")
def dropped(paired):
    return np.random.default_rng(0).random(paired.n_obs) < 0.5


@pytest.fixture(scope="module")
def mosaic(paired, dropped):
    return MultiModality({"atac": paired.mod["atac"], "rna": paired.mod["rna"][np.flatnonzero(~dropped)]},
                         join="outer")


def test_outer_join_pads_unmeasured_cells_with_empty_rows(paired, dropped, mosaic, tmp_path):
    rna = mosaic.mod["rna"]
    assert mosaic.n_obs == paired.n_obs and list(mosaic.obs_names) == list(paired.obs_names)
    np.testing.assert_array_equal(rna.measured, ~dropped)
    assert mosaic.mod["atac"].measured.all()
    # the kept cells' counts exactly, nothing stored for the others: memory grows with non-zeros only
    assert sp.issparse(rna.X) and rna.X.nnz == paired.mod["rna"].X[~dropped].nnz
    np.testing.assert_array_equal(rna.X[~dropped].toarray(), paired.mod["rna"].X[~dropped].toarray())
    assert rna.X[dropped].nnz == 0
    # the added cells' annotations (batch, labels) come from the other modality
    np.testing.assert_array_equal(rna.obs["batch"].astype(str), paired.obs["batch"].astype(str))
    np.testing.assert_array_equal(rna.obs["cell_type"].astype(str), paired.obs["cell_type"].astype(str))
    # the flags travel with cells through subsetting and files
    picked = np.flatnonzero(dropped)[:3].tolist() + np.flatnonzero(~dropped)[:2].tolist()
    np.testing.assert_array_equal(mosaic[picked].mod["rna"].measured, [False] * 3 + [True] * 2)
    mosaic.write_h5mu(tmp_path / "mosaic.h5mu")
    np.testing.assert_array_equal(read_h5mu(tmp_path / "mosaic.h5mu").mod["rna"].measured, ~dropped)
    # batches say which cells each modality measured; paired data's batches have no such entry
    batch = next(iter(mosaic.to_dataset(batch_size=16, shuffle=False)))
    np.testing.assert_array_equal(batch["measured"]["rna"].numpy(), (~dropped[:16]).astype(np.float32))
    assert "measured" not in next(iter(paired.to_dataset(batch_size=16, shuffle=False)))


def test_an_unmeasured_cells_batch_must_be_known():
    cells = [f"c{i}" for i in range(6)]
    atac = ad.AnnData(sp.csr_matrix(np.ones((6, 4), np.float32)), obs=pd.DataFrame(index=cells))
    rna = ad.AnnData(sp.csr_matrix(np.ones((4, 3), np.float32)),
                     obs=pd.DataFrame({"sample": list("abab")}, index=cells[:4]))
    rna.var_names = ["g0", "g1", "g2"]
    with pytest.raises(InputError, match=r"modality 'rna' lacks 2 of the 6 cells .* batch column 'sample' is unknown "
                                         r"for 2 of them \(e.g. 'c4', 'c5'\)"):
        MultiModality({"atac": atac, "rna": rna}, join="outer", likelihoods={"atac": "bernoulli", "rna": "nb"},
                      batch_key={"rna": "sample"})


def test_qc_and_checks_judge_a_modality_on_its_measured_cells(mosaic, dropped):
    # the unmeasured cells' empty RNA rows would fail any RNA threshold; they stay
    filtered = FilterCells("rna", min_features=1)(mosaic)
    assert filtered.n_obs == mosaic.n_obs
    assert mosaic.library_size_report().loc["rna", "n_zero"] == 0
    assert mosaic.library_size_report().loc["rna", "n_cells"] == int((~dropped).sum())
    # a cell measured nowhere has nothing to train on
    broken = mosaic.copy()
    broken.mod["atac"].obs[MEASURED_KEY] = True
    broken.mod["atac"].obs.loc[broken.obs_names[np.flatnonzero(dropped)[:2]], MEASURED_KEY] = False
    with pytest.raises(InputError, match=r"2 cells are measured in no modality"):
        broken.validate()


def test_the_mixture_over_the_experts_a_cell_has_is_that_mixture():
    rng = np.random.default_rng(2)
    means = rng.normal(size=(3, 4, 2)).astype(np.float32)
    variances = rng.uniform(0.2, 2.0, size=(3, 4, 2)).astype(np.float32)
    z = rng.normal(size=(3, 4, 2)).astype(np.float32)
    present = [tf.constant(p, tf.float32) for p in ([1, 1, 0, 1], [1, 0, 1, 1], [1, 0, 0, 0])]
    got = log_mixture_density(tf.constant(z), tf.constant(means), tf.constant(variances), present).numpy()
    everyone = log_mixture_density(tf.constant(z), tf.constant(means), tf.constant(variances)).numpy()
    np.testing.assert_allclose(got[:, 0], everyone[:, 0], rtol=1e-5)  # cell 0 has all three
    for j in range(3):
        for b in (1, 2, 3):
            has = [k for k in range(3) if present[k].numpy()[b]]
            density = np.mean([stats.multivariate_normal(means[k, b], np.diag(variances[k, b])).pdf(z[j, b])
                               for k in has])
            np.testing.assert_allclose(got[j, b], np.log(density), rtol=1e-4)


@pytest.fixture(scope="module")
def moe(mosaic):
    small = {"encoder": {"units": [64, 32]}, "decoder": {"units": [32, 64]}, "latent_dim": 4}
    model = CAVACHON.from_data(mosaic, [{"name": "joint", "modalities": ["atac", "rna"], "posterior": "moe", **small}],
                               seed=0, pretrain_epochs=0)
    model.compile()
    model.fit(mosaic, epochs=20, batch_size=64, verbose=0)
    return model


def test_a_missing_modality_leaves_the_loss_and_the_posterior(moe, mosaic, dropped):
    component = moe.components["joint"]
    inputs = next(iter(moe.make_dataset(mosaic, batch_size=64)))
    lacking = ~inputs["measured"]["rna"].numpy().astype(bool)
    assert lacking.any() and (~lacking).any()
    outputs = moe(inputs, training=True, sample=True)["joint"]
    terms = component.loss_terms(inputs["x"], outputs)
    assert np.all(terms["nll"]["rna"].numpy()[lacking] == 0.0)
    assert np.all(terms["nll"]["rna"].numpy()[~lacking] > 0.0)
    assert np.isfinite(terms["kl"].numpy()).all() and np.isfinite(terms["nll"]["atac"].numpy()).all()
    # without RNA the joint posterior is the ATAC expert's alone
    means, _ = component.encoder.experts_of(
        [component.preprocessors[m](inputs["x"][m], tf.sparse.reduce_sum(inputs["x"][m], axis=1, keepdims=True))
         for m in component.modalities], [inputs["batch"][m] for m in component.modalities])
    latent = moe(inputs, training=False, sample=False, decode=False)["joint"]["z_mean"].numpy()
    np.testing.assert_allclose(latent[lacking], means[0].numpy()[lacking], rtol=1e-4, atol=1e-5)


def test_trained_on_mosaic_data_the_model_predicts_the_missing_rna(moe, paired, mosaic, dropped):
    labels = paired.obs["parent_type"].astype(str).to_numpy()
    z = moe.get_latent_representation(mosaic)["z_joint"]
    # measured 0.85-1.0 over two seeds of this setup; random neighbours give about 0.25
    assert knn_agreement(z[dropped], labels[dropped]) > 0.7
    counts = paired.mod["rna"].X[dropped].toarray()
    observed = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    predicted = np.log1p(moe.predict_modality(mosaic[np.flatnonzero(dropped)], "rna", n_samples=10))
    genes = [j for j in range(observed.shape[1]) if observed[:, j].std() > 0]
    r = np.median([np.corrcoef(observed[:, j], predicted[:, j])[0, 1] for j in genes])
    shuffled = predicted[np.random.default_rng(1).permutation(len(predicted))]
    control = np.median([np.corrcoef(observed[:, j], shuffled[:, j])[0, 1] for j in genes])
    # measured 0.48-0.71 (moe and poe, two seeds); cells paired at random give about 0
    assert r > 0.3 and abs(control) < 0.1


def test_models_that_cannot_take_a_missing_modality_say_so(paired, mosaic, moe, dropped):
    dag = CAVACHON.from_data(paired, [{"name": "atac", "modalities": ["atac"]},
                                      {"name": "rna", "modalities": ["rna"], "parents": ["atac"]}], seed=0)
    with pytest.raises(InputError, match=r"component 'rna' \(posterior: concat\) encodes \['rna'\] with one encoder, "
                                         rf"and {int(dropped.sum())} cells lack it"):
        dag.check_data(mosaic)
    # predicting ATAC from RNA for cells without RNA has nothing to start from
    with pytest.raises(InputError, match=r"through component 'joint', which needs one of \['rna'\]; \d+ cells lack"):
        moe.predict_modality(mosaic, "atac")


def test_a_joint_latent_is_encoded_from_the_modalities_the_data_have(moe, paired, mosaic, dropped):
    atac_only = MultiModality({"atac": paired.mod["atac"]})
    z = moe.get_latent_representation(atac_only)["z_joint"]
    # every cell as the mosaic data's RNA-less cells are: from the ATAC expert alone
    expected = moe.get_latent_representation(mosaic)["z_joint"]
    np.testing.assert_allclose(z[dropped], expected[dropped], rtol=1e-4, atol=1e-5)
    assert np.abs(z[~dropped] - expected[~dropped]).max() > 1e-2  # those had RNA there
    rna = moe.get_normalized_expression(atac_only, "rna")
    assert rna.shape == (paired.n_obs, paired.mod["rna"].n_vars) and np.isfinite(rna).all()


def test_the_expert_alignment_penalty_is_the_symmetric_kl_of_the_pairs_a_cell_has():
    from cavachon_like.module.terms import expert_divergence

    rng = np.random.default_rng(3)
    mean = rng.normal(size=(3, 4, 2)).astype(np.float32)
    var = rng.uniform(0.2, 2.0, size=(3, 4, 2)).astype(np.float32)
    present = np.array([[1, 1, 1, 0], [1, 1, 0, 1], [1, 0, 0, 1]], np.float32)

    def kl(i, j, b):  # KL(N_i || N_j), diagonal Gaussians
        return 0.5 * np.sum(np.log(var[j, b] / var[i, b]) + (var[i, b] + (mean[i, b] - mean[j, b]) ** 2) / var[j, b] - 1)

    got = expert_divergence({"mean": tf.constant(mean), "var": tf.constant(var), "present": tf.constant(present)})
    for b in range(4):
        pairs = [(i, j) for i in range(3) for j in range(i + 1, 3) if present[i, b] and present[j, b]]
        expected = np.mean([kl(i, j, b) + kl(j, i, b) for i, j in pairs]) if pairs else 0.0
        np.testing.assert_allclose(got.numpy()[b], expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="expert_alignment applies to posterior: poe or moe, not 'concat'"):
        CAVACHON.from_data(simulate(n_cells=60, n_atac=20, n_rna=10, seed=0),
                           [{"name": "joint", "modalities": ["atac", "rna"], "expert_alignment": 1.0}])
