"""Train scvi-tools' MultiVI for the benchmarks; runs inside benchmarks/.venv-multivi (see setup_multivi.sh).

MultiVI keeps all of its defaults (architecture, AdamW with lr 1e-4 and weight decay
1e-3, batch size 128, 90/10 train/validation split, KL warm-up, adversarial mixing)
except ``early_stopping=False``, so it trains exactly ``--epochs`` epochs like the
other models. Writes ``latent.npy`` (``get_latent_representation()``, the joint latent)
and ``result.json`` (sizes, timings, peak RSS) into ``--out``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import median, peak_rss_bytes, require_file, write_json


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help=".h5mu with modalities rna and atac and obs column batch")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--batch-key", default="batch")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    import lightning.pytorch as pl
    import mudata as md
    import numpy as np
    import scvi
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scvi.settings.seed = args.seed
    mdata = md.read_h5mu(require_file(args.data))
    scvi.model.MULTIVI.setup_mudata(
        mdata, batch_key=args.batch_key, modalities={"rna_layer": "rna", "atac_layer": "atac"}
    )
    model = scvi.model.MULTIVI(mdata)
    load_seconds = time.perf_counter() - started
    rss_after_load = peak_rss_bytes()

    class Timer(pl.Callback):
        """Epoch wall times (training and validation, as Keras counts them) and step times."""

        def __init__(self) -> None:
            self.epochs: list[float] = []
            self.steps: list[list[float]] = []

        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            self._start = time.perf_counter()
            self._last = None
            self.steps.append([])

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            now = time.perf_counter()
            if self._last is not None:
                self.steps[-1].append(now - self._last)
            self._last = now

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            self.epochs.append(time.perf_counter() - self._start)

    timer = Timer()
    fit_start = time.perf_counter()
    model.train(max_epochs=args.epochs, early_stopping=False, callbacks=[timer], enable_progress_bar=False)
    train_seconds = time.perf_counter() - fit_start
    rss_after_fit = peak_rss_bytes()

    latent = model.get_latent_representation()
    np.save(out / "latent.npy", latent)
    n_train = len(model.train_indices)
    steady = [s for epoch in timer.steps[1:] for s in epoch] or [s for epoch in timer.steps for s in epoch]
    module = model.module
    result = {
        "model": "MultiVI (scvi-tools)",
        "versions": {"scvi-tools": scvi.__version__, "torch": torch.__version__},
        "torch_threads": torch.get_num_threads(),
        "architecture": {"n_hidden": int(module.n_hidden), "n_latent": int(module.n_latent),
                         "n_layers_encoder": int(module.n_layers_encoder),
                         "n_layers_decoder": int(module.n_layers_decoder)},
        "parameters": int(sum(p.numel() for p in module.parameters())),
        "n_cells": int(mdata.n_obs),
        "n_train_cells": int(n_train),
        "features": {m: int(mdata.mod[m].n_vars) for m in mdata.mod},
        "epochs": args.epochs,
        "epochs_counted": "one epoch trains every module on every training cell",
        "n_stages": 1,
        "batch_size": 128,
        "load_seconds": load_seconds,
        "train_seconds": train_seconds,
        "cells_per_second": n_train * args.epochs / train_seconds,
        "epoch_seconds": timer.epochs,
        "median_epoch_seconds": median(timer.epochs),
        "seconds_per_model_epoch": train_seconds / args.epochs,
        "median_step_seconds": median(steady),
        "peak_rss_bytes_after_load": rss_after_load,
        "peak_rss_bytes_after_fit": rss_after_fit,
    }
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["total_seconds"] = time.perf_counter() - started
    write_json(out / "result.json", result)
    print(f"{result['model']}: {train_seconds:.1f} s training, {result['cells_per_second']:.0f} cells/s, "
          f"peak RSS {result['peak_rss_bytes'] / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
