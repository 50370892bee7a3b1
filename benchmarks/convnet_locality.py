"""Paper 004's shuffle control: does a Conv1D VAE use the genomic order of its bins?

    python benchmarks/convnet_locality.py [--seeds 0 1 2] [--kernels 11 31 51] [--n-cells 2000]
        [--epochs 30] [--n-samples 20] [--data ../shared/data/snare_mouse_cortex.h5mu] [--json out.json]

Per seed, simulates histone-mark data with the package's simulator (``simulate_binned``: H3K27ac
and H3K27me3 as two channels over the same 2,000 bins, 8 cell types whose domains of 5-50
contiguous bins switch on and off), then, for every kernel size (= stride, paper 004's group 1),
trains ``configs/convnet.yaml``'s model twice on the same cells and split: on the bins in genome
order, and on the bins in one random order (``cavachon_like.data.shuffle_bins``: the same permutation
for both channels, coordinates and chromosome padding unchanged, so the two models have the same
parameters). It prints the importance-sampled ``log p(x)`` of the validation cells and the 20-NN
``cell_type`` agreement of their latent, and the shuffled-minus-ordered difference per seed.
Paper 004 (Sec. 3, Supplementary Fig. S10) reports that shuffling costs likelihood and ARI, more
so at larger kernels.

It also prints a **locality statistic** of each data set: the mean over bin pairs of the Pearson
correlation across cells of ``log1p`` counts, for pairs of adjacent bins (same chromosome,
consecutive positions) against random pairs. With ``--data`` the statistic is computed for
SNARE-seq's binned ATAC and RNA as ``configs/convnet.yaml`` bins them, to say whether that data
has local structure for a convolution to use (train on it with ``snare_convnet.py
--kernel-size``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from snare_convnet import CONFIGS, run

from cavachon_like import MultiModality
from cavachon_like.config.runner import load_data
from cavachon_like.config.schema import load_config
from cavachon_like.data import shuffle_bins, simulate_binned

CHANNELS = ("h3k27ac", "h3k27me3")


def locality(x: sp.spmatrix, chrom: np.ndarray, start: np.ndarray, n_pairs: int = 4000,
             seed: int = 0) -> tuple[float, float]:
    """Mean Pearson r across cells of ``log1p(x)`` for adjacent bin pairs and for random pairs
    (``n_pairs`` each; bins with no counts are left out). Reads only the chosen columns, sparse."""
    rng = np.random.default_rng(seed)
    x = sp.csc_matrix(x, dtype=np.float64)
    counted = np.flatnonzero(np.diff(x.indptr) > 0)
    order = counted[np.lexsort((start[counted], chrom[counted]))]
    step = np.diff(start[order])
    adjacent = np.flatnonzero((chrom[order][1:] == chrom[order][:-1]) & (step == np.median(step[step > 0])))
    left = order[rng.choice(adjacent, min(n_pairs, len(adjacent)), replace=False)]
    pairs = {"adjacent": (left, order[np.searchsorted(order, left) + 1]),
             "random": (rng.choice(counted, n_pairs), rng.choice(counted, n_pairs))}

    def mean_r(a: np.ndarray, b: np.ndarray) -> float:
        u, v = x[:, a].log1p(), x[:, b].log1p()  # log1p(0) = 0 keeps them sparse

        def moment(p: sp.spmatrix, q: sp.spmatrix) -> np.ndarray:
            return np.asarray(p.multiply(q).mean(0)).ravel()

        mu, mv = np.asarray(u.mean(0)).ravel(), np.asarray(v.mean(0)).ravel()
        covariance = moment(u, v) - mu * mv
        return float(np.nanmean(covariance / np.sqrt((moment(u, u) - mu**2) * (moment(v, v) - mv**2))))

    return mean_r(*pairs["adjacent"]), mean_r(*pairs["random"])


def data_locality(data: MultiModality, name: str) -> None:
    for modality in data.mod:
        adata = data.modality(modality)
        chrom, start = adata.var["chrom"].astype(str).to_numpy(), adata.var["start"].to_numpy()
        near, far = locality(adata.X, chrom, start)
        print(f"locality {name} {modality}: adjacent bins r {near:.4f}, random pairs r {far:.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kernels", type=int, nargs="+", default=[11, 31, 51])
    parser.add_argument("--n-cells", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--n-samples", type=int, default=20)
    parser.add_argument("--data", default=None, help="SNARE-seq .h5mu: also print its bins' locality statistic")
    parser.add_argument("--json", default=None, help="also write the per-seed numbers here")
    args = parser.parse_args()
    if args.data:
        data_locality(load_data(load_config(CONFIGS / "convnet.yaml", {"data.path": args.data})["data"]), "SNARE-seq")
    rows: dict[str, list[dict[str, float]]] = {}
    for seed in args.seeds:
        data = simulate_binned(n_cells=args.n_cells, channels=CHANNELS, n_cell_types=8, seed=seed)
        if seed == args.seeds[0]:
            data_locality(data, "simulated")
        shuffled = shuffle_bins(data, seed)
        for kernel in args.kernels:
            config = load_config(CONFIGS / "convnet.yaml", {"seed": seed, "training.epochs": args.epochs})
            component = config["model"]["components"][0]
            component["modalities"] = list(CHANNELS)
            for module in ("encoder", "decoder"):
                component[module]["kernel_size"] = kernel
            for order, cells in (("ordered", data), ("shuffled", shuffled)):
                row = run(config, cells, "cell_type", args.n_samples)
                rows.setdefault(f"K{kernel} {order}", []).append(row)
                print(f"seed {seed} K{kernel} {order}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()),
                      flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"seeds": args.seeds, "runs": rows}, indent=1))
    print(f"\nshuffled - ordered, per seed {args.seeds} (validation cells)")
    print(f"{'kernel':<7} {'parameters':>10} {'log p(x) ordered':>17} {'log p(x) diff':>28} {'20-NN diff':>28}")
    for kernel in args.kernels:
        ordered, shuffled_rows = rows[f"K{kernel} ordered"], rows[f"K{kernel} shuffled"]
        diff = {key: [s[key] - o[key] for o, s in zip(ordered, shuffled_rows)] for key in ("log_px", "knn_held_out")}
        print(f"K{kernel:<6} {ordered[0]['parameters']:>10,.0f} {np.mean([o['log_px'] for o in ordered]):>17.1f} "
              f"{' / '.join(f'{d:+.1f}' for d in diff['log_px']):>28} "
              f"{' / '.join(f'{d:+.3f}' for d in diff['knn_held_out']):>28}")


if __name__ == "__main__":
    main()
