"""A joint Gaussian posterior as the product of one expert per modality (MVAE, MultiVI, paper 004)."""
from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf


def product_of_gaussians(means: Sequence[tf.Tensor], variances: Sequence[tf.Tensor],
                         present: Sequence[tf.Tensor] | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean and variance of ``N(0, I) * prod_m N(mean_m, var_m)``, renormalised.

    Precisions add: ``1 / var = 1 + sum_m present_m / var_m`` and
    ``mean = var * sum_m present_m * mean_m / var_m``. ``present`` (one ``(B,)`` 0/1 tensor
    per expert, default all 1) drops an expert for the cells that lack its modality, so a
    cell without any modality gets the prior expert alone, ``N(0, I)``.
    """
    precision = tf.ones_like(means[0])
    weighted = tf.zeros_like(means[0])
    for i, (mean, var) in enumerate(zip(means, variances)):
        weight = 1.0 / var
        if present is not None:
            weight = weight * tf.cast(present[i], weight.dtype)[:, None]
        precision += weight
        weighted += weight * mean
    variance = 1.0 / precision
    return weighted * variance, variance


@keras.saving.register_keras_serializable(package="cavachon_like")
class ProductOfExperts(keras.layers.Layer):
    """One Gaussian encoder (expert) per modality, combined with a standard normal prior
    expert by :func:`product_of_gaussians`.

    Unlike one encoder over all modalities (the ``concat`` posterior), each expert sees
    only its own modality and batch covariates, so the posterior is defined for any
    subset of the modalities: a cell that lacks one is encoded by the others, which is
    what predicting a modality from the rest needs.

    Parameters
    ----------
    experts
        One encoder layer per modality, in the order of :meth:`call`'s inputs; each maps
        ``([x_m], batch_m)`` to a mean and a variance (see :class:`~cavachon_like.nn.Encoder`).
    """

    def __init__(self, experts: Sequence[keras.layers.Layer], **kwargs) -> None:
        super().__init__(**kwargs)
        if not experts:
            raise ValueError("ProductOfExperts needs at least one expert.")
        self.experts = list(experts)

    def build(self, x_shape: Sequence[Sequence[int | None]], batch_shape: Sequence[Sequence[int | None]]) -> None:
        """``x_shape`` and ``batch_shape``: one ``(B, F_m)`` and one ``(B, n_batch_m)`` per expert."""
        if len(x_shape) != len(self.experts) or len(batch_shape) != len(self.experts):
            raise ValueError(f"{self.name} has {len(self.experts)} experts but got {len(x_shape)} inputs and "
                             f"{len(batch_shape)} batch covariates.")
        for expert, shape, batch in zip(self.experts, x_shape, batch_shape):
            if not expert.built:  # experts restored from a config arrive built
                expert.build([shape], batch)

    def experts_of(self, x: Sequence[tf.Tensor | tf.SparseTensor],
                   batch: Sequence[tf.Tensor]) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
        """Each expert's mean and variance, ``(B, d)`` each, in input order."""
        means, variances = [], []
        for expert, inputs, covariates in zip(self.experts, x, batch):
            mean, var = expert([inputs], covariates)
            means.append(mean)
            variances.append(var)
        return means, variances

    def call(self, x: Sequence[tf.Tensor | tf.SparseTensor], batch: Sequence[tf.Tensor],
             present: Sequence[tf.Tensor] | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """Joint mean and variance (:meth:`combine`); ``present`` as in :func:`product_of_gaussians`."""
        if len(x) != len(self.experts):
            raise ValueError(f"{self.name} has {len(self.experts)} experts but got {len(x)} inputs.")
        means, variances = self.experts_of(x, batch)
        return self.combine(means, variances, present)

    @staticmethod
    def combine(means: Sequence[tf.Tensor], variances: Sequence[tf.Tensor],
                present: Sequence[tf.Tensor] | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """The joint posterior of experts' outputs (for a subset of the modalities)."""
        return product_of_gaussians(means, variances, present)

    @classmethod
    def sample(cls, means: Sequence[tf.Tensor], variances: Sequence[tf.Tensor], rng: np.random.Generator,
               present: Sequence[tf.Tensor] | None = None) -> tf.Tensor:
        """One draw per cell of the joint posterior of the experts' outputs, noise from ``rng``;
        ``present`` as in :func:`product_of_gaussians`."""
        mean, var = cls.combine(means, variances, present)
        return mean + tf.sqrt(var) * tf.constant(rng.standard_normal(mean.shape), mean.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "experts": [keras.saving.serialize_keras_object(e) for e in self.experts]}

    @classmethod
    def from_config(cls, config: dict) -> ProductOfExperts:
        config = dict(config)
        config["experts"] = [keras.saving.deserialize_keras_object(e) for e in config["experts"]]
        return cls(**config)
