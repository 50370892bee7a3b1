"""Laplace likelihood and Laplace prior (scMM): against scipy / TFP / Monte Carlo, registries, config,
numerical safety, and a model that trains with both and round-trips through a ``.keras`` file."""
from __future__ import annotations

import math

import anndata as ad
import keras
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import stats

from cavachon_like.distributions import (
    LIKELIHOODS,
    PRIORS,
    Laplace,
    LaplacePrior,
    get_likelihood,
    serialize_likelihood,
)
from cavachon_like.distributions.laplace_prior import (
    MIN_PRIOR_SCALE,
    gaussian_expected_abs,
)

pytestmark = pytest.mark.floor  # also run on the dependency floor (.ci/run)

tfd = tfp.distributions

B, F = 6, 9
D = 3
N_SAMPLES = 200_000


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _raw(rng: np.random.Generator, scale: float = 1.5) -> dict[str, np.ndarray]:
    return {name: (scale * rng.normal(size=(B, F))).astype(np.float32) for name in Laplace.parameters}


def _constrained(likelihood: Laplace, raw: dict[str, np.ndarray]) -> dict[str, tf.Tensor]:
    return likelihood.constrain({k: tf.constant(v) for k, v in raw.items()})


# ---------------------------------------------------------------- likelihood


def test_laplace_likelihood_matches_scipy_and_tfp(rng):
    likelihood = Laplace()
    x = (2.0 * rng.standard_t(3, size=(B, F))).astype(np.float32)
    raw = _raw(rng)
    raw["scale"][:, 0] = -40.0  # scale at its floor
    raw["loc"][:, 0] = x[:, 0]  # ... where the density is bounded by 1 / (2 min_scale)
    params = _constrained(likelihood, raw)
    actual = likelihood.log_prob(tf.constant(x), params).numpy()
    scale = np.logaddexp(0.0, raw["scale"].astype(np.float64)) + likelihood.min_scale
    expected = stats.laplace.logpdf(x, raw["loc"], scale).sum(-1)
    np.testing.assert_allclose(actual, expected, rtol=1e-5)
    reference = tfd.Laplace(tf.constant(raw["loc"]), tf.constant(scale, tf.float32)).log_prob(x).numpy().sum(-1)
    np.testing.assert_allclose(actual, reference, rtol=1e-5)
    np.testing.assert_allclose(params["scale"][:, 0], likelihood.min_scale, rtol=1e-6)
    np.testing.assert_allclose(likelihood.mean(params), raw["loc"])
    np.testing.assert_allclose(likelihood.distribution(params).variance(), 2.0 * scale**2, rtol=1e-4)


def test_laplace_likelihood_shapes_dtypes_float16_heads_and_sampling(rng):
    likelihood = Laplace()
    raw = {k: tf.constant(v, tf.float16) for k, v in _raw(rng).items()}
    params = likelihood.constrain(raw, None)
    assert all(value.dtype == tf.float32 for value in params.values())
    distribution = likelihood.distribution(params)
    assert distribution.batch_shape == (B,) and distribution.event_shape == (F,)
    assert likelihood.log_prob(tf.zeros((B, F)), params).shape == (B,)
    assert likelihood.mean(params).shape == (B, F)
    assert likelihood.normalized_mean(raw).shape == (B, F)  # no library size: scale is ignored
    # Samples: a stateless seed reproduces them; their median is loc and their mean |x - loc| is the scale.
    loc = tf.fill((2, 1), 3.0) * tf.ones((2, 4000))
    scale = tf.fill((2, 1), 0.5) * tf.ones((2, 4000))
    distribution = likelihood.distribution({"loc": loc, "scale": scale})
    draws = distribution.sample(seed=tf.constant([1, 2]))
    np.testing.assert_array_equal(draws, distribution.sample(seed=tf.constant([1, 2])))
    assert draws.shape == (2, 4000)
    assert abs(float(np.median(draws)) - 3.0) < 0.05
    assert abs(float(np.mean(np.abs(draws - 3.0))) - 0.5) < 0.03


def test_laplace_likelihood_extreme_parameters_give_finite_values_and_gradients():
    likelihood = Laplace()
    x = tf.constant(np.tile([0.0, -1e3, 1e3, 5.0, -5.0, 0.5], (4, 1)), tf.float32)
    extremes = tf.constant([[-50.0], [-5.0], [5.0], [50.0]]) * tf.ones((4, 6))
    raw = {"loc": tf.Variable(extremes), "scale": tf.Variable(-extremes)}
    with tf.GradientTape() as tape:
        log_prob = likelihood.log_prob(x, likelihood.constrain(raw))
    assert np.all(np.isfinite(log_prob))
    assert all(np.all(np.isfinite(g)) for g in tape.gradient(log_prob, list(raw.values())))


def test_laplace_likelihood_class_attributes_registry_and_config():
    assert Laplace.support == "real" and Laplace.input_transform == "identity" and not Laplace.uses_library_size
    assert Laplace.parameters == ("loc", "scale")
    assert LIKELIHOODS.get("laplace") is Laplace and LIKELIHOODS.get("Laplace") is Laplace
    assert type(get_likelihood("laplace")) is Laplace
    original = Laplace(min_scale=1e-3)
    restored = get_likelihood(serialize_likelihood(original))
    assert type(restored) is Laplace and restored.get_config() == {"min_scale": 1e-3}
    assert Laplace.from_config(original.get_config()).min_scale == 1e-3
    from cavachon_like.data.support import support_of

    assert support_of("laplace") == "real"


# ---------------------------------------------------------------- prior


def _posterior(rng: np.random.Generator, n: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = (1.5 * rng.normal(size=(n, D))).astype(np.float32)
    var = rng.uniform(0.05, 2.0, size=(n, D)).astype(np.float32)
    mean[0] = 0.0  # E|z| is all folded-normal term ...
    mean[1] = [4.0, -4.0, 0.1]  # ... or (almost) all |m|
    var[1] = [0.01, 0.01, 0.01]
    z = (mean + np.sqrt(var) * rng.normal(size=(n, D))).astype(np.float32)
    return mean, var, z


def _log_normal(z: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * np.sum(np.log(2 * np.pi * var) + (z - mean) ** 2 / var, axis=-1)


def _log_laplace(z: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.sum(stats.laplace.logpdf(z, 0.0, scale), axis=-1)


def _trained_prior(rng: np.random.Generator, constraint: str) -> LaplacePrior:
    """A prior whose scales are all away from their initial values (and from each other)."""
    prior = LaplacePrior(D, scale_constraint=constraint)
    prior.set_weights([rng.normal(size=D).astype(np.float32)])
    return prior


def test_default_and_initial_scales():
    prior = LaplacePrior(5)
    assert prior.n_clusters == 0 and [w.shape for w in prior.weights] == [(5,)]
    np.testing.assert_allclose(prior.scale, np.ones(5), rtol=1e-6)
    unit_variance = LaplacePrior(5, initial_scale=1 / math.sqrt(2))
    np.testing.assert_allclose(2.0 * np.square(unit_variance.scale), np.ones(5), rtol=1e-5)
    softmax = LaplacePrior(5, scale_constraint="softmax")
    np.testing.assert_allclose(softmax.scale, np.ones(5), rtol=1e-6)
    with pytest.raises(ValueError, match="scale_constraint"):
        LaplacePrior(5, scale_constraint="exp")
    with pytest.raises(ValueError, match="initial_scale"):
        LaplacePrior(5, initial_scale=0.0)
    with pytest.raises(ValueError, match="start at 1"):
        LaplacePrior(5, initial_scale=0.5, scale_constraint="softmax")
    with pytest.raises(TypeError, match="not a mixture prior"):
        prior.cluster_probabilities(tf.zeros((2, 5)))


def test_softmax_constraint_keeps_scales_summing_to_latent_dim(rng):
    prior = LaplacePrior(D, scale_constraint="softmax")
    prior.set_weights([np.array([40.0, -40.0, 0.0], np.float32)])  # one scale pushed to its floor
    scale = np.asarray(prior.scale, np.float64)
    np.testing.assert_allclose(scale.sum(), D, rtol=1e-6)
    assert scale.min() >= MIN_PRIOR_SCALE * (1 - 1e-6)


def test_folded_normal_mean_matches_scipy():
    mean = np.array([0.0, 0.3, -1.0, 2.5, -4.0, 1e3, -1e3, 0.0], np.float32)
    var = np.array([1.0, 0.5, 2.0, 0.01, 0.3, 1e-8, 1e4, 1e-12], np.float32)
    std = np.sqrt(var.astype(np.float64))
    expected = stats.foldnorm.mean(np.abs(mean) / std, scale=std)
    np.testing.assert_allclose(gaussian_expected_abs(mean, var), expected, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("constraint", ["softplus", "softmax"])
def test_laplace_kl_matches_monte_carlo(rng, constraint):
    prior = _trained_prior(rng, constraint)
    mean, var, z = _posterior(rng)
    kl, responsibilities = prior.kl_divergence(mean, var, z)
    assert responsibilities is None and kl.shape == (len(mean),) and kl.dtype == tf.float32
    scale = np.asarray(prior.scale, np.float64)
    for i in range(len(mean)):
        # E_q [log q(z) - log p(z)]
        m, v = mean[i].astype(np.float64), var[i].astype(np.float64)
        z_samples = m + np.sqrt(v) * rng.normal(size=(N_SAMPLES, D))
        terms = _log_normal(z_samples, m, v) - _log_laplace(z_samples, scale)
        standard_error = terms.std() / np.sqrt(N_SAMPLES)
        assert abs(float(kl[i]) - terms.mean()) < 4 * standard_error + 1e-4


def test_laplace_kl_matches_tfp_monte_carlo_at_the_default_prior(rng):
    """The same check with TFP's densities and sampler, at the unlearned prior."""
    prior = LaplacePrior(D)
    mean, var, z = _posterior(rng, n=2)
    kl, _ = prior.kl_divergence(mean, var, z)
    q = tfd.Normal(tf.constant(mean, tf.float64), tf.constant(np.sqrt(var), tf.float64))
    p = tfd.Laplace(tf.constant(0.0, tf.float64), tf.constant(1.0, tf.float64))
    samples = q.sample(N_SAMPLES, seed=tf.constant([3, 4]))
    terms = tf.reduce_sum(q.log_prob(samples) - p.log_prob(samples), axis=-1).numpy()  # (N, 2)
    standard_error = terms.std(axis=0) / np.sqrt(N_SAMPLES)
    assert np.all(np.abs(kl.numpy() - terms.mean(axis=0)) < 4 * standard_error + 1e-4)


@pytest.mark.parametrize("constraint", ["softplus", "softmax"])
def test_laplace_log_prob_matches_scipy_and_tfp(rng, constraint):
    prior = _trained_prior(rng, constraint)
    z = (2.0 * rng.normal(size=(16, D))).astype(np.float32)
    z[0] = 0.0
    scale = np.asarray(prior.scale, np.float64)
    np.testing.assert_allclose(prior.log_prob(z), _log_laplace(z.astype(np.float64), scale), rtol=1e-5)
    reference = tf.reduce_sum(tfd.Laplace(0.0, tf.constant(scale, tf.float32)).log_prob(z), axis=-1)
    np.testing.assert_allclose(prior.log_prob(z), reference, rtol=1e-5)
    np.testing.assert_allclose(prior(z), prior.log_prob(z))


def test_prior_samples_follow_the_learned_scales(rng):
    prior = _trained_prior(rng, "softplus")
    scale = np.asarray(prior.scale, np.float64)
    draws = prior.sample(20_000, np.random.default_rng(5))
    assert draws.shape == (20_000, D) and draws.dtype == np.float32
    np.testing.assert_array_equal(draws, prior.sample(20_000, np.random.default_rng(5)))
    # E|z_d| = b_d (standard error b_d / sqrt(n)) and the median is 0.
    np.testing.assert_allclose(np.abs(draws).mean(axis=0), scale, rtol=0.04)
    assert np.all(np.abs(np.median(draws, axis=0)) < 0.05 * scale)
    assert stats.kstest(draws[:, 0], stats.laplace(0.0, scale[0]).cdf).pvalue > 1e-3


@pytest.mark.parametrize("name", ["laplace", "Laplace"])
def test_prior_registry_lookup_by_alias(name):
    assert PRIORS.get(name) is LaplacePrior
    prior = PRIORS.create(name, latent_dim=2)
    assert type(prior) is LaplacePrior and prior.latent_dim == 2


@pytest.mark.parametrize("constraint", ["softplus", "softmax"])
def test_prior_serialization_round_trip(rng, constraint):
    kwargs = {"initial_scale": 0.5} if constraint == "softplus" else {}
    original = LaplacePrior(D, scale_constraint=constraint, name="prior_z", **kwargs)
    original.set_weights([w + rng.normal(size=w.shape) for w in original.get_weights()])
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(original))
    assert type(restored) is LaplacePrior and restored.get_config() == original.get_config()
    assert restored.get_config()["scale_constraint"] == constraint
    assert [w.shape for w in restored.weights] == [w.shape for w in original.weights]
    restored.set_weights(original.get_weights())
    mean, var, z = _posterior(rng)
    np.testing.assert_allclose(original.kl_divergence(mean, var, z)[0], restored.kl_divergence(mean, var, z)[0])
    np.testing.assert_allclose(original.log_prob(z), restored.log_prob(z))


def test_explicit_build_checks_latent_dim():
    prior = LaplacePrior(D)
    prior.build((None, D))
    assert len(prior.weights) == 1
    with pytest.raises(ValueError, match="latent_dim"):
        prior.build((None, D + 1))


def test_float16_inputs_and_mixed_precision_policy_compute_in_float32(rng):
    prior = LaplacePrior(D, dtype="mixed_float16")
    assert all(w.dtype == "float32" for w in prior.weights)
    mean, var, z = (tf.constant(a, tf.float16) for a in _posterior(rng))
    kl, responsibilities = prior.kl_divergence(mean, var, z)
    assert kl.dtype == tf.float32 and responsibilities is None
    assert prior(z).dtype == tf.float32 and prior.log_prob(z).dtype == tf.float32
    reference = LaplacePrior(D).kl_divergence(*(tf.cast(a, tf.float32) for a in (mean, var, z)))[0]
    np.testing.assert_allclose(kl, reference, rtol=1e-6)


@pytest.mark.parametrize(("constraint", "raw"), [("softplus", 0.0), ("softplus", -60.0), ("softplus", 60.0),
                                                 ("softmax", 0.0), ("softmax", 60.0)])
def test_gradients_are_finite_for_extreme_inputs(constraint, raw):
    prior = LaplacePrior(D, scale_constraint=constraint)
    prior.set_weights([np.array([raw, -raw, 0.0], np.float32)])
    mean = tf.Variable([[1e3] * D, [-1e3] * D, [0.0] * D, [0.0] * D, [1e-3] * D])
    var = tf.Variable([[1e-8] * D, [1e4] * D, [1e-30] * D, [1.0] * D, [1e-12] * D])
    z = tf.Variable([[1e3] * D, [-1e3] * D, [0.0] * D, [50.0] * D, [1e-3] * D])
    with tf.GradientTape() as tape:
        kl, _ = prior.kl_divergence(mean, var, z)
        loss = tf.reduce_sum(kl) - tf.reduce_sum(prior.log_prob(z))
    variables = [mean, var, z, *prior.trainable_weights]
    assert np.all(np.isfinite(kl))
    gradients = tape.gradient(loss, variables)
    assert all(g is not None and np.all(np.isfinite(g)) for g in gradients)


def test_kl_is_stationary_where_the_scale_equals_the_posterior_spread():
    """For q = N(m, s^2) the KL is minimised over b at b = E_q|z|: the learned scale tracks the posterior."""
    mean, var = tf.constant([[0.0], [2.0]]), tf.constant([[9.0], [0.25]])
    best = gaussian_expected_abs(mean, var).numpy()[:, 0]
    np.testing.assert_allclose(best, [3.0 * math.sqrt(2.0 / math.pi), stats.foldnorm.mean(4.0, scale=0.5)], rtol=1e-5)
    for i, b in enumerate(best):
        slopes = []
        for factor in (0.5, 1.0, 2.0):
            prior = LaplacePrior(1, initial_scale=factor * b)
            with tf.GradientTape() as tape:
                kl = prior.kl_divergence(mean[i:i + 1], var[i:i + 1], mean[i:i + 1])[0]
            slopes.append(float(tape.gradient(kl, prior.raw_scale)[0]))
        assert slopes[0] < -0.1 and abs(slopes[1]) < 1e-4 and slopes[2] > 0.1


def test_prior_and_likelihood_work_in_a_tf_function(rng):
    prior, likelihood = _trained_prior(rng, "softmax"), Laplace()
    mean, var, z = (tf.constant(a) for a in _posterior(rng))
    x, raw = tf.constant(rng.normal(size=(B, F)).astype(np.float32)), _raw(rng)
    heads = {k: tf.Variable(v) for k, v in raw.items()}

    @tf.function
    def loss_and_gradients():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(prior.kl_divergence(mean, var, z)[0]) - tf.reduce_sum(prior.log_prob(z))
            loss -= tf.reduce_sum(likelihood.log_prob(x, likelihood.constrain(heads)))
        return loss, tape.gradient(loss, [*prior.trainable_weights, *heads.values()])

    loss, gradients = loss_and_gradients()
    expected = (tf.reduce_sum(prior.kl_divergence(mean, var, z)[0]) - tf.reduce_sum(prior.log_prob(z))
                - tf.reduce_sum(likelihood.log_prob(x, _constrained(likelihood, raw))))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in gradients)


# ---------------------------------------------------------------- model


def _with_real_modality(small_data):
    """The simulated ATAC counts plus log1p-normalised RNA as a real-valued modality ``expr``."""
    from cavachon_like import MultiModality

    rna = small_data.mod["rna"]
    counts = rna.X.toarray() if sp.issparse(rna.X) else np.asarray(rna.X)
    library = np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    expr = ad.AnnData(
        np.log1p(counts / library * 1e4).astype(np.float32),
        obs=rna.obs.copy(),
        var={"gene": [f"expr_{name}" for name in rna.var_names]},
    )
    expr.var_names = [f"expr_{name}" for name in rna.var_names]
    return MultiModality({"atac": small_data.mod["atac"], "expr": expr}, likelihoods={"expr": "laplace"},
                         batch_key={"expr": "batch"})


def test_model_trains_with_laplace_prior_and_likelihood_and_round_trips(small_data, tmp_path):
    from cavachon_like import CAVACHON

    data = _with_real_modality(small_data)
    assert data.modality("expr").likelihood == "laplace"
    small = {"encoder": {"units": [16]}, "decoder": {"units": [16]}, "latent_dim": 3, "prior": "laplace"}
    components = [
        {"name": "atac", "modalities": ["atac"], **small},
        {"name": "expr", "modalities": ["expr"], "parents": ["atac"],
         **dict(small, prior={"class": "laplace", "scale_constraint": "softmax"})},
    ]
    # One joint stage: one Keras fit to trace instead of one per component.
    model = CAVACHON.from_data(data, components, seed=0, pretrain_epochs=0, training="joint")
    assert isinstance(model.components["expr"].prior, LaplacePrior)
    assert model.components["expr"].prior.scale_constraint == "softmax"
    assert isinstance(model.components["expr"].likelihoods["expr"], Laplace)
    # Eagerly: tracing the training step takes ~10 s here, eager 5 batches ~3 s; the prior and
    # likelihood in a tf.function are covered by test_prior_and_likelihood_work_in_a_tf_function.
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    before = {c: np.array(model.components[c].prior.scale) for c in ("atac", "expr")}
    history = model.fit(data, epochs=1, batch_size=64, verbose=0).history
    assert history["stage"] == ["atac+expr"]
    assert all(np.all(np.isfinite(history[key])) for key in ("loss", "expr_nll", "expr_kl", "atac_nll", "atac_kl"))
    # The prior scales are learned with the rest of the model.
    for c in ("atac", "expr"):
        assert not np.allclose(model.components[c].prior.scale, before[c])
    np.testing.assert_allclose(np.sum(model.components["expr"].prior.scale), 3.0, rtol=1e-5)

    latents = model.get_latent_representation(data)
    assert latents["z_expr"].shape == (data.n_obs, 3) and not any(k.startswith("cluster_") for k in latents)
    draws = model.posterior_predictive_sample(data, "expr", indices=np.arange(10), n_samples=2)
    assert draws.shape == (2, 10, data.mod["expr"].n_vars) and np.all(np.isfinite(draws))

    path = tmp_path / "laplace.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.components["atac"].prior, LaplacePrior)
    np.testing.assert_array_equal(loaded.components["expr"].prior.scale, model.components["expr"].prior.scale)
    after = loaded.get_latent_representation(data)
    assert latents.keys() == after.keys()
    for key in latents:
        np.testing.assert_array_equal(latents[key], after[key])
