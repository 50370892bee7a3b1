"""What the ATAC -> RNA hierarchy does to z_rna's cell-type neighbourhoods on SNARE-seq.

    python benchmarks/snare_rna_only.py --data ../shared/data/snare_mouse_cortex.h5mu --seeds 0 1 2

Per seed, on the cells of ``configs/snare.yaml`` (its QC, split and training settings), trains

- ``hierarchy``: ``configs/snare.yaml`` as shipped (ATAC first, then RNA conditioned on ATAC's
  ``z_hat``), and
- ``rna only``: the same RNA component (same encoder, decoder, mixture prior, pre-training, EM,
  likelihood, epochs, early stopping) with no parent,

and prints the 20-NN ``cell_type`` agreement of ``z_rna`` (and of ``z_atac`` and
``[z_atac, z_rna]`` for the hierarchy, and of the hierarchy's ``z_atac`` beside the RNA-only
``z_rna``). In the hierarchy the RNA decoder also reads ATAC's latent,
so ``z_rna`` only has to hold what chromatin leaves unexplained: the paper's multi-facet design.
Baselines on the same cells, for the ceiling of a 20-dimensional RNA embedding by this measure:
PCA of log-normalised RNA (``log1p(1e4 x / library)``), the same with every gene scaled to unit
variance (clipped at 10, scanpy's ``scale``), and PCA of analytic Pearson residuals (theta 100),
each with 10, 20, 30 and 50 components; and a two-modality one: the 20-component scaled PCA, rows
unit-normalised, beside an ATAC LSI (``snare_prediction.lsi``) weighted 0.25, 0.5 or 1.
``--baselines-only`` prints the baselines without training.
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA
from snare_prediction import log_normalised, lsi

from cavachon_like.analysis import knn_agreement
from cavachon_like.config.runner import build_model, load_data, training_callbacks
from cavachon_like.config.schema import load_config
from cavachon_like.seed import set_seed

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "snare.yaml"


def rna_only(config: dict) -> dict:
    """``config`` with only its RNA component, parents removed, everything else as it was."""
    config = copy.deepcopy(config)
    rna = next(c for c in config["model"]["components"] if c["name"] == "rna")
    config["model"]["components"] = [{k: v for k, v in rna.items() if k not in ("parents", "conditioned_on")}]
    return config


def train(config: dict, data) -> tuple[dict[str, np.ndarray], float]:
    set_seed(config["seed"])
    model = build_model(config, data)
    training = config["training"]
    started = time.perf_counter()
    model.fit(data, epochs=training["epochs"], batch_size=training["batch_size"],
              validation_split=training["validation_split"], callbacks=training_callbacks(config, Path(".")),
              verbose=0)
    return model.get_latent_representation(data), time.perf_counter() - started


def baselines(counts: sp.spmatrix, atac: sp.spmatrix, labels: np.ndarray, seed: int) -> None:
    counts = sp.csr_matrix(counts, dtype=np.float64)
    library = np.asarray(counts.sum(1)).ravel()
    dense = log_normalised(counts)  # dense for PCA: SNARE-seq's 10 k cells x 1.7 k genes, baselines only
    sd = dense.std(0)
    scaled = np.clip((dense - dense.mean(0)) / np.where(sd > 0, sd, 1.0), -10, 10)
    expected = np.outer(library, np.asarray(counts.sum(0)).ravel() / counts.sum())
    residuals = (counts.toarray() - expected) / np.sqrt(expected + expected**2 / 100)
    bound = np.sqrt(counts.shape[0])
    residuals = np.clip(residuals, -bound, bound)
    for name, x in (("PCA", dense), ("scaled PCA", scaled), ("Pearson-residual PCA", residuals)):
        scores = [knn_agreement(PCA(n, random_state=seed).fit_transform(x), labels) for n in (10, 20, 30, 50)]
        print(f"{name:<22} 20-NN with 10 / 20 / 30 / 50 components: " + " / ".join(f"{s:.3f}" for s in scores),
              flush=True)
    rna = PCA(20, random_state=seed).fit_transform(scaled)
    rna /= np.linalg.norm(rna, axis=1, keepdims=True)
    chromatin = lsi(atac, seed=seed)
    joint = [knn_agreement(np.hstack([rna, w * chromatin]), labels) for w in (0.25, 0.5, 1.0)]
    print("scaled PCA (unit rows) + w * ATAC LSI, w = 0.25 / 0.5 / 1: " + " / ".join(f"{s:.3f}" for s in joint),
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--label", default="cell_type")
    parser.add_argument("--baselines-only", action="store_true")
    args = parser.parse_args()
    rows: dict[str, list[float]] = {}
    for seed in args.seeds:
        config = load_config(CONFIG, {"data.path": args.data, "seed": seed})
        data = load_data(config["data"], seed=seed)
        labels = data.obs[args.label].astype(str).to_numpy()
        if seed == args.seeds[0]:
            print(f"{data.n_obs} cells", flush=True)
            baselines(data.modality("rna").X, data.modality("atac").X, labels, seed)
            if args.baselines_only:
                return
        latents, seconds = train(config, data)
        scores = {"hierarchy z_rna": knn_agreement(latents["z_rna"], labels),
                  "hierarchy z_atac": knn_agreement(latents["z_atac"], labels),
                  "hierarchy [z_atac, z_rna]": knn_agreement(np.hstack([latents["z_atac"], latents["z_rna"]]),
                                                             labels)}
        alone, seconds_alone = train(rna_only(config), data)
        scores["rna only z_rna"] = knn_agreement(alone["z_rna"], labels)
        # Both latents without the hierarchy's trade: ATAC's own latent beside an RNA latent that
        # had no ATAC to lean on. What concatenation could reach if z_rna held all of RNA's part.
        scores["[z_atac, rna only z_rna]"] = knn_agreement(np.hstack([latents["z_atac"], alone["z_rna"]]), labels)
        for key, value in scores.items():
            rows.setdefault(key, []).append(value)
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
              + f" ({seconds:.0f} s and {seconds_alone:.0f} s of training)", flush=True)
    print(f"\n20-NN {args.label} agreement, mean (min-max) over seeds {args.seeds}")
    for key, values in rows.items():
        print(f"{key:<27} {np.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})")


if __name__ == "__main__":
    main()
