"""ConvNet-VAE against the fully connected VAE on SNARE-seq genomic bins (paper 004; issue 12 targets).

    python benchmarks/snare_convnet.py --data ../shared/data/snare_mouse_cortex.h5mu --seeds 0 1 \\
        [--epochs 60] [--n-samples 50] [--json convnet.json]

Per seed, on the same cells, bins and train/validation split (the model's own, ``validation_split``
of the config), trains in one process, one after the other:

- ``conv``: ``configs/convnet.yaml`` (ATAC and RNA as two channels over 10 kb bins, Conv1D K11/S11);
- ``fc``: ``configs/convnet_fc.yaml`` (the same data through dense layers of 128 units);
- ``conv shuffled``: ``configs/convnet.yaml`` on the bins in a random order (the same permutation
  for both channels; the chromosome layout, hence the padding and the parameter count, unchanged).
  Paper 004's control: if the convolutions use genomic locality, destroying it costs likelihood.

``--kernel-size`` sets the Conv1D models' kernel (= stride) for a kernel-size sweep as paper 004's
(its Supplementary Fig. S10: the shuffle costs more likelihood at larger kernels). The script
reports for each: trainable parameters, training seconds and epochs (early stopping on the
validation loss), the importance-sampled marginal log-likelihood ``log p(x)`` of the validation
cells (``model.marginal_log_likelihood``, ``--n-samples`` draws; per cell, both channels), and the
20-NN ``cell_type`` agreement of the latent (all cells, and the validation cells among
themselves). Baseline in the same run: an LSI (TF-IDF, 20 components after the first) of the binned
ATAC. Everything goes through the public model interface. Training times are wall seconds on
whatever else the machine runs; compare the rows of one run.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np
from snare_prediction import lsi

from cavachon_like import MultiModality
from cavachon_like.analysis import knn_agreement
from cavachon_like.config.runner import build_model, load_data
from cavachon_like.config.schema import load_config
from cavachon_like.data import shuffle_bins
from cavachon_like.seed import set_seed

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
COORDINATES = ["chrom", "start", "end"]


def run(config: dict, data: MultiModality, label: str, n_samples: int) -> dict[str, float]:
    set_seed(config["seed"])
    model = build_model(config, data)
    training = config["training"]
    stopping = keras.callbacks.EarlyStopping(monitor="val_loss", restore_best_weights=True,
                                             **{"patience": 10, **(training["early_stopping"] or {})})
    started = time.perf_counter()
    history = model.fit(data, epochs=training["epochs"], batch_size=training["batch_size"],
                        validation_split=training["validation_split"], callbacks=[stopping], verbose=0)
    seconds = time.perf_counter() - started
    _, held_out = data.split(training["validation_split"], seed=model.seed or 0)  # fit's split
    labels = data.obs[label].astype(str).to_numpy()
    latent = np.concatenate(list(model.get_latent_representation(data).values()), axis=1)
    log_px = model.marginal_log_likelihood(data, n_samples=n_samples, indices=held_out)
    return {
        "parameters": model.count_params(),
        "seconds": seconds,
        "epochs": len(history.history["loss"]),
        "log_px": float(np.mean(log_px)),
        "knn": knn_agreement(latent, labels),
        "knn_held_out": knn_agreement(latent[held_out], labels[held_out]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="override the configs' training.epochs")
    parser.add_argument("--n-samples", type=int, default=50)
    parser.add_argument("--label", default="cell_type")
    parser.add_argument("--n-cells", type=int, default=None, help="a random subset of the cells (quick checks)")
    parser.add_argument("--json", default=None, help="also write the per-seed numbers here")
    parser.add_argument("--kernel-size", type=int, default=None,
                        help="kernel = stride of the Conv1D models (configs/convnet.yaml: 11; paper 004 also 31 and 51)")
    parser.add_argument("--variants", nargs="+", default=["conv", "fc", "conv shuffled"],
                        choices=["conv", "fc", "conv shuffled"], help="train only these (e.g. in parallel runs)")
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in args.variants}
    baseline = []
    for seed in args.seeds:
        overrides = {"data.path": args.data, "seed": seed}
        if args.epochs:
            overrides["training.epochs"] = args.epochs
        conv = load_config(CONFIGS / "convnet.yaml", overrides)
        if args.kernel_size:
            for component in conv["model"]["components"]:
                for module in ("encoder", "decoder"):
                    component[module]["kernel_size"] = args.kernel_size
        fc = load_config(CONFIGS / "convnet_fc.yaml", overrides)
        if conv["data"] != fc["data"] or conv["training"] != fc["training"]:
            raise SystemExit("configs/convnet.yaml and configs/convnet_fc.yaml must share their data and training "
                             "sections: the comparison is on the same cells and bins.")
        data = load_data(conv["data"], seed=seed)
        if args.n_cells:
            data = data.subset(np.sort(np.random.default_rng(seed).permutation(data.n_obs)[:args.n_cells]))
        if not baseline:
            labels = data.obs[args.label].astype(str).to_numpy()
            baseline.append(knn_agreement(lsi(data.modality("atac").X), labels))
            print(f"{data.n_obs} cells, {data.modality('atac').n_vars} bins x {len(data.mod)} channels; "
                  f"LSI of binned ATAC 20-NN {baseline[0]:.3f}", flush=True)
        for name, runs in rows.items():
            cells = shuffle_bins(data, seed) if name == "conv shuffled" else data
            row = run(fc if name == "fc" else conv, cells, args.label, args.n_samples)
            runs.append(row)
            print(f"seed {seed} {name}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"seeds": args.seeds, "lsi_knn": baseline, "runs": rows}, indent=1))
    print(f"\nmean over seeds {args.seeds}")
    print(f"{'model':<14} {'parameters':>11} {'seconds':>8} {'epochs':>6} {'log p(x)':>10} {'20-NN':>6} {'held-out':>8}")
    for name, runs in rows.items():
        mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        print(f"{name:<14} {mean['parameters']:>11,.0f} {mean['seconds']:>8.0f} {mean['epochs']:>6.1f} "
              f"{mean['log_px']:>10.1f} {mean['knn']:>6.3f} {mean['knn_held_out']:>8.3f}")
    if set(rows) != {"conv", "fc", "conv shuffled"}:
        return
    conv_mean = {k: np.mean([r[k] for r in rows["conv"]]) for k in ("parameters", "log_px", "knn")}
    fc_mean = {k: np.mean([r[k] for r in rows["fc"]]) for k in ("parameters", "log_px", "knn")}
    shuffled = np.mean([r["log_px"] for r in rows["conv shuffled"]])
    print(f"conv / fc parameters {conv_mean['parameters'] / fc_mean['parameters']:.2f} (target <= 0.70); "
          f"log p(x) conv - fc {conv_mean['log_px'] - fc_mean['log_px']:+.1f} nats "
          f"({(conv_mean['log_px'] - fc_mean['log_px']) / abs(fc_mean['log_px']):+.2%}, target >= -2%); "
          f"20-NN conv - fc {conv_mean['knn'] - fc_mean['knn']:+.3f} (target >= 0); "
          f"shuffled - conv log p(x) {shuffled - conv_mean['log_px']:+.1f} nats (expected < 0)")


if __name__ == "__main__":
    main()
