"""Learnable mixture of diagonal Gaussians with VaDE clustering (Eq. 1, Appendix B)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from .prior import PRIORS, Prior, diagonal_gaussian_kl, diagonal_gaussian_log_prob

#: Floor of the component variances, so that a component cannot collapse onto a point.
MIN_COMPONENT_VARIANCE = 1e-4


@keras.saving.register_keras_serializable(package="cavachon_like")
class MixtureGaussianPrior(Prior):
    """``c ~ Categorical(pi)``, ``z | c ~ N(mu_c, diag(var_c))`` with learnable ``pi, mu, var``.

    :meth:`kl_divergence` returns the latent terms of Eq. S4 with the VaDE choice of
    ``q(c|x)`` (Eq. S5), ``gamma = p(c|z)`` at the posterior sample ``z``::

        KL = sum_c gamma_c KL(N(mean, var) || N(mu_c, var_c))
             + sum_c gamma_c (log gamma_c - log pi_c)

    Gradients flow through ``gamma`` as in VaDE. Everything is computed from
    ``log_softmax``/``logsumexp`` so that far-away components give ``gamma_c = 0``
    without ``0 * log 0``.

    The weights are built at construction (their shapes only depend on
    ``latent_dim`` and ``n_clusters``), so the methods work before any call.

    Parameters
    ----------
    latent_dim
        Dimension ``d`` of ``z``.
    n_clusters
        Number of components ``K``; defaults to ``2 * latent_dim + 1``, the
        identifiability bound the paper uses.
    seed
        Seed of the random normal initialisation of the component means.
    """

    alias = "mixture_gaussian"

    def __init__(self, latent_dim: int, n_clusters: int | None = None, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(latent_dim, **kwargs)
        self._n_clusters = int(n_clusters) if n_clusters is not None else 2 * self.latent_dim + 1
        self.seed = seed
        self.build()

    @property
    def n_clusters(self) -> int:
        return self._n_clusters

    def build(self, input_shape: Sequence[int | None] | None = None) -> None:
        if input_shape is not None and input_shape[-1] not in (None, self.latent_dim):
            raise ValueError(f"{self.name} has latent_dim {self.latent_dim} but got inputs of shape {input_shape}.")
        if self.built:
            return
        shape = (self._n_clusters, self.latent_dim)
        # Weights stay float32 and are never autocast: see the Prior docstring.
        self.mixture_logits = self.add_weight(
            shape=(self._n_clusters,), initializer="zeros", dtype="float32", autocast=False, name="mixture_logits"
        )
        self.means = self.add_weight(
            shape=shape,
            initializer=keras.initializers.RandomNormal(stddev=1.0, seed=self.seed),
            dtype="float32",
            autocast=False,
            name="means",
        )
        # softplus(raw) + floor = 1 at initialisation.
        unit_variance = math.log(math.expm1(1.0 - MIN_COMPONENT_VARIANCE))
        self.raw_variances = self.add_weight(
            shape=shape,
            initializer=keras.initializers.Constant(unit_variance),
            dtype="float32",
            autocast=False,
            name="raw_variances",
        )

    @property
    def mixture_weights(self) -> tf.Tensor:
        """``pi``, ``(K,)``."""
        return tf.nn.softmax(self.mixture_logits)

    @property
    def variances(self) -> tf.Tensor:
        """``var_c``, ``(K, d)``."""
        return tf.nn.softplus(self.raw_variances) + MIN_COMPONENT_VARIANCE

    def _log_joint(self, z: tf.Tensor) -> tf.Tensor:
        """``log pi_c + log N(z | mu_c, var_c)``, ``(B, K)``."""
        log_pi = tf.nn.log_softmax(self.mixture_logits)
        return log_pi + diagonal_gaussian_log_prob(z[:, None, :], self.means, self.variances)

    def kl_divergence(self, mean: tf.Tensor, var: tf.Tensor, z: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        mean, var, z = self._posterior(mean, var, z)
        log_gamma = tf.nn.log_softmax(self._log_joint(z), axis=-1)
        gamma = tf.exp(log_gamma)
        kl_z = diagonal_gaussian_kl(mean[:, None, :], var[:, None, :], self.means, self.variances)
        kl_c = log_gamma - tf.nn.log_softmax(self.mixture_logits)
        return tf.reduce_sum(gamma * (kl_z + kl_c), axis=-1), gamma

    def log_prob(self, z: tf.Tensor) -> tf.Tensor:
        return tf.reduce_logsumexp(self._log_joint(tf.cast(z, tf.float32)), axis=-1)

    def modes(self) -> tf.Tensor:
        """The component means, ``(K, d)``."""
        return tf.convert_to_tensor(self.means)

    def cluster_probabilities(self, z: tf.Tensor) -> tf.Tensor:
        return tf.nn.softmax(self._log_joint(tf.cast(z, tf.float32)), axis=-1)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        weights = np.asarray(self.mixture_weights, np.float64)
        clusters = rng.choice(self.n_clusters, size=int(n), p=weights / weights.sum())
        noise = rng.standard_normal((int(n), self.latent_dim))
        means, variances = np.asarray(self.means), np.asarray(self.variances)
        return (means[clusters] + np.sqrt(variances[clusters]) * noise).astype(np.float32)

    def initialize_from_samples(self, z: np.ndarray, seed: int | None = None) -> bool:
        """Set ``pi``, ``mu`` and ``var`` from a diagonal GMM fitted to latent points ``z``.

        VaDE initialises its prior this way after pre-training; starting from random
        means instead, the components nearest the data take all responsibility and
        the rest never move, so only a handful of the K clusters end up used.
        """
        from sklearn.mixture import GaussianMixture

        z = np.asarray(z, dtype=np.float64)
        if len(z) < self._n_clusters:
            return False
        gmm = GaussianMixture(
            self._n_clusters, covariance_type="diag", reg_covar=MIN_COMPONENT_VARIANCE, random_state=seed, max_iter=200
        ).fit(z)
        self._assign(gmm.weights_, gmm.means_, gmm.covariances_)
        return True

    def update_from_posteriors(self, mean: Any, var: Any, max_iterations: int = 100) -> bool:
        """EM on the posteriors: VaDE's ``gamma = p(c|z)`` at the posterior means, then ``pi, mu, var``.

        Given ``gamma``, the KL term of :meth:`kl_divergence` is minimised in closed form
        by ``pi_c = mean_i gamma_ic``, ``mu_c`` the gamma-weighted mean of the posterior
        means and ``var_c`` the gamma-weighted mean of ``var_i + (mean_i - mu_c)^2``.
        Gradient steps move the mixture slowly once the encoder has settled (on SNARE-seq
        neighbouring components kept sharing cell types); alternating the two steps until
        ``gamma`` stops changing moves it to where the posteriors are. Components that
        lose all their cells keep their parameters.
        """
        mean = np.asarray(mean, dtype=np.float64)
        var = np.asarray(var, dtype=np.float64)
        if len(mean) < self._n_clusters:
            return False
        weights = np.asarray(self.mixture_weights, np.float64)
        means, variances = np.asarray(self.means, np.float64), np.asarray(self.variances, np.float64)
        second_moment = var + mean**2
        gamma = None
        for _ in range(int(max_iterations)):
            # sum_d (m - mu)^2 / v as matrix products: (cells x K) memory, not cells x K x d.
            precision = 1.0 / variances
            squared = np.square(mean) @ precision.T - 2 * mean @ (means * precision).T + (means**2 * precision).sum(-1)
            log_joint = np.log(np.maximum(weights, 1e-30)) - 0.5 * (np.log(2 * np.pi * variances).sum(-1) + squared)
            new = np.exp(log_joint - log_joint.max(1, keepdims=True))
            new /= new.sum(1, keepdims=True)
            converged = gamma is not None and np.abs(new - gamma).max() < 1e-4
            gamma = new
            if converged:
                break
            mass = gamma.sum(0)
            kept = mass > 1e-6 * len(mean)
            weights = mass / mass.sum()
            safe = np.maximum(mass, 1e-300)[:, None]
            fitted_means = gamma.T @ mean / safe
            fitted_variances = gamma.T @ second_moment / safe - fitted_means**2
            means = np.where(kept[:, None], fitted_means, means)
            variances = np.where(kept[:, None], np.maximum(fitted_variances, MIN_COMPONENT_VARIANCE), variances)
        self._assign(weights, means, variances)
        return True

    def _assign(self, weights: np.ndarray, means: np.ndarray, variances: np.ndarray) -> None:
        """Set ``pi``, ``mu`` and ``var`` (floored at MIN_COMPONENT_VARIANCE) from arrays."""
        raw = np.log(np.expm1(np.maximum(variances - MIN_COMPONENT_VARIANCE, 1e-6)))
        self.mixture_logits.assign(np.log(np.maximum(weights, 1e-8)).astype(np.float32))
        self.means.assign(np.asarray(means, np.float32))
        self.raw_variances.assign(raw.astype(np.float32))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_clusters": self._n_clusters, "seed": self.seed}


PRIORS.register("vade", MixtureGaussianPrior)
