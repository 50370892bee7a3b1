"""Learned per-cell representations: a latent without an encoder (DGD, multiDGD; paper 001).

Each training cell owns a row of a table, trained directly (maximum a posteriori:
``log p(x | z) + log p(z)``) instead of being produced by an encoder. The rows are not
Keras-trainable weights: a Keras optimizer would take the whole table's gradient and
move every row's moments at every step, so the table trains with its own per-row Adam
("lazy" Adam): a step reads and writes only the rows of the cells in the batch, keeps a
step count per row for the bias correction, and so costs O(batch x dim) whatever the
number of cells. A row is updated once per epoch, with its cell's own gradient, which is
what multiDGD's once-per-epoch representation step amounts to. Memory is O(cells x dim):
the table, its two moments, a step count and a 64-bit key per cell, all saved with the
model.

The keys (hashes of the cells' names) say which row is whose, so the model finds the
rows of the cells it was trained on in any later data; cells without a row get a
representation inferred against the frozen decoders (the model's ``predict_new``).
"""
from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

#: The rows' Adam: multiDGD's betas (0.5, 0.7) (paper 001, Methods "Training"), at ten times its
#: learning rate (1e-2), since a row moves about one learning rate per epoch and multiDGD trains
#: up to 1,000 epochs where the configs here train 60. On the simulator of tests/test_representation.py
#: (15 epochs), lr 1e-2 left the rows near their start: inference against the trained model placed
#: training cells 1.63 from their own rows (2.97 from others'), new cells matched their type at 0.79;
#: lr 0.1 gave 0.49 (2.52), 0.91 and a lower validation loss (323 vs 335); lr 0.2 overshot (0.76).
DEFAULT_LEARNING_RATE = 1e-1
DEFAULT_BETAS = (0.5, 0.7)
#: Where rows start: ``"pca"`` (the data's main axes, see ``model.inference.pca_start``) or
#: ``"origin"`` (multiDGD's default, which needs hundreds of epochs to unfold).
STARTS = ("pca", "origin")
#: Standard deviation of a PCA start per dimension. Rows move about one learning rate per epoch,
#: so on this scale they keep the PCA axes early on; a smaller start (0.1) let the prior term pull
#: them together faster than the decoders could hold them apart (a simulator lost a third of its
#: 15-NN cell-type agreement), 1.0 kept it (0.80-0.86 against 0.82 for the PCA start itself).
DEFAULT_START_SCALE = 1.0


def cell_keys(names: Sequence[str] | pd.Index) -> np.ndarray:
    """64-bit keys of cell names (a fixed hash, the same in every process and on every machine)."""
    return pd.util.hash_array(np.asarray(names, dtype=object)).view(np.int64)


def adam_step(z: tf.Tensor, gradient: tf.Tensor, first: tf.Tensor, second: tf.Tensor, steps: tf.Tensor,
              learning_rate: float, beta_1: float, beta_2: float, epsilon: float
              ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One Adam step of rows ``z`` (B, d): new rows and moments; ``steps`` (B,) counts each row's steps, this one included."""
    first = beta_1 * first + (1.0 - beta_1) * gradient
    second = beta_2 * second + (1.0 - beta_2) * tf.square(gradient)
    first_hat = first / (1.0 - tf.pow(beta_1, steps))[:, None]
    second_hat = second / (1.0 - tf.pow(beta_2, steps))[:, None]
    return z - learning_rate * first_hat / (tf.sqrt(second_hat) + epsilon), first, second


@keras.saving.register_keras_serializable(package="cavachon_like")
class LearnedRepresentation(keras.layers.Layer):
    """A table of per-cell latent vectors, trained by per-row Adam steps.

    A row moves one optimiser step per epoch, so rows that start at the origin (multiDGD's
    default) need hundreds of epochs to unfold; by default they start from the data's main axes.

    Parameters
    ----------
    n_cells
        Rows of the table: the cells the model is trained on (training and validation).
    latent_dim
        Dimension of each representation.
    learning_rate, beta_1, beta_2, epsilon
        The per-row Adam's settings.
    start, start_scale
        Where rows start before training: ``"pca"`` (the default: the data's main axes,
        with standard deviation ``start_scale`` per dimension; the model sets them as
        training starts) or ``"origin"`` (multiDGD's default).

    Examples
    --------
    >>> table = LearnedRepresentation(n_cells=3, latent_dim=2)
    >>> table.build()
    >>> table(tf.constant([0, 2])).shape
    TensorShape([2, 2])
    """

    def __init__(self, n_cells: int, latent_dim: int, learning_rate: float = DEFAULT_LEARNING_RATE,
                 beta_1: float = DEFAULT_BETAS[0], beta_2: float = DEFAULT_BETAS[1], epsilon: float = 1e-8,
                 start: str = "pca", start_scale: float = DEFAULT_START_SCALE, **kwargs) -> None:
        super().__init__(**kwargs)
        if start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {start!r}.")
        self.start, self.start_scale = start, float(start_scale)
        if int(n_cells) < 1:
            raise ValueError(f"n_cells must be a positive integer (the cells the model trains on), got {n_cells!r}.")
        self.n_cells = int(n_cells)
        self.latent_dim = int(latent_dim)
        self.learning_rate = float(learning_rate)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def build(self, input_shape: Sequence[int | None] | None = None) -> None:
        """Create the table, the per-row Adam state and the cell keys (``input_shape`` is that of the row indices)."""
        table = (self.n_cells, self.latent_dim)
        self.embeddings = self.add_weight(shape=table, initializer="zeros", trainable=False, name="embeddings")
        self.first_moment = self.add_weight(shape=table, initializer="zeros", trainable=False, name="first_moment")
        self.second_moment = self.add_weight(shape=table, initializer="zeros", trainable=False, name="second_moment")
        self.steps = self.add_weight(shape=(self.n_cells,), initializer="zeros", trainable=False, name="steps")
        self.keys = self.add_weight(shape=(self.n_cells,), initializer="zeros", trainable=False, dtype="int64",
                                    name="keys")
        self.built = True

    def call(self, index: tf.Tensor) -> tf.Tensor:
        """The representations of the rows ``index`` (B,), shape (B, latent_dim)."""
        return tf.gather(self.embeddings, index)

    def apply_gradient(self, index: tf.Tensor, gradient: tf.Tensor) -> None:
        """One Adam step of the rows ``index`` with their gradients (B, latent_dim); other rows do not change."""
        index = tf.cast(index, tf.int64)
        steps = tf.gather(self.steps, index) + 1.0
        rows, first, second = adam_step(
            tf.gather(self.embeddings, index), tf.cast(gradient, self.embeddings.dtype),
            tf.gather(self.first_moment, index), tf.gather(self.second_moment, index), steps,
            self.learning_rate, self.beta_1, self.beta_2, self.epsilon)
        for variable, value in ((self.first_moment, first), (self.second_moment, second), (self.steps, steps),
                                (self.embeddings, rows)):
            variable.value.scatter_update(tf.IndexedSlices(value, index))

    # ------------------------------------------------------------------ which row is whose
    @property
    def has_cells(self) -> bool:
        """Whether the rows have been given to cells (:meth:`assign_cells`)."""
        return bool(np.any(self.keys.numpy() != 0))

    def assign_cells(self, names: Sequence[str] | pd.Index) -> None:
        """Give row ``i`` to the cell ``names[i]``."""
        keys = cell_keys(names)
        if len(keys) != self.n_cells:
            raise ValueError(f"the table has rows for {self.n_cells} cells, but {len(keys)} cells were given: build "
                             "the model from the data it trains on (from_data), or fit it on those cells.")
        if len(np.unique(keys)) != len(keys):
            raise ValueError("cell names must be unique to give each cell its own representation; "
                             "call obs_names_make_unique() first.")
        self.keys.assign(keys)

    def rows_of(self, names: Sequence[str] | pd.Index) -> np.ndarray:
        """The row of each cell in ``names``, -1 for cells without one."""
        keys = self.keys.numpy()
        order = np.argsort(keys, kind="stable")
        wanted = cell_keys(names)
        pos = np.clip(np.searchsorted(keys[order], wanted), 0, len(keys) - 1)
        found = keys[order][pos] == wanted
        return np.where(found, order[pos], -1).astype(np.int64)

    def get_config(self) -> dict:
        return {**super().get_config(), "n_cells": self.n_cells, "latent_dim": self.latent_dim,
                "learning_rate": self.learning_rate, "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "start": self.start, "start_scale": self.start_scale}
