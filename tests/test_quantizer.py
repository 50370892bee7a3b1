"""VectorQuantizer: nearest codes, straight-through gradients, the EMA update of paper 002
(Appendix A), dead-code restarts, serialisation and tf.distribute."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cavachon_like.nn import VectorQuantizer, perplexity

# Not on the dependency floor. Its two-replica test (the update on two logical CPUs equals the
# single-device update) is out of the suite: a MirroredStrategy that all-gathers breaks the
# collectives of any other strategy in the same process; it needs a subprocess of its own.


def clustered(n: int = 512, dim: int = 8, centres: int = 4, offset: float = 20.0, seed: int = 0) -> np.ndarray:
    """``centres`` tight clusters far from the origin, where a fresh codebook is not."""
    rng = np.random.default_rng(seed)
    means = offset + 5.0 * rng.normal(size=(centres, dim))
    return (means[rng.integers(0, centres, n)] + 0.1 * rng.normal(size=(n, dim))).astype("float32")


def test_forward_is_the_nearest_code_and_gradients_pass_straight_through():
    vq = VectorQuantizer(n_codes=16, beta=0.25, seed=0)
    z = tf.constant(np.random.default_rng(1).normal(size=(32, 4)).astype("float32"))
    weights = tf.constant(np.random.default_rng(2).normal(size=(32, 4)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(z)
        quantized, codes, commitment = vq(z)
        loss = tf.reduce_sum(quantized * weights)
    codebook = vq.codebook.numpy()
    brute = ((z.numpy()[:, None, :] - codebook[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(codes.numpy(), brute)
    np.testing.assert_allclose(quantized.numpy(), codebook[brute], rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(loss, z).numpy(), weights.numpy(), rtol=1e-6)  # identity
    np.testing.assert_allclose(commitment.numpy(), 0.25 * ((z.numpy() - codebook[brute]) ** 2).sum(1), rtol=1e-5)


def test_commitment_gradient_pulls_the_encoder_towards_its_code_only():
    vq = VectorQuantizer(n_codes=8, beta=0.5, seed=0)
    z = tf.Variable(np.random.default_rng(3).normal(size=(10, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        _, codes, commitment = vq(z)
        loss = tf.reduce_sum(commitment)
    e_z = vq.codebook.numpy()[codes.numpy()]
    np.testing.assert_allclose(tape.gradient(loss, z).numpy(), 2 * 0.5 * (z.numpy() - e_z), rtol=1e-5)
    assert not vq.trainable_weights  # the codebook learns by moving averages, never by gradients


def test_first_training_batch_puts_every_code_on_an_encoder_output():
    vq = VectorQuantizer(n_codes=8, restart_below=0.0, seed=0)
    z = clustered(n=64)  # far from where the placeholder codes are drawn
    vq(tf.constant(z))  # inference does not initialise
    assert float(vq.initialized.numpy()) == 0.0
    placeholders = np.array(vq.codebook.numpy(), copy=True)
    vq(tf.constant(z), training=True)
    codebook = vq.codebook.numpy()

    def distance_to_data(codes: np.ndarray) -> np.ndarray:
        return np.sqrt(((codes[:, None, :] - z[None]) ** 2).sum(-1)).min(1)

    # Each code was an encoder output at the start of the step and the EMA moved the used ones
    # only towards their cells' mean (which may lie between two nearby clusters): every code
    # sits among the data, where none of the placeholders did.
    assert distance_to_data(codebook).max() < 3.0
    assert distance_to_data(placeholders).min() > 10.0


def test_training_step_is_the_ema_update_of_paper_002():
    decay, eps = 0.9, 1e-5
    vq = VectorQuantizer(n_codes=6, decay=decay, restart_below=0.0, epsilon=eps, seed=4)
    z = np.random.default_rng(5).normal(size=(40, 3)).astype("float32")
    vq(tf.constant(np.random.default_rng(6).normal(size=(40, 3)).astype("float32")), training=True)  # initialises
    # Copies: a variable's numpy() can share memory with it, and the step assigns in place.
    counts0, sums0, codebook0 = (np.array(v.numpy(), copy=True) for v in (vq.counts, vq.sums, vq.codebook))
    quantized, codes, _ = vq(tf.constant(z), training=True)
    codes = codes.numpy()
    np.testing.assert_allclose(quantized.numpy(), codebook0[codes], rtol=1e-6, atol=1e-6)  # before the update
    n = np.bincount(codes, minlength=6)
    sums = np.stack([z[codes == i].sum(0) for i in range(6)])
    counts = decay * counts0 + (1 - decay) * n
    expected_sums = decay * sums0 + (1 - decay) * sums
    smoothed = (counts + eps) / (counts.sum() + 6 * eps) * counts.sum()
    np.testing.assert_allclose(vq.counts.numpy(), counts, rtol=1e-5)
    np.testing.assert_allclose(vq.sums.numpy(), expected_sums, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vq.codebook.numpy(), expected_sums / smoothed[:, None], rtol=1e-4, atol=1e-6)
    before = vq.codebook.numpy()
    vq(tf.constant(z), training=False)
    np.testing.assert_array_equal(vq.codebook.numpy(), before)  # inference never moves the codebook


def fit_codebook(restart_below: float | None, steps: int = 150,
                 decay: float = 0.9) -> tuple[VectorQuantizer, np.ndarray]:
    """A codebook initialised on other data (the encoder has moved since): every code is far
    from the four clusters it is then trained on. ``restart_below=None``: the default."""
    data = clustered()
    options = {} if restart_below is None else {"restart_below": restart_below}
    vq = VectorQuantizer(n_codes=16, decay=decay, seed=0, **options)
    vq(tf.constant(-clustered(seed=1)), training=True)
    rng = np.random.default_rng(6)
    for _ in range(steps):
        vq(tf.constant(data[rng.choice(len(data), 128, replace=False)]), training=True)
    return vq, data


def test_dead_code_restarts_put_unused_codes_on_the_data():
    restarted, data = fit_codebook(restart_below=1e-2)
    frozen, _ = fit_codebook(restart_below=0.0)
    _, codes, commitment = restarted(tf.constant(data))
    _, frozen_codes, frozen_commitment = frozen(tf.constant(data))
    # Four clusters far from the initial codes: without restarts one or two codes take every
    # cell and sit between clusters; with restarts each cluster gets codes of its own.
    assert len(np.unique(frozen_codes)) <= 2
    assert len(np.unique(codes)) >= 4 and perplexity(codes, 16) > 3.0
    assert float(np.mean(commitment)) < 0.1 * float(np.mean(frozen_commitment))


def test_the_default_restarts_a_collapsed_codebook_within_steps_at_the_papers_decay():
    """At decay 0.99 a code nobody chooses keeps a moving count above 0.01 for 458 steps, so a
    threshold of 0.01 leaves the batch on one or two codes that long (on SNARE-seq, the first 11
    epochs); the default threshold of one cell per step restarts such codes at once."""
    default, data = fit_codebook(restart_below=None, steps=30, decay=0.99)
    slow, _ = fit_codebook(restart_below=1e-2, steps=30, decay=0.99)
    codes = default(tf.constant(data))[1]
    assert len(np.unique(slow(tf.constant(data))[1])) <= 2
    assert len(np.unique(codes)) >= 4 and perplexity(codes, 16) > 3.0


def test_perplexity_counts_the_codes_in_effective_use():
    assert perplexity(np.zeros(50, int), 8) == pytest.approx(1.0)
    assert perplexity(np.arange(64) % 8, 8) == pytest.approx(8.0)
    assert 1.0 < perplexity(np.r_[np.zeros(90, int), np.ones(10, int)], 8) < 2.0


def test_same_seed_same_codebook_and_bad_arguments():
    a, _ = fit_codebook(1e-2, steps=20)
    b, _ = fit_codebook(1e-2, steps=20)
    np.testing.assert_array_equal(a.codebook.numpy(), b.codebook.numpy())
    with pytest.raises(ValueError, match="decay must be in"):
        VectorQuantizer(decay=1.0)
    with pytest.raises(ValueError, match="n_codes must be at least 2"):
        VectorQuantizer(n_codes=1)


def test_keras_round_trip_keeps_the_trained_codebook(tmp_path):
    vq, data = fit_codebook(1e-2, steps=30)
    inputs = keras.Input((data.shape[1],))
    quantized, codes, _ = vq(inputs)
    model = keras.Model(inputs, [quantized, codes])
    path = tmp_path / "vq.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for before, after in zip(model.predict(data, verbose=0), loaded.predict(data, verbose=0)):
        np.testing.assert_array_equal(before, after)
