"""Cross-modal prediction through the DAG and the importance-sampled marginal log-likelihood."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from cavachon_like import CAVACHON, MultiModality, simulate

SMALL = {"encoder": {"units": [32, 16]}, "decoder": {"units": [16, 32]}, "latent_dim": 4}
COMPONENTS = [
    {"name": "atac", "modalities": ["atac"], **SMALL},
    {"name": "rna", "modalities": ["rna"], "parents": ["atac"], **SMALL},
]


@pytest.fixture(scope="module")
def data():
    # RNA cell types follow ATAC types, so ATAC carries what RNA is predicted from.
    return simulate(n_cells=400, n_batches=2, n_atac=120, n_rna=60, seed=11)


@pytest.fixture(scope="module")
def trained(data):
    model = CAVACHON.from_data(data, COMPONENTS, seed=0, pretrain_epochs=0)
    model.compile()
    model.fit(data, epochs=15, batch_size=64, verbose=0)
    return model


def test_rna_from_atac_is_the_decoded_mean_over_prior_draws_of_z_rna(data, trained):
    """E[x_rna | x_atac] = E_{z ~ p(z_rna)}[mean(x_rna | f_b([z_hat_atac; f_r(z)]))], batch-averaged:
    recomputed here from the model's public layers, on cells that have no RNA."""
    atac_only = MultiModality({"atac": data.mod["atac"]})
    predicted = trained.predict_modality(atac_only, "rna", transform_batch="all", n_samples=4, seed=3,
                                         batch_size=data.n_obs)
    assert predicted.shape == (data.n_obs, 60) and np.isfinite(predicted).all()
    np.testing.assert_array_equal(predicted, trained.predict_modality(atac_only, "rna", transform_batch="all",
                                                                      n_samples=4, seed=3, batch_size=data.n_obs))
    rna = trained.components["rna"]
    z_hat_atac = tf.constant(trained.get_latent_representation(data)["z_hat_atac"])
    rows = np.eye(2, dtype=np.float32)  # the two batches the model knows
    rng = np.random.default_rng(3)
    expected = 0.0
    for _ in range(4):
        z_hat = rna.hierarchical_encoder(tf.constant(rna.prior.sample(data.n_obs, rng)), [z_hat_atac])
        decoded = [rna.likelihoods["rna"].normalized_mean(rna.decoders["rna"](z_hat, tf.tile(row[None], [data.n_obs, 1])),
                                                          1e4) for row in rows]
        expected += np.mean([d.numpy() for d in decoded], axis=0) / 4
    np.testing.assert_allclose(predicted, expected, rtol=1e-4, atol=1e-6)
    # Each cell's ATAC matters: other cells' ATAC gives other predictions.
    assert np.abs(np.log1p(predicted) - np.log1p(predicted[::-1])).mean() > 1e-3
    # With the RNA present its own batches are used (and its counts ignored).
    with_rna = trained.predict_modality(data, "rna", n_samples=4, seed=3)
    assert with_rna.shape == predicted.shape and not np.allclose(with_rna, predicted)


def test_log1p_prediction_is_the_expected_log_normalised_value_at_the_recorded_depth(data, trained, tmp_path):
    """``log1p=True``: the mean over prior draws and batch rows of E[log1p(1e4 x / depth)] for counts
    drawn at ``depth``, here ``"median"``: the training cells' median RNA total, which the model
    records (and keeps through .keras save/load). The default, a depth per cell from its ATAC
    total, is tested in test_depth.py."""
    import keras

    totals = np.asarray(data.mod["rna"].X.sum(1)).ravel()
    assert trained.modality_specs["rna"]["median_library_size"] == pytest.approx(np.median(totals))
    atac_only = MultiModality({"atac": data.mod["atac"][:50]})
    predicted = trained.predict_modality(atac_only, "rna", transform_batch="all", n_samples=2, seed=3, log1p=True,
                                         depth="median")
    rna = trained.components["rna"]
    z_hat_atac = tf.constant(trained.get_latent_representation(data[:50])["z_hat_atac"])
    rng = np.random.default_rng(3)
    expected = 0.0
    for _ in range(2):
        z_hat = rna.hierarchical_encoder(tf.constant(rna.prior.sample(50, rng)), [z_hat_atac])
        for row in np.eye(2, dtype=np.float32):
            raw = rna.decoders["rna"](z_hat, tf.tile(row[None], [50, 1]))
            expected += rna.likelihoods["rna"].expected_log1p(raw, np.median(totals)) / 4
    np.testing.assert_allclose(predicted, expected, rtol=1e-4, atol=1e-5)
    # It is not log1p of the decoded mean: below it everywhere (Jensen), and well below on average.
    mean = trained.predict_modality(atac_only, "rna", transform_batch="all", n_samples=2, seed=3)
    default = trained.predict_modality(atac_only, "rna", transform_batch="all", n_samples=2, seed=3, log1p=True)
    assert np.all(default <= np.log1p(mean) + 1e-4)  # Jensen holds at any depth
    assert np.all(predicted <= np.log1p(mean) + 1e-4) and np.mean(np.log1p(mean) - predicted) > 0.05
    # One depth per cell; a deeper cell's expected values are higher.
    depths = np.r_[np.full(25, 50.0), np.full(25, 5000.0)]
    per_cell = trained.predict_modality(atac_only, "rna", transform_batch="all", n_samples=2, seed=3, log1p=True,
                                        depth=depths)
    assert per_cell[25:].mean() > per_cell[:25].mean()
    with pytest.raises(ValueError, match="one positive number per cell"):
        trained.predict_modality(atac_only, "rna", transform_batch="all", log1p=True, depth=np.ones(3))
    path = tmp_path / "model.keras"
    trained.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.modality_specs["rna"]["median_library_size"] == trained.modality_specs["rna"]["median_library_size"]


def test_prediction_does_not_depend_on_how_draws_are_stacked(data, trained):
    """The draws and batch rows of a batch of cells are decoded stacked, ``batch_size // n`` (draw, row)
    pairs per decoder call: one pair per call, three (a draw's two rows split between calls) and all
    eight in one call give the same prediction. (The draws themselves depend on how the cells are
    batched, as the generator fills one batch's draws after the other's.)"""
    atac_only = MultiModality({"atac": data.mod["atac"]})
    n = data.n_obs

    def predict(batch_size):
        return trained.predict_modality(atac_only, "rna", transform_batch="all", n_samples=4, seed=3,
                                        batch_size=batch_size)

    one_per_call = predict(n)
    for batch_size in (3 * n, 8 * n):
        np.testing.assert_allclose(predict(batch_size), one_per_call, rtol=1e-5, atol=1e-7)


def test_prediction_explains_what_it_cannot_do(data, trained):
    with pytest.raises(ValueError, match="no parents"):
        trained.predict_modality(data, "atac")
    rna_only = MultiModality({"rna": data.mod["rna"]})
    with pytest.raises(ValueError, match=r"lack \['atac'\]"):
        trained.predict_modality(rna_only, "rna")
    atac_only = MultiModality({"atac": data.mod["atac"]})
    with pytest.raises(ValueError, match="transform_batch='all'"):
        trained.predict_modality(atac_only, "rna")
    with pytest.raises(KeyError, match="no modality 'adt'"):
        trained.predict_modality(data, "adt")


def test_marginal_log_likelihood(data, trained):
    held_out = np.arange(0, data.n_obs, 4)
    many = trained.marginal_log_likelihood(data, n_samples=30, indices=held_out)
    one = trained.marginal_log_likelihood(data, n_samples=1, indices=held_out)
    assert many.shape == (len(held_out),) and np.isfinite(many).all()
    # More importance samples tighten the bound: the estimate rises (by far more than noise).
    assert many.mean() > one.mean() + 0.5
    np.testing.assert_array_equal(many, trained.marginal_log_likelihood(data, n_samples=30, indices=held_out))
    untrained = CAVACHON.from_data(data, COMPONENTS, seed=0, pretrain_epochs=0)
    untrained.adapt(data)
    assert many.mean() > untrained.marginal_log_likelihood(data, n_samples=30, indices=held_out).mean() + 50


def test_cli_predict_writes_the_prediction(tmp_path, capsys):
    import mudata
    import yaml

    from cavachon_like.cli import main
    from cavachon_like.data import read_h5mu

    config = {"seed": 0, "data": {"simulate": {"n_cells": 120, "n_atac": 40, "n_rna": 20, "n_batches": 2}},
              "model": {"components": [dict(c, latent_dim=2) for c in COMPONENTS], "pretrain_epochs": 0},
              "training": {"epochs": 1, "batch_size": 64, "verbose": 0}, "output": {"embedding": "pca"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "config.yaml"), "--out", str(run)]) == 0
    assert main(["predict", str(run), "--target", "rna", "--n-samples", "2"]) == 0
    assert "median correlation" in capsys.readouterr().out
    predicted = read_h5mu(run / "predicted_rna.h5mu")
    assert predicted.mod["rna"].layers["predicted"].shape == (120, 20)
    assert main(["predict", str(run), "--target", "rna", "--n-samples", "2", "--log1p", "--out",
                 str(tmp_path / "log1p.h5mu")]) == 0
    logged = mudata.read_h5mu(tmp_path / "log1p.h5mu").mod["rna"].layers["predicted"]
    assert np.all(logged >= 0) and np.all(logged <= np.log1p(predicted.mod["rna"].layers["predicted"]) + 1e-3)
    # Cells without RNA: the prediction becomes the modality.
    atac_only = MultiModality({"atac": read_h5mu(run / "result.h5mu").mod["atac"]})
    atac_only.write(tmp_path / "atac.h5mu")
    assert main(["predict", str(run), "--target", "rna", "--data", str(tmp_path / "atac.h5mu"),
                 "--out", str(tmp_path / "p.h5mu")]) == 0
    written = mudata.read_h5mu(tmp_path / "p.h5mu")  # decoded means: no likelihood recorded for rna
    assert written.mod["rna"].shape == (120, 20) and np.isfinite(np.asarray(written.mod["rna"].X)).all()
    capsys.readouterr()
    assert main(["predict", str(run), "--target", "atac"]) == 2
    assert "no parents" in capsys.readouterr().err
