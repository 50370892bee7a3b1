"""Train one cavachon_like model for the benchmarks; run as its own process by ``benchmarks/run.py``.

Two modes:

``--mode speed --epochs N``
    exactly ``N`` ELBO epochs per stage (no pre-training, no early stopping), timed per
    epoch and per step (:class:`tf_common.EpochTimer`); matmul FLOPs per step.
``--mode quality``
    ``configs/snare.yaml``'s training as a user runs it (pre-training, mixture fit, early
    stopping), with the joint latent saved after the epochs :func:`common.evaluated`
    picks and the training time at each (:class:`tf_common.LatentTrajectory`).

Writes into ``--out``: ``latent_<component>.npy`` (posterior means), ``clusters_<component>.npy``
(argmax of the mixture prior's p(c|z)), ``trajectory/`` (quality) and ``result.json``.
A process per model makes the peak resident memory that of this model alone.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from common import peak_rss_bytes, require_file, speed_summary, write_json
from tf_common import VARIANTS, EpochTimer, LatentTrajectory, nnz_per_cell, seed_everything, snare_config, step_flops


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help=".h5mu with modalities atac and rna and obs column batch")
    parser.add_argument("--variant", choices=VARIANTS, default="paper")
    parser.add_argument("--mode", choices=["speed", "quality"], default="speed")
    parser.add_argument("--epochs", type=int, default=None, help="speed: ELBO epochs per stage (default 3); "
                        "quality: at most this many epochs per phase (a quick check)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--no-qc", action="store_true", help="skip the config's QC (data already filtered)")
    parser.add_argument("--no-latent", action="store_true", help="skip writing latents (scaling runs)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    from cavachon_like.config import build_model, load_data

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    speed = args.mode == "speed"
    config = snare_config(require_file(args.data), (args.epochs or 3) if speed else None, args.variant)
    if not speed and args.epochs:
        config["training"]["epochs"] = args.epochs
        config["model"]["pretrain_epochs"] = min(config["model"]["pretrain_epochs"], args.epochs)
        config["training"]["min_pretrain_steps"] = 0  # the epochs asked for, on any data size
    if args.no_qc:
        config["data"]["qc"] = []
    batch_size = args.batch_size or int(config["training"]["batch_size"])
    validation_split = float(config["training"]["validation_split"])
    seed_everything(args.seed)
    data = load_data(config["data"], seed=args.seed)
    load_seconds = time.perf_counter() - started
    rss_after_load = peak_rss_bytes()
    model = build_model(config, data)
    timer = EpochTimer()
    callbacks: list[Any] = [timer]
    trajectory = None
    if args.mode == "quality":
        from cavachon_like.config import training_callbacks

        trajectory = LatentTrajectory(data, out / "trajectory")
        callbacks += [*training_callbacks(config, out), trajectory]
        trajectory.start()
    fit_start = time.perf_counter()
    model.fit(data, epochs=int(config["training"]["epochs"]), batch_size=batch_size,
              validation_split=validation_split, callbacks=callbacks, verbose=0)
    train_seconds = time.perf_counter() - fit_start
    rss_after_fit = peak_rss_bytes()

    n_train = len(data.split(validation_split, seed=config["seed"])[0]) if validation_split else data.n_obs
    nnz = nnz_per_cell(data)
    result: dict[str, Any] = {
        "model": f"cavachon_like ({args.variant})",
        "variant": args.variant,
        "mode": args.mode,
        "parameters": int(model.count_params()),
        "n_cells": int(data.n_obs),
        "n_train_cells": int(n_train),
        "features": {m: int(data.mod[m].n_vars) for m in data.mod},
        "nnz": {m: int(data.mod[m].X.nnz) for m in data.mod if hasattr(data.mod[m].X, "nnz")},
        "batch_size": batch_size,
        "load_seconds": load_seconds,
        "train_seconds": train_seconds,
        "epochs_run": len(timer.records),
        "epoch_records": [{k: v for k, v in r.items() if k != "step_seconds"} for r in timer.records],
        "peak_rss_bytes_after_load": rss_after_load,
        "peak_rss_bytes_after_fit": rss_after_fit,
    }
    if speed:
        summary = speed_summary(timer.records, n_train)
        for stage, row in summary["stages"].items():
            row["flops_per_step"] = step_flops(model, stage.split("+"), batch_size, nnz)
            row["flops_per_second"] = row["flops_per_step"] / row["median_step_seconds"]
        result.update(summary)
    else:
        # the clock of the trajectory leaves its own scoring out; the fit's end on that clock
        result["trajectory"] = trajectory.points
        result["train_seconds_unscored"] = trajectory.clock()
    if not args.no_latent:
        latents = model.get_latent_representation(data)
        for name in model.latent_names:
            np.save(out / f"latent_{name}.npy", latents[f"z_{name}"])
            probabilities = latents.get(f"cluster_probabilities_{name}")
            if probabilities is not None:
                np.save(out / f"clusters_{name}.npy", probabilities.argmax(axis=1))
        result["components"] = list(model.latent_names)
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["total_seconds"] = time.perf_counter() - started
    write_json(out / "result.json", result)
    print(f"{result['model']} ({args.mode}, batch {batch_size}): {train_seconds:.1f} s training, "
          f"peak RSS {result['peak_rss_bytes'] / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
