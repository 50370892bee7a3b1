"""Product-of-experts posterior: the Gaussian product, the layer, and a joint component using it."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cavachon_like import CAVACHON, MultiModality, simulate
from cavachon_like.nn import Encoder, ProductOfExperts, library_size, product_of_gaussians


def test_product_of_gaussians_adds_precisions_and_drops_absent_experts():
    rng = np.random.default_rng(0)
    means = [rng.normal(size=(5, 3)).astype(np.float32) for _ in range(2)]
    variances = [rng.uniform(0.1, 2.0, size=(5, 3)).astype(np.float32) for _ in range(2)]
    mean, var = product_of_gaussians([tf.constant(m) for m in means], [tf.constant(v) for v in variances])
    precision = 1.0 + 1.0 / variances[0] + 1.0 / variances[1]
    np.testing.assert_allclose(var, 1.0 / precision, rtol=1e-5)
    np.testing.assert_allclose(mean, (means[0] / variances[0] + means[1] / variances[1]) / precision, rtol=1e-5)
    present = [tf.constant([1, 0, 1, 0, 0], tf.float32), tf.constant([1, 1, 0, 0, 0], tf.float32)]
    mean, var = product_of_gaussians([tf.constant(m) for m in means], [tf.constant(v) for v in variances], present)
    # cell 2 has only the first expert; cells 3-4 have none: the prior expert N(0, I) alone
    np.testing.assert_allclose(var[2], 1.0 / (1.0 + 1.0 / variances[0][2]), rtol=1e-5)
    np.testing.assert_allclose(mean[3:], 0.0)
    np.testing.assert_allclose(var[3:], 1.0)


def test_layer_builds_from_shapes_and_round_trips():
    layer = ProductOfExperts([Encoder(latent_dim=2, units=[8], name=f"expert_{i}") for i in range(2)])
    layer.build([(None, 6), (None, 4)], [(None, 2), (None, 2)])
    x = [tf.random.stateless_normal((3, 6), [1, 2]), tf.random.stateless_normal((3, 4), [3, 4])]
    batch = [tf.zeros((3, 2)), tf.zeros((3, 2))]
    mean, var = layer(x, batch)
    assert mean.shape == var.shape == (3, 2) and bool(tf.reduce_all(var < 1.0))  # experts only sharpen
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    clone.build([(None, 6), (None, 4)], [(None, 2), (None, 2)])
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x, batch)[0], mean, rtol=1e-6)
    with pytest.raises(ValueError, match="2 experts but got 1 inputs"):
        layer(x[:1], batch[:1])


@pytest.fixture(scope="module")
def data():
    return simulate(n_cells=400, n_batches=2, n_atac=120, n_rna=60, seed=11)


@pytest.fixture(scope="module")
def joint(data):
    small = {"encoder": {"units": [32, 16]}, "decoder": {"units": [16, 32]}, "latent_dim": 4}
    model = CAVACHON.from_data(data, [{"name": "joint", "modalities": ["atac", "rna"], "posterior": "poe", **small}],
                               seed=0, pretrain_epochs=0)
    model.compile()
    model.fit(data, epochs=15, batch_size=64, verbose=0)
    return model


def test_joint_poe_component_trains_saves_and_predicts_rna_from_atac(data, joint, tmp_path):
    assert [type(e).__name__ for e in joint.components["joint"].encoder.experts] == ["Encoder", "Encoder"]
    path = tmp_path / "poe.keras"
    joint.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.get_latent_representation(data)["z_joint"],
                               joint.get_latent_representation(data)["z_joint"], rtol=1e-5, atol=1e-6)
    atac_only = MultiModality({"atac": data.mod["atac"]})
    predicted = joint.predict_modality(atac_only, "rna", transform_batch="all", n_samples=5)
    assert predicted.shape == (data.n_obs, 60) and np.isfinite(predicted).all()
    # The RNA's own counts never enter its prediction: with them present, the same numbers.
    np.testing.assert_array_equal(predicted, joint.predict_modality(data, "rna", transform_batch="all", n_samples=5))
    # q(z | atac) is the ATAC expert times N(0, I): recomputed from the public layers.
    component = joint.components["joint"]
    x = tf.constant(np.asarray(data.mod["atac"].X.todense(), np.float32))
    batch = tf.constant(data.modality("atac").batch_one_hot(joint.batch_categories["atac"]))
    expert_mean, expert_var = component.encoder.experts[0]([component.preprocessors["atac"](x, library_size(x))], batch)
    mean, var = product_of_gaussians([expert_mean], [expert_var])
    np.testing.assert_allclose(var, 1.0 / (1.0 + 1.0 / expert_var.numpy()), rtol=1e-5)
    rng = np.random.default_rng(0)
    rows = np.eye(2, dtype=np.float32)
    expected = 0.0
    for _ in range(5):
        z = mean + tf.sqrt(var) * tf.constant(rng.standard_normal(mean.shape), tf.float32)
        z_hat = component.hierarchical_encoder(z, [])
        expected += np.mean([component.likelihoods["rna"].normalized_mean(
            component.decoders["rna"](z_hat, tf.tile(row[None], [data.n_obs, 1])), 1e4).numpy() for row in rows], 0) / 5
    np.testing.assert_allclose(predicted, expected, rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="no other modality"):
        joint.predict_modality(MultiModality({"rna": data.mod["rna"]}), "rna")
