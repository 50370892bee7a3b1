"""RNA predicted from ATAC on SNARE-seq, against simple baselines computed here.

    python benchmarks/snare_prediction.py RUN_DIR [RUN_DIR ...]

For each training run of ``configs/snare.yaml`` (a folder written by ``cavachon-like train``),
predicts every cell's RNA from its ATAC alone with ``model.predict_modality`` (the public
interface) and scores it against the observed RNA (log1p of counts per 10,000):

- ``gene r``: median over genes of the correlation across cells;
- ``type r``: correlation of the cell-type mean profiles (genes centred), i.e. whether the
  prediction places cell types where the data have them.

Baselines on the same cells: the RNA averaged over each cell's 20 nearest neighbours in an
ATAC LSI (itself excluded), the model's own reconstruction from the RNA
(``get_normalized_expression``, an upper reference that sees the RNA), and the average cell.
"""
from __future__ import annotations

import argparse

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.neighbors import NearestNeighbors

from cavachon_like import MultiModality
from cavachon_like.analysis.prediction import gene_correlations
from cavachon_like.analysis.report import load_run


def log_normalised(counts: sp.spmatrix) -> np.ndarray:
    counts = sp.csr_matrix(counts, dtype=np.float64)
    totals = np.maximum(np.asarray(counts.sum(1)).ravel(), 1.0)
    return np.log1p(np.asarray(sp.diags(1e4 / totals) @ counts.todense()))


def lsi(atac: sp.spmatrix, n_components: int = 20, seed: int = 0) -> np.ndarray:
    binary = (sp.csr_matrix(atac) > 0).astype(np.float64)
    idf = np.log1p(binary.shape[0] / (1.0 + np.asarray(binary.sum(0)).ravel()))
    tf = sp.diags(1.0 / np.maximum(np.asarray(binary.sum(1)).ravel(), 1.0)) @ binary
    scores = TruncatedSVD(n_components + 1, random_state=seed).fit_transform(tf @ sp.diags(idf))[:, 1:]
    return scores / np.maximum(np.linalg.norm(scores, axis=1, keepdims=True), 1e-12)


def scores(predicted_log: np.ndarray, observed_log: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    gene_r = gene_correlations(np.expm1(predicted_log), np.expm1(observed_log), library_size=1e4)
    types = np.unique(labels)
    a = np.stack([predicted_log[labels == t].mean(0) for t in types])
    b = np.stack([observed_log[labels == t].mean(0) for t in types])
    type_r = np.corrcoef((a - a.mean(0)).ravel(), (b - b.mean(0)).ravel())[0, 1]
    return {"gene r": float(np.nanmedian(gene_r)), "type r": float(type_r)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--label", default="cell_type")
    parser.add_argument("--n-samples", type=int, default=25)
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {}
    for run_dir in args.runs:
        model, data, _ = load_run(run_dir)
        labels = data.obs[args.label].astype(str).to_numpy()
        observed = log_normalised(data.mod["rna"].X)
        atac_only = MultiModality({"atac": data.mod["atac"]})
        predicted = model.predict_modality(atac_only, "rna", transform_batch="all", n_samples=args.n_samples)
        rows.setdefault("cavachon_like from ATAC", []).append(scores(np.log1p(predicted), observed, labels))
        reconstructed = model.get_normalized_expression(data, "rna", transform_batch="all")
        rows.setdefault("reconstruction from RNA (reference)", []).append(
            scores(np.log1p(reconstructed), observed, labels))
        neighbours = NearestNeighbors(n_neighbors=21).fit(lsi(data.mod["atac"].X)).kneighbors(return_distance=False)
        knn = observed[neighbours[:, :20]].mean(1)
        rows.setdefault("20-NN in ATAC LSI", []).append(scores(knn, observed, labels))
        print(f"{run_dir}: done", flush=True)
    for name, values in rows.items():
        summary = ", ".join(f"{k} {np.mean([v[k] for v in values]):.3f} [{', '.join(f'{v[k]:.3f}' for v in values)}]"
                            for k in values[0])
        print(f"{name:38s} {summary}")


if __name__ == "__main__":
    main()
