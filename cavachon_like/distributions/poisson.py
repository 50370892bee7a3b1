"""Poisson likelihood for counts."""
from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from .likelihood import Likelihood, float32_heads, log_library_size

tfd = tfp.distributions


class Poisson(Likelihood):
    """Independent Poisson per feature with rate ``softmax(logits) * library_size``.

    As in scVI, the decoder only models the composition of a cell's counts and the
    observed library size sets their scale. The rate is kept in log space
    (``log_softmax + log library``) because a softmax over thousands of features
    underflows long before its log does.

    Constrained parameters: ``{"log_rate": (B, F)}``.
    """

    alias = "poisson"
    support = "counts"
    parameters = ("logits",)
    input_transform = "log1p_normalize"
    uses_library_size = True

    def constrain(self, raw: dict[str, tf.Tensor], library_size: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        (logits,) = float32_heads(raw, self.parameters)
        return {"log_rate": tf.nn.log_softmax(logits, axis=-1) + log_library_size(library_size)}

    def distribution(self, params: dict[str, tf.Tensor]) -> tfd.Distribution:
        return tfd.Independent(tfd.Poisson(log_rate=params["log_rate"]), reinterpreted_batch_ndims=1)
