"""TensorFlow-side benchmark helpers: SNARE-seq loading, model variants, epoch timing, FLOPs, matmul peak."""
from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from common import MULTIVI_HIDDEN, MULTIVI_LATENT, MULTIVI_LAYERS, SNARE_CONFIG, evaluated

VARIANTS = ("paper", "table_s1", "matched")
#: Paper 000's Table S1 widths, which configs/snare.yaml no longer uses (it scales widths to the data).
TABLE_S1_ENCODER = [1024, 512, 256, 128]
TABLE_S1_DECODER = [128, 256, 512]


def snare_config(data: str | Path, epochs: int | None = None, variant: str = "paper",
                 config: str | Path = SNARE_CONFIG) -> dict:
    """The validated run configuration of ``configs/snare.yaml`` for ``variant``.

    ``paper`` is the file as it is (dim(z) = 20, K = 41, widths from the package's
    defaults for the data); ``table_s1`` the same with the paper's Table S1 widths,
    encoders 1024-512-256-128 and decoders 128-256-512. ``matched`` gives every component MultiVI's default size
    on this data: encoders and decoders of two hidden layers of 128 units and
    dim(z) = 11; K falls back to the model's default 2 * dim(z) + 1 = 23.
    ``epochs=None`` keeps the file's training as a user gets it (pre-training, early
    stopping). An ``epochs`` count makes a timing run: exactly that many ELBO epochs per
    stage, no pre-training and no early stopping, so every epoch of a stage costs the same.
    """
    from cavachon_like.config import load_config

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    overrides: dict[str, Any] = {"data.path": str(data)}
    if epochs is not None:
        overrides.update({"training.epochs": int(epochs), "training.early_stopping": None, "model.pretrain_epochs": 0})
    result = load_config(config, overrides)
    if variant == "table_s1":
        for component in result["model"]["components"]:
            component["encoder"] = {"class": "mlp", "units": list(TABLE_S1_ENCODER)}
            component["decoder"] = {"class": "mlp", "units": list(TABLE_S1_DECODER)}
    if variant == "matched":
        units = [MULTIVI_HIDDEN] * MULTIVI_LAYERS
        for component in result["model"]["components"]:  # load_config returns a fresh dict
            component["latent_dim"] = MULTIVI_LATENT
            component["n_clusters"] = None
            component["encoder"] = {"class": "mlp", "units": list(units)}
            component["decoder"] = {"class": "mlp", "units": list(units)}
    return result


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch, of its training part and of each training step.

    ``records`` holds one dict per epoch: ``stage`` (the components the model trains),
    ``epoch``, ``seconds`` (validation included), ``train_seconds`` (from the start of
    the epoch to the start of validation, or to its end without validation),
    ``first_step_wait`` (from ``on_epoch_begin`` to the first step, where iterator set-up
    stalls would show) and ``step_seconds`` (each step from batch begin to batch end,
    reading its batch included). ``stop_after`` ends each ``fit`` after that many steps.
    """

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__()
        self.stop_after = stop_after
        self.records: list[dict[str, Any]] = []

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self._fit_steps = 0

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._start = time.perf_counter()
        self._wait = self._trained = None
        self._steps: list[float] = []

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._step_start = time.perf_counter()
        if self._wait is None:
            self._wait = self._step_start - self._start

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._steps.append(time.perf_counter() - self._step_start)
        self._fit_steps += 1
        if self.stop_after and self._fit_steps >= self.stop_after:
            self.model.stop_training = True

    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._trained is None:  # fit's validation pass (evaluate outside fit has no epoch)
            self._trained = time.perf_counter() - self._start

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        seconds = time.perf_counter() - self._start
        stage = getattr(self.model, "training_components", None) or ["model"]
        self.records.append({
            "stage": "+".join(stage),
            "epoch": epoch,
            "seconds": seconds,
            "train_seconds": seconds if self._trained is None else self._trained,
            "first_step_wait": self._wait,
            "step_seconds": self._steps,
        })


class LatentTrajectory(keras.callbacks.Callback):
    """Saves the joint latent of ``data`` after the epochs :func:`common.evaluated` picks, with the training time.

    Every ``fit`` phase and stage counts on one epoch counter. ``clock()`` is the
    wall time since ``start()`` without the time spent here, so the saved times are
    those of training alone (tracing, validation and mixture fits included).
    """

    def __init__(self, data: Any, folder: Path) -> None:
        super().__init__()
        self.data, self.folder = data, Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.points: list[dict[str, Any]] = []
        self.epochs = 0

    def start(self) -> None:
        self._began, self._paused = time.perf_counter(), 0.0

    def clock(self) -> float:
        return time.perf_counter() - self._began - self._paused

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.epochs += 1
        if not evaluated(self.epochs):
            return
        seconds = self.clock()
        paused = time.perf_counter()
        latents = self.model.get_latent_representation(self.data)
        joint = np.concatenate([latents[f"z_{c}"] for c in self.model.latent_names], axis=1)
        path = self.folder / f"{len(self.points):04d}.npy"
        np.save(path, joint.astype(np.float32))
        stage = "+".join(getattr(self.model, "training_components", []))
        self.points.append({"epoch": self.epochs, "stage": stage, "train_seconds": seconds, "latent": path.name})
        self._paused += time.perf_counter() - paused


def dense_layers(layer: keras.layers.Layer) -> list[keras.layers.Dense]:
    """Every Dense layer inside ``layer``."""
    return [sub for sub in layer._flatten_layers(include_self=False, recursive=True) if isinstance(sub, keras.layers.Dense)]


def step_products(model: Any, stage: Sequence[str], batch_size: int,
                  nnz_per_cell: Mapping[str, float]) -> list[dict[str, Any]]:
    """The matrix products one training step of ``stage`` on ``batch_size`` cells executes.

    A dense layer multiplies ``(B, in) x (in, out)`` forward; a trained layer adds its
    weight gradient ``(in, B) x (B, out)`` and, unless its input is data, the gradient of
    its input ``(B, out) x (out, in)``. Frozen ancestors run forward only, and only their
    hierarchical encoders when ``fit`` carries their posteriors per cell
    (:func:`cavachon_like.model.stages.frozen_moments`, for ``takes_moments``). An encoder's input
    projection reads the data: forward and weight gradient are sparse products over the
    batch's non-zeros (``nnz`` = ``B`` times the modality's mean per cell). Each product is
    ``{"shape": (m, k, n), "nnz": None or int, "flops": 2 m k n or 2 nnz n}``.
    """
    products: list[dict[str, Any]] = []

    def add(m: int, k: int, n: int, nnz: int | None = None) -> None:
        flops = 2.0 * (nnz * n if nnz is not None else m * k * n)
        products.append({"shape": (m, k, n), "nnz": nnz, "flops": flops})

    for name in model.graph.closure(set(stage)):
        component = model.components[name]
        trains = name in stage
        inputs = dict(zip(component.modalities, component.encoder.body.input_projections))
        data_inputs = {id(layer): m for m, layer in inputs.items()}
        modules: list[keras.layers.Layer] = [component.hierarchical_encoder]
        if trains or not component.takes_moments:
            modules.append(component.encoder)
        if trains:
            modules += list(component.decoders.values())
        for module in modules:
            for layer in dense_layers(module):
                fan_in, fan_out = (int(d) for d in layer.kernel.shape)
                if id(layer) in data_inputs:  # no gradient for the data
                    nnz = int(round(batch_size * nnz_per_cell[data_inputs[id(layer)]]))
                    add(batch_size, fan_in, fan_out, nnz)
                    if trains:
                        add(fan_in, batch_size, fan_out, nnz)
                    continue
                add(batch_size, fan_in, fan_out)
                if trains:
                    add(fan_in, batch_size, fan_out)
                    add(batch_size, fan_out, fan_in)
    return products


def step_flops(model: Any, stage: Sequence[str], batch_size: int, nnz_per_cell: Mapping[str, float]) -> float:
    """Matmul FLOPs one training step of ``stage`` executes: the sum over :func:`step_products`
    (so the usual "x3" of a trained dense layer, and only the non-zeros of sparse input).
    Layer norms, activations, likelihoods and the optimizer are not counted."""
    return sum(p["flops"] for p in step_products(model, stage, batch_size, nnz_per_cell))


def products_alone(products: Sequence[Mapping[str, Any]], repeats: int = 10, seed: int = 0) -> float:
    """Median seconds of running ``products`` (:func:`step_products`) one after another in one
    ``tf.function``, on random float32 operands of their shapes: what the step's matrix products
    cost with nothing else in the step. A sparse product multiplies a random sparse (m, k)
    matrix of its ``nnz`` entries, as the encoders' input projections do."""
    rng = np.random.default_rng(seed)
    left, right = [], []
    for p in products:
        m, k, n = p["shape"]
        if p["nnz"] is None:
            left.append(tf.constant(rng.standard_normal((m, k), dtype=np.float32)))
        else:
            flat = np.sort(rng.choice(m * k, size=min(p["nnz"], m * k), replace=False))
            indices = np.stack([flat // k, flat % k], axis=1).astype(np.int64)
            values = np.ones(len(flat), dtype=np.float32)
            left.append(tf.SparseTensor(indices, values, (m, k)))
        right.append(tf.constant(rng.standard_normal((k, n), dtype=np.float32)))

    @tf.function
    def run() -> list[tf.Tensor]:
        out = []
        for a, b in zip(left, right):
            out.append(tf.sparse.sparse_dense_matmul(a, b) if isinstance(a, tf.SparseTensor) else tf.linalg.matmul(a, b))
        return out

    run()  # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


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
