"""multiDGD's covariate model: supervised mixtures over per-cell covariate representations."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf
from scipy.special import logsumexp
from scipy.stats import norm
from sklearn.neighbors import KNeighborsClassifier

from cavachon_like import CAVACHON, simulate
from cavachon_like.nn import CovariateModel

COMPONENTS = [{"name": "joint", "modalities": ["atac", "rna"], "posterior": "representation", "latent_dim": 6,
               "n_clusters": 8, "decoder": {"units": [48, 48]}, "representation": {"covariate_dim": 2}}]


def test_log_prob_is_the_category_component_or_the_known_mixture():
    model = CovariateModel({"rna": {"lib": 3, "donor": 2}, "atac": {"lib": 3}}, dim=2, n_cells=50)
    model.build()
    rng = np.random.default_rng(0)
    for weights in (model.means, model.raw_variances):
        for col, w in weights.items():
            w.assign(rng.normal(size=w.shape).astype(np.float32))
    r = rng.normal(size=(5, 4)).astype(np.float32)
    codes = {"lib": np.array([0, 2, -1, 1, 3]), "donor": np.array([1, -1, 0, 0, 2])}
    extra = {"lib": (rng.normal(size=(1, 2)).astype(np.float32), np.full((1, 2), 0.3, np.float32)),
             "donor": (rng.normal(size=(1, 2)).astype(np.float32), np.full((1, 2), 0.5, np.float32))}
    got = model.log_prob(tf.constant(r), {k: tf.constant(v) for k, v in codes.items()}, extra).numpy()
    expected = np.zeros(5)
    for i, col in enumerate(["lib", "donor"]):  # the representation's slices, in column order
        means = np.concatenate([np.asarray(model.means[col]), extra[col][0]])
        sd = np.sqrt(np.concatenate([np.asarray(model.variances(col)), extra[col][1]]))
        per_class = norm.logpdf(r[:, None, 2 * i:2 * i + 2], means, sd).sum(-1)
        n_known = model.columns[col]
        naive = logsumexp(per_class[:, :n_known], axis=1) - np.log(n_known)
        expected += np.where(codes[col] >= 0, per_class[np.arange(5), np.maximum(codes[col], 0)], naive)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # what each modality's decoder reads: its own columns, at a one-hot's component means
    one_hot = tf.constant(np.eye(3, dtype=np.float32)[[2, 0]])
    np.testing.assert_allclose(model.condition("atac", one_hot), np.asarray(model.means["lib"])[[2, 0]], rtol=1e-6)
    assert model.condition_width("rna") == 4 and model.condition("rna", tf.zeros([2, 5]), tf.constant(r[:2])).shape == (2, 4)
    np.testing.assert_array_equal(model.codes({"rna": tf.constant([[0, 1, 0, 1, 0], [0, 0, 0, 0, 1]], tf.float32)})["lib"],
                                  [1, -1])
    again = CovariateModel.from_config(model.get_config())
    assert again.layouts == model.layouts and again.dim == 2
    with pytest.raises(ValueError, match="same categories in every modality"):
        CovariateModel({"rna": {"lib": 3}, "atac": {"lib": 4}})
    with pytest.raises(ValueError, match="give the modalities a batch_key"):
        CovariateModel({"rna": {}})


def _with_batch_effect(data, seed=0):
    """The simulator's batches shifted hard in RNA: in every batch but the first, a third of the
    genes (a different third per batch) read 4x as many counts."""
    rng = np.random.default_rng(seed)
    rna = data.mod["rna"]
    counts = sp.csr_matrix(rna.X, dtype=np.float32).toarray()
    batches = rna.obs["batch"].astype(str).to_numpy()
    for b in sorted(set(batches))[1:]:
        genes = rng.choice(rna.n_vars, rna.n_vars // 3, replace=False)
        rows = batches == b
        counts[np.ix_(rows, genes)] = rng.poisson(4 * counts[np.ix_(rows, genes)] + 0.5)
    rna.X = sp.csr_matrix(counts)
    return data


@pytest.fixture(scope="module")
def trained():
    data = _with_batch_effect(simulate(n_cells=750, n_batches=3, n_atac=150, n_rna=120, seed=4))
    held = (data.obs["batch"] == "batch2").to_numpy() & (np.arange(data.n_obs) % 3 == 0)  # some batch2 cells held out
    train, query = data[~held], data[held]
    model = CAVACHON.from_data(train, COMPONENTS, seed=0, pretrain_epochs=3)
    model.compile()
    model.fit(train, epochs=15, batch_size=100, validation_split=0.1, verbose=0)
    return model, train, query


def test_covariate_latents_hold_the_batch_and_the_basal_latent_the_cell_type(trained):
    model, train, _ = trained
    latents = model.get_latent_representation(train)
    batch, types = train.obs["batch"].astype(str).to_numpy(), train.obs["cell_type"].to_numpy()

    def knn(x, y):
        return (KNeighborsClassifier(15).fit(x[::2], y[::2]).predict(x[1::2]) == y[1::2]).mean()

    assert latents["covariates_joint"].shape == (train.n_obs, 2)
    # 3 batches (chance 0.33) in 2-D covariates; measured 1.0
    assert knn(latents["covariates_joint"], batch) > 0.9
    # supervised: each cell's covariate latent lies nearest its own batch's component mean
    means = np.asarray(model.components["joint"].covariates.means["batch"])
    nearest = np.argmin(((latents["covariates_joint"][:, None] - means[None]) ** 2).sum(-1), axis=1)
    codes = np.searchsorted(sorted(set(batch)), batch)
    assert (nearest == codes).mean() > 0.95
    # 8 cell types (chance 0.125) in the basal latent
    assert knn(latents["z_joint"], types) > 0.6


def test_unseen_batches_are_placed_naively_or_under_a_new_component(trained):
    model, _, query = trained
    unseen = query.copy()
    for table in [unseen.obs, *(m.obs for m in unseen.mod.values())]:
        table["batch"] = "batchX"  # batch2's cells under a name the model has not seen
    before = [np.asarray(w).copy() for w in model.weights]
    naive = model.predict_new(unseen)
    fitted = model.predict_new(unseen, new_covariates=True)
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, model.weights)), "inference changed the model"
    means = np.asarray(model.components["joint"].covariates.means["batch"])
    for result in (naive, fitted):
        nearest = np.argmin(((result["covariates_joint"][:, None] - means[None]) ** 2).sum(-1), axis=1)
        assert (nearest == 2).mean() > 0.8  # they look like batch2, so they land by its component
    assert not np.allclose(naive["covariates_joint"], fitted["covariates_joint"])
    known = model.predict_new(query)  # under their own (known) batch: supervised
    assert np.isfinite(known["z_joint"]).all() and known["covariates_joint"].shape == (query.n_obs, 2)


def test_map_query_places_new_batches_without_training(trained):
    model, train, query = trained
    unseen = query.copy()
    for table in [unseen.obs, *(m.obs for m in unseen.mod.values())]:
        table["batch"] = "batchX"
    before = [np.asarray(w).copy() for w in model.weights]
    mapping = model.map_query(unseen, reference=train, label_key="cell_type", new_covariates=True)
    assert mapping.model is model and mapping.history is None
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, model.weights))
    assert mapping.new_categories == {"atac": {"batch": ["batchX"]}, "rna": {"batch": ["batchX"]}}
    assert mapping.accuracy > 0.7  # 8 cell types, chance 0.125; measured 0.99
    assert mapping.clusters["joint"].shape == (unseen.n_obs,)
    written = mapping.annotate(unseen)
    assert "obsm/z_joint" in written and "obsm/covariates_joint" in written


def test_save_and_load_round_trip_the_covariate_model(trained, tmp_path):
    model, train, _ = trained
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    cells = train[:200]
    expected, got = model.get_latent_representation(cells), loaded.get_latent_representation(cells)
    for key in ("z_joint", "covariates_joint"):
        np.testing.assert_array_equal(got[key], expected[key])
    np.testing.assert_array_equal(loaded.get_normalized_expression(cells, "rna"),
                                  model.get_normalized_expression(cells, "rna"))


def test_a_covariate_model_needs_batch_columns():
    data = simulate(n_cells=120, n_batches=2, n_atac=30, n_rna=20, seed=0)
    for m in data.mod.values():
        m.batch_key = []
    with pytest.raises(ValueError, match="give the modalities a batch_key"):
        CAVACHON.from_data(data, COMPONENTS, seed=0)
    plain = [{k: v for k, v in COMPONENTS[0].items() if k != "representation"}]
    model = CAVACHON.from_data(simulate(n_cells=120, n_batches=2, n_atac=30, n_rna=20, seed=0), plain, seed=0)
    query = simulate(n_cells=60, n_batches=3, n_atac=30, n_rna=20, seed=1)
    with pytest.raises(ValueError, match="covariate_dim: 2"):
        model.map_query(query)


def test_several_batch_columns_each_get_a_covariate_latent():
    data = simulate(n_cells=240, n_batches=3, n_atac=40, n_rna=30, seed=2)
    donor = np.where(data.obs["batch"].astype(str) == "batch0", "d0", "d1")
    for table in [data.obs, *(m.obs for m in data.mod.values())]:
        table["donor"] = donor
    data.mod["rna"].batch_key = ["batch", "donor"]  # ATAC keeps the library only
    held = np.arange(data.n_obs) % 4 == 0
    model = CAVACHON.from_data(data[~held], COMPONENTS, seed=0, pretrain_epochs=1)
    covariates = model.components["joint"].covariates
    assert covariates.columns == {"batch": 3, "donor": 2} and covariates.condition_width("atac") == 2
    model.compile()
    model.fit(data[~held], epochs=2, batch_size=60, verbose=0)
    assert model.get_latent_representation(data[~held])["covariates_joint"].shape == (int((~held).sum()), 4)
    query = data[held].copy()
    for table in [query.obs, *(m.obs for m in query.mod.values())]:
        table["donor"] = "d2"  # a donor the model has not seen, libraries it has
    placed = model.predict_new(query, new_covariates=True)
    assert placed["covariates_joint"].shape == (query.n_obs, 4) and np.isfinite(placed["covariates_joint"]).all()
    # the known library is scored supervised: its slice lies nearest its own component
    means = np.asarray(covariates.means["batch"])
    nearest = np.argmin(((placed["covariates_joint"][:, None, :2] - means[None]) ** 2).sum(-1), axis=1)
    codes = np.searchsorted(["batch0", "batch1", "batch2"], query.obs["batch"].astype(str).to_numpy())
    assert (nearest == codes).mean() > 0.75  # 3 libraries, chance 0.33; measured 0.95
