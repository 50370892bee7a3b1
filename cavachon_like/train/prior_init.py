"""Data-dependent prior initialisation after a warm-up (VaDE's GMM initialisation)."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


class PriorInitialization(keras.callbacks.Callback):
    """After ``epochs`` warm-up epochs, initialise the stage's priors from posterior means.

    The posterior means of up to ``max_batches`` training batches are passed to each
    prior's ``initialize_from_samples`` (a diagonal GMM fit for the mixture prior),
    so every mixture component starts where the cells are.

    Parameters
    ----------
    components
        Names of the components being trained in this stage.
    dataset
        The training dataset (any order).
    epochs
        Warm-up epochs before the initialisation (at least 1).
    seed
        Seed of the GMM fit.
    max_batches
        Batches of cells used for the fit.
    """

    def __init__(self, components, dataset: tf.data.Dataset, epochs: int = 1, seed: int | None = 0,
                 max_batches: int = 40) -> None:
        super().__init__()
        self.components = list(components)
        self.dataset = dataset
        self.epochs = max(int(epochs), 1)
        self.seed = seed
        self.max_batches = max_batches

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if epoch + 1 != self.epochs:
            return
        means: dict[str, list[np.ndarray]] = {c: [] for c in self.components}
        for batch in self.dataset.take(self.max_batches):
            outputs = self.model(batch, training=False, components=self.components, decode=False)
            for c in self.components:
                means[c].append(np.asarray(outputs[c]["z_mean"]))
        for c in self.components:
            self.model.components[c].prior.initialize_from_samples(np.concatenate(means[c]), seed=self.seed)
