"""Tests of the paired ATAC -> RNA simulator."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cavachon_like.data import Modality, MultiModality, read_h5mu, simulate

pytestmark = pytest.mark.floor  # also run on the dependency floor (.ci/run)


@pytest.fixture(scope="module")
def data():
    return simulate()


def _group_gap(x: np.ndarray, labels: np.ndarray) -> float:
    """Relative L1 distance between the mean profiles of the first two label groups."""
    groups = np.unique(labels)
    a, b = (x[labels == g].mean(axis=0) for g in groups[:2])
    return float(np.abs(a - b).sum() / np.abs((a + b) / 2).sum())


def _random_gap(x: np.ndarray, seed: int = 12345) -> float:
    # a seed unlike the simulation's, whose label draws it would otherwise reproduce
    labels = np.random.default_rng(seed).integers(2, size=x.shape[0])
    return _group_gap(x, labels)


def test_shapes_and_annotations(data):
    assert isinstance(data, MultiModality) and list(data.mod) == ["atac", "rna"]
    atac, rna = data.modality("atac"), data.modality("rna")
    assert isinstance(atac, Modality) and isinstance(rna, Modality)
    assert atac.shape == (2000, 1000) and rna.shape == (2000, 300)
    for mod, likelihood in ((atac, "bernoulli"), (rna, "zinb")):
        assert mod.likelihood == likelihood and mod.batch_key == ["batch"]
        assert sp.issparse(mod.X) and mod.X.format == "csr" and mod.X.dtype == np.float32
        for col in ("batch", "cell_type", "parent_type", "child_state"):
            assert mod.obs[col].dtype == "category"
    for col in ("batch", "cell_type", "parent_type", "child_state"):
        assert data.obs[col].dtype == "category"
    assert set(data.obs["batch"]) == {"batch0", "batch1", "batch2"}
    assert set(data.obs["cell_type"]) == {f"P{p}_C{c}" for p in range(4) for c in range(2)}
    assert (data.obs["cell_type"].astype(str) == data.obs["parent_type"].astype(str) + "_"
            + data.obs["child_state"].astype(str)).all()
    assert data.obsm["true_parent"].shape == (2000, 4) and data.obsm["true_child"].shape == (2000, 2)
    assert data.uns["simulation"]["dag"] == {"atac": [], "rna": ["atac"]}
    assert data.uns["simulation"]["seed"] == 0
    data.validate()


def test_custom_sizes():
    small = simulate(n_cells=120, n_batches=2, n_atac=50, n_rna=20, n_parent_types=3, n_child_states=3,
                     parent_dim=3, child_dim=5, seed=4)
    assert small.modality("atac").shape == (120, 50) and small.modality("rna").shape == (120, 20)
    assert small.obsm["true_child"].shape == (120, 5)
    assert small.batch_categories()["rna"] == {"batch": ["batch0", "batch1"]}
    with pytest.raises(ValueError, match="n_cells must be a positive integer"):
        simulate(n_cells=0)


def test_deterministic_in_seed(data):
    again = simulate()
    other = simulate(seed=1)
    for name in ("atac", "rna"):
        assert (data.modality(name).X != again.modality(name).X).nnz == 0
        assert (data.modality(name).X != other.modality(name).X).nnz > 0
    np.testing.assert_array_equal(data.obsm["true_child"], again.obsm["true_child"])
    assert data.obs["cell_type"].equals(again.obs["cell_type"])


def test_atac_density_and_rna_library_sizes(data):
    atac = data.modality("atac").X
    assert 0.05 <= atac.nnz / np.prod(atac.shape) <= 0.15
    assert set(np.unique(atac.data)) == {1.0}
    library = np.asarray(data.modality("rna").X.sum(axis=1)).ravel()
    assert 1500 < np.median(library) < 2600
    assert np.all(data.modality("rna").X.data == np.round(data.modality("rna").X.data))


def test_child_state_drives_rna_but_not_atac(data):
    child = data.obs["child_state"].to_numpy()
    parent = data.obs["parent_type"].to_numpy()
    atac = data.modality("atac").X.toarray()
    rna = data.modality("rna").X.toarray()
    proportions = rna / np.maximum(rna.sum(axis=1, keepdims=True), 1)

    # ATAC: splitting by child state is no different from a random split ...
    assert _group_gap(atac, child) < 1.5 * _random_gap(atac)
    # ... while the parent type, which ATAC does encode, separates it clearly
    assert _group_gap(atac, parent) > 5 * _random_gap(atac)
    # RNA: the child state changes expression far beyond split noise
    assert _group_gap(proportions, child) > 5 * _random_gap(proportions)


def test_written_and_read_back(data, tmp_path):
    data.write(tmp_path / "sim.h5mu")
    back = read_h5mu(tmp_path / "sim.h5mu")
    assert back.modality("rna").likelihood == "zinb" and back.modality("atac").batch_key == ["batch"]
    assert (back.modality("atac").X != data.modality("atac").X).nnz == 0
    np.testing.assert_array_equal(back.obsm["true_parent"], data.obsm["true_parent"])


def test_child_parent_types_confine_child_variation():
    data = simulate(n_cells=400, n_atac=30, n_rna=20, child_parent_types=[0], seed=4)
    counts = data.obs["cell_type"].value_counts()
    assert counts["P0_C1"] > 0 and counts["P0_C0"] > 0
    assert all(counts[f"P{p}_C1"] == 0 for p in (1, 2, 3))
    with pytest.raises(ValueError, match="child_parent_types"):
        simulate(n_cells=10, child_parent_types=[7])


def test_atac_sampling_is_chunked_yet_identical(monkeypatch):
    import importlib

    # the package re-exports the function under the module's name
    module = importlib.import_module("cavachon_like.data.simulate")
    whole = simulate(n_cells=60, n_atac=50, n_rna=10, seed=5).mod["atac"].X
    monkeypatch.setattr(module, "_CHUNK_ENTRIES", 120)  # 2 cells per chunk
    chunked = simulate(n_cells=60, n_atac=50, n_rna=10, seed=5).mod["atac"].X
    assert (whole != chunked).nnz == 0
    sparse = simulate(n_cells=200, n_atac=400, n_rna=10, atac_bias=-5.5, seed=5).mod["atac"].X
    assert 0.002 < sparse.nnz / (200 * 400) < 0.05
