"""A joint posterior as the equal-weight mixture of one expert per modality (MMVAE, scMM, paper 003)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from .product_of_experts import ProductOfExperts


def _weights(n_experts: int, present: Sequence[tf.Tensor] | None, like: tf.Tensor) -> tf.Tensor:
    """``(M, B, 1)`` mixture weights for ``like`` ``(M, B, d)``: 1 / (experts the cell has) for each it has."""
    if present is None:
        return tf.fill([n_experts, tf.shape(like)[1], 1], tf.constant(1.0 / n_experts, like.dtype))
    mask = tf.stack([tf.cast(p, like.dtype) for p in present])[:, :, None]
    return mask / tf.maximum(tf.reduce_sum(mask, axis=0, keepdims=True), 1.0)


def mixture_moments(means: Sequence[tf.Tensor], variances: Sequence[tf.Tensor],
                    present: Sequence[tf.Tensor] | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean and per-dimension variance of ``sum_m w_m N(mean_m, var_m)``, ``w_m`` equal over
    the experts a cell has (``present`` as in :func:`~cavachon_like.nn.product_of_gaussians`).

    A cell with no expert gets ``N(0, I)``, the prior expert of the product of experts.
    """
    mean_stack, var_stack = tf.stack(means), tf.stack(variances)
    weights = _weights(len(means), present, mean_stack)
    mass = tf.reduce_sum(weights, axis=0)  # 1, or 0 for a cell without experts
    mean = tf.reduce_sum(weights * mean_stack, axis=0)
    second = tf.reduce_sum(weights * (var_stack + tf.square(mean_stack)), axis=0) + (1.0 - mass)
    return mean, tf.maximum(second - tf.square(mean), 1e-12)


def log_mixture_density(z: tf.Tensor, means: tf.Tensor, variances: tf.Tensor,
                        present: Sequence[tf.Tensor] | None = None) -> tf.Tensor:
    """``log (1/M) sum_k N(z_j | mean_k, var_k)`` for stacked samples and experts.

    ``z`` is ``(J, B, d)`` (J samples per cell), ``means``/``variances`` ``(M, B, d)``;
    returns ``(J, B)``. With ``present`` (one ``(B,)`` 0/1 tensor per expert) the mixture
    is over the experts each cell has (a cell with none gets a finite placeholder).
    """
    diff = z[:, None] - means[None]  # (J, M, B, d)
    log_normal = -0.5 * tf.reduce_sum(
        math.log(2 * math.pi) + tf.math.log(variances[None]) + tf.square(diff) / variances[None], axis=-1
    )
    if present is None:
        return tf.reduce_logsumexp(log_normal, axis=1) - math.log(means.shape[0])
    mask = tf.cast(tf.stack(present), log_normal.dtype)  # (M, B)
    # log 1e-30 rather than -inf keeps a cell without experts finite; callers weigh it by 0
    log_weights = tf.math.log(tf.maximum(mask, 1e-30)) - tf.math.log(tf.maximum(tf.reduce_sum(mask, 0), 1.0))
    return tf.reduce_logsumexp(log_normal + log_weights[None], axis=1)


@keras.saving.register_keras_serializable(package="cavachon_like")
class MixtureOfExperts(ProductOfExperts):
    """One Gaussian encoder (expert) per modality, mixed with equal weights:
    ``q(z | x_1..x_M) = (1/M) sum_m q_m(z | x_m)``.

    The experts are held and built as in :class:`~cavachon_like.nn.ProductOfExperts`;
    only how they combine differs. Calling the layer gives the mixture's mean and
    variance (the latent representation, the mixture fit); training uses the experts
    themselves through :meth:`experts_of`, one stratified sample per expert (paper
    003, Eq. 2), which is what lets each modality's sample reconstruct the others.

    Parameters
    ----------
    experts
        One encoder layer per modality, in the order of :meth:`call`'s inputs.
    """

    @staticmethod
    def combine(means: Sequence[tf.Tensor], variances: Sequence[tf.Tensor],
                present: Sequence[tf.Tensor] | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """The mixture's mean and variance; calling the layer returns them for all experts."""
        return mixture_moments(means, variances, present)

    @staticmethod
    def sample(means: Sequence[tf.Tensor], variances: Sequence[tf.Tensor], rng: np.random.Generator,
               present: Sequence[tf.Tensor] | None = None) -> tf.Tensor:
        """One draw of the mixture per cell: an expert picked uniformly (among those a cell has,
        with ``present``), then its Gaussian."""
        mean_stack, var_stack = tf.stack(means), tf.stack(variances)
        n, d = int(mean_stack.shape[1]), int(mean_stack.shape[2])
        if present is None:
            chosen = rng.integers(len(means), size=n)
        else:  # the k-th expert the cell has, k uniform (cells with none: any expert)
            mask = np.stack([np.asarray(p) > 0 for p in present], axis=1)
            mask[~mask.any(axis=1)] = True
            ranks = np.floor(rng.random(n) * mask.sum(axis=1)).astype(int)
            chosen = np.array([np.flatnonzero(row)[k] for row, k in zip(mask, ranks)])
        pick = tf.constant(np.stack([np.arange(n), chosen], axis=1))
        mean = tf.gather_nd(tf.transpose(mean_stack, [1, 0, 2]), pick)
        var = tf.gather_nd(tf.transpose(var_stack, [1, 0, 2]), pick)
        return mean + tf.sqrt(var) * tf.constant(rng.standard_normal((n, d)), mean.dtype)
