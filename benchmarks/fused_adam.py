"""Does the fused Adam kernel pay? Seconds per training epoch with Keras' Adam and FusedAdam.

    python benchmarks/fused_adam.py [--cells 4000] [--epochs 3] [--repeats 2]

Trains the default ATAC -> RNA model on simulated data the size of SNARE-seq after QC
(20,089 regions, 1,660 genes) at batch 256, once per optimizer and repeat, interleaved,
and prints the median seconds per epoch (the first epoch of each stage, which traces, is
excluded) and per optimizer step. Also times ``apply_gradients`` alone on the model's
weights, so the optimizer's share of a step is visible.
"""
from __future__ import annotations

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from cavachon_like import CAVACHON, simulate
from cavachon_like.train.optimizers import FusedAdam


class EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.seconds.append(time.perf_counter() - self.start)


def train_seconds(data, optimizer_cls, epochs: int) -> list[float]:
    components = [{"name": "atac", "modalities": ["atac"]}, {"name": "rna", "modalities": ["rna"], "parents": ["atac"]}]
    model = CAVACHON.from_data(data, components, seed=0, pretrain_epochs=0, progressive_epochs=0)
    # compile with the class itself: a plain Adam would be swapped for FusedAdam by the model
    model.compile(optimizer=optimizer_cls(learning_rate=1e-3))
    if optimizer_cls is keras.optimizers.Adam:
        model._compile_kwargs["optimizer"] = keras.optimizers.serialize(PlainAdam(learning_rate=1e-3))
    timer = EpochTimer()
    model.fit(data, epochs=epochs, batch_size=256, verbose=0, callbacks=[timer])
    # each stage's first epoch traces the step function
    return [s for i, s in enumerate(timer.seconds) if i % epochs]


@keras.saving.register_keras_serializable(package="benchmark")
class PlainAdam(keras.optimizers.Adam):
    """Keras' Adam under another class, so the model keeps it instead of fusing it."""


def apply_seconds(optimizer, shapes, steps: int = 20) -> float:
    variables = [keras.Variable(np.zeros(s, np.float32)) for s in shapes]
    grads = [tf.ones(s) * 1e-3 for s in shapes]
    optimizer.build(variables)
    step = tf.function(lambda: optimizer.apply_gradients(zip(grads, variables)))
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    data = simulate(n_cells=args.cells, n_atac=20089, n_rna=1660, n_batches=4, seed=0)
    results: dict[str, list[float]] = {"Adam": [], "FusedAdam": []}
    for _ in range(args.repeats):
        results["Adam"] += train_seconds(data, keras.optimizers.Adam, args.epochs)
        results["FusedAdam"] += train_seconds(data, FusedAdam, args.epochs)
    steps = int(np.ceil(args.cells / 256))
    for name, seconds in results.items():
        print(f"{name:9s} median {np.median(seconds):.2f} s per stage epoch ({1e3 * np.median(seconds) / steps:.0f} ms "
              f"per step) over {len(seconds)} epochs")
    model = CAVACHON.from_data(data, [{"name": "atac", "modalities": ["atac"]}], seed=0)
    shapes = [tuple(w.shape) for w in model.trainable_weights]
    print(f"apply_gradients alone on the ATAC stage's {sum(int(np.prod(s)) for s in shapes):,} weights: "
          f"Adam {1e3 * apply_seconds(keras.optimizers.Adam(), shapes):.1f} ms, "
          f"FusedAdam {1e3 * apply_seconds(FusedAdam(), shapes):.1f} ms per step")


if __name__ == "__main__":
    main()
