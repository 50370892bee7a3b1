"""Likelihoods against scipy.stats, plus registry, config and numerical-safety checks."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

from cavachon_like.distributions import (
    LIKELIHOODS,
    Bernoulli,
    BernoulliDepth,
    Likelihood,
    NegativeBinomial,
    Normal,
    Poisson,
    ZeroInflatedNegativeBinomial,
    get_likelihood,
    serialize_likelihood,
)

pytestmark = pytest.mark.floor  # also run on the dependency floor (.ci/run)

B, F = 6, 9
COUNT_LIKELIHOODS = [Poisson, NegativeBinomial, ZeroInflatedNegativeBinomial]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _counts(rng: np.random.Generator) -> np.ndarray:
    """Counts with a column of zeros and a column of large counts."""
    x = rng.negative_binomial(2, 0.2, size=(B, F)).astype(np.float32)
    x[:, 0] = 0
    x[:, 1] = 500
    return x


def _raw(rng: np.random.Generator, likelihood: Likelihood, scale: float = 1.5) -> dict[str, np.ndarray]:
    return {name: (scale * rng.normal(size=(B, F))).astype(np.float32) for name in likelihood.parameters}


def _library(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(100, 5000, size=(B, 1)).astype(np.float32)


def _mean_and_dispersion(raw: dict[str, np.ndarray], library: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The float64 reference of ``softmax(logits) * library`` and ``softplus(raw) + eps``."""
    logits = raw["logits"].astype(np.float64)
    mu = special.softmax(logits, axis=-1) * library.astype(np.float64)
    theta = np.logaddexp(0.0, raw["dispersion"].astype(np.float64)) + eps
    return mu, theta


def _log_prob(likelihood: Likelihood, x: np.ndarray, raw: dict[str, np.ndarray], library: np.ndarray | None = None):
    params = likelihood.constrain({k: tf.constant(v) for k, v in raw.items()}, library)
    return likelihood.log_prob(tf.constant(x), params).numpy(), params


def test_bernoulli_matches_scipy(rng):
    likelihood = Bernoulli()
    x = _counts(rng)
    raw = _raw(rng, likelihood)
    raw["logits"][:, 2] = 30.0
    raw["logits"][:, 3] = -30.0
    actual, params = _log_prob(likelihood, x, raw)
    expected = stats.bernoulli.logpmf(x > 0, special.expit(raw["logits"].astype(np.float64))).sum(-1)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(likelihood.mean(params), special.expit(raw["logits"]), rtol=1e-5)


def test_bernoulli_depth_matches_scipy_dense_and_sparse(rng):
    """P(open) = 1 - exp(-library * softmax(logits)), whatever the size of the rate."""
    likelihood = BernoulliDepth()
    x = _counts(rng)
    raw = _raw(rng, likelihood, scale=4.0)
    library = _library(rng)
    library[0] = 0.5  # rates far below 1e-3 ...
    library[1] = 1e6  # ... and far above 20
    actual, params = _log_prob(likelihood, x, raw, library)
    rate = special.softmax(raw["logits"].astype(np.float64), axis=-1) * library.astype(np.float64)
    p_open = -np.expm1(-rate)
    # In log space: log P(closed) = -rate stays finite where P(open) rounds to 1.
    expected = np.where(x > 0, np.log(p_open), -rate).sum(-1)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-3)
    sparse = tf.sparse.from_dense(tf.constant(x))
    np.testing.assert_allclose(likelihood.log_prob(sparse, params).numpy(), actual, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(likelihood.mean(params), p_open, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(likelihood.distribution(params).log_prob(tf.constant((x > 0).astype(np.float32))),
                               actual, rtol=1e-4, atol=1e-3)


def test_poisson_matches_scipy(rng):
    likelihood = Poisson()
    x = _counts(rng)
    raw = _raw(rng, likelihood)
    library = _library(rng)
    actual, params = _log_prob(likelihood, x, raw, library)
    rate = special.softmax(raw["logits"].astype(np.float64), axis=-1) * library
    np.testing.assert_allclose(actual, stats.poisson.logpmf(x, rate).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(likelihood.mean(params), rate, rtol=1e-4)
    # sparse counts (never densified) give the same value, and so does TFP's distribution
    sparse = tf.sparse.from_dense(tf.constant(x))
    np.testing.assert_allclose(likelihood.log_prob(sparse, params).numpy(), actual, rtol=1e-5)
    np.testing.assert_allclose(likelihood.distribution(params).log_prob(tf.constant(x)).numpy(), actual, rtol=1e-5)


def test_negative_binomial_matches_scipy(rng):
    likelihood = NegativeBinomial()
    x = _counts(rng)
    raw = _raw(rng, likelihood)
    library = _library(rng)
    actual, params = _log_prob(likelihood, x, raw, library)
    mu, theta = _mean_and_dispersion(raw, library, likelihood.eps)
    expected = stats.nbinom.logpmf(x, theta, theta / (theta + mu)).sum(-1)
    np.testing.assert_allclose(actual, expected, rtol=1e-5)
    distribution = likelihood.distribution(params)
    np.testing.assert_allclose(likelihood.mean(params), mu, rtol=1e-4)
    # theta is the inverse dispersion.
    np.testing.assert_allclose(distribution.variance(), mu + mu**2 / theta, rtol=1e-4)


@pytest.mark.parametrize("dropout_scale", [1.5, 50.0])
def test_zinb_matches_hand_computed_scipy(rng, dropout_scale):
    likelihood = ZeroInflatedNegativeBinomial()
    x = _counts(rng)
    raw = _raw(rng, likelihood)
    raw["dropout_logits"] = (dropout_scale * rng.normal(size=(B, F))).astype(np.float32)
    raw["dropout_logits"][:, 2] = 60.0
    raw["dropout_logits"][:, 3] = -60.0
    library = _library(rng)
    actual, params = _log_prob(likelihood, x, raw, library)

    mu, theta = _mean_and_dispersion(raw, library, likelihood.eps)
    dropout = raw["dropout_logits"].astype(np.float64)
    nb = stats.nbinom.logpmf(x, theta, theta / (theta + mu))
    # log(pi 1[x=0] + (1 - pi) NB(x)) in log space, since pi rounds to 1 in float64 at logit 60.
    log_pi, log_not_pi = special.log_expit(dropout), special.log_expit(-dropout)
    expected = np.where(x == 0, np.logaddexp(log_pi, log_not_pi + nb), log_not_pi + nb).sum(-1)
    np.testing.assert_allclose(actual, expected, rtol=1e-5)
    np.testing.assert_allclose(likelihood.mean(params), special.expit(-dropout) * mu, rtol=1e-4, atol=1e-30)


def test_zinb_distribution_agrees_with_stable_log_prob(rng):
    likelihood = ZeroInflatedNegativeBinomial()
    x = _counts(rng)
    actual, params = _log_prob(likelihood, x, _raw(rng, likelihood), _library(rng))
    distribution = likelihood.distribution(params)
    np.testing.assert_allclose(distribution.log_prob(x), actual, rtol=1e-5)
    assert distribution.sample(seed=1).shape == (B, F)


def test_normal_matches_scipy(rng):
    likelihood = Normal()
    x = rng.normal(size=(B, F)).astype(np.float32)
    raw = _raw(rng, likelihood)
    raw["scale"][:, 0] = -40.0  # scale at its floor
    actual, params = _log_prob(likelihood, x, raw)
    scale = np.logaddexp(0.0, raw["scale"].astype(np.float64)) + likelihood.min_scale
    expected = stats.norm.logpdf(x, raw["loc"], scale).sum(-1)
    np.testing.assert_allclose(actual, expected, rtol=1e-5)
    np.testing.assert_allclose(likelihood.mean(params), raw["loc"])


@pytest.mark.parametrize("cls", [Bernoulli, BernoulliDepth, Poisson, NegativeBinomial, ZeroInflatedNegativeBinomial,
                                 Normal])
def test_shapes_dtypes_and_float16_heads(rng, cls):
    likelihood = cls()
    raw = {k: tf.constant(v, tf.float16) for k, v in _raw(rng, likelihood).items()}
    params = likelihood.constrain(raw, _library(rng))
    assert all(value.dtype == tf.float32 for value in params.values())
    distribution = likelihood.distribution(params)
    assert distribution.batch_shape == (B,) and distribution.event_shape == (F,)
    assert likelihood.log_prob(tf.constant(_counts(rng)), params).shape == (B,)
    assert likelihood.mean(params).shape == (B, F)


@pytest.mark.parametrize("cls", COUNT_LIKELIHOODS + [Bernoulli, BernoulliDepth])
def test_extreme_parameters_give_finite_values_and_gradients(cls):
    likelihood = cls()
    x = tf.constant(np.tile([0.0, 1.0, 500.0, 0.0, 3.0, 500.0], (4, 1)), tf.float32)
    extremes = tf.constant([[-50.0], [-5.0], [5.0], [50.0]]) * tf.ones((4, 6))
    raw = {name: tf.Variable(extremes * (-1.0) ** i) for i, name in enumerate(likelihood.parameters)}
    # A cell without counts must not produce log(0) either.
    library = tf.constant([[0.0], [1.0], [1e3], [1e6]])
    with tf.GradientTape() as tape:
        log_prob = likelihood.log_prob(x, likelihood.constrain(raw, library))
    gradients = tape.gradient(log_prob, list(raw.values()))
    assert np.all(np.isfinite(log_prob))
    assert all(np.all(np.isfinite(g)) for g in gradients)


def test_count_likelihoods_require_library_size(rng):
    for cls in COUNT_LIKELIHOODS:
        likelihood = cls()
        assert likelihood.uses_library_size and likelihood.input_transform == "log1p_normalize"
        with pytest.raises(ValueError, match="library_size"):
            likelihood.constrain({k: tf.constant(v) for k, v in _raw(rng, likelihood).items()}, None)
    with pytest.raises(KeyError, match="dropout_logits"):
        ZeroInflatedNegativeBinomial().constrain({"logits": tf.zeros((1, 2)), "dispersion": tf.zeros((1, 2))}, 1.0)


def test_class_attributes():
    assert Bernoulli.input_transform == "binarize" and not Bernoulli.uses_library_size
    assert Normal.input_transform == "identity" and not Normal.uses_library_size
    assert ZeroInflatedNegativeBinomial.parameters == ("logits", "dispersion", "dropout_logits")
    np.testing.assert_array_equal(Bernoulli().target(tf.constant([[0.0, 2.0, 7.0]])), [[0.0, 1.0, 1.0]])


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("bernoulli", Bernoulli),
        ("bernoulli_depth", BernoulliDepth),
        ("poisson", Poisson),
        ("nb", NegativeBinomial),
        ("negative_binomial", NegativeBinomial),
        ("ZINB", ZeroInflatedNegativeBinomial),
        ("normal", Normal),
    ],
)
def test_registry_lookup_by_alias(name, cls):
    assert type(get_likelihood(name)) is cls
    assert LIKELIHOODS.get(name) is cls


def test_unknown_name_lists_known_names():
    with pytest.raises(KeyError, match="unknown likelihood 'gamma'.*bernoulli.*zinb"):
        get_likelihood("gamma")


def test_user_subclass_registers_itself():
    class ScaledNormal(Normal):
        """A user likelihood living outside the package."""

        alias = "test_scaled_normal"

    assert type(get_likelihood("test_scaled_normal")) is ScaledNormal
    assert "test_scaled_normal" in LIKELIHOODS.names()
    # Inheriting an alias must not re-register the parent's name.
    assert LIKELIHOODS.get("normal") is Normal


def test_config_round_trip():
    likelihood = NegativeBinomial(eps=1e-6)
    assert NegativeBinomial.from_config(likelihood.get_config()).eps == 1e-6
    for original in [likelihood, ZeroInflatedNegativeBinomial(eps=1e-5), Normal(min_scale=1e-3), Bernoulli()]:
        restored = get_likelihood(serialize_likelihood(original))
        assert type(restored) is type(original)
        assert restored.get_config() == original.get_config()
    instance = Poisson()
    assert get_likelihood(instance) is instance
    assert type(get_likelihood(Poisson)) is Poisson
    with pytest.raises(TypeError):
        get_likelihood(dict)


def _scipy_pmf(likelihood: Likelihood, params: dict, counts: np.ndarray) -> np.ndarray:
    """P(x = k) per entry (last axis: counts k) from scipy, for the count and binary likelihoods."""
    if isinstance(likelihood, Bernoulli):
        p = special.expit(params["logits"].numpy().astype(np.float64))[..., None]
        return np.where(counts == 1, p, np.where(counts == 0, 1 - p, 0.0))
    if isinstance(likelihood, Poisson):
        return stats.poisson.pmf(counts, np.exp(params["log_rate"].numpy().astype(np.float64))[..., None])
    mu = np.exp(params["log_mean"].numpy().astype(np.float64))[..., None]
    theta = params["dispersion"].numpy().astype(np.float64)[..., None]
    pmf = stats.nbinom.pmf(counts, theta, theta / (theta + mu))
    if isinstance(likelihood, ZeroInflatedNegativeBinomial):
        pi = special.expit(params["dropout_logits"].numpy().astype(np.float64))[..., None]
        pmf = (1 - pi) * pmf + pi * (counts == 0)
    return pmf


@pytest.mark.parametrize("cls", [Bernoulli, Poisson, NegativeBinomial, ZeroInflatedNegativeBinomial])
def test_expected_log1p_matches_the_sum_over_scipy_probabilities(rng, cls):
    """E[log1p(1e4 x / depth)] at each cell's depth against sum_k P(x = k) log1p(1e4 k / depth) with
    scipy's probabilities summed to 200,000 (past which less than 1e-9 remains): within the 1e-4
    truncation tolerance, with counts in the thousands (depths up to 5,000) and heavy NB tails."""
    likelihood = cls()
    raw = {name: tf.constant(value) for name, value in _raw(rng, likelihood, scale=1.0).items()}
    depth = rng.uniform(100, 5000, size=B)
    expected = likelihood.expected_log1p(raw, depth)
    params = likelihood.constrain(raw, tf.constant(depth[:, None], tf.float32))
    counts = np.arange(200_001, dtype=np.float64)
    pmf = _scipy_pmf(likelihood, params, counts)
    assert np.all(pmf.sum(-1) > 1 - 1e-9)
    reference = (pmf * np.log1p(1e4 * counts / depth[:, None, None])).sum(-1)
    assert expected.shape == (B, F)
    np.testing.assert_allclose(expected, reference, atol=2e-4, rtol=0)
    # Few counts per cell: the expectation lies well below log1p of the mean
    # (Jensen), which is why predictions compared with log-normalised data use it.
    low = likelihood.expected_log1p(raw, 20.0)
    mean = likelihood.mean(likelihood.constrain(raw, tf.fill([B, 1], 20.0))).numpy()
    assert np.all(low <= np.log1p(1e4 * mean / 20.0) + 1e-6)
    assert np.mean(np.log1p(1e4 * mean / 20.0) - low) > 0.1


def test_expected_log1p_refuses_real_values_and_bad_depths(rng):
    raw = {name: tf.constant(value) for name, value in _raw(rng, Normal()).items()}
    with pytest.raises(ValueError, match="count and binary likelihoods only"):
        Normal().expected_log1p(raw, 100.0)
    raw = {name: tf.constant(value) for name, value in _raw(rng, Poisson()).items()}
    with pytest.raises(ValueError, match="depth must be positive"):
        Poisson().expected_log1p(raw, np.r_[100.0, 0.0, np.ones(B - 2)])
