"""Per-cell loss pieces of a component: the agreement of its experts, sampled reconstruction terms."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf


def expert_divergence(moments: Mapping[str, tf.Tensor]) -> tf.Tensor:
    """Per cell, the mean over pairs of experts it has of their symmetric KL divergence (B,)."""
    mean, var = tf.cast(moments["mean"], tf.float32), tf.cast(moments["var"], tf.float32)
    present = moments.get("present")
    total, pairs = tf.zeros_like(mean[0, :, 0]), tf.zeros_like(mean[0, :, 0])
    for i in range(int(mean.shape[0])):
        for j in range(i + 1, int(mean.shape[0])):
            gap = tf.square(mean[i] - mean[j])
            # KL(i || j) + KL(j || i): the log-variance terms cancel
            divergence = 0.5 * tf.reduce_sum((var[i] + gap) / var[j] + (var[j] + gap) / var[i] - 2.0, axis=-1)
            weight = tf.ones_like(divergence) if present is None else (
                tf.cast(present[i], tf.float32) * tf.cast(present[j], tf.float32))
            total += tf.where(weight > 0, divergence, tf.zeros_like(divergence))
            pairs += weight
    return total / tf.maximum(pairs, 1.0)


#: Posteriors whose training pass decodes each cell once (a mixture of experts decodes every
#: expert's sample, a learned representation has no encoder pass): where sampled zeros apply.
SAMPLED_ZEROS_POSTERIORS = ("concat", "poe")


def check_sampled_zeros(component: str, fraction: float | None, posterior: str, likelihoods: Mapping[str, Any],
                        decoders: Mapping[str, Any]) -> float | None:
    """``fraction`` as a float after checking that a component can estimate its zero terms from it."""
    if fraction is None:
        return None
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
        raise ValueError(f"component {component!r}: sampled_zeros must be a fraction in (0, 1] of the features, "
                         f"got {fraction!r}.")
    if posterior not in SAMPLED_ZEROS_POSTERIORS:
        raise ValueError(f"component {component!r}: sampled_zeros applies to posterior {' or '.join(SAMPLED_ZEROS_POSTERIORS)}"
                         f", not {posterior!r}.")
    unfit = {m: lik.alias for m, lik in likelihoods.items() if not lik.samples_zeros}
    unfit.update({m: f"decoder {type(d).__name__}" for m, d in decoders.items() if not hasattr(d, "sampled")})
    if unfit:
        raise ValueError(f"component {component!r}: sampled_zeros needs likelihoods whose log-probability is the "
                         "non-zeros' terms minus a sum over features of the logits (bernoulli) and the MLP decoder; "
                         f"modalities {unfit} do not qualify. Put them in another component or leave sampled_zeros out.")
    return float(fraction)


def sampled_reconstruction(likelihood: Any, decoder: Any, x: tf.Tensor | tf.SparseTensor, z_hat: tf.Tensor,
                           batch: tf.Tensor, fraction: float, seed: keras.random.SeedGenerator) -> dict[str, tf.Tensor]:
    """The pieces of a sampled log-likelihood: ``Decoder.sampled``'s (``linear``, the exact sum
    over features of ``target(x) * logit``; ``logits`` at ``k = ceil(fraction * F)`` features drawn
    uniformly with replacement; the batch-mean ``baseline``) and ``scale`` = F / k.
    ``likelihood.sampled_log_prob`` of them is an unbiased estimate of ``log_prob`` in value and
    gradient: a sum over features is F/k times the expected sum over the draws.
    """
    target = (tf.SparseTensor(x.indices, likelihood.target(x.values), x.dense_shape)
              if isinstance(x, tf.SparseTensor) else likelihood.target(x))
    n_features = int(decoder.n_features)
    k = max(1, math.ceil(fraction * n_features))
    columns = keras.random.randint((k,), 0, n_features, seed=seed, dtype="int32")
    pieces = decoder.sampled(z_hat, batch, target, columns)
    return {**pieces, "scale": tf.constant(n_features / k, tf.float32)}
