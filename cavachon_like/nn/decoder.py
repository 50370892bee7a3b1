"""Decoder f^(d): [z_hat; b] -> unconstrained parameters of a modality's likelihood."""
from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from .._registry import Registry, register_subclass
from .mlp import MLP

#: Decoders by alias (``decoder: {class: ...}`` of a component in YAML); a subclass of
#: :class:`Decoder` that sets ``alias`` joins it.
#:
#: :meta hide-value:
DECODERS = Registry("decoder")

#: Table S1 of the paper.
DEFAULT_DECODER_UNITS = (128, 256, 512)


@keras.saving.register_keras_serializable(package="cavachon_like")
class Decoder(keras.layers.Layer):
    """Maps ``[z_hat; b]`` to one raw output per likelihood parameter.

    Table S1 default: 128, 256 and 512 units with swish + layer norm, then one
    linear head of ``n_features`` units per parameter of the likelihood (the
    likelihood maps heads to valid values in the loss, e.g. softmax x library size).
    Conditioning on the batch covariates ``b`` is how batch effects are corrected.

    Parameters
    ----------
    n_features
        Number of features of the modality.
    parameters
        Names of the likelihood's parameters, one head each.
    units, activation, norm, dropout
        Hidden layers, see :class:`~cavachon_like.nn.MLP`.
    """

    alias = "mlp"

    def __init__(
        self,
        n_features: int,
        parameters: Sequence[str],
        units: Sequence[int] = DEFAULT_DECODER_UNITS,
        activation: str = "swish",
        norm: str | None = "layer",
        dropout: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.n_features = int(n_features)
        self.parameters = tuple(parameters)
        self.body = MLP(units, activation=activation, norm=norm, dropout=dropout, name="body")
        self.heads = {p: keras.layers.Dense(self.n_features, name=f"head_{p}") for p in self.parameters}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        register_subclass(DECODERS, cls)

    def build(self, z_hat_shape: Sequence[int | None], batch_shape: Sequence[int | None]) -> None:
        """Build from the shapes of :meth:`call`'s ``z_hat`` ``(B, d)`` and ``batch`` ``(B, n_batch)``."""
        self.body.build([z_hat_shape, batch_shape])
        for head in self.heads.values():
            head.build((None, self.body.units[-1]))

    def call(self, z_hat: tf.Tensor, batch: tf.Tensor) -> dict[str, tf.Tensor]:
        """``{parameter: (B, n_features)}``; ``batch`` may have no columns (no covariates)."""
        h = self.body([z_hat, batch])
        return {p: head(h) for p, head in self.heads.items()}

    def sampled(self, z_hat: tf.Tensor, batch: tf.Tensor, target: tf.Tensor | tf.SparseTensor,
                columns: tf.Tensor) -> dict[str, tf.Tensor]:
        """For a one-parameter likelihood: ``linear`` (B,), the sum over features of ``target *
        head``, computed through ``target``'s non-zeros as ``h . (W target) + c . target`` (never
        the (B, F) head); ``logits`` (B, k), the head at the features ``columns`` (k,) only;
        ``baseline`` (F,), the head of the batch's mean hidden state at every feature (one row,
        a control variate: a cell's head differs from it less than from zero) and
        ``baseline_at`` (k,), its values at ``columns``."""
        if len(self.heads) != 1:
            raise ValueError(f"{self.name}: sampled heads need a one-parameter likelihood, not {self.parameters}.")
        (head,) = self.heads.values()
        h = self.body([z_hat, batch])
        # One row per feature: TensorFlow's sparse products and gathers (and their gradients)
        # work along rows; along the (H, F) kernel's columns they transposed it several times.
        rows, bias = tf.transpose(tf.cast(head.kernel, tf.float32)), tf.cast(head.bias, tf.float32)  # (F, H), (F,)
        h = tf.cast(h, tf.float32)
        if isinstance(target, tf.SparseTensor):
            through = tf.sparse.sparse_dense_matmul(target, rows)  # (B, H)
            offset = tf.sparse.sparse_dense_matmul(target, bias[:, None])[:, 0]
        else:
            through = tf.matmul(target, rows)
            offset = tf.linalg.matvec(target, bias)
        baseline = tf.linalg.matvec(rows, tf.reduce_mean(h, axis=0)) + bias
        return {"linear": tf.reduce_sum(h * through, axis=-1) + offset,
                "logits": tf.matmul(h, tf.gather(rows, columns), transpose_b=True) + tf.gather(bias, columns),
                "baseline": baseline, "baseline_at": tf.gather(baseline, columns)}

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "n_features": self.n_features,
            "parameters": list(self.parameters),
            "units": self.body.units,
            "activation": self.body.activation,
            "norm": self.body.norm,
            "dropout": self.body.dropout,
        }


DECODERS.register(Decoder.alias, Decoder)
