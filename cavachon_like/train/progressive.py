"""Progressive training: fade a new component in on top of its frozen ancestors."""
from __future__ import annotations

import keras


class ProgressiveBlending(keras.callbacks.Callback):
    """Ramps the blend weight ``alpha`` of hierarchical encoders from 0 to 1.

    During the first ``epochs`` epochs of a stage, ``z_hat = f_b([parents; alpha *
    f_r(z)])`` with ``alpha = (epoch + 1) / (epochs + 1)``, so the decoder first
    learns from the ancestors alone and the new latent only has to explain what
    they leave over (Sec. 2.3; Li et al. 2020). ``alpha`` is 1 when the stage ends.

    Parameters
    ----------
    layers
        The hierarchical encoders to blend in.
    epochs
        Length of the ramp in epochs; 0 disables blending.
    """

    def __init__(self, layers, epochs: int) -> None:
        super().__init__()
        self.layers = list(layers)
        self.epochs = int(epochs)

    def _set(self, value: float) -> None:
        for layer in self.layers:
            layer.alpha.assign(value)

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        """Set ``alpha`` for ``epoch`` (1 when blending is disabled)."""
        self._set(min(1.0, (epoch + 1) / (self.epochs + 1)) if self.epochs > 0 else 1.0)

    def on_train_end(self, logs=None) -> None:
        """Leave ``alpha`` at 1, so that later stages and inference see the whole latent."""
        self._set(1.0)
