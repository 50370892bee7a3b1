"""Accessibility whose probability scales with the cell's sequencing depth."""
from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from .bernoulli import Bernoulli
from .likelihood import float32_heads, log_library_size

tfd = tfp.distributions


class BernoulliDepth(Bernoulli):
    """Bernoulli per region with ``P(open) = 1 - exp(-rate)``, ``rate = library_size * softmax(logits)``.

    The probability that a region yields at least one read when reads arrive at
    ``rate`` (a Poisson thinned to presence). As the Poisson and NB likelihoods do for
    RNA, the decoder models only which regions a cell opens, and its library size
    sets how many. With the paper's plain Bernoulli the latent has to spend
    dimensions on depth, for sparse ATAC (SNARE-seq: ~100 open regions per cell) the
    largest source of variation; PeakVI and MultiVI scale their Bernoulli by a cell
    factor for the same reason.

    Constrained parameters: ``{"log_rate": (B, F)}``.
    """

    alias = "bernoulli_depth"
    support = "binary"
    uses_library_size = True
    # Signac/ArchR's input for sparse accessibility: depth-normalised, rare regions up-weighted.
    input_transform = "tfidf"

    def constrain(self, raw: dict[str, tf.Tensor], library_size: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        (logits,) = float32_heads(raw, self.parameters)
        return {"log_rate": tf.nn.log_softmax(logits, axis=-1) + log_library_size(library_size)}

    def distribution(self, params: dict[str, tf.Tensor]) -> tfd.Distribution:
        log_rate = params["log_rate"]
        return tfd.Independent(
            tfd.Bernoulli(logits=log_expm1(tf.exp(log_rate), log_rate), dtype=tf.float32), reinterpreted_batch_ndims=1
        )

    def mean(self, params: dict[str, tf.Tensor]) -> tf.Tensor:
        return -tf.math.expm1(-tf.exp(params["log_rate"]))

    def log_prob(self, x: tf.Tensor | tf.SparseTensor, params: dict[str, tf.Tensor]) -> tf.Tensor:
        # log p(x) = sum_j [x_j log(1 - exp(-r_j)) - (1 - x_j) r_j]
        #          = -sum_j r_j + sum_{j: x_j > 0} log(expm1(r_j)),
        # so only the rates of open regions are transformed: one dense pass (the sum)
        # instead of several over all (B, F) entries.
        log_rate = params["log_rate"]
        total = tf.reduce_sum(tf.exp(log_rate), axis=-1)
        if isinstance(x, tf.SparseTensor):
            open_ = tf.cast(x.values > 0, tf.float32)
            log_r = tf.gather_nd(log_rate, x.indices)
            hits = log_expm1(tf.exp(log_r), log_r) * open_
            n_rows = tf.shape(log_rate, out_type=x.indices.dtype)[0]
            return tf.math.unsorted_segment_sum(hits, x.indices[:, 0], n_rows) - total
        return tf.reduce_sum(self.target(x) * log_expm1(tf.exp(log_rate), log_rate), axis=-1) - total


def log_expm1(rate: tf.Tensor, log_rate: tf.Tensor) -> tf.Tensor:
    """``log(exp(rate) - 1)`` from ``rate`` and its log, stable for small and large rates."""
    safe = tf.clip_by_value(rate, 1e-3, 20.0)
    middle = tf.math.log(tf.math.expm1(safe))
    return tf.where(rate < 1e-3, log_rate + 0.5 * rate, tf.where(rate > 20.0, rate, middle))
