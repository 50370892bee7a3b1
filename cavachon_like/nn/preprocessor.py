"""Per-modality input transforms applied before the encoder."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from .._registry import Registry, register_subclass
from ..data.backed import blockwise

#: Preprocessors by alias (``preprocessor:`` of a component in YAML); a subclass of
#: :class:`Preprocessor` that sets ``alias`` joins it.
#:
#: :meta hide-value:
PREPROCESSORS = Registry("preprocessor")


def _with_values(x: tf.SparseTensor, values: tf.Tensor) -> tf.SparseTensor:
    """``x`` with new ``values``, keeping its static shape.

    In a graph ``dense_shape`` is a tensor, so a new SparseTensor would otherwise lose
    the feature dimension that a layer after the preprocessor builds from.
    """
    result = tf.SparseTensor(x.indices, values, x.dense_shape)
    result.set_shape(x.shape)
    return result


def _map_values(x: tf.Tensor | tf.SparseTensor, fn) -> tf.Tensor | tf.SparseTensor:
    """Apply a zero-preserving elementwise ``fn`` without densifying sparse input."""
    if isinstance(x, tf.SparseTensor):
        return _with_values(x, fn(x.values))
    return fn(x)


def library_size(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """Total counts per cell, shape (B, 1)."""
    if isinstance(x, tf.SparseTensor):
        sums = tf.math.unsorted_segment_sum(x.values, x.indices[:, 0], tf.cast(x.dense_shape[0], tf.int32))
        return tf.expand_dims(sums, -1)
    return tf.reduce_sum(x, axis=-1, keepdims=True)


def _log1p_scaled(x: tf.Tensor | tf.SparseTensor, row_scale: tf.Tensor, column_scale: tf.Tensor | None = None):
    """``log1p(x * row_scale * column_scale)``, sparse in, sparse out."""
    if isinstance(x, tf.SparseTensor):
        scale = tf.gather(tf.squeeze(row_scale, -1), x.indices[:, 0])
        if column_scale is not None:
            scale = scale * tf.gather(column_scale, x.indices[:, 1])
        return _with_values(x, tf.math.log1p(x.values * scale))
    scaled = x * row_scale if column_scale is None else x * row_scale * column_scale
    return tf.math.log1p(scaled)


@keras.saving.register_keras_serializable(package="cavachon_like")
class Preprocessor(keras.layers.Layer):
    """Transforms one modality's raw counts into encoder input.

    The transform follows the modality's likelihood (``Likelihood.input_transform``):

    - ``"log1p_normalize"``: ``log1p(target_sum * x / library_size)`` for counts;
    - ``"tfidf"``: ``log1p(target_sum * x / library_size * idf)`` with
      ``idf = n_cells / n_cells_with_feature`` (Signac's TF-IDF for accessibility);
      ``idf`` is a non-trainable weight set by :meth:`adapt` and saved with the model;
    - ``"binarize"``: ``x > 0`` for accessibility-like data modelled as Bernoulli;
    - ``"identity"``: unchanged, for continuous data.

    All keep zeros at zero, so sparse input stays sparse. Subclass and set ``alias``
    to add a transform that YAML can name (``preprocessor: {class: ...}``).

    Parameters
    ----------
    transform
        One of the transforms above.
    target_sum
        Library size that counts are scaled to before ``log1p``.
    """

    alias = "default"
    TRANSFORMS = ("log1p_normalize", "tfidf", "binarize", "identity")

    def __init__(self, transform: str = "log1p_normalize", target_sum: float = 1e4, **kwargs) -> None:
        super().__init__(**kwargs)
        if transform not in self.TRANSFORMS:
            raise ValueError(f"unknown transform {transform!r}; expected one of {self.TRANSFORMS}.")
        self.transform = transform
        self.target_sum = float(target_sum)
        self.idf = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        register_subclass(PREPROCESSORS, cls)

    @property
    def needs_adapt(self) -> bool:
        """Whether the transform has statistics that :meth:`adapt` must set before training."""
        return self.transform == "tfidf"

    def build(self, x_shape: Sequence[int | None]) -> None:
        """Build from the ``(B, F)`` shape of :meth:`call`'s ``x``; only TF-IDF has weights."""
        if self.transform == "tfidf":
            # float32 whatever the dtype policy: idf spans orders of magnitude.
            self.idf = self.add_weight(name="idf", shape=(int(x_shape[-1]),), initializer="ones",
                                       trainable=False, dtype="float32", autocast=False)
            self.adapted = self.add_weight(name="adapted", shape=(), initializer="zeros", trainable=False,
                                           dtype="float32", autocast=False)

    def adapt(self, x: Any) -> None:
        """Set data statistics (``idf``) from a cells x features matrix (sparse or dense).

        A no-op for transforms without statistics. Only the non-zero pattern is read.
        """
        if not self.needs_adapt:
            return
        if not self.built:
            self.build(x.shape)
        n_cells = x.shape[0]
        with_feature = blockwise(x, lambda b: (b != 0).sum(axis=0) if sp.issparse(b) else np.count_nonzero(b, axis=0),
                                 axis=0)
        if len(with_feature) != self.idf.shape[0]:
            raise ValueError(f"{self.name}: adapt got {len(with_feature)} features, the layer has {self.idf.shape[0]}.")
        self.idf.assign((n_cells / np.maximum(with_feature, 1)).astype(np.float32))
        self.adapted.assign(1.0)

    @property
    def is_adapted(self) -> bool:
        """Whether the preprocessor can run: it needs no data statistics, or ``adapt`` has set them."""
        return not self.needs_adapt or bool(self.adapted.numpy())

    def call(self, x: tf.Tensor | tf.SparseTensor, library: tf.Tensor | None = None) -> tf.Tensor | tf.SparseTensor:
        """Transform ``x``; ``library`` is its library size when the caller already has it."""
        if self.transform == "binarize":
            return _map_values(x, lambda v: tf.cast(v > 0, v.dtype))
        if self.transform == "identity":
            return x
        library = library_size(x) if library is None else library
        row_scale = self.target_sum / tf.maximum(tf.cast(library, x.dtype), 1.0)
        column_scale = tf.cast(self.idf, x.dtype) if self.transform == "tfidf" else None
        return _log1p_scaled(x, row_scale, column_scale)

    def get_config(self) -> dict:
        return {**super().get_config(), "transform": self.transform, "target_sum": self.target_sum}


PREPROCESSORS.register(Preprocessor.alias, Preprocessor)
