"""Per-cell loss pieces of a component's posterior: experts a cell has, their agreement."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

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


def present_mean(values: tf.Tensor, present: Sequence[tf.Tensor] | None) -> tf.Tensor:
    """The mean over experts of ``values`` (M, B), per cell over the experts it has (0 with none)."""
    if present is None:
        return tf.reduce_mean(values, axis=0)
    mask = tf.cast(tf.stack(present), values.dtype)
    # where, not a product: an absent expert's value may be -inf or NaN-producing
    total = tf.reduce_sum(tf.where(mask > 0, values, tf.zeros_like(values)), axis=0)
    return total / tf.maximum(tf.reduce_sum(mask, axis=0), 1.0)
