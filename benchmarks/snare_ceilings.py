"""How far SNARE-seq's ``cell_type`` labels can be read from each modality: supervised ceilings.

    python benchmarks/snare_ceilings.py --data ../shared/data/snare_mouse_cortex.h5mu [--full]

Several targets score an unsupervised latent by the labels: 20-NN ``cell_type`` agreement
(issues 8, 10, 11) and kNN label transfer to held-out libraries (issue 11). A classifier
*trained on the labels* bounds what such a latent can carry: when logistic regression, an MLP
and boosted trees all read a cell's type from its ATAC with 5-fold accuracy near 0.62, an
ATAC-only latent whose 20 neighbours share a cell's type 2 times in 3 is not to be expected.
This script prints, on the raw file (no model involved, every number from sklearn):

- per modality, the 5-fold cross-validated accuracy of classifiers on 50 components (PCA of
  log-normalised RNA, LSI of ATAC), and the unsupervised 20-NN agreement of the same spaces;
- for the query of issue 11 (libraries 09K and 09L against the other ten), label transfer by
  15-NN on a reference PCA and by classifiers trained on the reference, with per-type recall;
- how much of the shortfall one label explains: ``Mis`` (a catch-all of 1,119 cells) scored apart.

``--full`` adds the slower classifiers (boosted trees, logistic regression on all ATAC regions).
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import scipy.sparse as sp
from common import require_file
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from snare_prediction import log_normalised, lsi

from cavachon_like.analysis import knn_agreement
from cavachon_like.data import read_h5mu

LIKELIHOODS = {"atac": "bernoulli", "rna": "nb"}
QUERY = ["09K", "09L"]


def classifiers(full: bool, seed: int) -> dict[str, object]:
    found = {"logistic regression": LogisticRegression(max_iter=3000),
             "MLP 256-128": MLPClassifier((256, 128), alpha=1e-3, early_stopping=True, max_iter=300, random_state=seed),
             "20-NN vote": KNeighborsClassifier(20)}
    if full:
        found["boosted trees"] = HistGradientBoostingClassifier(random_state=seed)
    return found


def log_tfidf(atac: sp.spmatrix) -> sp.csr_matrix:
    """Every region, as the package's TF-IDF preprocessor gives it to an encoder."""
    binary = (sp.csr_matrix(atac) > 0).astype(np.float64)
    idf = binary.shape[0] / np.maximum(np.asarray(binary.sum(0)).ravel(), 1.0)
    out = sp.csr_matrix(sp.diags(1e4 / np.maximum(np.asarray(binary.sum(1)).ravel(), 1.0)) @ binary @ sp.diags(idf))
    out.data = np.log1p(out.data)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--label", default="cell_type")
    parser.add_argument("--batch", default="batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full", action="store_true", help="also boosted trees and all-region logistic regression")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    data = read_h5mu(require_file(args.data), likelihoods=LIKELIHOODS)
    labels = data.obs[args.label].astype(str).to_numpy()
    batch = data.obs[args.batch].astype(str).to_numpy()
    catch_all = labels == "Mis"
    rna = log_normalised(data.mod["rna"].X)
    spaces = {"RNA (PCA 50 of log-normalised)": PCA(50, random_state=args.seed).fit_transform(rna),
              "ATAC (LSI 50)": lsi(data.mod["atac"].X, 50, seed=args.seed)}
    folds = StratifiedKFold(5, shuffle=True, random_state=args.seed)
    print(f"{data.n_obs} cells, {len(np.unique(labels))} labels; 'Mis' holds {catch_all.sum()} cells "
          f"({catch_all.mean():.1%})")
    for name, space in spaces.items():
        print(f"\n{name}: unsupervised 20-NN agreement {knn_agreement(space, labels):.3f}")
        for clf_name, clf in classifiers(args.full, args.seed).items():
            start = time.perf_counter()
            right = cross_val_predict(clf, space, labels, cv=folds) == labels
            print(f"  {clf_name:22s} 5-fold accuracy {right.mean():.3f} (without Mis {right[~catch_all].mean():.3f}; "
                  f"Mis cells {right[catch_all].mean():.3f}) [{time.perf_counter() - start:.0f} s]", flush=True)
    if args.full:
        right = cross_val_predict(LogisticRegression(max_iter=500, C=0.003), log_tfidf(data.mod["atac"].X), labels,
                                  cv=folds) == labels
        print(f"  logistic regression on all {data.mod['atac'].n_vars} ATAC regions (log TF-IDF, C=0.003) "
              f"5-fold accuracy {right.mean():.3f} (without Mis {right[~catch_all].mean():.3f})", flush=True)

    query = np.isin(batch, QUERY)
    pca = PCA(50, random_state=args.seed).fit(rna[~query])
    reference, mapped = pca.transform(rna[~query]), pca.transform(rna[query])
    truth = labels[query]
    print(f"\nlabel transfer to libraries {QUERY} ({query.sum()} cells) from the other ten, RNA PCA fitted on them:")
    transfer = {"15-NN on PCA 20 (issue 11's baseline)": KNeighborsClassifier(15).fit(reference[:, :20], labels[~query])}
    for clf_name, clf in classifiers(args.full, args.seed).items():
        transfer[f"{clf_name} on PCA 50"] = clf.fit(reference, labels[~query])
    for clf_name, clf in transfer.items():
        predicted = clf.predict(mapped[:, :20] if "PCA 20" in clf_name else mapped)
        right = predicted == truth
        print(f"  {clf_name:38s} accuracy {right.mean():.3f} (without Mis {right[truth != 'Mis'].mean():.3f})")
        if clf_name.startswith("logistic"):
            recall = {t: f"{right[truth == t].mean():.2f}" for t in np.unique(truth)}
            print(f"    per-type recall: {recall}")


if __name__ == "__main__":
    main()
