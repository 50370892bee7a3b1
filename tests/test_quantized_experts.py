"""``posterior: vq`` (CVQVAE, paper 002): per-modality experts quantised on one shared EMA
codebook, cross-decoding, commitment and alignment losses, through the public model interface."""
from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from cavachon_like import CAVACHON, MultiModality, simulate
from cavachon_like.nn import QuantizedExperts, library_size

N_CODES = 32


def components(alignment: float = 1.0) -> list[dict]:
    return [{"name": "joint", "modalities": ["atac", "rna"], "posterior": "vq", "latent_dim": 6, "prior": "normal",
             "encoder": {"units": [32]}, "decoder": {"units": [32]},
             "quantizer": {"n_codes": N_CODES, "decay": 0.9, "alignment": alignment}}]


def trained(data: MultiModality, alignment: float = 1.0, epochs: int = 5) -> tuple[CAVACHON, dict]:
    model = CAVACHON.from_data(data, components(alignment), training="joint", pretrain_epochs=0, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(data, epochs=epochs, batch_size=64, validation_split=0.1, verbose=0)
    return model, history.history


@pytest.fixture(scope="module")
def data() -> MultiModality:
    return simulate(n_cells=300, n_batches=2, n_atac=100, n_rna=50, seed=3)


@pytest.fixture(scope="module")
def run(data):
    model = CAVACHON.from_data(data, components(), training="joint", pretrain_epochs=0, seed=0)
    initial = np.array(model.components["joint"].encoder.quantizer.codebook)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(data, epochs=5, batch_size=64, validation_split=0.1, verbose=0).history
    return model, history, initial


def test_training_moves_the_codebook_and_reports_its_usage(run, data):
    model, history, initial = run
    codebook = model.components["joint"].encoder.quantizer.codebook
    assert isinstance(model.components["joint"].encoder, QuantizedExperts)
    assert np.abs(np.array(codebook) - initial).max() > 0.1  # moved by the EMA updates
    for key in ("joint_perplexity", "joint_codes_in_use", "val_joint_perplexity"):
        assert all(1.0 <= v <= N_CODES for v in history[key]), (key, history[key])
    assert history["joint_codes_in_use"][-1] >= 4  # restarts keep codes alive
    assert history["atac_nll"][-1] < 0.9 * history["atac_nll"][0]
    assert history["rna_nll"][-1] < 0.9 * history["rna_nll"][0]
    frozen = np.array(codebook)
    model.get_latent_representation(data)  # inference never moves the codebook
    model.evaluate(model.make_dataset(data, batch_size=64), verbose=0)
    np.testing.assert_array_equal(np.array(codebook), frozen)


def test_prediction_from_one_modality_is_the_decoded_code_of_its_expert(run, data):
    model, _, _ = run
    atac_only = MultiModality({"atac": data.mod["atac"]})
    first = model.predict_modality(atac_only, "rna", transform_batch="all", n_samples=3)
    again = model.predict_modality(atac_only, "rna", transform_batch="all", n_samples=1, seed=5)
    assert first.shape == (data.n_obs, data.mod["rna"].n_vars) and np.isfinite(first).all()
    np.testing.assert_allclose(first, again, rtol=1e-5)  # a point-mass posterior: draws do not matter


def test_round_trip_keeps_latents_and_codebook(run, data, tmp_path):
    model, _, _ = run
    model.save(tmp_path / "vq.keras")
    loaded = keras.saving.load_model(tmp_path / "vq.keras")
    np.testing.assert_array_equal(np.array(loaded.components["joint"].encoder.quantizer.codebook),
                                  np.array(model.components["joint"].encoder.quantizer.codebook))
    np.testing.assert_array_equal(loaded.get_latent_representation(data)["z_joint"],
                                  model.get_latent_representation(data)["z_joint"])


def test_marginal_likelihood_and_misplaced_options_are_clear_errors(run, data):
    model, _, _ = run
    with pytest.raises(ValueError, match=r"quantised latent \(posterior: vq\), a point mass"):
        model.marginal_log_likelihood(data, n_samples=2)
    spec = components()[0] | {"posterior": "poe"}
    with pytest.raises(ValueError, match="quantizer options apply to posterior: vq"):
        CAVACHON.from_data(data, [spec], training="joint", seed=0)


def test_alignment_pulls_the_experts_of_a_cell_together(run, data):
    def gap(model: CAVACHON) -> float:
        """Mean squared distance between a cell's two experts, relative to the latent's spread."""
        component = model.components["joint"]
        inputs = next(iter(model.make_dataset(data, batch_size=data.n_obs, shuffle=False)))
        encoded = [component.preprocessors[m](inputs["x"][m], library_size(inputs["x"][m]))
                   for m in component.modalities]
        means, _ = component.encoder.experts_of(encoded, [inputs["batch"][m] for m in component.modalities])
        spread = float(tf.reduce_mean(tf.math.reduce_variance(means[0], axis=0)))
        return float(tf.reduce_mean(tf.reduce_sum(tf.square(means[0] - means[1]), 1))) / spread

    aligned, _, _ = run
    unaligned, _ = trained(data, alignment=0.0)
    assert gap(aligned) < 0.5 * gap(unaligned), (gap(aligned), gap(unaligned))


def test_each_cell_gets_the_index_of_its_nearest_code_through_the_interface(run, data):
    model, _, _ = run
    latents = model.get_latent_representation(data)
    codes = latents["code_joint"]
    assert codes.shape == (data.n_obs,) and np.issubdtype(codes.dtype, np.integer)
    codebook = np.array(model.components["joint"].encoder.quantizer.codebook)
    distances = ((latents["z_joint"][:, None, :] - codebook[None]) ** 2).sum(-1)
    assert np.mean(codes == distances.argmin(axis=1)) > 0.99  # float ties aside, the nearest code
    assert len(np.unique(codes)) >= 2
    annotated = data.copy()
    model.annotate(annotated)
    column = annotated.obs["code_joint"]
    assert isinstance(column.dtype, pd.CategoricalDtype)
    np.testing.assert_array_equal(column.astype(int).to_numpy(), codes)
    assert "code_joint" not in annotated.obsm
