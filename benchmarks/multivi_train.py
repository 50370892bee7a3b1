"""Train scvi-tools' MultiVI for the benchmarks; runs inside benchmarks/.venv-multivi (see setup_multivi.sh).

Two modes, as in ``cavachon_train.py``:

``--mode speed --epochs N``
    exactly ``N`` epochs at ``--batch-size``, no early stopping, validation after every
    epoch (as the cavachon_like timing runs validate), timed per epoch and per step.
``--mode quality``
    ``MULTIVI.train()`` with every default (up to 500 epochs, early stopping on the
    validation reconstruction loss with patience 50, AdamW at lr 1e-4, batch 128, KL
    warm-up over 50 epochs, adversarial mixing), with the latent saved after the epochs
    :func:`common.evaluated` picks and the training time at each.

Writes ``latent.npy`` (``get_latent_representation()``, the joint latent), ``trajectory/``
(quality) and ``result.json`` into ``--out``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import evaluated, peak_rss_bytes, require_file, speed_summary, write_json


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help=".h5mu with modalities rna and atac and obs column batch")
    parser.add_argument("--mode", choices=["speed", "quality"], default="speed")
    parser.add_argument("--epochs", type=int, default=None, help="speed: epochs (default 3); quality: at most "
                        "this many (a quick check)")
    parser.add_argument("--batch-size", type=int, default=128, help="speed: batch size (MultiVI's default 128)")
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
        """Per-epoch records as ``tf_common.EpochTimer`` writes them; in quality mode, the latent trajectory."""

        def __init__(self, trajectory: Path | None) -> None:
            self.records: list[dict[str, Any]] = []
            self.trajectory, self.points = trajectory, []
            self.began, self.paused = time.perf_counter(), 0.0

        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            self._start, self._trained, self._steps = time.perf_counter(), None, []

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            self._step_start = time.perf_counter()

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            self._steps.append(time.perf_counter() - self._step_start)

        def on_validation_epoch_start(self, trainer: Any, module: Any) -> None:
            if self._trained is None and getattr(self, "_start", None) is not None:
                self._trained = time.perf_counter() - self._start

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            # Lightning validates inside the training epoch, before this hook
            seconds = time.perf_counter() - self._start
            self.records.append({"stage": "model", "epoch": len(self.records), "seconds": seconds,
                                 "train_seconds": seconds if self._trained is None else self._trained,
                                 "step_seconds": self._steps})
            self._start = None
            if self.trajectory is None or not evaluated(len(self.records)):
                return
            clock = time.perf_counter() - self.began - self.paused
            paused = time.perf_counter()
            network = model.module
            network.eval()  # no dropout in the latent, as get_latent_representation after training
            trained, model.is_trained_ = model.is_trained_, True  # it refuses an untrained model
            latent = model.get_latent_representation()
            model.is_trained_ = trained
            network.train()
            path = self.trajectory / f"{len(self.points):04d}.npy"
            np.save(path, latent.astype(np.float32))
            self.points.append({"epoch": len(self.records), "stage": "model", "train_seconds": clock,
                                "latent": path.name})
            self.paused += time.perf_counter() - paused

    trajectory = None
    if args.mode == "quality":
        trajectory = out / "trajectory"
        trajectory.mkdir(exist_ok=True)
    timer = Timer(trajectory)
    fit_start = time.perf_counter()
    if args.mode == "speed":
        model.train(max_epochs=args.epochs or 3, batch_size=args.batch_size, early_stopping=False,
                    check_val_every_n_epoch=1, callbacks=[timer], enable_progress_bar=False)
        batch_size = args.batch_size
    else:
        limit = {"max_epochs": args.epochs} if args.epochs else {}
        model.train(callbacks=[timer], enable_progress_bar=False, **limit)
        batch_size = 128
    train_seconds = time.perf_counter() - fit_start
    rss_after_fit = peak_rss_bytes()

    latent = model.get_latent_representation()
    np.save(out / "latent.npy", latent)
    n_train = len(model.train_indices)
    module = model.module
    result: dict[str, Any] = {
        "model": "MultiVI (scvi-tools)",
        "mode": args.mode,
        "versions": {"scvi-tools": scvi.__version__, "torch": torch.__version__},
        "torch_threads": torch.get_num_threads(),
        "architecture": {"n_hidden": int(module.n_hidden), "n_latent": int(module.n_latent),
                         "n_layers_encoder": int(module.n_layers_encoder),
                         "n_layers_decoder": int(module.n_layers_decoder)},
        "parameters": int(sum(p.numel() for p in module.parameters())),
        "n_cells": int(mdata.n_obs),
        "n_train_cells": int(n_train),
        "features": {m: int(mdata.mod[m].n_vars) for m in mdata.mod},
        "batch_size": batch_size,
        "load_seconds": load_seconds,
        "train_seconds": train_seconds,
        "epochs_run": len(timer.records),
        "epoch_records": [{k: v for k, v in r.items() if k != "step_seconds"} for r in timer.records],
        "peak_rss_bytes_after_load": rss_after_load,
        "peak_rss_bytes_after_fit": rss_after_fit,
    }
    if args.mode == "speed":
        result.update(speed_summary(timer.records, n_train))
    else:
        result["trajectory"] = timer.points
        result["train_seconds_unscored"] = time.perf_counter() - timer.began - timer.paused
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["total_seconds"] = time.perf_counter() - started
    write_json(out / "result.json", result)
    print(f"{result['model']} ({args.mode}, batch {batch_size}): {train_seconds:.1f} s training, "
          f"peak RSS {result['peak_rss_bytes'] / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
