"""Profile cavachon_like training on SNARE-seq: epoch times, first-step stalls and a step breakdown.

Examples
--------
Epoch timing of the paper-size model, 3 epochs per stage::

    python benchmarks/profile_step.py --epochs 3

Where a training step's time goes (encoder only, forward with loss, gradients,
optimizer update, the whole Keras train step), per stage::

    python benchmarks/profile_step.py --parts

Both print which ``cavachon_like`` was imported, so the same command can time two
checkouts side by side (``PYTHONPATH=/path/to/other/checkout python ...``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import tensorflow as tf
from common import DEFAULT_DATA, median, peak_rss_bytes, require_file
from tf_common import (VARIANTS, EpochTimer, nnz_per_cell, products_alone, seed_everything, snare_config,
                       step_products)


def time_calls(function: Any, arguments: list[Any], repeats: int) -> float:
    """Median seconds of ``function(argument)`` over ``repeats`` calls after one warm-up call."""
    def run(argument: Any) -> None:
        result = function(argument) if argument is not None else function()
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)

    run(arguments[0])
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        run(arguments[i % len(arguments)])
        times.append(time.perf_counter() - start)
    return median(times)


def time_stage(model: Any, stage: list[str], batches: list[Any], repeats: int,
               products: list[dict[str, Any]]) -> dict[str, float]:
    """Median seconds of the parts of one training step of ``stage``, and of its matrix
    ``products`` (:func:`tf_common.step_products`) alone."""
    from cavachon_like.model.stages import compile_phase

    model._set_active(stage)
    compile_phase(model)
    weights = model.trainable_weights
    model.optimizer.build(weights)

    @tf.function(reduce_retracing=True)
    def encode(batch: Any) -> list[tf.Tensor]:
        outputs = model(batch, training=True, components=stage, decode=False)
        return [outputs[c]["z"] for c in stage]

    @tf.function(reduce_retracing=True)
    def forward(batch: Any) -> tf.Tensor:
        outputs = model(batch, training=True, components=stage)
        return tf.reduce_mean(model.loss_terms(batch["x"], outputs, stage)[0])

    @tf.function(reduce_retracing=True)
    def gradients(batch: Any) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            outputs = model(batch, training=True, components=stage)
            loss = tf.reduce_mean(model.loss_terms(batch["x"], outputs, stage)[0])
        return [tf.reduce_sum(g) for g in tape.gradient(loss, weights)]

    zeros = [tf.zeros_like(w) for w in weights]

    @tf.function
    def update() -> tf.Tensor:
        model.optimizer.apply_gradients(zip(zeros, weights))
        return tf.constant(0)

    step = tf.function(model.train_step, reduce_retracing=True)
    return {
        "encode": time_calls(encode, batches, repeats),
        "forward+loss": time_calls(forward, batches, repeats),
        "gradients": time_calls(gradients, batches, repeats),
        "optimizer": time_calls(update, [None], repeats),
        "train_step": time_calls(step, batches, repeats),
        "matmuls alone": products_alone(products, repeats),
    }


def step_parts(model: Any, data: Any, batch_size: int, repeats: int) -> None:
    """Print median milliseconds of the parts of one training step, for every stage."""
    from cavachon_like.train import training_plan

    from cavachon_like.model.stages import frozen_moments

    nnz = nnz_per_cell(data)
    for stage in training_plan(model.graph.order, model.training_mode):
        # as fit runs the stage: frozen ancestors' posteriors come with the batches
        moments = frozen_moments(model, data, stage)
        batches = list(model.make_dataset(data, batch_size=batch_size, shuffle=True, moments=moments).take(8))
        products = step_products(model, stage, batch_size, nnz)
        parts = time_stage(model, stage, batches, repeats, products)
        n_weights = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        print(f"stage {'+'.join(stage)} ({n_weights:,} trainable weights, batch {batch_size}):")
        for name, seconds in parts.items():
            print(f"  {name:14s} {seconds * 1e3:8.1f} ms")
        flops = sum(p["flops"] for p in products)
        floor = parts["matmuls alone"] + parts["optimizer"]
        print(f"  {len(products)} matrix products, {flops / 1e9:.2f} GFLOP: {flops / parts['matmuls alone'] / 1e9:.0f} "
              f"GFLOP/s alone, {flops / parts['train_step'] / 1e9:.0f} in the step; matmuls + optimizer alone "
              f"{floor * 1e3:.1f} ms = {floor / parts['train_step']:.0%} of the step")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="SNARE-seq .h5mu (default %(default)s)")
    parser.add_argument("--variant", choices=VARIANTS, default="paper")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per stage (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--parts", action="store_true", help="time the parts of a step instead of training")
    parser.add_argument("--repeats", type=int, default=10, help="calls per part with --parts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype-policy", default=None,
                        help="Keras dtype policy for the model, e.g. mixed_float16 (GPU) or mixed_bfloat16")
    args = parser.parse_args(argv)

    import cavachon_like
    from cavachon_like.config import build_model, load_data

    require_file(args.data)
    print(f"cavachon_like from {Path(cavachon_like.__file__).parent}")
    if args.dtype_policy:
        import keras

        keras.mixed_precision.set_global_policy(args.dtype_policy)
        print(f"dtype policy {args.dtype_policy}")
    config = snare_config(args.data, args.epochs, args.variant)
    seed_everything(args.seed)
    data = load_data(config["data"], seed=args.seed)
    model = build_model(config, data)
    if args.parts:
        step_parts(model, data, args.batch_size, args.repeats)
        return
    timer = EpochTimer()
    start = time.perf_counter()
    model.fit(data, epochs=args.epochs, batch_size=args.batch_size,
              validation_split=config["training"]["validation_split"], callbacks=[timer], verbose=0)
    seconds = time.perf_counter() - start
    n_train = round(data.n_obs * (1 - config["training"]["validation_split"]))
    for stage in dict.fromkeys(r["stage"] for r in timer.records):
        records = [r for r in timer.records if r["stage"] == stage]
        steady = [r["seconds"] for r in records[1:]] or [records[0]["seconds"]]
        waits = [round(r["first_step_wait"], 2) for r in records]
        print(f"stage {stage}: epochs {[round(r['seconds'], 2) for r in records]} s; median after the first "
              f"{median(steady):.2f} s ({n_train / median(steady):.0f} cells/s); waits before first step {waits}")
    print(f"fit {seconds:.1f} s, peak RSS {peak_rss_bytes() / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
