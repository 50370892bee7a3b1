"""Learning-rate decay on plateaus: Keras' rule within a phase, the initial rate at every phase's start."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from cavachon_like import CAVACHON
from cavachon_like.train import ReduceLROnPlateau


def _rates(model, callback, epochs):
    class Rates(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    seen: list[float] = []
    x = np.ones((8, 2), "float32")
    model.fit(x, np.zeros((8, 1), "float32"), epochs=epochs, batch_size=8, verbose=0, callbacks=[callback, Rates()])
    return seen


@pytest.mark.floor
def test_rate_halves_on_a_plateau_and_restarts_with_every_fit():
    # Zero weights fit zero targets exactly: the loss stays 0 at any rate, so every epoch is a plateau.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.8), loss="mse")
    callback = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_lr=0.0)
    # The first epoch sets the best; each later one without improvement halves the rate.
    assert _rates(model, callback, 4) == pytest.approx([0.8, 0.8, 0.4, 0.2])
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.1)
    # A second fit (a later phase of CAVACHON.fit) starts again from the rate the first one found.
    assert _rates(model, callback, 2) == pytest.approx([0.8, 0.8])


def test_a_fit_logs_the_rate_and_each_stage_starts_at_the_configured_rate(small_data, small_components):
    model = CAVACHON.from_data(small_data, small_components, seed=0, pretrain_epochs=0, progressive_epochs=0)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01))
    plateau = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=1e9)  # every later epoch a plateau
    history = model.fit(small_data, epochs=3, batch_size=128, verbose=0, callbacks=[plateau]).history
    # Two stages of three epochs, each logging the rate it trained with: the second stage
    # starts at 0.01 again, though the first left the optimizer at 0.0025.
    assert history["learning_rate"] == pytest.approx([0.01, 0.01, 0.005] * 2)
