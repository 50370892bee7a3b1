"""Joint-posterior configurations side by side on SNARE-seq's held-out cells (issue 10 targets).

    python benchmarks/snare_posteriors.py RUN_DIR [RUN_DIR ...] [--n-samples 50]

For each training run (``configs/snare.yaml`` = the CAVACHON DAG with concatenated inputs per
component, ``configs/poe.yaml``, ``configs/scmm.yaml``, ...), on the cells the run held out for
validation (its own split), through the public model interface only:

- ``log p(x)``: the importance-sampled marginal log-likelihood per held-out cell
  (``model.marginal_log_likelihood``, ``--n-samples`` draws), mean and median; not defined for a
  quantised latent (``configs/cvqvae.yaml``), reported as n/a. Configurations
  with different likelihoods model the same counts differently (a Bernoulli models whether a
  region is open, a Poisson how many reads it has), so compare runs with the same likelihoods;
- ``20-NN``: the ``cell_type`` agreement of each cell's 20 nearest neighbours in the model's
  latents concatenated (all cells, as the clustering scorecard);
- RNA predicted from ATAC alone for the held-out cells (``gene r``, ``cell r``, ``type r`` as in
  ``benchmarks/snare_prediction.py``), as log1p of the decoded mean and as the expected
  log-normalised value at the RNA depth each cell's ATAC total implies (``log1p=True``), beside the
  20-NN-in-LSI baseline;
- on all cells, per latent: the mixture clusters' NMI and mean best-match F1 against the labels,
  and the 20-NN agreement of the library (``--batch``) beside what random mixing gives; the same
  for covariate representations (multiDGD's covariate model).
"""
from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import f1_score
from sklearn.neighbors import NearestNeighbors
from snare_prediction import implied_depths, log_normalised, lsi, scores

from cavachon_like import MultiModality
from cavachon_like.analysis import cluster_agreement, knn_agreement
from cavachon_like.analysis.report import load_run


def best_match_f1(clusters: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the labels of the best F1 any cluster reaches for it (the scorecard's mean best F1)."""
    best = []
    for label in np.unique(labels):
        truth = labels == label
        best.append(max(f1_score(truth, clusters == c) for c in np.unique(clusters[truth])))
    return float(np.mean(best))


def structure(latents: dict[str, np.ndarray], names: list[str], labels: np.ndarray, batch: np.ndarray) -> list[str]:
    """Per latent: its mixture clusters against the labels (NMI, mean best F1), and how much of the
    batch its neighbourhoods hold (20-NN batch agreement; random mixing gives the sum of the
    squared batch fractions); the same for covariate representations (``covariates_<c>``)."""
    fractions = np.unique(batch, return_counts=True)[1] / len(batch)
    out = [f"random batch mixing {np.sum(fractions ** 2):.3f}"]
    for name in names:
        z = latents[f"z_{name}"]
        text = f"z_{name}: 20-NN batch {knn_agreement(z, batch):.3f}"
        if f"cluster_probabilities_{name}" in latents:
            clusters = latents[f"cluster_probabilities_{name}"].argmax(1).astype(str)
            text += (f", clusters NMI {cluster_agreement(clusters, labels)['nmi']:.3f}, "
                     f"mean best F1 {best_match_f1(clusters, labels):.3f}")
        out.append(text)
        if f"covariates_{name}" in latents:
            covariates = latents[f"covariates_{name}"]
            out.append(f"covariates_{name}: 20-NN batch {knn_agreement(covariates, batch):.3f}, "
                       f"20-NN label {knn_agreement(covariates, labels):.3f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--label", default="cell_type")
    parser.add_argument("--batch", default="batch", help="obs column of the libraries (for the mixing line)")
    parser.add_argument("--n-samples", type=int, default=50)
    args = parser.parse_args()
    baseline = None
    for run_dir in args.runs:
        model, data, config = load_run(run_dir)
        fraction = config.get("training", {}).get("validation_split", 0.1)
        train_idx, held_out = data.split(fraction, seed=model.seed or 0)  # fit_model's split
        labels = data.obs[args.label].astype(str).to_numpy()
        latents = model.get_latent_representation(data)
        joint = np.concatenate([latents[f"z_{name}"] for name in model.latent_names], axis=1)
        try:
            log_px = model.marginal_log_likelihood(data, n_samples=args.n_samples, indices=held_out)
            density = f"log p(x) mean {log_px.mean():.1f} median {np.median(log_px):.1f}"
        except ValueError as error:  # a quantised latent (posterior: vq) has no density to weigh
            density = f"log p(x) n/a ({str(error).split(':')[0]})"
        observed = log_normalised(data.mod["rna"].X)
        atac_only = MultiModality({"atac": data.subset(held_out).mod["atac"]})
        predicted = model.predict_modality(atac_only, "rna", transform_batch="all")
        prediction = scores(np.log1p(predicted), observed[held_out], labels[held_out])
        depth = implied_depths(data, train_idx, atac_only)
        expected = scores(model.predict_modality(atac_only, "rna", transform_batch="all", log1p=True, depth=depth),
                          observed[held_out], labels[held_out])
        print(f"{run_dir}: {model.latent_names} on {len(held_out)} held-out cells: {density}; "
              f"20-NN {knn_agreement(joint, labels):.3f}; RNA from ATAC, log1p of the mean "
              + ", ".join(f"{k} {v:.3f}" for k, v in prediction.items())
              + "; expected log1p " + ", ".join(f"{k} {v:.3f}" for k, v in expected.items()), flush=True)
        print("   all cells: " + "; ".join(structure(latents, model.latent_names, labels,
                                                      data.obs[args.batch].astype(str).to_numpy())), flush=True)
        if baseline is None:
            space = lsi(data.mod["atac"].X)
            neighbours = NearestNeighbors(n_neighbors=20).fit(space[train_idx]).kneighbors(
                space[held_out], return_distance=False)
            baseline = scores(observed[train_idx][neighbours].mean(1), observed[held_out], labels[held_out])
    print("baseline, 20-NN training cells in ATAC LSI: " + ", ".join(f"{k} {v:.3f}" for k, v in baseline.items()))


if __name__ == "__main__":
    main()
