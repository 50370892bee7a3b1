"""Train one cavachon_like model for the benchmarks; run as its own process by ``benchmarks/run.py``.

Writes into ``--out``: ``latent_<component>.npy`` (posterior means), ``clusters_<component>.npy``
(argmax of the mixture prior's p(c|z)) and ``result.json`` (sizes, timings, FLOPs, peak RSS).
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
from common import median, peak_rss_bytes, require_file, write_json
from tf_common import (
    VARIANTS,
    EpochTimer,
    nnz_per_cell,
    seed_everything,
    snare_config,
    step_flops,
)


class StepTimer(EpochTimer):
    """:class:`EpochTimer` that also records the seconds between consecutive steps of an epoch.

    The time from one ``on_train_batch_begin`` to the next is one whole training step
    (input included); the last, partial batch of an epoch has no successor, so every
    recorded step has the full batch size.
    """

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        super().on_epoch_begin(epoch, logs)
        self._last = None
        self._steps: list[float] = []

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        super().on_train_batch_begin(batch, logs)
        now = time.perf_counter()
        if self._last is not None:
            self._steps.append(now - self._last)
        self._last = now

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        super().on_epoch_end(epoch, logs)
        self.records[-1]["step_seconds"] = self._steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help=".h5mu with modalities atac and rna and obs column batch")
    parser.add_argument("--variant", choices=VARIANTS, default="paper")
    parser.add_argument("--epochs", type=int, required=True, help="epochs per training stage")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's (256)")
    parser.add_argument("--no-qc", action="store_true", help="skip the config's QC (data already filtered)")
    parser.add_argument("--no-latent", action="store_true", help="skip writing latents (scaling runs)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    from cavachon_like.config import build_model, load_data

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = snare_config(require_file(args.data), args.epochs, args.variant)
    if args.no_qc:
        config["data"]["qc"] = []
    batch_size = args.batch_size or int(config["training"]["batch_size"])
    validation_split = float(config["training"]["validation_split"])
    seed_everything(args.seed)
    data = load_data(config["data"], seed=args.seed)
    load_seconds = time.perf_counter() - started
    rss_after_load = peak_rss_bytes()
    model = build_model(config, data)
    timer = StepTimer()
    fit_start = time.perf_counter()
    model.fit(data, epochs=args.epochs, batch_size=batch_size, validation_split=validation_split,
              callbacks=[timer], verbose=0)
    train_seconds = time.perf_counter() - fit_start
    rss_after_fit = peak_rss_bytes()

    n_train = len(data.split(validation_split, seed=config["seed"])[0]) if validation_split else data.n_obs
    nnz = nnz_per_cell(data)
    stages = []
    for stage in dict.fromkeys(r["stage"] for r in timer.records):
        records = [r for r in timer.records if r["stage"] == stage]
        epoch_seconds = [r["seconds"] for r in records]
        steps = [s for r in records[1:] for s in r["step_seconds"]] or [s for r in records for s in r["step_seconds"]]
        flops = step_flops(model, stage.split("+"), batch_size, nnz)
        step_seconds = median(steps)
        stages.append({
            "stage": stage,
            "epoch_seconds": epoch_seconds,
            "median_epoch_seconds": median(epoch_seconds),
            "first_step_waits": [r["first_step_wait"] for r in records],
            "median_step_seconds": step_seconds,
            "flops_per_step": flops,
            "flops_per_second": {k: v / step_seconds for k, v in flops.items()},
            "trainable_parameters": int(sum(model.components[c].count_params() for c in stage.split("+"))),
        })
    all_epochs = [s for st in stages for s in st["epoch_seconds"]]
    result: dict[str, Any] = {
        "model": f"cavachon_like ({args.variant})",
        "variant": args.variant,
        "parameters": int(model.count_params()),
        "n_cells": int(data.n_obs),
        "n_train_cells": int(n_train),
        "features": {m: int(data.mod[m].n_vars) for m in data.mod},
        "nnz": {m: int(data.mod[m].X.nnz) for m in data.mod if hasattr(data.mod[m].X, "nnz")},
        "epochs": args.epochs,
        "epochs_counted": "per stage: each of the stages trains for `epochs` epochs",
        "n_stages": len(stages),
        "batch_size": batch_size,
        "load_seconds": load_seconds,
        "train_seconds": train_seconds,
        # cells pushed through a training step per second, all stages together
        "cells_per_second": n_train * args.epochs * len(stages) / train_seconds,
        "median_epoch_seconds": median(all_epochs),
        "seconds_per_model_epoch": train_seconds / args.epochs,
        "stages": stages,
        "peak_rss_bytes_after_load": rss_after_load,
        "peak_rss_bytes_after_fit": rss_after_fit,
    }
    if not args.no_latent:
        latents = model.get_latent_representation(data)
        for name in model.graph.order:
            np.save(out / f"latent_{name}.npy", latents[f"z_{name}"])
            probabilities = latents.get(f"cluster_probabilities_{name}")
            if probabilities is not None:
                np.save(out / f"clusters_{name}.npy", probabilities.argmax(axis=1))
        result["components"] = list(model.graph.order)
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["total_seconds"] = time.perf_counter() - started
    write_json(out / "result.json", result)
    print(f"{result['model']}: {train_seconds:.1f} s training, {result['cells_per_second']:.0f} cells/s, "
          f"peak RSS {result['peak_rss_bytes'] / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
