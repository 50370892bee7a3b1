"""Priors: KL terms against Monte Carlo, clustering against numpy, serialization and gradients."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import special

from cavachon_like.distributions import PRIORS, MixtureGaussianPrior, Prior, StandardNormalPrior

pytestmark = pytest.mark.floor  # also run on the dependency floor (.ci/run)

D, K = 3, 4
N_SAMPLES = 200_000


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def prior(rng) -> MixtureGaussianPrior:
    """A mixture whose weights are all away from their initial values."""
    layer = MixtureGaussianPrior(D, n_clusters=K, seed=0)
    layer.set_weights([rng.normal(size=K), 1.5 * rng.normal(size=(K, D)), rng.normal(size=(K, D))])
    return layer


def _posterior(rng: np.random.Generator, n: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = rng.normal(size=(n, D)).astype(np.float32)
    var = rng.uniform(0.2, 2.0, size=(n, D)).astype(np.float32)
    z = (mean + np.sqrt(var) * rng.normal(size=(n, D))).astype(np.float32)
    return mean, var, z


def _log_normal(z: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * np.sum(np.log(2 * np.pi * var) + (z - mean) ** 2 / var, axis=-1)


def _mixture_numpy(prior: MixtureGaussianPrior) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``log pi``, ``mu`` and ``var`` in float64."""
    return (
        np.log(np.asarray(prior.mixture_weights, np.float64)),
        np.asarray(prior.means, np.float64),
        np.asarray(prior.variances, np.float64),
    )


def _log_joint_numpy(prior: MixtureGaussianPrior, z: np.ndarray) -> np.ndarray:
    log_pi, mu, var = _mixture_numpy(prior)
    return log_pi + _log_normal(z.astype(np.float64)[:, None, :], mu, var)


def test_default_number_of_clusters_and_initial_weights():
    prior = MixtureGaussianPrior(5, seed=0)
    assert prior.n_clusters == 11
    assert prior.means.shape == (11, 5)
    np.testing.assert_allclose(prior.mixture_weights, np.full(11, 1 / 11), rtol=1e-6)
    np.testing.assert_allclose(prior.variances, np.ones((11, 5)), rtol=1e-6)
    assert np.std(prior.means) > 0.3
    assert MixtureGaussianPrior(2, n_clusters=7).n_clusters == 7


def test_seed_makes_initial_means_reproducible():
    np.testing.assert_array_equal(MixtureGaussianPrior(4, seed=3).means, MixtureGaussianPrior(4, seed=3).means)
    assert not np.allclose(MixtureGaussianPrior(4, seed=3).means, MixtureGaussianPrior(4, seed=4).means)


def test_mixture_kl_matches_monte_carlo(prior, rng):
    mean, var, z = _posterior(rng)
    kl, gamma = prior.kl_divergence(mean, var, z)
    assert kl.shape == (3,) and gamma.shape == (3, K)
    log_pi, mu, mu_var = _mixture_numpy(prior)
    np.testing.assert_allclose(gamma, special.softmax(_log_joint_numpy(prior, z), axis=-1), rtol=1e-5, atol=1e-7)

    for i in range(len(mean)):
        # E_{q(z) q(c)} [log q(z) + log q(c) - log p(z|c) - log p(c)] with q(c) = gamma fixed.
        m, v, g = mean[i].astype(np.float64), var[i].astype(np.float64), np.asarray(gamma[i], np.float64)
        z_samples = m + np.sqrt(v) * rng.normal(size=(N_SAMPLES, D))
        c = rng.choice(K, size=N_SAMPLES, p=g / g.sum())
        terms = _log_normal(z_samples, m, v) + np.log(g[c]) - _log_normal(z_samples, mu[c], mu_var[c]) - log_pi[c]
        standard_error = terms.std() / np.sqrt(N_SAMPLES)
        assert abs(float(kl[i]) - terms.mean()) < 4 * standard_error + 1e-4


def test_standard_normal_kl_matches_monte_carlo(rng):
    prior = StandardNormalPrior(D)
    mean, var, z = _posterior(rng)
    kl, responsibilities = prior.kl_divergence(mean, var, z)
    assert responsibilities is None and kl.shape == (3,)
    for i in range(len(mean)):
        m, v = mean[i].astype(np.float64), var[i].astype(np.float64)
        z_samples = m + np.sqrt(v) * rng.normal(size=(N_SAMPLES, D))
        terms = _log_normal(z_samples, m, v) - _log_normal(z_samples, 0.0, 1.0)
        assert abs(float(kl[i]) - terms.mean()) < 4 * terms.std() / np.sqrt(N_SAMPLES) + 1e-4
    np.testing.assert_allclose(prior.log_prob(z), _log_normal(z.astype(np.float64), 0.0, 1.0), rtol=1e-5)


def test_cluster_probabilities_and_log_prob_match_numpy(prior, rng):
    z = 2.0 * rng.normal(size=(16, D)).astype(np.float32)
    probabilities = prior.cluster_probabilities(z)
    np.testing.assert_allclose(np.sum(probabilities, axis=-1), 1.0, rtol=1e-6)
    log_joint = _log_joint_numpy(prior, z)
    np.testing.assert_allclose(probabilities, special.softmax(log_joint, axis=-1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(prior.log_prob(z), special.logsumexp(log_joint, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(prior(z), prior.log_prob(z))


def test_standard_normal_has_no_clusters():
    prior = StandardNormalPrior(D)
    assert prior.n_clusters == 0 and not prior.weights
    with pytest.raises(TypeError, match="not a mixture prior"):
        prior.cluster_probabilities(tf.zeros((2, D)))


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("mixture_gaussian", MixtureGaussianPrior),
        ("VaDE", MixtureGaussianPrior),
        ("normal", StandardNormalPrior),
        ("standard_normal", StandardNormalPrior),
    ],
)
def test_registry_lookup_by_alias(name, cls):
    assert type(PRIORS.create(name, latent_dim=2)) is cls


def test_user_subclass_registers_itself():
    class ShiftedNormalPrior(StandardNormalPrior):
        alias = "test_shifted_normal"

    assert PRIORS.get("test_shifted_normal") is ShiftedNormalPrior
    assert PRIORS.get("normal") is StandardNormalPrior
    with pytest.raises(KeyError, match="known: .*mixture_gaussian"):
        PRIORS.get("flow")


@pytest.mark.parametrize("cls", [MixtureGaussianPrior, StandardNormalPrior])
def test_serialization_round_trip(cls, rng):
    original = cls(D, name="prior_z")
    if original.weights:
        original.set_weights([w + rng.normal(size=w.shape) for w in original.get_weights()])
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(original))
    assert type(restored) is cls and restored.get_config() == original.get_config()
    assert [w.shape for w in restored.weights] == [w.shape for w in original.weights]
    restored.set_weights(original.get_weights())
    mean, var, z = _posterior(rng)
    for a, b in zip(original.kl_divergence(mean, var, z), restored.kl_divergence(mean, var, z)):
        if a is None:
            assert b is None
        else:
            np.testing.assert_allclose(a, b)


def test_explicit_build_checks_latent_dim():
    prior = MixtureGaussianPrior(D)
    prior.build((None, D))
    assert len(prior.weights) == 3
    with pytest.raises(ValueError, match="latent_dim"):
        prior.build((None, D + 1))


def test_float16_inputs_and_mixed_precision_policy_compute_in_float32(rng):
    prior = MixtureGaussianPrior(D, dtype="mixed_float16")
    assert all(w.dtype == "float32" for w in prior.weights)
    mean, var, z = (tf.constant(a, tf.float16) for a in _posterior(rng))
    kl, gamma = prior.kl_divergence(mean, var, z)
    assert kl.dtype == tf.float32 and gamma.dtype == tf.float32
    assert prior(z).dtype == tf.float32


@pytest.mark.parametrize("cls", [MixtureGaussianPrior, StandardNormalPrior])
def test_gradients_are_finite_for_extreme_inputs(cls):
    prior = cls(D, seed=0) if cls is MixtureGaussianPrior else cls(D)
    mean = tf.Variable([[1e3] * D, [-1e3] * D, [0.0] * D, [0.0] * D])
    var = tf.Variable([[1e-8] * D, [1e4] * D, [1e-30] * D, [1.0] * D])
    z = tf.Variable([[1e3] * D, [-1e3] * D, [0.0] * D, [50.0] * D])
    with tf.GradientTape() as tape:
        kl, _ = prior.kl_divergence(mean, var, z)
        loss = tf.reduce_sum(kl) - tf.reduce_sum(prior.log_prob(z))
    variables = [mean, var, z, *prior.trainable_weights]
    assert np.all(np.isfinite(kl))
    assert all(np.all(np.isfinite(g)) for g in tape.gradient(loss, variables))


def test_base_prior_is_abstract():
    assert "prior" not in PRIORS
    with pytest.raises(NotImplementedError):
        Prior(D).kl_divergence(tf.zeros((1, D)), tf.ones((1, D)), tf.zeros((1, D)))


def test_mixture_trains_in_the_elbo_phase_after_pretraining(small_data, small_components):
    """Pre-training freezes the mixture; the ELBO phase must train it (it once stayed frozen)."""
    from cavachon_like import CAVACHON

    class Trainable(keras.callbacks.Callback):
        phases: list[set[str]] = []

        def on_train_begin(self, logs=None):
            Trainable.phases.append({v.path.split("/")[-2] for v in self.model.trainable_variables})

    model = CAVACHON.from_data(small_data, small_components[:1], seed=0, pretrain_epochs=1)
    model.compile()
    model.fit(small_data, epochs=1, batch_size=128, verbose=0, callbacks=[Trainable()])
    pretrain, elbo = Trainable.phases
    assert "prior" not in pretrain and "prior" in elbo


def _planted_posteriors(rng: np.random.Generator, n_per: int = 300, k: int = 4):
    """Posteriors of cells from ``k`` well-separated groups: means, variances, group labels."""
    centres = 6.0 * rng.normal(size=(k, D))
    labels = np.repeat(np.arange(k), n_per)
    mean = centres[labels] + rng.normal(size=(len(labels), D))
    var = rng.uniform(0.05, 0.3, size=mean.shape)
    return mean, var, labels


def _mean_kl(prior: MixtureGaussianPrior, mean: np.ndarray, var: np.ndarray) -> float:
    kl, _ = prior.kl_divergence(tf.constant(mean, tf.float32), tf.constant(var, tf.float32),
                                tf.constant(mean, tf.float32))
    return float(tf.reduce_mean(kl))


def test_update_from_posteriors_moves_a_misplaced_mixture_onto_the_groups(rng):
    """EM from means that split one group and merge two: the KL term falls and the groups come back."""
    from sklearn.metrics import adjusted_rand_score

    mean, var, labels = _planted_posteriors(rng)
    layer = MixtureGaussianPrior(D, n_clusters=6, seed=0)
    group_means = np.stack([mean[labels == g].mean(0) for g in range(4)])
    start = np.concatenate([group_means[[0, 0]] + [[0.5] * D, [-0.5] * D],
                            (group_means[[1]] + group_means[[2]]) / 2, group_means[[3]], 40 + group_means[[3]],
                            -40 + group_means[[3]]])
    layer.means.assign(start.astype(np.float32))
    before = _mean_kl(layer, mean, var)
    assert layer.update_from_posteriors(mean, var)
    assert _mean_kl(layer, mean, var) < before - 1.0
    clusters = np.asarray(layer.cluster_probabilities(tf.constant(mean, tf.float32))).argmax(1)
    assert adjusted_rand_score(labels, clusters) > 0.9
    # The two far-away components got no cells and kept their parameters.
    np.testing.assert_allclose(layer.means.numpy()[4:], start[4:].astype(np.float32))
    variances = layer.variances.numpy()
    assert np.all(variances[:4] >= var.min())  # each covers its posteriors' own spread too


def test_update_from_posteriors_is_a_no_op_for_priors_without_a_closed_form(rng):
    mean, var, _ = _planted_posteriors(rng, n_per=5)
    layer = StandardNormalPrior(D)
    assert layer.update_from_posteriors(mean, var) is False
    assert MixtureGaussianPrior(D, n_clusters=50).update_from_posteriors(mean, var) is False  # fewer cells than K


def test_the_logged_prior_term_is_the_same_in_chunks(rng):
    """PriorUpdate logs the mean KL term computed a chunk of cells at a time (bounded memory)."""
    from cavachon_like.train.prior_init import _mean_prior_term

    mean, var, _ = _planted_posteriors(rng)
    layer = MixtureGaussianPrior(D, n_clusters=6, seed=0)
    name, whole = _mean_prior_term(layer, mean, var, chunk=len(mean))
    assert name == "KL term"
    assert _mean_prior_term(layer, mean, var, chunk=7)[1] == pytest.approx(whole, rel=1e-5)
    assert whole == pytest.approx(_mean_kl(layer, mean, var), rel=1e-5)
    name, point = _mean_prior_term(layer, mean, np.zeros_like(var), chunk=7)
    assert name == "-log p(z)"
    assert point == pytest.approx(-float(tf.reduce_mean(layer.log_prob(tf.constant(mean, tf.float32)))), rel=1e-5)
