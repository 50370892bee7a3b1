"""KL warm-up: the weight of the KL terms ramps up while a stage pre-trains."""
from __future__ import annotations

import keras


class KLWarmup(keras.callbacks.Callback):
    """Ramps a KL weight variable linearly from 0 (the first epoch) to 1 (epoch ``epochs``).

    scMM and MultiVI warm the KL up the same way, so that the decoder first learns
    from informative latents before the prior pulls them together.
    """

    def __init__(self, weight: keras.Variable, epochs: int) -> None:
        super().__init__()
        self.weight = weight
        self.epochs = max(int(epochs), 1)

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.weight.assign(min(1.0, epoch / self.epochs))
