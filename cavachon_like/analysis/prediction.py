"""Cross-modal prediction of a training run's modality for new (or its own) cells, written to a file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd

from ..atomic import write_atomically
from ..data import MultiModality, read_h5mu
from .report import load_run

LAYER = "predicted"


def _features_of_run(data: MultiModality, run: MultiModality, modalities: list[str]) -> MultiModality:
    """``data`` restricted to the features the run trained on, in the run's order."""
    kept = {}
    for m, mod in data.mod.items():
        if m not in run.mod or m not in modalities:
            continue
        wanted = run.mod[m].var_names
        missing = wanted.difference(mod.var_names)
        if len(missing):
            raise ValueError(f"modality {m!r} of the data lacks {len(missing)} of the {len(wanted)} features the run "
                             f"trained on (e.g. {list(missing[:3])}); it needs the same features.")
        kept[m] = mod[:, wanted]
    return MultiModality(kept)


def gene_correlations(predicted: np.ndarray, observed: Any, library_size: float = 1e4,
                      log1p: bool = False) -> pd.Series:
    """Per feature, the Pearson correlation across cells of log1p predicted (or, with ``log1p``,
    the predicted values as they are: already log-normalised) and log1p library-normalised
    observed values (NaN for features constant in either)."""
    observed = observed.toarray() if hasattr(observed, "toarray") else np.asarray(observed)
    totals = np.maximum(observed.sum(1, keepdims=True), 1e-12)
    a = np.asarray(predicted, np.float64) if log1p else np.log1p(predicted)
    b = np.log1p(observed / totals * library_size)
    a, b = a - a.mean(0), b - b.mean(0)
    denominator = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.Series(np.where(denominator > 0, (a * b).sum(0) / denominator, np.nan))


def predict_run(run_dir: str | Path, target: str, data_path: str | Path | None = None, out: str | Path | None = None,
                n_samples: int = 25, transform_batch: str | None = "all", seed: int = 0, log1p: bool = False,
                depth: float | str | None = None) -> dict[str, Any]:
    """Predict modality ``target`` of a ``train`` run from the cells' other modalities.

    The cells are the run's own (``result.h5mu``) or those of ``data_path``, restricted
    to the features the run trained on. The prediction (decoded means per 10,000) is the
    layer ``"predicted"`` of ``target`` in the written ``.h5mu``; when the cells have no
    ``target``, it becomes that modality's ``X``. With ``log1p`` it is the expected
    log-normalised value at library size ``depth`` instead (see ``predict_modality``). When
    the cells have ``target``, the per-feature correlation of prediction and observation is
    returned (``median_r``).
    """
    model, run, _ = load_run(run_dir)
    if target not in model.modality_names:
        raise ValueError(f"the run's model has no modality {target!r}; it has {model.modality_names}.")
    data = run if data_path is None else read_h5mu(data_path)
    sources = [m for m in model.modality_names if m != target]
    cells = _features_of_run(data, run, sources + [target])
    observed = cells.mod[target].X if target in cells.mod else None
    inputs = MultiModality({m: cells.mod[m] for m in sources if m in cells.mod})
    predicted = model.predict_modality(inputs, target, n_samples=n_samples, transform_batch=transform_batch,
                                       seed=seed, log1p=log1p, depth=depth).astype(np.float32)
    result: dict[str, Any] = {"predicted": predicted}
    modalities = dict(cells.mod)
    if observed is not None:
        modalities[target] = cells.mod[target].copy()
        modalities[target].layers[LAYER] = predicted
        result["correlations"] = gene_correlations(predicted, observed, log1p=log1p)
        result["median_r"] = float(np.nanmedian(result["correlations"]))
    else:
        modalities[target] = ad.AnnData(predicted, obs=pd.DataFrame(index=cells.obs_names),
                                        var=run.mod[target].var.copy(), layers={LAYER: predicted})
    path = Path(out) if out is not None else Path(run_dir) / f"predicted_{target}.h5mu"
    # A plain MuData: the predicted modality holds decoded means (or their log1p expectation),
    # not data a likelihood models.
    write_atomically(path, md.MuData(modalities).write)
    result["path"] = path
    return result
