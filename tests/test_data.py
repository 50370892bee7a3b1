"""Tests of the data layer: Modality, MultiModality, readers, QC and the tf.data pipeline."""
from __future__ import annotations

import itertools
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import tensorflow as tf

from cavachon_like.data import (
    PAPER_QC,
    FilterCells,
    FilterCellsByFraction,
    FilterFeatures,
    Modality,
    MultiModality,
    from_config,
    read_h5ad,
    read_h5mu,
    simulate,
)
from cavachon_like.data.multimodality import MIN_TRAINING_CELLS
from cavachon_like.errors import InputError

pytestmark = pytest.mark.floor  # also run on the dependency floor (.ci/run)

_FEATURE_SETS = itertools.count()
SNARE = Path(__file__).parents[1].parent / "shared/data/snare_mouse_cortex.h5mu"


def _adata(x, barcodes, batches=None, prefix=None):
    obs = pd.DataFrame(index=pd.Index(barcodes))
    if batches is not None:
        obs["batch"] = pd.Categorical(batches)
    # distinct feature names per call, as modalities of real data have
    prefix = prefix or f"f{next(_FEATURE_SETS)}_"
    var = pd.DataFrame(index=[f"{prefix}{j}" for j in range(x.shape[1])])
    return ad.AnnData(x, obs=obs, var=var)


def _counts(n_cells, n_features, seed=0):
    rng = np.random.default_rng(seed)
    return sp.csr_matrix(rng.poisson(0.7, (n_cells, n_features)).astype(np.float32))


@pytest.fixture(scope="module")
def small():
    return simulate(n_cells=150, n_atac=40, n_rna=25, seed=3)


def _rows(sparse_tensor):
    return tf.sparse.to_dense(sparse_tensor).numpy()


def _epoch(ds, mod="rna"):
    return np.concatenate([_rows(b["x"][mod]) for b in ds])


# ---------------------------------------------------------------- Modality


def test_modality_from_matrix_wraps_batch_key_and_stores_metadata():
    mod = Modality(_counts(4, 3), likelihood="NB", batch_key="batch",
                   obs=pd.DataFrame({"batch": list("aabb")}, index=list("wxyz")))
    assert isinstance(mod, ad.AnnData)
    assert mod.likelihood == "nb"
    assert mod.batch_key == ["batch"]
    assert mod.uns["cavachon_like"]["likelihood"] == "nb"
    assert mod.batch_categories() == {"batch": ["a", "b"]}
    assert isinstance(mod.copy(), Modality) and mod.copy().likelihood == "nb"


def test_modality_from_anndata_falls_back_to_uns_and_does_not_touch_source():
    x = _counts(3, 2)
    source = _adata(x, ["a", "b", "c"])
    mod = Modality.from_anndata(source, likelihood="poisson")
    assert mod.X is source.X, "wrapping must not copy the matrix"
    assert "cavachon_like" not in source.uns
    again = Modality.from_anndata(mod)
    assert again.likelihood == "poisson" and again.batch_key == []
    assert Modality.from_anndata(mod[:2]).likelihood == "poisson", "metadata survives slicing"
    with pytest.raises(ValueError, match="no likelihood"):
        Modality.from_anndata(source)


def test_metadata_survives_h5mu_round_trip(tmp_path):
    mm = MultiModality(
        {"rna": _adata(_counts(4, 3), list("abcd"), list("xxyy")), "atac": _adata(_counts(4, 5), list("abcd"))},
        likelihoods={"rna": "zinb", "atac": "bernoulli"},
        batch_key={"rna": "batch"},
    )
    path = tmp_path / "mm.h5mu"
    mm.write(path)
    back = read_h5mu(path)
    assert back.modality("rna").likelihood == "zinb" and back.modality("rna").batch_key == ["batch"]
    assert back.modality("atac").likelihood == "bernoulli" and back.modality("atac").batch_key == []
    plain = md.read_h5mu(path)
    assert Modality.from_anndata(plain.mod["rna"]).batch_key == ["batch"]
    with pytest.raises(FileNotFoundError, match="missing.h5mu"):
        read_h5mu(tmp_path / "missing.h5mu")


def test_read_h5ad_single_and_dict(tmp_path):
    Modality(_counts(3, 2), likelihood="nb", obs=pd.DataFrame(index=list("abc"))).write_h5ad(tmp_path / "r.h5ad")
    _adata(_counts(3, 4), list("cab")).write_h5ad(tmp_path / "a.h5ad")
    assert read_h5ad(tmp_path / "r.h5ad").likelihood == "nb"
    mm = read_h5ad({"rna": tmp_path / "r.h5ad", "atac": tmp_path / "a.h5ad"}, likelihood={"atac": "bernoulli"})
    assert list(mm.modality("atac").obs_names) == list("abc")
    with pytest.raises(FileNotFoundError, match="nope.h5ad"):
        read_h5ad(tmp_path / "nope.h5ad", likelihood="nb")


# ---------------------------------------------------------------- validate


def _named(x, likelihood, batches=None):
    barcodes = [f"cell{i}" for i in range(x.shape[0])]
    mm = MultiModality({"rna": _adata(x, barcodes, batches)}, likelihoods={"rna": likelihood},
                       batch_key="batch" if batches is not None else None)
    return mm


@pytest.mark.parametrize("make", [np.array, sp.csr_matrix, sp.csc_matrix])
def test_validate_nan_names_modality_and_cells(make):
    x = np.ones((4, 3), dtype=np.float32)
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"modality 'rna'.*1 cells have NaN.*'cell2'"):
        _named(make(x), "nb").validate()


def test_validate_negative_and_non_integer():
    x = sp.csr_matrix(np.array([[1, 0, 2], [0, -1, 0], [3, 0, -2]], dtype=np.float32))
    with pytest.raises(ValueError, match=r"modality 'rna'.*2 cells have negative.*'cell1', 'cell2'"):
        _named(x, "bernoulli").validate()
    y = sp.csr_matrix(np.array([[1, 0, 2.5], [0, 1, 0], [0.1, 0, 0]], dtype=np.float32))
    with pytest.raises(ValueError, match=r"modality 'rna'.*non-integer.*'cell0', 'cell2'.*raw integer counts"):
        _named(y, "zinb").validate()
    _named(y, "bernoulli").validate()  # integrality only matters for poisson/nb/zinb
    _named(x, "normal").validate()  # a continuous likelihood takes negative values


def test_custom_likelihoods_declare_what_data_they_accept():
    from cavachon_like.distributions import Poisson

    class MyCounts(Poisson):  # a user's count likelihood gets the count checks by declaring its support
        alias = "my_counts_for_validation"
        support = "counts"

    y = sp.csr_matrix(np.array([[1, 0, 2.5], [0, 1, 0]], dtype=np.float32))
    with pytest.raises(ValueError, match=r"'my_counts_for_validation' cannot model.*raw integer counts"):
        _named(y, "my_counts_for_validation").validate()
    # the model passes its likelihood's support explicitly; an explicit support wins
    with pytest.raises(ValueError, match="non-integer"):
        _named(y, "normal").validate({"rna": "counts"})
    with pytest.raises(ValueError, match="declares support 'ints'"):
        type("Bad", (Poisson,), {"alias": "bad_support_for_validation", "support": "ints"})


def test_validate_allows_cells_without_counts_but_warns_once():
    mm = _named(sp.csr_matrix((3, 4), dtype=np.float32), "zinb")
    with pytest.warns(UserWarning, match=r"modality 'rna'.*3 of 3 cells have no counts.*'cell0', 'cell1', 'cell2'"):
        mm.validate({"rna": "counts"})
    assert mm.warn_library_sizes({"rna": "counts"}) == [], "reported once per modality"


def test_validate_batch_columns():
    mod = _named(_counts(3, 2), "nb").modality("rna")
    mod.batch_key = ["batch", "donor"]
    with pytest.raises(ValueError, match=r"modality 'rna'.*\['batch', 'donor'\] are not in obs"):
        mod.validate()
    missing = _named(_counts(3, 2), "nb", batches=["a", None, "b"])
    with pytest.raises(ValueError, match=r"modality 'rna'.*1 cells have no value in batch column 'batch'.*'cell1'"):
        missing.validate()


def test_validate_caps_examples_at_five():
    x = np.full((8, 2), 0.5, dtype=np.float32)
    with pytest.raises(ValueError, match=r"8 cells.*'cell4' and 3 more"):
        _named(x, "poisson").validate()


# ---------------------------------------------------------------- MultiModality


def test_strict_mismatch_names_each_modality_and_suggests_inner():
    rna = _adata(_counts(4, 2), ["a", "b", "c", "d"])
    atac = _adata(_counts(3, 2), ["b", "c", "x"])
    with pytest.raises(ValueError) as err:
        MultiModality({"rna": rna, "atac": atac}, likelihoods={"rna": "nb", "atac": "bernoulli"})
    message = str(err.value)
    assert "'rna': 2 of 4 barcodes are missing from other modalities (e.g. 'a', 'd')" in message
    assert "'atac': 1 of 3 barcodes are missing from other modalities (e.g. 'x')" in message
    assert "join='inner'" in message


def test_inner_join_reports_lost_cells():
    rna = _adata(_counts(5, 2), ["a", "b", "c", "d", "e"])
    atac = _adata(_counts(3, 2), ["e", "x", "b"])
    with pytest.warns(UserWarning, match="'rna' lost 3"):
        mm = MultiModality({"rna": rna, "atac": atac}, join="inner", likelihoods={"rna": "nb", "atac": "bernoulli"})
    assert mm.uns["cavachon_like"]["join_report"] == {"rna": 3, "atac": 1}
    assert list(mm.obs_names) == ["b", "e"]
    for name in ("rna", "atac"):
        assert list(mm.modality(name).obs_names) == ["b", "e"]
    np.testing.assert_array_equal(mm.modality("atac").X.toarray(), atac.X[[2, 0]].toarray())


def test_same_barcodes_in_other_order_are_reordered():
    x = _counts(4, 3, seed=1)
    rna = _adata(_counts(4, 2), ["a", "b", "c", "d"], ["p", "q", "p", "q"])
    atac = _adata(x, ["d", "b", "a", "c"])
    mm = MultiModality({"rna": rna, "atac": atac}, likelihoods={"rna": "nb", "atac": "bernoulli"})
    assert isinstance(mm.modality("atac"), Modality)
    assert list(mm.modality("atac").obs_names) == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(mm.modality("atac").X.toarray(), x[[2, 1, 3, 0]].toarray())
    assert mm.obs_column("batch").tolist() == ["p", "q", "p", "q"]


def test_reorders_a_mudata_with_its_global_annotations():
    rna = _adata(_counts(3, 2), ["a", "b", "c"])
    atac = _adata(_counts(3, 2), ["c", "a", "b"])
    mdata = md.MuData({"rna": rna, "atac": atac})
    mdata.obs["label"] = mdata.obs_names.str.upper()
    mdata.obsm["emb"] = np.arange(3)[:, None] * np.ones((1, 2))
    mm = MultiModality(mdata, likelihoods={"rna": "nb", "atac": "nb"})
    assert list(mm.modality("atac").obs_names) == ["a", "b", "c"]
    assert mm.obs_column("label").tolist() == ["A", "B", "C"]
    np.testing.assert_array_equal(mm.obsm["emb"][:, 0], [mdata.obs_names.get_loc(b) for b in "abc"])


@pytest.mark.filterwarnings("ignore:Observation names are not unique")
def test_duplicate_barcodes_and_bad_arguments():
    dup = _adata(_counts(3, 2), ["a", "a", "b"])
    with pytest.raises(ValueError, match=r"modality 'rna' has 1 duplicated cell barcodes \(e.g. 'a'\)"):
        MultiModality({"rna": dup}, likelihoods={"rna": "nb"})
    ok = _adata(_counts(3, 2), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"no likelihood for modality 'rna'"):
        MultiModality({"rna": ok})
    with pytest.raises(ValueError, match=r"\['protein'\] that do not exist"):
        MultiModality({"rna": ok}, likelihoods={"rna": "nb", "protein": "nb"})
    with pytest.raises(ValueError, match="join must be one of"):
        MultiModality({"rna": ok}, likelihoods={"rna": "nb"}, join="left")


def test_accessors(small):
    assert small.modality("rna").likelihood == "zinb"
    with pytest.raises(KeyError, match=r"no modality 'protein'; available: \['atac', 'rna'\]"):
        small.modality("protein")
    assert small.obs_column("cell_type").shape == (small.n_obs,)
    with pytest.raises(KeyError, match="no obs column 'donor'"):
        small.obs_column("donor")
    assert small.batch_categories() == {m: {"batch": ["batch0", "batch1", "batch2"]} for m in ("atac", "rna")}
    small.validate()


def test_split_and_subset(small):
    train, val = small.split(0.2, seed=1)
    assert len(val) == 30 and len(train) == 120
    assert np.intersect1d(train, val).size == 0 and np.union1d(train, val).size == small.n_obs
    np.testing.assert_array_equal(small.split(0.2, seed=1)[1], val)
    assert not np.array_equal(small.split(0.2, seed=2)[1], val)
    part = small.subset(val)
    assert isinstance(part, MultiModality) and part.n_obs == 30
    assert part.modality("rna").likelihood == "zinb" and part.modality("atac").batch_key == ["batch"]
    np.testing.assert_array_equal(part.modality("rna").X.toarray(), small.modality("rna").X[val].toarray())
    np.testing.assert_array_equal(part.obsm["true_parent"], small.obsm["true_parent"][val])
    with pytest.raises(IndexError, match="out of range"):
        small.subset([0, 999])
    with pytest.raises(ValueError, match="validation_fraction"):
        small.split(1.0)


# ---------------------------------------------------------------- to_dataset


def test_dataset_structure_and_shapes(small):
    ds = small.to_dataset(batch_size=32, shuffle=False)
    spec = ds.element_spec
    assert isinstance(spec["x"]["atac"], tf.SparseTensorSpec)
    assert spec["x"]["atac"].shape.as_list() == [None, 40]
    assert spec["x"]["rna"].shape.as_list() == [None, 25]
    assert spec["batch"]["rna"].shape.as_list() == [None, 3]
    batches = list(ds)
    assert [int(b["x"]["rna"].dense_shape[0]) for b in batches] == [32, 32, 32, 32, 22]
    first = batches[0]["x"]["rna"]
    assert first.dtype == tf.float32
    # canonical row-major order: reordering must be a no-op
    np.testing.assert_array_equal(tf.sparse.reorder(first).indices.numpy(), first.indices.numpy())
    assert len(list(small.to_dataset(batch_size=32, drop_remainder=True))) == 4


@pytest.mark.parametrize("layout", ["csr", "csc", "noncanonical", "dense"])
def test_unshuffled_epoch_reproduces_the_matrix(layout):
    x = _counts(37, 11, seed=5)
    if layout == "csc":
        x = x.tocsc()
    elif layout == "noncanonical":
        coo = x.tocoo()
        order = np.lexsort((-coo.col, coo.row))  # columns descending within each row
        rows, cols, vals = coo.row[order], coo.col[order], coo.data[order]
        rows, cols, vals = np.r_[rows[0], rows], np.r_[cols[0], cols], np.r_[1.0, vals]  # plus a duplicate
        indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=x.shape[0]))]
        x = sp.csr_matrix((vals.astype(np.float32), cols, indptr), shape=x.shape)
        assert not x.has_canonical_format
    elif layout == "dense":
        x = x.toarray()
    expected = x.toarray() if sp.issparse(x) else x
    before = x.copy()
    mm = MultiModality({"rna": _adata(x, [f"c{i}" for i in range(37)])}, likelihoods={"rna": "nb"})
    ds = mm.to_dataset(batch_size=8, shuffle=False)
    got = np.concatenate([
        b["x"]["rna"].numpy() if layout == "dense" else _rows(b["x"]["rna"]) for b in ds
    ])
    np.testing.assert_array_equal(got, expected)
    # the caller's matrix is not reordered in place
    if sp.issparse(x):
        np.testing.assert_array_equal(x.indices, before.indices)
    dense = np.concatenate([b["x"]["rna"].numpy() for b in mm.to_dataset(batch_size=8, shuffle=False, sparse=False)])
    np.testing.assert_array_equal(dense, expected)


def test_indices_and_modalities_select(small):
    idx = np.array([5, 0, 77, 149])
    ds = small.to_dataset(batch_size=3, shuffle=False, indices=idx, modalities=["atac"])
    assert set(ds.element_spec["x"]) == {"atac"}
    np.testing.assert_array_equal(_epoch(ds, "atac"), small.modality("atac").X[idx].toarray())
    with pytest.raises(KeyError, match="no modality 'prot'"):
        small.to_dataset(modalities=["prot"])


def test_shuffle_is_seeded_and_reshuffles_each_epoch(small):
    def order(ds):
        # row totals identify cells well enough to compare orders
        return _epoch(ds).sum(axis=1)

    a = small.to_dataset(batch_size=40, seed=7)
    b = small.to_dataset(batch_size=40, seed=7)
    c = small.to_dataset(batch_size=40, seed=8)
    first = order(a)
    np.testing.assert_array_equal(first, order(b))
    assert not np.array_equal(first, order(c))
    second_epoch = order(a)
    assert not np.array_equal(first, second_epoch)
    np.testing.assert_array_equal(np.sort(first), np.sort(order(small.to_dataset(shuffle=False))))


def test_batch_one_hot(small):
    ds = small.to_dataset(batch_size=50, shuffle=False)
    one_hot = np.concatenate([b["batch"]["rna"].numpy() for b in ds])
    labels = small.obs_column("batch").astype(str).to_numpy()
    cats = ["batch0", "batch1", "batch2"]
    np.testing.assert_array_equal(one_hot, (labels[:, None] == np.array(cats)[None, :]).astype(np.float32))
    # a given layout with an extra, unused category adds a zero column in its place
    given = {m: {"batch": ["batch0", "batch1", "batch2", "batch9"]} for m in ("atac", "rna")}
    wide = next(iter(small.to_dataset(batch_size=50, shuffle=False, batch_categories=given)))["batch"]["atac"]
    assert wide.shape == (50, 4) and not wide.numpy()[:, 3].any()


def test_unseen_batch_category_is_an_error(small):
    given = {m: {"batch": ["batch0", "batch1"]} for m in ("atac", "rna")}
    with pytest.raises(ValueError, match=r"modality 'atac': batch column 'batch' has values such as \['batch2'\]"):
        small.to_dataset(batch_categories=given)
    with pytest.raises(ValueError, match=r"no entry for modalities \['rna'\]"):
        small.to_dataset(batch_categories={"atac": given["atac"]})


def test_no_batch_key_gives_zero_columns():
    mm = MultiModality({"rna": _adata(_counts(5, 3), list("abcde"))}, likelihoods={"rna": "nb"})
    batch = next(iter(mm.to_dataset(batch_size=4, shuffle=False)))["batch"]["rna"]
    assert batch.shape == (4, 0)


# ---------------------------------------------------------------- QC


@pytest.fixture()
def handmade():
    names = ["mt-Co1", "GeneA", "GeneB", "ERCC-1", "GeneC"]
    rna = np.array(
        [
            [0, 5, 3, 0, 2],
            [8, 1, 0, 0, 0],
            [0, 0, 4, 0, 0],
            [1, 2, 2, 1, 4],
            [0, 0, 0, 0, 0],
            [0, 3, 1, 3, 1],
        ],
        dtype=np.float32,
    )
    rows, cols = np.nonzero(rna)
    # plus an explicitly stored zero (cell 2, GeneA), which must not count as expressed
    x = sp.csr_matrix((np.r_[rna[rows, cols], 0.0], (np.r_[rows, 2], np.r_[cols, 1])), shape=rna.shape)
    assert x.nnz == np.count_nonzero(rna) + 1
    barcodes = [f"cell{i}" for i in range(6)]
    rna_ad = ad.AnnData(x, obs=pd.DataFrame(index=barcodes), var=pd.DataFrame(index=names))
    atac = _adata(sp.csr_matrix(np.eye(6, 4, dtype=np.float32)), barcodes, prefix="peak")
    return MultiModality({"rna": rna_ad, "atac": atac}, likelihoods={"rna": "nb", "atac": "bernoulli"})


def test_filter_cells_removes_from_all_modalities(handmade):
    out = FilterCells("rna", min_features=2)(handmade)
    assert list(out.obs_names) == ["cell0", "cell1", "cell3", "cell5"]
    assert list(out.modality("atac").obs_names) == ["cell0", "cell1", "cell3", "cell5"]
    assert out.uns["cavachon_like"]["qc"] == [
        {"step": "filter_cells", "modality": "rna", "n_cells_removed": 2, "n_features_removed": 0}
    ]
    assert "qc" not in handmade.uns["cavachon_like"], "the input is left unchanged"
    assert FilterCells("rna", min_features=2, max_features=4)(handmade).n_obs == 3


def test_filter_cells_by_fraction(handmade):
    out = FilterCellsByFraction("rna", max_fraction=0.3)(handmade)
    # cell1: 8/9 and cell5: 3/8 in mt-/ERCC- features; cell4 has no counts and stays
    assert list(out.obs_names) == ["cell0", "cell2", "cell3", "cell4"]
    assert FilterCellsByFraction("rna", pattern="^nothing", max_fraction=0.0)(handmade).n_obs == 6


def test_filter_features(handmade):
    out = FilterFeatures("rna", min_counts=8, min_cells=3)(handmade)
    assert list(out.modality("rna").var_names) == ["GeneA", "GeneB"]
    assert out.modality("atac").n_vars == 4 and out.n_obs == 6
    assert out.uns["cavachon_like"]["qc"][-1]["n_features_removed"] == 3
    common = FilterFeatures("rna", max_cells_fraction=0.5)(handmade)
    assert list(common.modality("rna").var_names) == ["mt-Co1", "ERCC-1", "GeneC"]
    np.testing.assert_array_equal(common.modality("rna").X.toarray()[:, 2], [2, 0, 0, 4, 0, 1])


def test_qc_from_config_chain_and_write(handmade, tmp_path):
    steps = [
        {"step": "filter_cells", "modality": "rna", "min_features": 2},
        {"step": "filter_features", "modality": "atac", "min_cells": 1},
    ]
    out = handmade.apply_qc(steps)
    report = out.uns["cavachon_like"]["qc"]
    assert [(r["step"], r["n_cells_removed"], r["n_features_removed"]) for r in report] == [
        ("filter_cells", 2, 0), ("filter_features", 0, 1)  # peak2 was open only in the removed cell2
    ]
    assert out.modality("atac").n_vars == 3 and out.modality("atac").likelihood == "bernoulli"
    out.write(tmp_path / "qc.h5mu")
    assert read_h5mu(tmp_path / "qc.h5mu").uns["cavachon_like"]["qc"] == report
    assert from_config(FilterFeatures("rna", min_cells=3).get_config()).min_cells == 3


def test_qc_errors(handmade):
    with pytest.raises(ValueError, match=r"unknown QC step 'filter_genes'"):
        from_config({"step": "filter_genes", "modality": "rna"})
    with pytest.raises(ValueError, match=r"'filter_cells' does not take parameter\(s\) \['min_genes'\]"):
        from_config({"step": "filter_cells", "modality": "rna", "min_genes": 3})
    with pytest.raises(ValueError, match="has no 'step'"):
        from_config({"modality": "rna"})
    with pytest.raises(ValueError, match="min_features must be a non-negative integer"):
        FilterCells("rna", min_features=-1)
    with pytest.raises(ValueError, match="would remove all 6 cells"):
        FilterCells("rna", min_features=99)(handmade)
    with pytest.raises(KeyError, match="no modality 'protein'"):
        FilterCells("protein")(handmade)


def test_paper_qc_configs_build():
    steps = [from_config(c) for c in PAPER_QC]
    assert {s.modality for s in steps} == {"rna", "atac"}
    assert steps[-1].max_cells_fraction == 0.1 and steps[-1].min_cells == 5


def test_check_training_refuses_tiny_data_and_empty_splits(small):
    with pytest.raises(InputError, match=rf"only 3 cells \(modalities \['atac', 'rna'\]\).*at least {MIN_TRAINING_CELLS}"):
        small[:3].check_training()
    with pytest.raises(InputError, match="leaves 0 cells for validation"):
        small.check_training(validation_split=0.001)
    assert small.check_training(validation_split=0.1) == []
