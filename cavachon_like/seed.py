"""Seeding: one value for the whole session, or a model's own generators only."""
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import keras


def set_seed(seed: int) -> None:
    """Seed every global random number generator (Python, NumPy, TensorFlow, Keras).

    For scripts and the CLI, where the process is the run. A model never calls this:
    ``CAVACHON(seed=...)`` seeds its own generators (see :func:`seeded`).
    """
    keras.utils.set_random_seed(int(seed))


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Make the Keras layers and initialisers created inside the block follow ``seed``.

    Keras draws the seed of an initialiser or ``SeedGenerator`` that is given none from
    Python's global ``random`` module when it is created; seeding that module for the
    block, then restoring its state, makes construction reproducible without changing
    any generator the caller sees afterwards. ``None`` leaves everything as it is.
    """
    if seed is None:
        yield
        return
    state = random.getstate()
    random.seed(int(seed))
    try:
        yield
    finally:
        random.setstate(state)


def draw_seed() -> int:
    """A seed for an initialiser created later (e.g. in ``build``), drawn now, inside
    the constructor, so that it follows :func:`seeded` like the layers made there."""
    return random.randint(1, 10**9)
