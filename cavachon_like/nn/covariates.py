"""multiDGD's covariate model (paper 001, Methods "Supervised GMM (covariate)").

A model with learned representations can keep technical covariates such as the sequencing
library out of the basal representation: each categorical batch column gets its own small
representation per cell (2-D by default), distributed as a Gaussian mixture with one
component per category, and trained *supervised*: a cell's covariate representation is
scored only by its own category's component (Eq. 10). The decoders then read the basal and
covariate representations instead of a batch one-hot, so a batch effect has a place to go
that is not the basal latent, and a cell from a category never seen in training can be
placed without new decoder weights: naively, under the mixture of the known categories, or
under a new component fitted to those cells (paper 001, Fig. 5).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

#: multiDGD's covariate representations are 2-D (Methods, "Initialization and default parameters").
DEFAULT_COVARIATE_DIM = 2
#: Its GMM priors (from scDGD): a softball over the means (radius ``scale``, edge ``sharpness``)
#: and a unit-variance Gaussian on ``-log var`` centred at ``-log(0.2 * scale / C)``.
SOFTBALL_SCALE, SOFTBALL_SHARPNESS = 2.0, 5.0
#: Floor of the component variances, so that no component collapses onto a point.
MIN_VARIANCE = 1e-4
LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_prob(z: tf.Tensor, mean: tf.Tensor, var: tf.Tensor) -> tf.Tensor:
    """``log N(z | mean, diag(var))`` summed over the last axis (broadcasting)."""
    return -0.5 * tf.reduce_sum(LOG_2PI + tf.math.log(var) + tf.square(z - mean) / var, axis=-1)


@keras.saving.register_keras_serializable(package="cavachon_like")
class CovariateModel(keras.layers.Layer):
    """Supervised Gaussian mixtures over per-cell covariate representations, one per batch column.

    A cell's representation ``r`` (B, len(columns) * dim) holds one ``dim``-wide slice per
    column. Categories are given as codes (B,) per column: ``c >= 0`` scores the slice under
    component ``c`` (supervised), ``-1`` under the equal-weight mixture of all known components
    (a category the model has not seen: multiDGD's "naive" integration).

    Parameters
    ----------
    layouts
        ``{modality: {batch column: number of categories}}``: each modality's batch one-hot
        layout (its columns' blocks, in order). A column shared by several modalities has one
        representation and one mixture.
    dim
        Dimension of each column's representation.
    n_cells
        Cells the model trains on: the parameters' own priors (softball, log-variance) enter
        the per-cell loss divided by it, so the whole data set sees them once, as in multiDGD.

    Examples
    --------
    >>> model = CovariateModel({"rna": {"batch": 3}}, dim=2, n_cells=100)
    >>> model.build()
    >>> model.log_prob(tf.zeros([4, 2]), {"batch": tf.constant([0, 1, 2, -1])}).shape
    TensorShape([4])
    """

    def __init__(self, layouts: Mapping[str, Mapping[str, int]], dim: int = DEFAULT_COVARIATE_DIM,
                 n_cells: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.layouts = {str(m): {str(k): int(v) for k, v in cols.items()} for m, cols in layouts.items()}
        self.columns: dict[str, int] = {}
        for m, cols in self.layouts.items():
            for col, n in cols.items():
                if self.columns.setdefault(col, n) != n:
                    raise ValueError(f"batch column {col!r} has {self.columns[col]} categories in one modality and "
                                     f"{n} in {m!r}; a covariate model needs the same categories in every modality.")
        bad = {k: v for k, v in self.columns.items() if v < 1}
        if not self.columns or bad:
            raise ValueError(f"a covariate model needs batch columns with at least one category each, got "
                             f"{self.columns}: give the modalities a batch_key.")
        self.dim, self.n_cells = int(dim), max(int(n_cells), 1)
        if self.dim < 1:
            raise ValueError(f"covariate_dim must be a positive integer, got {dim}.")

    @property
    def width(self) -> int:
        """Width of a cell's covariate representations, all columns together."""
        return len(self.columns) * self.dim

    def build(self, input_shape: Sequence[int | None] | None = None) -> None:
        """One mean and (softplus-parameterised) variance per category and dimension, per column."""
        self.means, self.raw_variances = {}, {}
        for col, n in self.columns.items():
            # Means start spread on a circle of radius 1 (distinct, inside the softball); the
            # variances at the centre of their prior.
            angles = 2.0 * np.pi * np.arange(n) / n
            start = np.zeros((n, self.dim), np.float32)
            start[:, 0] = np.cos(angles)
            if self.dim > 1:
                start[:, 1] = np.sin(angles)
            variance = 0.2 * SOFTBALL_SCALE / n
            self.means[col] = self.add_weight(shape=(n, self.dim), initializer=keras.initializers.Constant(start),
                                              dtype="float32", autocast=False, name=f"{col}_means")
            self.raw_variances[col] = self.add_weight(
                shape=(n, self.dim), initializer=keras.initializers.Constant(math.log(math.expm1(variance))),
                dtype="float32", autocast=False, name=f"{col}_raw_variances")
        self.built = True

    def variances(self, column: str) -> tf.Tensor:
        """The components' variances of ``column``, (C, dim)."""
        return tf.nn.softplus(self.raw_variances[column]) + MIN_VARIANCE

    def slices(self, representations: tf.Tensor) -> dict[str, tf.Tensor]:
        """``{column: (B, dim)}``: each column's slice of the cells' representations."""
        return {col: representations[:, i * self.dim:(i + 1) * self.dim] for i, col in enumerate(self.columns)}

    def log_prob(self, representations: tf.Tensor, codes: Mapping[str, tf.Tensor],
                 extra: Mapping[str, tuple[tf.Tensor, tf.Tensor]] | None = None) -> tf.Tensor:
        """Per-cell ``log p(r | category)`` (B,), summed over columns (see the class docstring).

        ``extra`` (``{column: (means, variances)}``, each (U, dim)) appends components for
        categories the model has not seen: code ``C + j`` is scored under the j-th of them.
        """
        total = 0.0
        for col, r in self.slices(tf.cast(representations, tf.float32)).items():
            means, variances = tf.convert_to_tensor(self.means[col]), self.variances(col)
            n_known = self.columns[col]
            if extra and col in extra:
                means = tf.concat([means, tf.cast(extra[col][0], tf.float32)], axis=0)
                variances = tf.concat([variances, tf.cast(extra[col][1], tf.float32)], axis=0)
            per_class = gaussian_log_prob(r[:, None, :], means, variances)  # (B, C [+ U])
            code = tf.cast(codes[col], tf.int32)
            supervised = tf.gather(per_class, tf.maximum(code, 0), axis=1, batch_dims=1)
            naive = tf.reduce_logsumexp(per_class[:, :n_known], axis=1) - math.log(n_known)
            total += tf.where(code >= 0, supervised, naive)
        return total

    def parameter_log_prior(self) -> tf.Tensor:
        """``log p(phi)`` of the means (softball) and variances (Gaussian on ``-log var``), up to constants."""
        total = 0.0
        for col, n in self.columns.items():
            radius = tf.norm(self.means[col], axis=-1)
            total -= tf.reduce_sum(tf.nn.softplus(SOFTBALL_SHARPNESS * (radius / SOFTBALL_SCALE - 1.0)))
            centre = -math.log(0.2 * SOFTBALL_SCALE / n)
            total -= 0.5 * tf.reduce_sum(tf.square(-tf.math.log(self.variances(col)) - centre))
        return total

    def blocks(self, modality: str, one_hot: tf.Tensor) -> dict[str, tf.Tensor]:
        """``{column: (B, C)}``: a modality's batch one-hot split by column."""
        blocks, start = {}, 0
        for col, n in self.layouts[modality].items():
            blocks[col] = one_hot[:, start:start + n]
            start += n
        return blocks

    def codes(self, one_hot: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Category codes (B,) per column from the modalities' one-hots ``{modality: (B, n_batch)}``
        (a column is read from the first modality that has it); an all-zero block gives -1."""
        blocks: dict[str, tf.Tensor] = {}
        for m, value in one_hot.items():
            if m in self.layouts:
                for col, block in self.blocks(m, value).items():
                    blocks.setdefault(col, block)
        return {col: tf.where(tf.reduce_max(block, axis=-1) > 0, tf.argmax(block, axis=-1, output_type=tf.int32), -1)
                for col, block in blocks.items()}

    def condition_width(self, modality: str) -> int:
        """Width of what a decoder of ``modality`` reads in place of the one-hot."""
        return len(self.layouts[modality]) * self.dim

    def condition(self, modality: str, one_hot: tf.Tensor, representations: tf.Tensor | None = None) -> tf.Tensor:
        """What ``modality``'s decoder reads (B, :meth:`condition_width`): the slices of its columns
        of the cells' ``representations`` (B, width) when given, else the component means of each
        one-hot row's categories (a row of several ones averages them, an all-zero row takes the
        mean of every component): decoding "as a cell of that batch"."""
        if representations is None:
            parts = []
            for col, block in self.blocks(modality, tf.cast(one_hot, tf.float32)).items():
                total = tf.reduce_sum(block, axis=-1, keepdims=True)
                weights = tf.where(total > 0, block / tf.maximum(total, 1e-12), 1.0 / self.columns[col])
                parts.append(weights @ tf.convert_to_tensor(self.means[col]))
        else:
            sliced = self.slices(representations)
            parts = [sliced[col] for col in self.layouts[modality]]
        return tf.concat(parts or [tf.zeros([tf.shape(one_hot)[0], 0])], axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "layouts": self.layouts, "dim": self.dim, "n_cells": self.n_cells}
