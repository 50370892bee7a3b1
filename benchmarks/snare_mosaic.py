"""Mosaic SNARE-seq (issue 10): RNA removed from a random fraction of the cells, against the paired run.

    python benchmarks/snare_mosaic.py prepare --data ../shared/data/snare_mouse_cortex.h5mu --out DIR [--fraction 0.5]
    cavachon-like train configs/scmm.yaml --data DIR/mosaic.h5mu --out DIR/mosaic_run
    cavachon-like train configs/scmm.yaml --data ../shared/data/snare_mouse_cortex.h5mu --out DIR/paired_run
    python benchmarks/snare_mosaic.py score DIR/paired_run DIR/mosaic_run --data ../shared/data/snare_mouse_cortex.h5mu

``prepare`` writes ``mosaic.h5mu``: the file's cells, with the RNA of a random ``--fraction`` of
them left out (``MultiModality(..., join="outer")`` marks them unmeasured). ``score`` prints,
through the public model interface only:

- the 20-NN ``cell_type`` agreement of the joint latent over all cells, for both runs (target:
  the mosaic run within 0.03 of the paired one), and separately over the cells with and without RNA;
- RNA predicted for the cells whose RNA was removed (from their ATAC, through the model),
  against their real RNA: median per-gene and per-cell Pearson r of log-normalised values and the
  per-type r (as ``benchmarks/snare_prediction.py``; log1p of the decoded mean, and the expected
  log-normalised value, ``log1p=True``, at the RNA depth each cell's ATAC total implies), beside the baseline that averages the
  log-normalised RNA of each cell's 20 nearest RNA-measured cells in an ATAC LSI space.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.neighbors import NearestNeighbors
from snare_prediction import log_normalised, lsi, scores

from cavachon_like import MultiModality, read_h5mu
from cavachon_like.analysis import knn_agreement
from cavachon_like.analysis.report import load_run
from cavachon_like.data.depth import library_size_fits, predicted_library_size


LIKELIHOODS = {"atac": "bernoulli", "rna": "nb"}


def prepare(data_path: str, out: str, fraction: float, seed: int) -> None:
    data = read_h5mu(data_path, likelihoods=LIKELIHOODS)  # the configs set their own when training
    rng = np.random.default_rng(seed)
    keep = rng.random(data.n_obs) >= fraction
    rna = data.mod["rna"][np.flatnonzero(keep)]
    mods = {name: (rna if name == "rna" else mod) for name, mod in data.mod.items()}
    mosaic = MultiModality(mods, join="outer")
    mosaic.obs = mosaic.obs.join(data.obs, how="left")  # the global labels, for scoring
    Path(out).mkdir(parents=True, exist_ok=True)
    mosaic.write_h5mu(Path(out) / "mosaic.h5mu")
    print(f"wrote {Path(out) / 'mosaic.h5mu'}: {data.n_obs} cells, RNA kept for {int(keep.sum())}")


def joint_latent(model, data) -> np.ndarray:
    latents = model.get_latent_representation(data)
    return np.concatenate([latents[f"z_{name}"] for name in model.latent_names], axis=1)


def score(paired_dir: str, mosaic_dir: str, data_path: str, label: str, n_samples: int) -> None:
    paired_model, paired, _ = load_run(paired_dir)
    model, mosaic, _ = load_run(mosaic_dir)
    labels = mosaic.obs[label].astype(str).to_numpy()
    has_rna = mosaic.mod["rna"].measured
    z = joint_latent(model, mosaic)
    print(f"mosaic run: {mosaic.n_obs} cells, {int(has_rna.sum())} with RNA; 20-NN all {knn_agreement(z, labels):.3f}, "
          f"with RNA {knn_agreement(z[has_rna], labels[has_rna]):.3f}, "
          f"ATAC only {knn_agreement(z[~has_rna], labels[~has_rna]):.3f}")
    common = paired.obs_names.intersection(mosaic.obs_names)
    zp = joint_latent(paired_model, paired)
    paired_labels = paired.obs[label].astype(str).to_numpy()
    same = paired.obs_names.get_indexer(mosaic.obs_names[~has_rna])
    same = same[same >= 0]
    print(f"paired run: {paired.n_obs} cells ({len(common)} shared with the mosaic run); 20-NN all "
          f"{knn_agreement(zp, paired_labels):.3f}; the mosaic run's ATAC-only cells "
          f"{knn_agreement(zp[same], paired_labels[same]):.3f}")

    # The truth: the removed RNA, on the genes and cells the mosaic run kept after QC.
    original = read_h5mu(data_path, likelihoods=LIKELIHOODS).mod["rna"]
    lacking = np.flatnonzero(~has_rna)
    rows = original.obs_names.get_indexer(mosaic.obs_names[lacking])
    columns = original.var_names.get_indexer(mosaic.mod["rna"].var_names)
    truth = original.X[rows][:, columns]
    kept = np.asarray(truth.sum(axis=1)).ravel() > 0  # log-normalising needs some counts
    observed = log_normalised(truth[kept])
    predicted = model.predict_modality(mosaic[lacking[kept]], "rna", n_samples=n_samples)
    result = scores(np.log1p(predicted), observed, labels[lacking[kept]])
    # The expected log-normalised value at the RNA depth each cell's ATAC total implies: the model's
    # default, a fit over the cells with RNA, refitted here for models saved before they recorded it.
    cells = mosaic[lacking[kept]]
    implied = predicted_library_size(cells, library_size_fits(mosaic, ["atac", "rna"])["rna"])
    expected = scores(model.predict_modality(cells, "rna", n_samples=n_samples, log1p=True, depth=implied),
                      observed, labels[lacking[kept]])
    space = lsi(mosaic.mod["atac"].X)
    measured = np.flatnonzero(has_rna)
    neighbours = NearestNeighbors(n_neighbors=20).fit(space[measured]).kneighbors(
        space[lacking[kept]], return_distance=False)
    reference = log_normalised(mosaic.mod["rna"].X[measured])
    baseline = scores(reference[neighbours].mean(axis=1), observed, labels[lacking[kept]])
    print(f"RNA of the {int(kept.sum())} RNA-less cells with counts: model, log1p of the mean "
          + ", ".join(f"{k} {v:.3f}" for k, v in result.items())
          + "; expected log1p " + ", ".join(f"{k} {v:.3f}" for k, v in expected.items())
          + "; LSI 20-NN baseline " + ", ".join(f"{k} {v:.3f}" for k, v in baseline.items()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("score")
    s.add_argument("paired")
    s.add_argument("mosaic")
    s.add_argument("--data", required=True)
    s.add_argument("--label", default="cell_type")
    s.add_argument("--n-samples", type=int, default=25)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.data, args.out, args.fraction, args.seed)
    else:
        score(args.paired, args.mosaic, args.data, args.label, args.n_samples)


if __name__ == "__main__":
    main()
