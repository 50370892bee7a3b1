"""Laplace likelihood for continuous data (the image likelihood of MMVAE, which scMM builds on)."""
from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from .normal import Normal

tfd = tfp.distributions


class Laplace(Normal):
    """Independent Laplace per feature, for continuous (e.g. already normalised) data.

    ``p(x | loc, b) = exp(-|x - loc| / b) / (2 b)``: heavier tails than :class:`Normal`,
    so a few outlying values pull the fit less (the loss is an L1 rather than an L2
    reconstruction error).

    Heads: ``loc`` and ``scale`` (unconstrained); the scale is
    ``softplus(raw) + min_scale`` so that the density stays bounded.

    Constrained parameters: ``{"loc": (B, F), "scale": (B, F)}``. The mean (and the
    median) is ``loc``; the variance is ``2 scale**2``.

    Parameters
    ----------
    min_scale
        Lower bound of the scale ``b``.
    """

    alias = "laplace"
    support = "real"

    def distribution(self, params: dict[str, tf.Tensor]) -> tfd.Distribution:
        return tfd.Independent(tfd.Laplace(loc=params["loc"], scale=params["scale"]), reinterpreted_batch_ndims=1)

    def mean(self, params: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.identity(params["loc"])
