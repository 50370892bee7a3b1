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
    accepts_sparse = True

    def constrain(self, raw: dict[str, tf.Tensor], library_size: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        (logits,) = float32_heads(raw, self.parameters)
        return {"log_rate": tf.nn.log_softmax(logits, axis=-1) + log_library_size(library_size)}

    def distribution(self, params: dict[str, tf.Tensor]) -> tfd.Distribution:
        return tfd.Independent(tfd.Poisson(log_rate=params["log_rate"]), reinterpreted_batch_ndims=1)

    def log_prob(self, x: tf.Tensor | tf.SparseTensor, params: dict[str, tf.Tensor]) -> tf.Tensor:
        # log p(x) = sum_f x_f log_rate_f - rate_f - lgamma(x_f + 1), the value TFP's Poisson
        # gives. Only the rates are summed over every feature; for sparse x the other two terms
        # visit the non-zeros alone, so x is never densified (binned genomes: tens of thousands
        # of features per cell, a few hundred non-zero).
        log_rate = params["log_rate"]
        total_rate = tf.reduce_sum(tf.exp(log_rate), axis=-1)
        if isinstance(x, tf.SparseTensor):
            values = self.target(x.values)
            terms = tf.gather_nd(log_rate, x.indices) * values - tf.math.lgamma(values + 1.0)
            n_rows = tf.shape(log_rate, out_type=x.indices.dtype)[0]
            return tf.math.unsorted_segment_sum(terms, x.indices[:, 0], n_rows) - total_rate
        x = self.target(x)
        return tf.reduce_sum(x * log_rate - tf.math.lgamma(x + 1.0), axis=-1) - total_rate
