"""Encoder f^(e): modalities -> parameters of the diagonal Gaussian q(z | x)."""
from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from .._registry import Registry, register_subclass
from .mlp import MLP

#: Encoders by alias (``encoder: {class: ...}`` of a component in YAML); a subclass of
#: :class:`Encoder` that sets ``alias`` joins it.
#:
#: :meta hide-value:
ENCODERS = Registry("encoder")

#: Table S1 of the paper.
DEFAULT_ENCODER_UNITS = (1024, 512, 256, 128)


@keras.saving.register_keras_serializable(package="cavachon_like")
class Encoder(keras.layers.Layer):
    """Maps a component's preprocessed modalities to ``(mean, variance)`` of q(z|x).

    The default architecture is the paper's Table S1: dense layers of 1024, 512, 256
    and 128 units (the first linear, the rest swish + layer norm), then a linear mean
    head and a softplus variance head. Several modalities (a joint component) enter
    through one projection each, so sparse counts never need densifying.

    Subclass and set ``alias`` to provide another architecture; ``call`` receives the
    list of modality tensors and the batch covariates (or ``None``) and returns the
    mean and variance, each ``(B, latent_dim)``. A subclass with weights of its own
    creates them in ``build(x_shape, batch_shape=None)``, the names Keras matches to
    ``call``'s ``x`` and ``batch`` when it builds the layer on its first call.

    Parameters
    ----------
    latent_dim
        Dimension of z.
    units, activation, norm, linear_first, dropout
        Hidden layers, see :class:`~cavachon_like.nn.MLP`.
    condition_on_batch
        Also feed the batch covariates to the encoder (q(z | x, b)).
    min_variance
        Floor added to the softplus variance for numerical stability.
    """

    alias = "mlp"

    def __init__(
        self,
        latent_dim: int,
        units: Sequence[int] = DEFAULT_ENCODER_UNITS,
        activation: str = "swish",
        norm: str | None = "layer",
        linear_first: bool = True,
        dropout: float = 0.0,
        condition_on_batch: bool = False,
        min_variance: float = 1e-4,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.condition_on_batch = bool(condition_on_batch)
        self.min_variance = float(min_variance)
        self.body = MLP(units, activation=activation, norm=norm, linear_first=linear_first, dropout=dropout,
                        name="body")
        self.mean_head = keras.layers.Dense(self.latent_dim, name="mean")
        self.variance_head = keras.layers.Dense(self.latent_dim, name="variance")

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        register_subclass(ENCODERS, cls)

    def build(self, x_shape: Sequence[Sequence[int | None]], batch_shape: Sequence[int | None] | None = None) -> None:
        """Build from the shapes of :meth:`call`'s arguments.

        Parameters
        ----------
        x_shape
            One ``(B, F_m)`` shape per modality tensor in ``x``.
        batch_shape
            ``(B, n_batch)`` of the batch covariates; ``None`` when ``call`` gets none.
        """
        self.body.build(list(x_shape) + ([batch_shape] if self._uses_batch(batch_shape) else []))
        self.mean_head.build((None, self.body.units[-1]))
        self.variance_head.build((None, self.body.units[-1]))

    def _uses_batch(self, batch: tf.Tensor | Sequence[int | None] | None) -> bool:
        """Whether the batch covariates (a tensor or its shape) enter the body."""
        return self.condition_on_batch and batch is not None

    def features(self, x: Sequence[tf.Tensor | tf.SparseTensor], batch: tf.Tensor | None = None) -> tf.Tensor:
        """The last hidden layer's output."""
        return self.body(list(x) + ([batch] if self._uses_batch(batch) else []))

    def gaussian(self, h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Mean and variance heads on hidden features ``h``."""
        return self.mean_head(h), tf.nn.softplus(self.variance_head(h)) + self.min_variance

    def call(self, x: Sequence[tf.Tensor | tf.SparseTensor], batch: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """``x``: a list of ``(B, F_m)`` modality tensors (dense or sparse); returns mean and variance."""
        return self.gaussian(self.features(x, batch))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "units": self.body.units,
            "activation": self.body.activation,
            "norm": self.body.norm,
            "dropout": self.body.dropout,
            "linear_first": self.body.linear_first,
            "condition_on_batch": self.condition_on_batch,
            "min_variance": self.min_variance,
        }


ENCODERS.register(Encoder.alias, Encoder)
