"""KL warm-up: the weight of the KL terms ramps up while a stage pre-trains (or, optionally, as its ELBO starts)."""
from __future__ import annotations

import keras


class KLWarmup(keras.callbacks.Callback):
    """Ramps a KL weight variable linearly from 0 (epoch ``start``) to 1 (epoch ``start + epochs``).

    scMM and MultiVI warm the KL up the same way, so that the decoder first learns
    from informative latents before the prior pulls them together.
    """

    def __init__(self, weight: keras.Variable, epochs: int, start: int = 0) -> None:
        super().__init__()
        self.weight = weight
        self.epochs = max(int(epochs), 1)
        self.start = int(start)  # a phase's first epoch number (Keras numbers on across phases)

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        """Set the weight for ``epoch``: ``(epoch - start) / epochs``, clipped to [0, 1]."""
        self.weight.assign(min(1.0, max(epoch - self.start, 0) / self.epochs))

    def on_train_end(self, logs=None) -> None:
        """Leave the weight at 1, even when training stopped inside the ramp."""
        self.weight.assign(1.0)  # an early stop inside the ramp still leaves the ELBO for what follows
