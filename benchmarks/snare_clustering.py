"""SNARE-seq clustering scorecard over seeds, against simple baselines computed here.

    python benchmarks/snare_clustering.py --data ../shared/data/snare_mouse_cortex.h5mu \\
        --config configs/snare.yaml --seeds 0 1 2 --out runs/snare_seeds

Trains ``cavachon-like train CONFIG`` once per seed (or reuses ``OUT/seed<N>/result.h5mu``), then
scores each run's own clusters and latents with the measures of ``../shared/tools/snare_scorecard.py``
(clusters holding >= 1% of cells, the largest cluster's share of the cells, NMI and mean best-match
F1 of the clusters against ``cell_type``, Astro and Pvalb best-match F1, 20-NN ``cell_type``
agreement). Baselines on the same QC'd cells:
PCA (20 components) of log-normalised RNA, a 41-component diagonal GMM on it (PCA+GMM), and an LSI
(TF-IDF, 20 components after the first, rows L2-normalised) of ATAC. Prints mean and SD over seeds.

``--n-cells N`` checks the defaults on small data: each seed trains on its own random N cells of
the file (written to ``OUT/seed<N>/cells.h5mu`` before QC, so QC sees only those cells, as it
would for a user with N cells), with the same config.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import mudata as md
import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.metrics import normalized_mutual_info_score
from sklearn.mixture import GaussianMixture

from cavachon_like.analysis import knn_agreement


def best_f1(clusters: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """For each label, the F1 of the cluster that matches it best."""
    out = {}
    for label in np.unique(labels):
        is_label = labels == label
        best = 0.0
        for cluster in np.unique(clusters[is_label]):
            in_cluster = clusters == cluster
            tp = (in_cluster & is_label).sum()
            precision, recall = tp / in_cluster.sum(), tp / is_label.sum()
            best = max(best, 2 * precision * recall / (precision + recall))
        out[label] = best
    return out


def cluster_scores(clusters: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    clusters = np.asarray(clusters).astype(str)
    counts = np.unique(clusters, return_counts=True)[1]
    f1 = best_f1(clusters, labels)
    return {"clusters>=1%": int((counts >= 0.01 * len(clusters)).sum()),
            "largest cluster": counts.max() / len(clusters),
            "NMI": normalized_mutual_info_score(labels, clusters), "mean F1": float(np.mean(list(f1.values()))),
            "Astro F1": f1.get("Astro", 0.0), "Pvalb F1": f1.get("Pvalb", 0.0)}


def lsi(atac: sp.csr_matrix, dims: int, seed: int) -> np.ndarray:
    binary = (atac > 0).astype(np.float32)
    tf_ = sp.diags(1.0 / np.maximum(binary.sum(1).A1, 1)) @ binary
    x = tf_ @ sp.diags(binary.shape[0] / np.maximum(binary.sum(0).A1, 1))
    x.data = np.log1p(x.data * 1e4)
    z = TruncatedSVD(dims + 1, random_state=seed).fit_transform(x)[:, 1:]  # the first tracks depth
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def obs_column(data: md.MuData, key: str) -> np.ndarray:
    if key in data.obs:
        return data.obs[key].astype(str).to_numpy()
    return next(m.obs[key] for m in data.mod.values() if key in m.obs).astype(str).to_numpy()


def obsm(data: md.MuData, key: str) -> np.ndarray:
    if key in data.obsm:
        return np.asarray(data.obsm[key])
    return np.asarray(next(m.obsm[key] for m in data.mod.values() if key in m.obsm))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", default="configs/snare.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/snare_seeds")
    parser.add_argument("--label", default="cell_type")
    parser.add_argument("--n-cells", type=int, default=None,
                        help="train each seed on a random subset of this many cells (default: all)")
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {}
    full = None  # the whole file, read once if subsets are drawn from it
    for seed in args.seeds:
        run = Path(args.out) / f"seed{seed}"
        if not (run / "result.h5mu").exists():
            source = args.data
            if args.n_cells is not None:
                source = str(run / "cells.h5mu")
                run.mkdir(parents=True, exist_ok=True)
                full = md.read_h5mu(args.data) if full is None else full
                cells = np.sort(np.random.default_rng(seed).choice(full.n_obs, args.n_cells, replace=False))
                full[cells].copy().write_h5mu(source)
            subprocess.run([sys.executable, "-m", "cavachon_like.cli", "train", args.config, "--data", source,
                            "--out", str(run), "--seed", str(seed)], check=True)
        data = md.read_h5mu(run / "result.h5mu")
        labels = obs_column(data, args.label)
        z_atac, z_rna = obsm(data, "z_atac"), obsm(data, "z_rna")
        model = {f"atac {k}": v for k, v in cluster_scores(obs_column(data, "cluster_atac"), labels).items()}
        model.update(cluster_scores(obs_column(data, "cluster_rna"), labels))
        model["20-NN z_atac"] = knn_agreement(z_atac, labels, k=20)
        model["20-NN z_rna"] = knn_agreement(z_rna, labels, k=20)
        model["20-NN [z_atac,z_rna]"] = knn_agreement(np.hstack([z_atac, z_rna]), labels, k=20)
        model["train s"] = float(json.loads(data.uns["cavachon_like"]["run"])["train_seconds"])
        rows.setdefault("cavachon_like", []).append(model)
        # Baselines on the same cells (the run's QC'd data).
        rna = data.mod["rna"].X.tocsr().astype(np.float32)
        norm = sp.diags(1e4 / np.maximum(rna.sum(1).A1, 1)) @ rna
        norm.data = np.log1p(norm.data)
        pcs = PCA(20, random_state=seed).fit_transform(norm.toarray())
        gmm = GaussianMixture(41, covariance_type="diag", random_state=seed).fit(pcs).predict(pcs)
        base = cluster_scores(gmm, labels)
        base["20-NN z_rna"] = knn_agreement(pcs, labels, k=20)
        base["20-NN z_atac"] = knn_agreement(lsi(data.mod["atac"].X.tocsr(), 20, seed), labels, k=20)
        rows.setdefault("PCA / PCA+GMM / LSI", []).append(base)
    for name, runs in rows.items():
        print(f"\n{name} (seeds {args.seeds})")
        for key in runs[0]:
            values = np.array([r[key] for r in runs], dtype=float)
            print(f"  {key:24s} {values.mean():8.3f} +- {values.std():.3f}   [{', '.join(f'{v:.3f}' for v in values)}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
