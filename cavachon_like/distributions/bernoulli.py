"""Bernoulli likelihood for binarised data such as chromatin accessibility."""
from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from .likelihood import Likelihood, float32_heads

tfd = tfp.distributions


class Bernoulli(Likelihood):
    """Independent Bernoulli per feature, modelling whether a count is non-zero.

    The paper binarises chromatin accessibility and models it this way; the encoder
    sees the same binarised input.

    Constrained parameters: ``{"logits": (B, F)}``.
    """

    alias = "bernoulli"
    parameters = ("logits",)
    input_transform = "binarize"

    def constrain(self, raw: dict[str, tf.Tensor], library_size: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        (logits,) = float32_heads(raw, self.parameters)
        return {"logits": logits}

    def distribution(self, params: dict[str, tf.Tensor]) -> tfd.Distribution:
        return tfd.Independent(
            tfd.Bernoulli(logits=params["logits"], dtype=tf.float32), reinterpreted_batch_ndims=1
        )

    def target(self, x: tf.Tensor) -> tf.Tensor:
        return tf.cast(x > 0, tf.float32)

    def log_prob(self, x: tf.Tensor, params: dict[str, tf.Tensor]) -> tf.Tensor:
        # log p(x) = x l - softplus(l) for x in {0, 1}, the value TFP's Bernoulli gives, in
        # two passes over the (B, F) logits instead of TFP's several (ATAC has ~20k features).
        logits = params["logits"]
        return tf.reduce_sum(self.target(x) * logits - tf.nn.softplus(logits), axis=-1)
