"""Training from disk at a size that does not fit in memory (issue 14: "1,000,000 cells x 200,000
regions x 20,000 genes, on disk: trains; peak RSS <= 8 GB; seconds per epoch reported").

    python benchmarks/ondisk_scale.py --path /scratch/sim_1m.h5mu [--cells 1000000] [--steps 30]

Writes the data set with ``cavachon_like.data.simulate_to_disk`` unless ``--path`` exists (about
1,000 ATAC regions and 1,500 RNA counts per cell), reads it with ``read_h5mu(path)`` (``backed="auto"``,
which must choose disk), and trains ``configs/snare.yaml``'s model (both stages, sequential, widths
from the package's defaults for this many cells) with ``model.fit`` for ``--steps`` training steps
per stage, stopping each stage's fit there. Pre-training, progressive blending and validation are
switched off so that the steps measured are ELBO steps of each stage (the GMM start of the mixture
prior encodes every training cell once per stage, a forward pass not measured here).

Prints, per stage: seconds per step (median over the steps after the first ``--warmup``, which
include tracing), the whole-stage epoch that implies (steps per epoch x median step, extrapolated,
not run), and the time to the first step; then the process' peak resident set size (VmHWM, data
reading and model included) and the file's size.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import SNARE_CONFIG, peak_rss_bytes, write_json  # noqa: E402
from tf_common import EpochTimer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", required=True, help="h5mu file to train from (written first if missing)")
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--regions", type=int, default=200_000)
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=30, help="training steps measured per stage")
    parser.add_argument("--warmup", type=int, default=5, help="first steps of a stage left out of the median")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--backed", choices=["auto", "true"], default="auto",
                        help="'true' keeps a file that would fit in memory on disk too (for trying the script)")
    args = parser.parse_args()

    from cavachon_like import CAVACHON
    from cavachon_like.config import load_config
    from cavachon_like.data import read_h5mu, simulate_to_disk

    path = Path(args.path)
    if not path.exists():
        started = time.perf_counter()
        simulate_to_disk(path, n_cells=args.cells, n_atac=args.regions, n_rna=args.genes)
        print(f"wrote {path} ({path.stat().st_size / 1e9:.1f} GB) in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    data = read_h5mu(path, backed=True if args.backed == "true" else "auto")
    print(f"read_h5mu(backed={args.backed!r}): on disk = {data.on_disk}; annotations read in "
          f"{time.perf_counter() - started:.1f} s; peak RSS so far {peak_rss_bytes() / 1e9:.2f} GB")
    if not data.on_disk:
        raise SystemExit("the data were loaded into memory: this machine has room for them; pass a larger --cells.")
    nnz = {k: int(m.X.group["indptr"][-1]) for k, m in data.mod.items()}
    print(f"{data.n_obs:,} cells; " + "; ".join(f"{k}: {m.n_vars:,} features, {nnz[k] / data.n_obs:.0f} non-zeros "
                                                 "per cell" for k, m in data.mod.items()))

    config = load_config(SNARE_CONFIG, {"data.path": str(path)})
    model = CAVACHON.from_data(data, config["model"]["components"], seed=0, training="sequential",
                               pretrain_epochs=0, progressive_epochs=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    print(f"model: {model.count_params():,} parameters")
    timer = EpochTimer(stop_after=args.steps)
    started = time.perf_counter()
    model.fit(data, epochs=1, batch_size=args.batch_size, callbacks=[timer], verbose=0)
    print(f"fit of {args.steps} steps per stage: {time.perf_counter() - started:.0f} s wall")

    steps_per_epoch = int(np.ceil(data.n_obs / args.batch_size))
    total = 0.0
    stages = []
    for record in timer.records:
        kept = record["step_seconds"][args.warmup:]
        step = float(np.median(kept))
        total += step * steps_per_epoch
        stages.append({"components": record["stage"], "median_step_seconds": step,
                       "epoch_minutes": step * steps_per_epoch / 60})
        print(f"stage {record['stage']}: {len(record['step_seconds'])} steps, median {step:.3f} s/step over the last "
              f"{len(kept)} (first step {record['step_seconds'][0]:.1f} s, {record['first_step_wait']:.1f} s after the "
              f"epoch began) -> {step * steps_per_epoch / 60:.1f} min per epoch of {steps_per_epoch:,} steps "
              "(extrapolated)")
    peak = peak_rss_bytes()
    print(f"whole model, one epoch of every stage: {total / 3600:.2f} h (extrapolated); "
          f"{data.n_obs / total:.0f} cells/s through the whole model")
    print(f"peak RSS (VmHWM): {peak / 1e9:.2f} GB; file {path.stat().st_size / 1e9:.1f} GB")
    if args.json:
        write_json(args.json, {
            "path": str(path), "backed": args.backed, "file_bytes": path.stat().st_size, "n_cells": int(data.n_obs),
            "features": {k: int(m.n_vars) for k, m in data.mod.items()}, "nnz": nnz,
            "parameters": int(model.count_params()), "batch_size": args.batch_size, "steps": args.steps,
            "warmup": args.warmup, "stages": stages, "hours_per_model_epoch": total / 3600, "peak_rss_bytes": peak,
        })


if __name__ == "__main__":
    main()
