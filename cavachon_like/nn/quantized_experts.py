"""A quantised joint latent: one deterministic encoder per modality and a shared codebook (CVQVAE, paper 002)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from .product_of_experts import ProductOfExperts
from .quantizer import VectorQuantizer


@keras.saving.register_keras_serializable(package="cavachon_like")
class QuantizedExperts(ProductOfExperts):
    """One encoder (expert) per modality whose outputs are vector-quantised on one codebook.

    Paper 002 encodes each modality, quantises each encoder output ``z_m`` to its nearest
    code ``e_{z_m}`` (:class:`~cavachon_like.nn.VectorQuantizer`: EMA codebook, straight-through
    gradients, commitment loss), decodes each modality from the *other* modality's code
    (cross-training) and pulls the experts of one cell together with a mean-squared
    *alignment* loss. Here the experts share one codebook, so "the same cell" means the
    same code whichever modality encoded it; the component decodes each modality from
    every expert's code (the others', as the paper, and its own, so a cell that has one
    modality decodes too); and a cell with a subset of the modalities is encoded by the
    mean of the experts it has (:meth:`combine`), quantised.

    The experts' Gaussian heads are used for their means only: the posterior is a point
    mass, so :meth:`combine` returns a zero variance, and a marginal likelihood by
    importance sampling is not defined for this latent.

    Parameters
    ----------
    experts
        One encoder layer per modality, in the order of :meth:`call`'s inputs.
    n_codes, decay, beta, restart_below, seed
        The shared :class:`~cavachon_like.nn.VectorQuantizer`'s codebook size, EMA decay,
        commitment weight, dead-code threshold and seed.
    alignment
        Weight of the alignment loss ``mean_{m < m'} ||z_m - z_m'||^2`` (paper 002's
        ``lambda_3``, with MSE).
    """

    def __init__(self, experts: Sequence[keras.layers.Layer], n_codes: int = 256, decay: float = 0.99,
                 beta: float = 0.25, restart_below: float = 1.0, alignment: float = 1.0, seed: int | None = None,
                 **kwargs) -> None:
        super().__init__(experts, **kwargs)
        if alignment < 0:
            raise ValueError(f"{self.name}: alignment must be >= 0, got {alignment}.")
        self.alignment = float(alignment)
        self.quantizer = VectorQuantizer(n_codes=n_codes, decay=decay, beta=beta, restart_below=restart_below,
                                         seed=seed, name="quantizer")

    def build(self, x_shape: Sequence[Sequence[int | None]], batch_shape: Sequence[Sequence[int | None]]) -> None:
        super().build(x_shape, batch_shape)
        if not self.quantizer.built:
            self.quantizer.build((None, int(self.experts[0].latent_dim)))

    def experts_of(self, x: Sequence[tf.Tensor | tf.SparseTensor],
                   batch: Sequence[tf.Tensor]) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
        """Each expert's output and variance, ``(B, d)`` each, in input order.

        A point-mass posterior does not use the experts' variance heads; they enter the
        outputs with weight zero so that the optimizer sees a zero gradient for them instead
        of warning at every step that they have none.
        """
        means, variances = super().experts_of(x, batch)
        return [m + 0.0 * v for m, v in zip(means, variances)], variances

    def combine(self, means: Sequence[tf.Tensor], variances: Sequence[tf.Tensor],
                present: Sequence[tf.Tensor] | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """The mean of the experts' outputs (over the modalities a cell has, with ``present``)
        and a zero variance: the continuous joint latent, before quantisation."""
        stack = tf.stack(means)
        if present is None:
            mean = tf.reduce_mean(stack, axis=0)
        else:
            weights = tf.cast(tf.stack(present), stack.dtype)[:, :, None]
            mean = tf.reduce_sum(stack * weights, axis=0) / tf.maximum(tf.reduce_sum(weights, axis=0), 1.0)
        return mean, tf.zeros_like(mean)

    def quantized(self, z: tf.Tensor, training: bool = False,
                  weights: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """``(quantized, codes, commitment)`` of :class:`~cavachon_like.nn.VectorQuantizer`;
        ``training`` also moves the codebook towards the rows of ``z`` whose ``weights`` (default
        all) are 1. (Not ``quantize``: Keras layers have a ``quantize`` method, for int8 weights.)"""
        return self.quantizer(z, training=training, weights=weights)

    def sample(self, means: Sequence[tf.Tensor], variances: Sequence[tf.Tensor],
               rng: np.random.Generator | None = None, present: Sequence[tf.Tensor] | None = None) -> tf.Tensor:
        """The code of the experts' mean (over those a cell has, with ``present``): deterministic,
        so ``rng`` is unused."""
        return self.quantized(self.combine(means, variances, present)[0])[0]

    def alignment_loss(self, means: Sequence[tf.Tensor], present: Sequence[tf.Tensor] | None = None) -> tf.Tensor:
        """Per cell, ``alignment`` times the mean over expert pairs of ``||z_m - z_m'||^2`` ``(B,)``;
        with ``present`` (one ``(B,)`` 0/1 tensor per expert) over the pairs a cell has both of."""
        pairs, weights = [], []
        for i, a in enumerate(means):
            for j in range(i + 1, len(means)):
                pairs.append(tf.reduce_sum(tf.square(a - means[j]), axis=1))
                if present is not None:
                    weights.append(tf.cast(present[i], a.dtype) * tf.cast(present[j], a.dtype))
        if not pairs:
            return tf.zeros_like(means[0][:, 0])
        if present is None:
            return self.alignment * tf.add_n(pairs) / len(pairs)
        total = tf.add_n([w * p for w, p in zip(weights, pairs)])
        return self.alignment * total / tf.maximum(tf.add_n(weights), 1.0)

    def get_config(self) -> dict[str, Any]:
        q = self.quantizer
        return {**super().get_config(), "n_codes": q.n_codes, "decay": q.decay, "beta": q.beta,
                "restart_below": q.restart_below, "alignment": self.alignment, "seed": q.seed}
