"""One worker of the multi-worker test (``tests/test_distributed.py``).

    TF_CONFIG=... python tests/multiworker_job.py OUT.npz [CHECKPOINT_DIR]

Trains two epochs of a small two-component model with Adam on simulated cells (one seed for
data and weights) under ``MultiWorkerMirroredStrategy`` and writes the per-epoch losses and
the final weights to ``OUT.npz`` (checkpointing every epoch to ``CHECKPOINT_DIR`` when given). The test runs :func:`train` in its own process as the
single-worker reference.
"""
from __future__ import annotations

import sys

import numpy as np


def train(strategy, checkpoint: str | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-epoch training losses and the final weights of the model trained under ``strategy``."""
    import keras

    from cavachon_like import CAVACHON, simulate

    data = simulate(n_cells=256, n_batches=2, n_atac=120, n_rna=60, seed=3)
    small = {"encoder": {"units": [32, 16]}, "decoder": {"units": [16, 32]}, "latent_dim": 4}
    components = [{"name": "atac", "modalities": ["atac"], **small},
                  {"name": "rna", "modalities": ["rna"], "parents": ["atac"], **small}]
    with strategy.scope():
        model = CAVACHON.from_data(data, components, training="joint", pretrain_epochs=0, seed=0)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3))
    model.sample_latent = False  # identical forward passes on every set-up
    # every worker holds all cells; tf.distribute gives each its share of every global batch
    dataset = model.make_dataset(data, batch_size=64, shuffle=False)
    history = model.fit(dataset, epochs=2, verbose=0, checkpoint=checkpoint)
    return np.asarray(history.history["loss"]), [np.asarray(w) for w in model.get_weights()]


def main() -> None:
    import tensorflow as tf

    # Made before anything touches a device: the strategy reads TF_CONFIG and starts its server.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    loss, weights = train(strategy, sys.argv[2] if len(sys.argv) > 2 else None)
    np.savez(sys.argv[1], loss=loss, **{f"w{i}": w for i, w in enumerate(weights)})


if __name__ == "__main__":
    main()
