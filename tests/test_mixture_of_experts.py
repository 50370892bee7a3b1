"""Mixture-of-experts posterior (scMM): the mixture's moments and density, the layer, and a joint
component trained with the stratified ELBO, whose experts learn to reconstruct the other modality."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from cavachon_like import CAVACHON, MultiModality, simulate
from cavachon_like.model.specs import default_units
from cavachon_like.nn import Encoder, MixtureOfExperts, log_mixture_density, mixture_moments


def _experts(rng: np.random.Generator, n_experts: int = 2, n: int = 5, d: int = 3):
    means = [rng.normal(size=(n, d)).astype(np.float32) for _ in range(n_experts)]
    variances = [rng.uniform(0.1, 2.0, size=(n, d)).astype(np.float32) for _ in range(n_experts)]
    return means, variances


def test_mixture_moments_match_numpy_and_drop_absent_experts():
    means, variances = _experts(np.random.default_rng(0))
    mean, var = mixture_moments([tf.constant(m) for m in means], [tf.constant(v) for v in variances])
    expected_mean = (means[0] + means[1]) / 2
    second = ((variances[0] + means[0] ** 2) + (variances[1] + means[1] ** 2)) / 2
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-5)
    np.testing.assert_allclose(var, second - expected_mean**2, rtol=1e-4)
    present = [tf.constant([1, 0, 1, 0, 0], tf.float32), tf.constant([1, 1, 0, 0, 0], tf.float32)]
    mean, var = mixture_moments([tf.constant(m) for m in means], [tf.constant(v) for v in variances], present)
    # cell 1 has only the second expert: exactly that expert; cells 3-4 have none: N(0, I)
    np.testing.assert_allclose(mean[1], means[1][1], rtol=1e-5)
    np.testing.assert_allclose(var[1], variances[1][1], rtol=1e-4)
    np.testing.assert_allclose(mean[3:], 0.0, atol=1e-7)
    np.testing.assert_allclose(var[3:], 1.0, rtol=1e-6)


def test_log_mixture_density_matches_scipy():
    rng = np.random.default_rng(1)
    means, variances = _experts(rng, n_experts=3, n=4, d=2)
    z = rng.normal(size=(2, 4, 2)).astype(np.float32)
    got = log_mixture_density(tf.constant(z), tf.constant(np.stack(means)), tf.constant(np.stack(variances))).numpy()
    for j in range(2):
        for b in range(4):
            density = np.mean([stats.multivariate_normal(means[k][b], np.diag(variances[k][b])).pdf(z[j, b])
                               for k in range(3)])
            np.testing.assert_allclose(got[j, b], np.log(density), rtol=1e-4)


def test_layer_builds_from_shapes_and_round_trips():
    layer = MixtureOfExperts([Encoder(latent_dim=2, units=[8], name=f"expert_{i}") for i in range(2)])
    layer.build([(None, 6), (None, 4)], [(None, 2), (None, 2)])
    x = [tf.random.stateless_normal((3, 6), [1, 2]), tf.random.stateless_normal((3, 4), [3, 4])]
    batch = [tf.zeros((3, 2)), tf.zeros((3, 2))]
    mean, var = layer(x, batch)
    means, variances = layer.experts_of(x, batch)
    np.testing.assert_allclose(mean, (means[0] + means[1]) / 2, rtol=1e-5, atol=1e-7)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(clone, MixtureOfExperts)
    clone.build([(None, 6), (None, 4)], [(None, 2), (None, 2)])
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x, batch)[1], var, rtol=1e-6)
    with pytest.raises(ValueError, match="2 experts but got 1 inputs"):
        layer(x[:1], batch[:1])


@pytest.fixture(scope="module")
def data():
    return simulate(n_cells=400, n_batches=2, n_atac=120, n_rna=60, seed=11)


@pytest.fixture(scope="module")
def joint(data):
    small = {"encoder": {"units": [32, 16]}, "decoder": {"units": [16, 32]}, "latent_dim": 4}
    model = CAVACHON.from_data(data, [{"name": "joint", "modalities": ["atac", "rna"], "posterior": "moe", **small}],
                               seed=0, pretrain_epochs=0)
    model.compile()
    model.fit(data, epochs=40, batch_size=64, verbose=0)
    return model


def _median_gene_r(predicted: np.ndarray, data) -> float:
    counts = np.asarray(data.mod["rna"].X.todense(), np.float64)
    observed = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    predicted = np.log1p(predicted)
    return float(np.median([np.corrcoef(predicted[:, j], observed[:, j])[0, 1]
                            for j in range(observed.shape[1]) if observed[:, j].std() > 0]))


def test_joint_moe_component_learns_to_predict_rna_from_atac(data, joint, tmp_path):
    """Each expert's sample decodes both modalities in training (stratified ELBO), so the ATAC
    expert alone predicts RNA: median gene-wise correlation 0.48-0.50 at model seeds 0-1 (a product
    of experts trained the same way: 0.04-0.18)."""
    history = joint.history.history
    assert np.isfinite(history["joint_kl"]).all() and history["loss"][-1] < 0.7 * history["loss"][0]
    atac_only = MultiModality({"atac": data.mod["atac"]})
    predicted = joint.predict_modality(atac_only, "rna", transform_batch="all", n_samples=5)
    assert predicted.shape == (data.n_obs, 60) and np.isfinite(predicted).all()
    assert _median_gene_r(predicted, data) > 0.3
    # The RNA's own counts never enter its prediction.
    np.testing.assert_array_equal(predicted, joint.predict_modality(data, "rna", transform_batch="all", n_samples=5))
    path = tmp_path / "moe.keras"
    joint.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.components["joint"].encoder, MixtureOfExperts)
    np.testing.assert_allclose(loaded.get_latent_representation(data)["z_joint"],
                               joint.get_latent_representation(data)["z_joint"], rtol=1e-5, atol=1e-6)


def test_stratified_terms_average_the_experts_samples(data, joint):
    """The training pass decodes one sample per expert; its KL, a stratified one-sample-per-expert
    estimate, averages over draws to the mixture's KL by plain Monte Carlo (both unbiased)."""
    component = joint.components["joint"]
    batch = next(iter(joint.make_dataset(data, batch_size=32)))
    outputs = component(batch["x"], batch["batch"], [], sample=True)
    assert outputs["experts"]["z"].shape == (2, 32, 4)
    assert outputs["raw"]["rna"][next(iter(outputs["raw"]["rna"]))].shape[0] == 2 * 32
    terms = component.loss_terms(batch["x"], outputs)
    assert terms["kl"].shape == (32,) and terms["nll"]["rna"].shape == (32,)
    assert bool(tf.reduce_all(tf.math.is_finite(terms["kl"])))
    stratified = np.mean([np.mean(component.loss_terms(batch["x"], component(
        batch["x"], batch["batch"], [], sample=True))["kl"]) for _ in range(50)])
    # KL(q || p) by plain Monte Carlo: z drawn from the mixture itself (an expert, then its Gaussian).
    experts = outputs["experts"]
    rng = np.random.default_rng(0)
    means, variances = experts["mean"].numpy(), experts["var"].numpy()
    draws = []
    for _ in range(400):
        pick = rng.integers(2, size=32)
        z = means[pick, np.arange(32)] + np.sqrt(variances[pick, np.arange(32)]) * rng.standard_normal((32, 4))
        log_q = log_mixture_density(tf.constant(z[None], tf.float32), experts["mean"], experts["var"])[0]
        draws.append(np.mean(log_q - component.prior.log_prob(tf.constant(z, tf.float32))))
    assert abs(stratified - np.mean(draws)) < 0.1 * abs(np.mean(draws)) + 0.1, (stratified, np.mean(draws))


def test_experts_and_decoders_take_a_spec_per_modality(data, tmp_path):
    """scMM's widths (500 units for RNA, 100 for chromatin): the encoder and decoder specs keyed by
    modality build each expert and decoder from its own entry; an unlisted modality gets the
    data-scaled default, and the model saves and loads with them."""
    spec = {"name": "joint", "modalities": ["atac", "rna"], "posterior": "moe", "latent_dim": 4,
            "encoder": {"atac": {"units": [12, 12]}, "rna": {"units": [40, 40], "dropout": 0.1}},
            "decoder": {"rna": {"units": [24]}}}
    model = CAVACHON.from_data(data, [spec], seed=0, pretrain_epochs=0)
    joint = model.components["joint"]
    experts = dict(zip(joint.modalities, joint.encoder.experts))
    assert tuple(experts["atac"].body.units) == (12, 12)
    assert tuple(experts["rna"].body.units) == (40, 40) and experts["rna"].body.dropout == 0.1
    assert tuple(joint.decoders["rna"].body.units) == (24,)
    assert tuple(joint.decoders["atac"].body.units) == default_units(data.n_obs)[::-1]  # unlisted: the default
    model.compile()
    model.fit(data, epochs=1, batch_size=100, verbose=0)
    path = tmp_path / "widths.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.get_latent_representation(data)["z_joint"],
                               model.get_latent_representation(data)["z_joint"], rtol=1e-5, atol=1e-6)


def test_a_spec_per_modality_is_refused_where_it_is_ambiguous_or_has_no_expert(data):
    mixed = {"name": "joint", "modalities": ["atac", "rna"], "posterior": "moe",
             "encoder": {"rna": {"units": [8]}, "units": [8]}}
    with pytest.raises(ValueError, match=r"component 'joint'.*mixes modality names \['rna'\] with other keys \['units'\]"):
        CAVACHON.from_data(data, [mixed], seed=0)
    concat = {"name": "joint", "modalities": ["atac", "rna"], "posterior": "concat",
              "encoder": {"rna": {"units": [8]}}}
    with pytest.raises(ValueError, match=r"component 'joint': posterior 'concat' has no encoder per modality"):
        CAVACHON.from_data(data, [concat], seed=0)
