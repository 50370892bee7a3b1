"""Base class of the latent priors ``p(z_m)`` (mixture or not) of Eq. 1."""
from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from .._registry import Registry, register_subclass

#: Priors by alias (``prior:`` of a component in YAML); a subclass of :class:`Prior`
#: that sets ``alias`` joins it.
#:
#: :meta hide-value:
PRIORS = Registry("prior")

#: Floor of the posterior variance before its log, so that a collapsed encoder
#: output gives a large but finite KL instead of ``inf``.
MIN_POSTERIOR_VARIANCE = 1e-12

_LOG_2PI = math.log(2.0 * math.pi)


def diagonal_gaussian_log_prob(z: tf.Tensor, mean: tf.Tensor, var: tf.Tensor) -> tf.Tensor:
    """``log N(z | mean, diag(var))``, summed over the last axis (arguments broadcast)."""
    return -0.5 * tf.reduce_sum(_LOG_2PI + tf.math.log(var) + tf.square(z - mean) / var, axis=-1)


def diagonal_gaussian_kl(mean: tf.Tensor, var: tf.Tensor, other_mean: tf.Tensor, other_var: tf.Tensor) -> tf.Tensor:
    """``KL(N(mean, diag(var)) || N(other_mean, diag(other_var)))``, summed over the last axis."""
    return 0.5 * tf.reduce_sum(
        tf.math.log(other_var) - tf.math.log(var) + (var + tf.square(mean - other_mean)) / other_var - 1.0,
        axis=-1,
    )


@keras.saving.register_keras_serializable(package="cavachon_like")
class Prior(keras.layers.Layer):
    """Prior over one component's latent representation ``z`` of dimension ``latent_dim``.

    A prior supplies the latent part of the ELBO (Eq. S4) through
    :meth:`kl_divergence`; mixture priors also supply the cluster assignments of the
    VaDE trick (Eq. S5). All math runs in float32 whatever the dtype policy, because
    log densities of high-dimensional Gaussians lose too much precision in float16.
    Calling the layer returns :meth:`log_prob`.

    A subclass that defines ``alias`` registers itself in :data:`PRIORS`, so YAML can
    name it.

    Parameters
    ----------
    latent_dim
        Dimension ``d`` of ``z``.
    """

    def __init__(self, latent_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_subclass(PRIORS, cls)

    @property
    def n_clusters(self) -> int:
        """Number of mixture components, 0 for a prior without clusters."""
        return 0

    def call(self, z: tf.Tensor) -> tf.Tensor:
        """Calling the layer gives :meth:`log_prob` of ``z``, ``(B,)``."""
        return self.log_prob(z)

    def kl_divergence(self, mean: tf.Tensor, var: tf.Tensor, z: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None]:
        """Latent part of the negative ELBO per cell.

        Parameters
        ----------
        mean, var
            Parameters of the diagonal Gaussian posterior ``q(z|x)``, ``(B, d)``.
        z
            A sample of ``q(z|x)``, ``(B, d)``; mixture priors use it to assign clusters.

        Returns
        -------
        kl : tf.Tensor
            ``(B,)`` float32, the KL terms of Eq. S4.
        responsibilities : tf.Tensor or None
            ``q(c|x)``, ``(B, K)``, for mixture priors; ``None`` otherwise.
        """
        raise NotImplementedError

    def log_prob(self, z: tf.Tensor) -> tf.Tensor:
        """``log p(z)``, ``(B,)`` float32."""
        raise NotImplementedError

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` draws of ``z ~ p(z)``, ``(n, d)`` float32, from the NumPy generator ``rng``
        (for predicting a modality from its parents, where z has no data to come from)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be sampled; implement `sample(n, rng)`.")

    def modes(self) -> tf.Tensor:
        """Points of high prior density, ``(M, d)`` float32: where inference of a latent without
        an encoder starts (the best of them for each cell). The origin by default."""
        return tf.zeros((1, self.latent_dim), tf.float32)

    def cluster_probabilities(self, z: tf.Tensor) -> tf.Tensor:
        """``p(c|z)``, ``(B, K)``; only mixture priors have clusters."""
        raise TypeError(f"{type(self).__name__} is not a mixture prior, so it has no cluster probabilities.")

    def initialize_from_samples(self, z: Any, seed: int | None = None) -> bool:
        """Data-dependent initialisation from latent points ``z`` (cells x d).

        Called once per training stage after a warm-up with the training cells'
        posterior means, then (if it returns True) followed by one step of
        :meth:`update_from_posteriors`; returns whether the prior changed. Priors
        without data-dependent parameters keep the default (no-op).
        """
        return False

    def update_from_posteriors(self, mean: Any, var: Any, max_iterations: int = 100) -> bool:
        """Closed-form updates of the prior's parameters given cells' posteriors (cells x d each).

        Called at the end of each training stage with the posteriors ``q(z|x)`` of the
        training cells: the parameters that minimise the stage's KL term for those
        posteriors, where such a closed form exists. Returns whether the prior changed;
        priors without one keep the default (no-op).
        """
        return False

    @staticmethod
    def _posterior(mean: tf.Tensor, var: tf.Tensor, z: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The posterior in float32, with its variance floored for the logs."""
        var = tf.maximum(tf.cast(var, tf.float32), MIN_POSTERIOR_VARIANCE)
        return tf.cast(mean, tf.float32), var, tf.cast(z, tf.float32)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "latent_dim": self.latent_dim}
