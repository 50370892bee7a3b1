"""Per-modality input transforms applied before the encoder."""
from __future__ import annotations

import keras
import tensorflow as tf

from .._registry import Registry, register_subclass

PREPROCESSORS = Registry("preprocessor")


def _map_values(x: tf.Tensor | tf.SparseTensor, fn) -> tf.Tensor | tf.SparseTensor:
    """Apply a zero-preserving elementwise ``fn`` without densifying sparse input."""
    if isinstance(x, tf.SparseTensor):
        return tf.SparseTensor(x.indices, fn(x.values), x.dense_shape)
    return fn(x)


def library_size(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """Total counts per cell, shape (B, 1)."""
    if isinstance(x, tf.SparseTensor):
        sums = tf.math.unsorted_segment_sum(x.values, x.indices[:, 0], tf.cast(x.dense_shape[0], tf.int32))
        return tf.expand_dims(sums, -1)
    return tf.reduce_sum(x, axis=-1, keepdims=True)


@keras.saving.register_keras_serializable(package="cavachon_like")
class Preprocessor(keras.layers.Layer):
    """Transforms one modality's raw counts into encoder input.

    The transform follows the modality's likelihood (``Likelihood.input_transform``):

    - ``"log1p_normalize"``: ``log1p(target_sum * x / library_size)`` for counts;
    - ``"binarize"``: ``x > 0`` for accessibility-like data modelled as Bernoulli;
    - ``"identity"``: unchanged, for continuous data.

    All three keep zeros at zero, so sparse input stays sparse. Subclass and set
    ``alias`` to add a transform that YAML can name (``preprocessor: {class: ...}``).

    Parameters
    ----------
    transform
        One of the transforms above.
    target_sum
        Library size that counts are scaled to before ``log1p``.
    """

    alias = "default"

    TRANSFORMS = ("log1p_normalize", "binarize", "identity")

    def __init__(self, transform: str = "log1p_normalize", target_sum: float = 1e4, **kwargs) -> None:
        super().__init__(**kwargs)
        if transform not in self.TRANSFORMS:
            raise ValueError(f"unknown transform {transform!r}; expected one of {self.TRANSFORMS}.")
        self.transform = transform
        self.target_sum = float(target_sum)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        register_subclass(PREPROCESSORS, cls)

    def call(self, x: tf.Tensor | tf.SparseTensor, library: tf.Tensor | None = None) -> tf.Tensor | tf.SparseTensor:
        """Transform ``x``; ``library`` is its library size when the caller already has it."""
        if self.transform == "binarize":
            return _map_values(x, lambda v: tf.cast(v > 0, v.dtype))
        if self.transform == "identity":
            return x
        scale = self.target_sum / tf.maximum(library_size(x) if library is None else library, 1.0)
        if isinstance(x, tf.SparseTensor):
            per_value = tf.gather(tf.squeeze(scale, -1), x.indices[:, 0])
            return tf.SparseTensor(x.indices, tf.math.log1p(x.values * per_value), x.dense_shape)
        return tf.math.log1p(x * scale)

    def get_config(self) -> dict:
        return {**super().get_config(), "transform": self.transform, "target_sum": self.target_sum}


PREPROCESSORS.register(Preprocessor.alias, Preprocessor)
