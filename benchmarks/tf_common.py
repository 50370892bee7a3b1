"""TensorFlow-side benchmark helpers: SNARE-seq loading, model variants, epoch timing, FLOPs, matmul peak."""
from __future__ import annotations

import copy
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from common import MULTIVI_HIDDEN, MULTIVI_LATENT, MULTIVI_LAYERS, SNARE_CONFIG

VARIANTS = ("paper", "matched")


def snare_config(data: str | Path, epochs: int, variant: str = "paper", config: str | Path = SNARE_CONFIG) -> dict:
    """The validated run configuration of ``configs/snare.yaml`` for ``variant``.

    ``paper`` is the file as it is (Table S1 widths, dim(z) = 20, K = 41). ``matched``
    gives every component MultiVI's default size on this data: encoders and decoders
    of two hidden layers of 128 units and dim(z) = 11; K falls back to the model's
    default 2 * dim(z) + 1 = 23. Early stopping is off so every model trains exactly
    ``epochs`` epochs (per stage).
    """
    from cavachon_like.config import load_config

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    overrides: dict[str, Any] = {"data.path": str(data), "training.epochs": int(epochs), "training.early_stopping": None}
    result = load_config(config, overrides)
    if variant == "matched":
        units = [MULTIVI_HIDDEN] * MULTIVI_LAYERS
        components = copy.deepcopy(result["model"]["components"])
        for component in components:
            component["latent_dim"] = MULTIVI_LATENT
            component["n_clusters"] = None
            component["encoder"] = {"class": "mlp", "units": units}
            component["decoder"] = {"class": "mlp", "units": units}
        result["model"]["components"] = components
    return result


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch (validation included) and of the wait before its first step.

    ``records`` holds one dict per epoch: ``stage`` (the model's active components),
    ``epoch``, ``seconds`` and ``first_step_wait`` (from ``on_epoch_begin`` to the
    first ``on_train_batch_begin``, where iterator set-up stalls would show).
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, Any]] = []

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._start = time.perf_counter()
        self._wait = None

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self._wait is None:
            self._wait = time.perf_counter() - self._start

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        stage = "+".join(getattr(self.model, "_active", []) or ["model"])
        self.records.append({
            "stage": stage,
            "epoch": epoch,
            "seconds": time.perf_counter() - self._start,
            "first_step_wait": self._wait,
        })


def dense_layers(layer: keras.layers.Layer) -> list[keras.layers.Dense]:
    """Every Dense layer inside ``layer``."""
    return [sub for sub in layer._flatten_layers(include_self=False, recursive=True) if isinstance(sub, keras.layers.Dense)]


def step_flops(model: Any, stage: Sequence[str], batch_size: int, nnz_per_cell: Mapping[str, float]) -> dict[str, float]:
    """Matmul FLOPs of one training step of ``stage`` on ``batch_size`` cells.

    A dense layer costs ``2 B in out`` forward; a trained layer adds ``2 B in out`` for
    its weight gradient and, unless its input is data, ``2 B in out`` for the gradient
    of its input (so the usual "x3"). Frozen ancestors run forward only. Encoder input
    projections of sparse modalities are counted twice: ``dense_equivalent`` as if the
    input were dense (the work a dense implementation would do), and ``executed`` by
    the non-zeros actually multiplied (``2 nnz out``). Layer norms, activations,
    likelihoods and the optimizer are not counted.
    """
    dense_eq = executed = 0.0
    for name in model.graph.closure(set(stage)):
        component = model.components[name]
        trains = name in stage
        inputs = dict(zip(component.modalities, component.encoder.body.input_projections))
        data_inputs = {id(layer): m for m, layer in inputs.items()}
        modules: list[keras.layers.Layer] = [component.encoder, component.hierarchical_encoder]
        if trains:
            modules += list(component.decoders.values())
        for module in modules:
            for layer in dense_layers(module):
                fan_in, fan_out = (int(d) for d in layer.kernel.shape)
                one = 2.0 * batch_size * fan_in * fan_out
                passes = 1 + (2 if trains else 0)
                if id(layer) in data_inputs:
                    passes = 2 if trains else 1  # no gradient for the data
                    dense_eq += passes * one
                    executed += passes * 2.0 * batch_size * nnz_per_cell[data_inputs[id(layer)]] * fan_out
                else:
                    dense_eq += passes * one
                    executed += passes * one
    return {"dense_equivalent": dense_eq, "executed": executed}


def matmul_throughput(shapes: Sequence[tuple[int, int, int]], repeats: int = 10) -> list[dict[str, Any]]:
    """Median float32 GFLOP/s of ``tf.linalg.matmul`` for each ``(m, k, n)`` in a ``tf.function``."""
    results = []
    for m, k, n in shapes:
        a = tf.random.normal((m, k), seed=0)
        b = tf.random.normal((k, n), seed=1)
        product = tf.function(lambda x, y: tf.reduce_sum(tf.linalg.matmul(x, y)))
        product(a, b).numpy()  # trace and warm up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            product(a, b).numpy()
            times.append(time.perf_counter() - start)
        seconds = float(np.median(times))
        results.append({"shape": [m, k, n], "median_seconds": seconds, "gflops": 2.0 * m * k * n / seconds / 1e9})
    return results


def nnz_per_cell(data: Any) -> dict[str, float]:
    """Mean stored entries per cell of each modality."""
    result = {}
    for name, mod in data.mod.items():
        x = mod.X
        result[name] = float(x.nnz / x.shape[0]) if hasattr(x, "nnz") else float(x.shape[1])
    return result


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and TensorFlow the way ``cavachon-like train`` does."""
    from cavachon_like import set_seed

    set_seed(seed)
    tf.random.set_seed(seed)
