"""Library sizes of one modality predicted from another's (``data.depth``), and their use as the
default depth of ``log1p`` predictions."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from cavachon_like import MultiModality
from cavachon_like.data.depth import MIN_PAIRED_CELLS, library_size_fits, predicted_library_size


def _mm(mods, **kwargs) -> MultiModality:
    return MultiModality(mods, likelihoods={m: {"atac": "bernoulli", "rna": "nb"}[m] for m in mods}, **kwargs)


def _counts(totals: np.ndarray, n_features: int, rng: np.random.Generator) -> sp.csr_matrix:
    """Cells whose library sizes are exactly ``totals`` (multinomial over the features)."""
    rows = [rng.multinomial(int(t), np.full(n_features, 1.0 / n_features)) for t in totals]
    return sp.csr_matrix(np.asarray(rows, dtype=np.float32))


def _planted(n: int = 600, seed: int = 0):
    """log rna = 1.0 + 0.6 log atac + N(0, 0.3^2): the fit must find 1.0, 0.6 and 0.3."""
    rng = np.random.default_rng(seed)
    atac_totals = np.round(np.exp(rng.normal(5.0, 0.6, n)))
    rna_totals = np.round(np.exp(1.0 + 0.6 * np.log(atac_totals) + rng.normal(0.0, 0.3, n)))
    names = np.array([f"c{i}" for i in range(n)])
    mods = {}
    for name, totals, f in (("atac", atac_totals, 40), ("rna", rna_totals, 30)):
        a = ad.AnnData(_counts(totals, f, rng))
        a.obs_names = names
        a.var_names = [f"{name}{j}" for j in range(f)]
        mods[name] = a
    return mods, atac_totals, rna_totals


def test_fits_recover_a_planted_log_linear_relation_over_cells_measured_in_both():
    mods, atac_totals, rna_totals = _planted()
    paired = _mm(mods)
    fits = library_size_fits(paired, ["atac", "rna"])
    fit = fits["rna"]["atac"]
    assert fit["slope"] == pytest.approx(0.6, abs=0.05) and fit["intercept"] == pytest.approx(1.0, abs=0.3)
    assert fit["sd"] == pytest.approx(0.3, abs=0.03) and fit["n_cells"] == 600
    slope, intercept = np.polyfit(np.log(atac_totals), np.log(rna_totals), 1)
    assert fit["slope"] == pytest.approx(slope, rel=1e-9) and fit["intercept"] == pytest.approx(intercept, rel=1e-9)
    assert fit["r"] == pytest.approx(np.corrcoef(np.log(atac_totals), np.log(rna_totals))[0, 1], rel=1e-9)
    assert fits["atac"]["rna"]["r"] == pytest.approx(fit["r"])  # the other direction, same correlation
    # Mosaic: cells without RNA hold empty rows, which must not enter the fit as zero totals.
    keep = np.arange(600) % 3 != 0
    mosaic = _mm({"atac": mods["atac"], "rna": mods["rna"][keep]}, join="outer")
    masked = library_size_fits(mosaic, ["atac", "rna"])["rna"]["atac"]
    assert masked["n_cells"] == keep.sum()
    slope, _ = np.polyfit(np.log(atac_totals[keep]), np.log(rna_totals[keep]), 1)
    assert masked["slope"] == pytest.approx(slope, rel=1e-9)
    # Each cell's prediction is the fit at its own ATAC total; cells with no source get NaN.
    predicted = predicted_library_size(mosaic, {"atac": fit})
    np.testing.assert_allclose(predicted, np.exp(fit["intercept"] + fit["slope"] * np.log(atac_totals)), rtol=1e-9)
    rna_only = _mm({"rna": mods["rna"]})
    assert np.isnan(predicted_library_size(rna_only, {"atac": fit})).all()


def test_too_few_paired_cells_fit_nothing():
    mods, _, _ = _planted(n=200)
    few = {"atac": mods["atac"], "rna": mods["rna"][: MIN_PAIRED_CELLS - 1]}
    assert library_size_fits(_mm(few, join="outer"), ["atac", "rna"]) == {}


def test_log1p_predictions_default_to_the_depth_the_cells_atac_implies(tmp_path):
    """The model records the fits at from_data (and keeps them through save/load); ``log1p=True``
    draws each cell's counts at the RNA total its ATAC total implies unless told otherwise."""
    import keras

    from cavachon_like import CAVACHON

    mods, atac_totals, _ = _planted(n=300, seed=1)
    for m in mods.values():
        m.obs["batch"] = "b0"
    data = _mm(mods)
    small = {"encoder": {"units": [16]}, "decoder": {"units": [16]}, "latent_dim": 2}
    model = CAVACHON.from_data(data, [{"name": "atac", "modalities": ["atac"], **small},
                                      {"name": "rna", "modalities": ["rna"], "parents": ["atac"], **small}],
                               seed=0, pretrain_epochs=0)
    fit = model.modality_specs["rna"]["library_size_from"]["atac"]
    assert fit == library_size_fits(data, ["atac", "rna"])["rna"]["atac"]
    atac_only = _mm({"atac": data.mod["atac"]})
    implied = np.exp(fit["intercept"] + fit["slope"] * np.log(atac_totals))
    kwargs = dict(transform_batch="all", n_samples=1, seed=0, log1p=True)
    default = model.predict_modality(atac_only, "rna", **kwargs)
    np.testing.assert_allclose(default, model.predict_modality(atac_only, "rna", depth=implied, **kwargs), rtol=1e-5)
    median = model.predict_modality(atac_only, "rna", depth="median", **kwargs)
    np.testing.assert_allclose(median, model.predict_modality(
        atac_only, "rna", depth=model.modality_specs["rna"]["median_library_size"], **kwargs), rtol=1e-5)
    # Cells with more ATAC reads are predicted deeper, so their expected log-normalised values are higher
    # (more non-zero draws); at the median every cell is drawn at the same depth.
    deep, shallow = implied > np.quantile(implied, 0.75), implied < np.quantile(implied, 0.25)
    assert (default - median)[deep].mean() > (default - median)[shallow].mean() + 0.2
    with pytest.raises(ValueError, match="'median' or None"):
        model.predict_modality(atac_only, "rna", depth="mean", **kwargs)
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert restored.modality_specs["rna"]["library_size_from"] == model.modality_specs["rna"]["library_size_from"]

