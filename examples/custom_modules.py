"""Extending cavachon_like without touching its core: a likelihood and an encoder.

Import this module (or list it under ``plugins:`` in a YAML config) and the aliases
``lognormal`` and ``residual_mlp`` can be named like the built-in ones:

    plugins: [custom_modules]
    data:
      modalities:
        rna: {likelihood: lognormal, batch_key: [batch]}
    model:
      components:
        - {name: rna, modalities: [rna], encoder: {class: residual_mlp, units: [128, 128]}}
"""
from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from cavachon_like.distributions import Likelihood
from cavachon_like.nn import Encoder


class LogNormalCounts(Likelihood):
    """Normal likelihood on log1p counts (a quick alternative to count models)."""

    alias = "lognormal"
    parameters = ("loc", "scale")
    input_transform = "log1p_normalize"

    def constrain(self, raw, library_size=None):
        return {"loc": raw["loc"], "scale": tf.nn.softplus(raw["scale"]) + 1e-3}

    def distribution(self, params):
        normal = tfp.distributions.Normal(params["loc"], params["scale"])
        return tfp.distributions.Independent(normal, reinterpreted_batch_ndims=1)

    def target(self, x):
        return tf.math.log1p(x)

    def mean(self, params):
        return params["loc"]


@keras.saving.register_keras_serializable(package="examples")
class ResidualEncoder(Encoder):
    """The default encoder plus a linear skip from the first hidden layer to the mean."""

    alias = "residual_mlp"

    def build(self, x_shape, batch_shape=None):
        super().build(x_shape, batch_shape)
        self.skip = keras.layers.Dense(self.latent_dim, use_bias=False, name="skip")
        self.skip.build((None, self.body.units[-1]))

    def call(self, x, batch=None):
        h = self.features(x, batch)
        mean, variance = self.gaussian(h)
        return mean + self.skip(h), variance
