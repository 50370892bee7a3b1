"""Normal likelihood for continuous data."""
from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from .likelihood import Likelihood, float32_heads

tfd = tfp.distributions


class Normal(Likelihood):
    """Independent normal per feature, for continuous (e.g. already normalised) data.

    Heads: ``loc`` and ``scale`` (unconstrained); the scale is
    ``softplus(raw) + min_scale`` so that the density stays bounded.

    Constrained parameters: ``{"loc": (B, F), "scale": (B, F)}``.

    Parameters
    ----------
    min_scale
        Lower bound of the standard deviation.
    """

    alias = "normal"
    parameters = ("loc", "scale")
    input_transform = "identity"

    def __init__(self, min_scale: float = 1e-4) -> None:
        self.min_scale = float(min_scale)

    def constrain(self, raw: dict[str, tf.Tensor], library_size: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        loc, scale = float32_heads(raw, self.parameters)
        return {"loc": loc, "scale": tf.nn.softplus(scale) + self.min_scale}

    def distribution(self, params: dict[str, tf.Tensor]) -> tfd.Distribution:
        return tfd.Independent(tfd.Normal(loc=params["loc"], scale=params["scale"]), reinterpreted_batch_ndims=1)

    def get_config(self) -> dict:
        return {"min_scale": self.min_scale}
