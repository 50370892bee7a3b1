"""Learning-rate decay on a plateau of the validation loss, restarted in every phase of a fit."""
from __future__ import annotations

import keras


class ReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """Keras' ``ReduceLROnPlateau``, starting every phase of a fit at the initial rate.

    ``CAVACHON.fit`` trains in phases (each stage's pre-training, then its ELBO), each a
    ``keras.Model.fit`` of its own. Keras' callback would carry a rate it had lowered in one
    phase into the next, so a later stage would start training new weights at a rate meant
    for fine-tuning. This one sets the optimizer back to the rate it found at the first
    phase's start whenever a phase begins; within a phase it is Keras' callback unchanged
    (``wait``, ``best`` and ``cooldown_counter`` are what a checkpoint saves of it).

    Parameters
    ----------
    **kwargs
        Keras' arguments (``monitor``, ``factor``, ``patience``, ``min_lr``, ...).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.initial_rate: float | None = None

    def on_train_begin(self, logs=None) -> None:
        """Set the optimizer's rate to the initial one and reset the plateau's counters."""
        optimizer = self.model.optimizer
        if self.initial_rate is None:
            self.initial_rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        optimizer.learning_rate = self.initial_rate
        super().on_train_begin(logs)
