"""Laplace prior with a learnable scale per latent dimension (scMM, paper 003)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from .prior import Prior

#: Floor of the prior scales, so that a dimension cannot collapse onto a point (``log(2 b)``
#: and ``|z| / b`` stay finite).
MIN_PRIOR_SCALE = 1e-3

_SCALE_CONSTRAINTS = ("softplus", "softmax")
_LOG_2 = math.log(2.0)
_GAUSSIAN_ENTROPY_CONSTANT = 0.5 * (math.log(2.0 * math.pi) + 1.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gaussian_expected_abs(mean: tf.Tensor, var: tf.Tensor) -> tf.Tensor:
    """``E|z|`` for ``z ~ N(mean, var)`` elementwise: the mean of the folded normal.

    ``s sqrt(2/pi) exp(-m^2 / (2 s^2)) + m (1 - 2 Phi(-m/s))`` with ``s = sqrt(var)``,
    written with ``1 - 2 Phi(-t) = erf(t / sqrt 2)``, which has no cancellation. For
    ``|m| >> s`` the first term underflows to 0 and the second is ``|m|``; every
    intermediate stays finite for a variance floored away from 0, so the gradients do too.
    """
    std = tf.sqrt(var)
    t = mean / std
    return std * _SQRT_2_OVER_PI * tf.exp(-0.5 * tf.square(t)) + mean * tf.math.erf(t / math.sqrt(2.0))


@keras.saving.register_keras_serializable(package="cavachon_like")
class LaplacePrior(Prior):
    """``p(z) = prod_d Laplace(z_d | 0, b_d)`` with a learnable scale ``b_d`` per dimension.

    scMM (paper 003, Methods) uses this prior because its heavier tails and separate
    scales per axis favour axis-aligned, disentangled latents; the scales are learned
    with the rest of the model. The KL to the package's diagonal Gaussian posterior
    ``q = N(m, diag(s^2))`` is in closed form, summed over dimensions::

        KL(q || p) = -H[q] - E_q[log p(z)]
                   = sum_d  -1/2 log(2 pi e s_d^2) + log(2 b_d) + E_q|z_d| / b_d
        E_q|z_d|   = s_d sqrt(2/pi) exp(-m_d^2 / (2 s_d^2)) + m_d (1 - 2 Phi(-m_d / s_d))

    (the folded-normal mean, see :func:`gaussian_expected_abs`). It has no clusters.

    The scale is stored unconstrained (``raw_scale``, float32 and never autocast, as
    all priors compute in float32) and mapped to ``b`` in one of two ways:

    ``"softplus"`` (default)
        ``b_d = softplus(raw_d) + MIN_PRIOR_SCALE``: every scale free.
    ``"softmax"``
        ``b_d = MIN_PRIOR_SCALE + d (1 - MIN_PRIOR_SCALE) softmax(raw)_d``: scMM's
        constraint ``sum_d b_d = d`` (MMVAE's ``softmax(raw) * d``, with a floor), so
        the scales only trade width between dimensions. It starts at ``b = 1``.

    Parameters
    ----------
    latent_dim
        Dimension ``d`` of ``z``.
    initial_scale
        ``b`` of every dimension at construction. The default 1 is scMM's start (MMVAE
        initialises the logits at 0, so ``d * softmax(0) = 1``), which keeps the two
        constraints starting from the same prior; its variance ``2 b^2 = 2`` is within
        a factor of two of the standard normal's, and the scales are learned anyway.
        Pass ``1 / sqrt(2)`` (about 0.7071) for a prior of unit variance. Must be 1
        with ``scale_constraint="softmax"``, whose scales average 1 by construction.
    scale_constraint
        ``"softplus"`` or ``"softmax"``, see above.
    """

    alias = "laplace"

    def __init__(
        self, latent_dim: int, initial_scale: float = 1.0, scale_constraint: str = "softplus", **kwargs: Any
    ) -> None:
        super().__init__(latent_dim, **kwargs)
        if scale_constraint not in _SCALE_CONSTRAINTS:
            raise ValueError(f"scale_constraint must be one of {_SCALE_CONSTRAINTS}, got {scale_constraint!r}.")
        initial_scale = float(initial_scale)
        if not initial_scale > MIN_PRIOR_SCALE or not math.isfinite(initial_scale):
            raise ValueError(f"initial_scale must be a finite number above {MIN_PRIOR_SCALE}, got {initial_scale}.")
        if scale_constraint == "softmax" and not math.isclose(initial_scale, 1.0):
            raise ValueError(
                f"scale_constraint='softmax' keeps the scales summing to latent_dim, so they start at 1; "
                f"got initial_scale={initial_scale}."
            )
        self.initial_scale = initial_scale
        self.scale_constraint = scale_constraint
        self.build()

    def build(self, input_shape: Sequence[int | None] | None = None) -> None:
        if input_shape is not None and input_shape[-1] not in (None, self.latent_dim):
            raise ValueError(f"{self.name} has latent_dim {self.latent_dim} but got inputs of shape {input_shape}.")
        if self.built:
            return
        if self.scale_constraint == "softplus":
            initial_raw = math.log(math.expm1(self.initial_scale - MIN_PRIOR_SCALE))
        else:
            initial_raw = 0.0
        self.raw_scale = self.add_weight(
            shape=(self.latent_dim,),
            initializer=keras.initializers.Constant(initial_raw),
            dtype="float32",
            autocast=False,
            name="raw_scale",
        )

    @property
    def scale(self) -> tf.Tensor:
        """``b``, ``(d,)`` float32."""
        raw = tf.convert_to_tensor(self.raw_scale)
        if self.scale_constraint == "softplus":
            return tf.nn.softplus(raw) + MIN_PRIOR_SCALE
        return MIN_PRIOR_SCALE + self.latent_dim * (1.0 - MIN_PRIOR_SCALE) * tf.nn.softmax(raw)

    def kl_divergence(self, mean: tf.Tensor, var: tf.Tensor, z: tf.Tensor) -> tuple[tf.Tensor, None]:
        mean, var, _ = self._posterior(mean, var, z)
        scale = self.scale
        negative_entropy = -_GAUSSIAN_ENTROPY_CONSTANT - 0.5 * tf.math.log(var)
        cross_entropy = _LOG_2 + tf.math.log(scale) + gaussian_expected_abs(mean, var) / scale
        return tf.reduce_sum(negative_entropy + cross_entropy, axis=-1), None

    def log_prob(self, z: tf.Tensor) -> tf.Tensor:
        z = tf.cast(z, tf.float32)
        scale = self.scale
        return -tf.reduce_sum(_LOG_2 + tf.math.log(scale) + tf.abs(z) / scale, axis=-1)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` draws of ``z ~ p(z)``, ``(n, d)`` float32, from the NumPy generator ``rng``."""
        scale = np.asarray(self.scale, np.float64)
        return rng.laplace(0.0, scale, size=(int(n), self.latent_dim)).astype(np.float32)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "initial_scale": self.initial_scale,
            "scale_constraint": self.scale_constraint,
        }
