"""A stack of dense layers shared by encoders and decoders."""
from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from ..seed import draw_seed
from .sparse import sparse_dense_matmul


@keras.saving.register_keras_serializable(package="cavachon_like")
class MLP(keras.layers.Layer):
    """Dense layers with an activation and layer normalisation after each.

    The first layer takes a *list* of inputs and sums one projection per input,
    which equals a dense layer on their concatenation but lets each input stay in
    its own format: a ``tf.SparseTensor`` count matrix is multiplied sparse x dense
    (cost grows with non-zeros; :func:`~cavachon_like.nn.sparse.sparse_dense_matmul`)
    instead of being densified for a concatenation.

    Parameters
    ----------
    units
        Width of each layer.
    activation
        Keras activation name applied after every layer but (optionally) the first.
    norm
        ``"layer"`` for layer normalisation after each activated layer, or ``None``.
    linear_first
        Leave the first layer linear (no activation, no norm), as in the encoder of
        the paper's Table S1.
    dropout
        Dropout rate after every activated layer, in training only (0: none).
    """

    def __init__(
        self,
        units: Sequence[int],
        activation: str = "swish",
        norm: str | None = "layer",
        linear_first: bool = False,
        dropout: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
        if not units:
            raise ValueError("MLP needs at least one layer in `units`.")
        if norm not in ("layer", None):
            raise ValueError(f"norm must be 'layer' or None, got {norm!r}.")
        self.units = [int(u) for u in units]
        self.activation = activation
        self.norm = norm
        self.linear_first = bool(linear_first)
        self.dropout = float(dropout)
        self.dropout_layer = keras.layers.Dropout(self.dropout, name="dropout") if self.dropout else None
        self._activation_fn = keras.activations.get(activation)
        self.hidden = [keras.layers.Dense(u, name=f"dense_{i}") for i, u in enumerate(self.units[1:], start=1)]
        self.norms = [
            keras.layers.LayerNormalization(name=f"norm_{i}") if norm == "layer" and not (i == 0 and linear_first) else None
            for i in range(len(self.units))
        ]
        self.input_projections: list[keras.layers.Dense] = []
        # The projections are made in build(), outside the model's seeded construction.
        self.projection_seed = draw_seed()

    def build(self, inputs_shape: Sequence[Sequence[int | None]]) -> None:
        """Create one first-layer projection per input; ``inputs_shape`` lists their shapes.

        Keras passes the shapes of the ``inputs`` list of :meth:`call` on the first call.
        """
        self.input_projections = [
            keras.layers.Dense(self.units[0], use_bias=False, name=f"dense_0_input_{i}",
                               kernel_initializer=keras.initializers.GlorotUniform(seed=self.projection_seed + i))
            for i in range(len(inputs_shape))
        ]
        for projection, shape in zip(self.input_projections, inputs_shape):
            projection.build(tuple(shape))
        # One bias for the summed projections, as a dense layer on the concatenation has.
        self.bias = self.add_weight(name="bias_0", shape=(self.units[0],), initializer="zeros")
        width = self.units[0]
        for layer in self.hidden:
            layer.build((None, width))
            width = layer.units
        for i, norm in enumerate(self.norms):
            if norm is not None:
                norm.build((None, self.units[i]))

    def _finish(self, h: tf.Tensor, i: int, training: bool | None) -> tf.Tensor:
        if i == 0 and self.linear_first:
            return h
        h = self._activation_fn(h)
        h = self.norms[i](h) if self.norms[i] is not None else h
        return self.dropout_layer(h, training=training) if self.dropout_layer is not None else h

    def call(self, inputs: Sequence[tf.Tensor | tf.SparseTensor], training: bool | None = None) -> tf.Tensor:
        """``inputs``: a list of ``(B, F_i)`` tensors, dense or sparse, as many as at build time."""
        if len(inputs) != len(self.input_projections):
            # zip would silently drop the extra inputs or projections.
            raise ValueError(f"{self.name} was built for {len(self.input_projections)} inputs, got {len(inputs)}.")
        h = self.bias
        for projection, x in zip(self.input_projections, inputs):
            if x.shape[-1] == 0:
                continue
            if isinstance(x, tf.SparseTensor):
                # The projection has no bias or activation, so this is projection(x).
                h = h + sparse_dense_matmul(x, tf.convert_to_tensor(projection.kernel))
            else:
                h = h + projection(x)
        h = self._finish(h, 0, training)
        for i, layer in enumerate(self.hidden, start=1):
            h = self._finish(layer(h), i, training)
        return h

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "norm": self.norm,
            "linear_first": self.linear_first,
            "dropout": self.dropout,
        }
