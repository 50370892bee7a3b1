"""The two-replica run of the per-cell-table test (``tests/test_representation.py``), in its own process.

    python tests/replicas_job.py OUT.npz

A MirroredStrategy whose steps all-gather leaves collective instances that any other strategy in
the same process then collides with, so this runs apart from the suite. It configures two logical
CPUs, trains a small multiDGD-style model (``posterior: representation``) for two epochs on one
device and then under ``MirroredStrategy`` from the same weights, and writes both runs' losses,
tables (every replica's copy), row step counts and decoder weights to ``OUT.npz``.
"""
from __future__ import annotations

import sys

import numpy as np


def main() -> None:
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from cavachon_like import CAVACHON, simulate

    data = simulate(n_cells=160, n_batches=2, n_atac=60, n_rna=30, seed=5)
    components = [{"name": "joint", "modalities": ["atac", "rna"], "posterior": "representation", "latent_dim": 4,
                   "decoder": {"units": [16]}}]

    def train(strategy, initial=None):
        with strategy.scope():
            model = CAVACHON.from_data(data, components, training="joint", pretrain_epochs=0, seed=0)
            model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1))
        if initial is not None:
            model.set_weights(initial)
        model.sample_latent = False
        history = model.fit(data[:128], epochs=2, batch_size=64, verbose=0)
        table = model.components["joint"].encoder
        copies = [np.asarray(c) for c in strategy.experimental_local_results(table.embeddings.value)]
        return {"loss": np.asarray(history.history["loss"]), "tables": np.stack(copies),
                "steps": np.asarray(table.steps), **{f"w{i}": np.asarray(w) for i, w in enumerate(model.trainable_weights)}}

    single = train(tf.distribute.get_strategy())
    initial = CAVACHON.from_data(data, components, training="joint", seed=0).get_weights()
    mirrored = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), initial)
    np.savez(sys.argv[1], **{f"single_{k}": v for k, v in single.items()},
             **{f"mirrored_{k}": v for k, v in mirrored.items()})


if __name__ == "__main__":
    main()
