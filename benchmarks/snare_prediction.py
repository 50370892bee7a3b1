"""RNA predicted from ATAC on SNARE-seq's held-out cells, against simple baselines computed here.

    python benchmarks/snare_prediction.py RUN_DIR [RUN_DIR ...]

For each training run (a folder written by ``cavachon-like train`` with ``configs/snare.yaml``,
``configs/scmm.yaml``, ...), takes the cells the run held out for validation (its
``validation_split`` and seed: never in a gradient step), predicts their RNA from their ATAC alone
with ``model.predict_modality`` (the public interface) and scores it against the observed RNA
(log1p of counts per 10,000). Three predictions: log1p of the decoded mean, and the expected
log-normalised value (``log1p=True``) of counts drawn at the training cells' median RNA depth or
at the RNA depth each cell's ATAC total implies (the model's default; the log-linear fit is
refitted here on the training cells), which is what the baselines below (averages of
log-normalised cells) estimate:

- ``gene r``: median over genes of the correlation across held-out cells;
- ``cell r``: median over held-out cells of the correlation across genes;
- ``type r``: correlation of the cell-type mean profiles (genes centred), i.e. whether the
  prediction places cell types where the data have them.

Baselines on the same cells: the RNA averaged over each held-out cell's 20 nearest training cells
in an ATAC LSI (TF-IDF, 20 SVD components after the first), the average training cell, and the
model's own reconstruction from the RNA (``get_normalized_expression``, an upper reference that
sees the RNA). A ceiling for predictions that know a cell's type and nothing finer: the average
training cell of the held-out cell's true type (it reads the labels, which no model sees). And
a noise ceiling: the scores the model's own prediction would get if the held-out cells' counts
were Poisson draws from it at their true RNA totals, i.e. what counting noise alone costs a
perfect prediction of this shape (optimistic: real counts vary more than Poisson).
"""
from __future__ import annotations

import argparse

import numpy as np
import scipy.sparse as sp
import tensorflow as tf
from sklearn.decomposition import TruncatedSVD
from sklearn.neighbors import NearestNeighbors

from cavachon_like import MultiModality
from cavachon_like.analysis.prediction import gene_correlations
from cavachon_like.analysis.report import load_run
from cavachon_like.data.depth import library_size_fits, predicted_library_size
from cavachon_like.distributions import Poisson


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


def implied_depths(data: MultiModality, train_idx: np.ndarray, atac_only: MultiModality) -> np.ndarray:
    """Each of ``atac_only``'s cells' RNA total as its ATAC total implies (the model's default
    depth), from a log-linear fit to the training cells only: the model's own fit, made at
    ``from_data``, also saw the held-out cells' RNA."""
    training = data.subset(train_idx)
    implied = predicted_library_size(atac_only, library_size_fits(training, ["atac", "rna"])["rna"])
    median = float(np.median(np.asarray(training.mod["rna"].X.sum(1)).ravel()))
    return np.where(np.isfinite(implied), implied, median)


def noise_ceiling(mean: np.ndarray, depth: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, float]:
    """The scores if the cells' counts *were* Poisson draws from ``mean`` (per 10,000) at their
    RNA totals ``depth``, against the exact expectation: what counting noise alone leaves of a
    perfect prediction shaped like this one. Optimistic, as real counts are overdispersed."""
    depth = np.asarray(depth, np.float64)
    counts = np.random.default_rng(seed).poisson(mean * depth[:, None] / 1e4).astype(np.float64)
    drawn = np.log1p(1e4 * counts / np.maximum(counts.sum(1, keepdims=True), 1.0))
    # the package's Poisson: rate softmax(logits) * depth, i.e. mean * depth / 1e4 (the mean sums to 1e4)
    logits = tf.constant(np.log(np.maximum(mean, 1e-30)), tf.float32)
    return scores(Poisson().expected_log1p({"logits": logits}, depth), drawn, labels)


def scores(predicted_log: np.ndarray, observed_log: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    gene_r = gene_correlations(np.expm1(predicted_log), np.expm1(observed_log), library_size=1e4)
    a, b = predicted_log - predicted_log.mean(1, keepdims=True), observed_log - observed_log.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        cell_r = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
    types = np.unique(labels)
    a = np.stack([predicted_log[labels == t].mean(0) for t in types])
    b = np.stack([observed_log[labels == t].mean(0) for t in types])
    type_r = np.corrcoef((a - a.mean(0)).ravel(), (b - b.mean(0)).ravel())[0, 1]
    return {"gene r": float(np.nanmedian(gene_r)), "cell r": float(np.nanmedian(cell_r)), "type r": float(type_r)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--label", default="cell_type")
    parser.add_argument("--n-samples", type=int, default=25)
    parser.add_argument("--validation-split", type=float, default=0.1,
                        help="validation split of runs whose config is not recorded (default 0.1)")
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {}
    for run_dir in args.runs:
        model, data, config = load_run(run_dir)
        fraction = config.get("training", {}).get("validation_split", args.validation_split)
        train_idx, held_out = data.split(fraction, seed=model.seed or 0)  # the run's own split (fit_model's)
        labels = data.obs[args.label].astype(str).to_numpy()[held_out]
        observed = log_normalised(data.mod["rna"].X)
        training_depth = float(np.median(np.asarray(data.mod["rna"].X[train_idx].sum(1)).ravel()))
        test = data.subset(held_out)
        atac_only = MultiModality({"atac": test.mod["atac"]})
        predicted = model.predict_modality(atac_only, "rna", transform_batch="all", n_samples=args.n_samples)
        rows.setdefault("cavachon_like from ATAC, log1p of the mean", []).append(
            scores(np.log1p(predicted), observed[held_out], labels))
        expected = model.predict_modality(atac_only, "rna", transform_batch="all", n_samples=args.n_samples,
                                          log1p=True, depth=training_depth)
        rows.setdefault("cavachon_like from ATAC, expected log1p at the median depth", []).append(
            scores(expected, observed[held_out], labels))
        expected = model.predict_modality(atac_only, "rna", transform_batch="all", n_samples=args.n_samples,
                                          log1p=True, depth=implied_depths(data, train_idx, atac_only))
        rows.setdefault("cavachon_like from ATAC, expected log1p at the depth ATAC implies", []).append(
            scores(expected, observed[held_out], labels))
        rows.setdefault("noise ceiling: Poisson draws from the model's mean at the true RNA totals", []).append(
            noise_ceiling(predicted, np.asarray(test.mod["rna"].X.sum(1)).ravel(), labels))
        reconstructed = model.get_normalized_expression(test, "rna", transform_batch="all")
        rows.setdefault("reconstruction from RNA (reference)", []).append(
            scores(np.log1p(reconstructed), observed[held_out], labels))
        training = observed[train_idx]
        space = lsi(data.mod["atac"].X)
        neighbours = NearestNeighbors(n_neighbors=20).fit(space[train_idx]).kneighbors(space[held_out],
                                                                                      return_distance=False)
        knn = training[neighbours].mean(1)
        rows.setdefault("20-NN training cells in ATAC LSI", []).append(scores(knn, observed[held_out], labels))
        mean_cell = training.mean(0)
        average = np.tile(mean_cell, (len(held_out), 1))
        rows.setdefault("average training cell", []).append(scores(average, observed[held_out], labels))
        train_labels = data.obs[args.label].astype(str).to_numpy()[train_idx]
        type_means = {t: training[train_labels == t].mean(0) for t in np.unique(train_labels)}
        oracle = np.stack([type_means.get(t, mean_cell) for t in labels])
        rows.setdefault("true type's average (reads labels)", []).append(scores(oracle, observed[held_out], labels))
        print(f"{run_dir}: {len(held_out)} held-out cells", flush=True)
    for name, values in rows.items():
        summary = ", ".join(f"{k} {np.mean([v[k] for v in values]):.3f} [{', '.join(f'{v[k]:.3f}' for v in values)}]"
                            for k in values[0])
        print(f"{name:38s} {summary}")


if __name__ == "__main__":
    main()
