"""sampled_zeros: the Bernoulli reconstruction term from the non-zeros plus a reweighted sample of features."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cavachon_like import CAVACHON, simulate
from cavachon_like.distributions import get_likelihood
from cavachon_like.module.terms import sampled_reconstruction
from cavachon_like.nn.decoder import Decoder


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    n_cells, n_features = 32, 400
    decoder = Decoder(n_features, ("logits",), units=(16, 32), name="decoder_atac")
    decoder.build((None, 4), (None, 2))
    z_hat = tf.constant(rng.normal(size=(n_cells, 4)), tf.float32)
    batch = tf.constant(np.eye(2)[rng.integers(2, size=n_cells)], tf.float32)
    dense = (rng.random((n_cells, n_features)) < 0.08) * rng.integers(1, 4, (n_cells, n_features))
    x = tf.sparse.from_dense(tf.constant(dense, tf.float32))
    return get_likelihood("bernoulli"), decoder, z_hat, batch, x


def exact(likelihood, decoder, z_hat, batch, x):
    return likelihood.log_prob(x, likelihood.constrain(decoder(z_hat, batch)))


def test_the_estimate_is_unbiased_in_value_and_gradient(setup):
    likelihood, decoder, z_hat, batch, x = setup
    kernel = decoder.heads["logits"].kernel
    with tf.GradientTape() as tape:
        full = tf.reduce_sum(exact(likelihood, decoder, z_hat, batch, x))
    full_grad = tape.gradient(full, kernel).numpy()
    seed = keras.random.SeedGenerator(1)
    values, grads = [], []
    for _ in range(300):
        with tf.GradientTape() as tape:
            pieces = sampled_reconstruction(likelihood, decoder, x, z_hat, batch, 0.1, seed)
            estimate = tf.reduce_sum(likelihood.sampled_log_prob(pieces))
        values.append(float(estimate))
        grads.append(tape.gradient(estimate, kernel).numpy())
    values = np.array(values)
    standard_error = values.std() / np.sqrt(len(values))
    assert values.std() > 0  # it is an estimate, not the exact value
    assert abs(values.mean() - float(full)) < 5 * standard_error
    # Unbiased gradients: the error of a mean of n estimates shrinks like 1/sqrt(n) (a bias would
    # stay): 300 estimates' mean lies far closer to the exact gradient than one estimate does.
    def error(g):
        return np.linalg.norm(g - full_grad) / np.linalg.norm(full_grad)

    single = np.mean([error(g) for g in grads[:30]])
    assert error(np.mean(grads, axis=0)) < single / 6  # sqrt(300) = 17


def test_the_non_zero_terms_are_exact(setup):
    likelihood, decoder, z_hat, batch, x = setup
    logits = decoder(z_hat, batch)["logits"]
    target = tf.sparse.to_dense(tf.SparseTensor(x.indices, likelihood.target(x.values), x.dense_shape))
    pieces = sampled_reconstruction(likelihood, decoder, x, z_hat, batch, 0.1, keras.random.SeedGenerator(0))
    np.testing.assert_allclose(pieces["linear"].numpy(), tf.reduce_sum(target * logits, axis=1).numpy(),
                               rtol=1e-4, atol=1e-3)
    dense = sampled_reconstruction(likelihood, decoder, tf.sparse.to_dense(x), z_hat, batch, 0.1,
                                   keras.random.SeedGenerator(0))
    np.testing.assert_allclose(dense["linear"].numpy(), pieces["linear"].numpy(), rtol=1e-4, atol=1e-3)
    assert pieces["logits"].shape == (32, 40) and float(pieces["scale"]) == pytest.approx(10.0)


def test_components_that_cannot_sample_their_zeros_say_so(small_data):
    small = {"encoder": {"units": [16]}, "decoder": {"units": [16]}, "latent_dim": 3}
    with pytest.raises(ValueError, match=r"sampled_zeros needs.*\{'rna': 'zinb'\}"):
        CAVACHON.from_data(small_data, [{"name": "rna", "modalities": ["rna"], "sampled_zeros": 0.1, **small}])
    with pytest.raises(ValueError, match="sampled_zeros applies to posterior concat or poe, not 'moe'"):
        CAVACHON.from_data(small_data, [{"name": "joint", "modalities": ["atac", "rna"], "posterior": "moe",
                                         "sampled_zeros": 0.1, **small}])
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="sampled_zeros must be a fraction"):
            CAVACHON.from_data(small_data, [{"name": "atac", "modalities": ["atac"], "sampled_zeros": bad, **small}])


def test_training_with_sampled_zeros_reaches_the_exact_loss(tmp_path):
    """The same model trained exactly and with a fifth of 1,000 ATAC features per step, two seeds
    each: the exact (validation) loss ends within a few per cent, the latent separates the
    parent types alike, and the option survives saving. (30 epochs: at 15, one seed's run
    still differed by 6% either way; at 30, seeds 0-3 are 1-2% apart, sampled above.)"""
    from sklearn.neighbors import KNeighborsClassifier

    data = simulate(n_cells=600, n_batches=2, n_atac=1000, n_rna=50, seed=5)
    labels = data.obs["parent_type"].to_numpy()
    small = {"encoder": {"units": [32, 16]}, "decoder": {"units": [16, 32]}, "latent_dim": 4, "n_clusters": 4}
    losses, accuracies = {None: [], 0.2: []}, {None: [], 0.2: []}
    for fraction in (None, 0.2):
        for seed in (0, 1):
            model = CAVACHON.from_data(data, [{"name": "atac", "modalities": ["atac"], "sampled_zeros": fraction,
                                               **small}], seed=seed, pretrain_epochs=0)
            model.compile(optimizer=keras.optimizers.Adam(3e-3))
            history = model.fit(data, epochs=30, batch_size=64, validation_split=0.2, verbose=0).history
            z = model.get_latent_representation(data)["z_atac"]
            losses[fraction].append(history["val_loss"][-1])
            accuracies[fraction].append(KNeighborsClassifier(10).fit(z[::2], labels[::2]).score(z[1::2], labels[1::2]))
    assert abs(np.mean(losses[0.2]) / np.mean(losses[None]) - 1) < 0.05
    assert np.mean(accuracies[0.2]) > np.mean(accuracies[None]) - 0.1
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.components["atac"].sampled_zeros == 0.2
