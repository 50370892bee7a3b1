"""One seed for Python, NumPy, TensorFlow and Keras."""
from __future__ import annotations

import keras


def set_seed(seed: int) -> None:
    """Seed every random number generator the package uses.

    Weight initialisers, reparameterisation noise (through Keras' global seed
    generator) and NumPy-based splits all follow from this one value, so the same
    seed on the same machine gives the same numbers.
    """
    keras.utils.set_random_seed(int(seed))
