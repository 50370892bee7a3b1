"""Sampled zeros against exact training (issue 14: "measure speed and latent quality against exact
training").

    python benchmarks/sampled_zeros.py quality [--data SNARE.h5mu] [--epochs 20] [--seeds 0 1 2] [--fraction 0.1]
    python benchmarks/sampled_zeros.py speed --path BIG.h5mu [--steps 20] [--fraction 0.1]

``quality``: SNARE-seq ATAC after ``configs/snare.yaml``'s QC, one ATAC component (the snare
config's size, ``bernoulli`` likelihood: the one whose zeros can be sampled), trained per seed
exactly and with ``sampled_zeros: FRACTION``, same seed, same epochs, 10% of cells validating
(always with the exact likelihood). Prints per run: seconds per epoch (median), the final exact
validation loss, and the 20-NN ``cell_type`` agreement of ``z_atac``; beside them, computed in the
same script, the 20-NN agreement of an LSI (TF-IDF, 20 SVD components) of the same ATAC.

``speed``: the same component on an on-disk data set (e.g. ``benchmarks/ondisk_scale.py``'s
1,000,000 cells x 200,000 regions), ``--steps`` training steps each way, batch 256; prints the
median seconds per step after the first five.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import DEFAULT_DATA, SNARE_CONFIG  # noqa: E402
from tf_common import EpochTimer  # noqa: E402

from cavachon_like import CAVACHON  # noqa: E402
from cavachon_like.config import load_config  # noqa: E402


def atac_component(fraction: float | None) -> dict:
    """configs/snare.yaml's ATAC component with the bernoulli likelihood and ``sampled_zeros``."""
    config = load_config(SNARE_CONFIG)
    (atac,) = [copy.deepcopy(c) for c in config["model"]["components"] if c["name"] == "atac"]
    return {**atac, "sampled_zeros": fraction}


def quality(args: argparse.Namespace) -> None:
    from snare_prediction import lsi

    from cavachon_like.analysis import knn_agreement
    from cavachon_like.data import read_h5mu

    config = load_config(SNARE_CONFIG, {"data.path": str(args.data)})
    data = read_h5mu(args.data, likelihoods={"atac": "bernoulli", "rna": "zinb"}, batch_key="batch")
    data = data.apply_qc(config["data"]["qc"])
    atac_only = type(data)({"atac": data.mod["atac"]})
    labels = data.obs_column("cell_type").to_numpy()
    print(f"SNARE-seq ATAC after QC: {atac_only.n_obs} cells x {atac_only.mod['atac'].n_vars} regions; "
          f"{args.epochs} epochs, batch 256, validation 10%")
    print(f"LSI (20 components) 20-NN cell_type agreement: {knn_agreement(lsi(atac_only.mod['atac'].X), labels):.3f}")
    print("| seed | training | s/epoch | exact validation loss | 20-NN agreement of z_atac |")
    print("| --- | --- | ---: | ---: | ---: |")
    for seed in args.seeds:
        for fraction in (None, args.fraction):
            model = CAVACHON.from_data(atac_only, [atac_component(fraction)], seed=seed)
            model.compile(optimizer=keras.optimizers.Adam(1e-3))
            timer = EpochTimer()
            history = model.fit(atac_only, epochs=args.epochs, batch_size=256, validation_split=0.1,
                                callbacks=[timer], verbose=0).history
            z = model.get_latent_representation(atac_only)["z_atac"]
            name = "exact" if fraction is None else f"sampled_zeros {fraction}"
            print(f"| {seed} | {name} | {np.median([r['seconds'] for r in timer.records]):.2f} | {history['val_loss'][-1]:.1f} | "
                  f"{knn_agreement(z, labels):.3f} |", flush=True)


def speed(args: argparse.Namespace) -> None:
    from cavachon_like.data import read_h5mu

    data = read_h5mu(args.path, likelihoods={"atac": "bernoulli"})
    atac_only = type(data)({"atac": data.mod["atac"]})
    print(f"{atac_only.n_obs:,} cells x {atac_only.mod['atac'].n_vars:,} regions (on disk: {atac_only.on_disk}); "
          f"batch 256; median of steps 6..{args.steps}")
    for fraction in (None, args.fraction):
        model = CAVACHON.from_data(atac_only, [atac_component(fraction)], seed=0, pretrain_epochs=0,
                                   prior_em_iterations=0)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        timer = EpochTimer(stop_after=args.steps)
        model.fit(atac_only, epochs=1, batch_size=256, callbacks=[timer], verbose=0)
        name = "exact" if fraction is None else f"sampled_zeros {fraction}"
        steps = [t for r in timer.records for t in r["step_seconds"]][5:]
        print(f"{name}: {model.count_params():,} parameters, {np.median(steps):.3f} s/step", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--data", default=str(DEFAULT_DATA))
    q.add_argument("--epochs", type=int, default=20)
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    q.add_argument("--fraction", type=float, default=0.1)
    s = sub.add_parser("speed")
    s.add_argument("--path", required=True)
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--fraction", type=float, default=0.1)
    args = parser.parse_args()
    quality(args) if args.command == "quality" else speed(args)


if __name__ == "__main__":
    main()
