"""Standard normal prior, for components that are not clustered."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from .prior import PRIORS, Prior, diagonal_gaussian_kl, diagonal_gaussian_log_prob


@keras.saving.register_keras_serializable(package="cavachon_like")
class StandardNormalPrior(Prior):
    """``p(z) = N(0, I)``: the vanilla VAE prior, with an analytic KL and no weights.

    Parameters
    ----------
    latent_dim
        Dimension ``d`` of ``z``.
    """

    alias = "normal"

    def kl_divergence(self, mean: tf.Tensor, var: tf.Tensor, z: tf.Tensor) -> tuple[tf.Tensor, None]:
        mean, var, _ = self._posterior(mean, var, z)
        return diagonal_gaussian_kl(mean, var, tf.zeros_like(mean), tf.ones_like(var)), None

    def log_prob(self, z: tf.Tensor) -> tf.Tensor:
        z = tf.cast(z, tf.float32)
        return diagonal_gaussian_log_prob(z, tf.zeros_like(z), tf.ones_like(z))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal((int(n), self.latent_dim)).astype(np.float32)


PRIORS.register("standard_normal", StandardNormalPrior)
