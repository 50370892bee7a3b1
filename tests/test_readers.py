"""Readers (10x folders, the shared SNARE-seq file), what reading, slicing and copying keep, and the data
edge cases of issue 13: feature names shared across modalities, bad files, all-zero and extreme cells."""
from __future__ import annotations

import gzip
import io
import logging
import warnings
from pathlib import Path

import anndata as ad
import h5py
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
import tensorflow as tf

from cavachon_like.data import (
    Modality,
    MultiModality,
    read_10x,
    read_10x_multi,
    read_h5ad,
    read_h5mu,
    simulate,
)
from cavachon_like.data.multimodality import no_pull
from cavachon_like.errors import InputError

pytestmark = pytest.mark.floor  # also run on the dependency floor (.ci/run)

SNARE = Path(__file__).parents[1].parent / "shared/data/snare_mouse_cortex.h5mu"


def _counts(n_cells, n_features, seed=0):
    rng = np.random.default_rng(seed)
    return sp.csr_matrix(rng.poisson(0.7, (n_cells, n_features)).astype(np.float32))


# ---------------------------------------------------------------- 10x


def _write_10x(folder: Path, counts: sp.spmatrix, features: list[tuple[str, ...]], barcodes: list[str], gz: bool):
    folder.mkdir()
    suffix = ".gz" if gz else ""
    opener = gzip.open if gz else open
    buffer = io.BytesIO()
    scipy.io.mmwrite(buffer, sp.coo_matrix(counts.T))  # 10x stores features x cells
    with opener(folder / f"matrix.mtx{suffix}", "wb") as f:
        f.write(buffer.getvalue())
    name = "features.tsv" if len(features[0]) == 3 else "genes.tsv"
    with opener(folder / f"{name}{suffix}", "wt") as f:
        f.write("".join("\t".join(row) + "\n" for row in features))
    with opener(folder / f"barcodes.tsv{suffix}", "wt") as f:
        f.write("".join(b + "\n" for b in barcodes))


def test_read_10x_multiome_folder(tmp_path):
    counts = _counts(4, 5, seed=2)
    features = [("ENSG1", "Actb", "Gene Expression"), ("ENSG2", "mt-Co1", "Gene Expression"),
                ("chr1:1-9", "chr1:1-9", "Peaks"), ("chr1:20-30", "chr1:20-30", "Peaks"),
                ("ENSG3", "Actb", "Gene Expression")]
    barcodes = ["AAAC-1", "AAAG-1", "AACT-1", "ATTT-1"]
    _write_10x(tmp_path / "multi", counts, features, barcodes, gz=True)
    mm = read_10x(tmp_path / "multi")
    assert isinstance(mm, MultiModality) and set(mm.mod) == {"rna", "atac"}
    rna = mm.modality("rna")
    assert rna.likelihood == "zinb" and mm.modality("atac").likelihood == "bernoulli"
    assert list(rna.var_names) == ["Actb", "mt-Co1", "Actb-1"]
    assert rna.var["gene_ids"].tolist() == ["ENSG1", "ENSG2", "ENSG3"]
    assert rna.X.format == "csr" and rna.X.dtype == np.float32
    np.testing.assert_array_equal(rna.X.toarray(), counts.toarray()[:, [0, 1, 4]])
    np.testing.assert_array_equal(mm.modality("atac").X.toarray(), counts.toarray()[:, [2, 3]])
    assert list(mm.obs_names) == barcodes
    renamed = read_10x(tmp_path / "multi", feature_types={"Peaks": "chromatin"}, likelihoods={"chromatin": "bernoulli"})
    assert set(renamed.mod) == {"rna", "chromatin"}


def test_read_10x_single_type_and_legacy_genes(tmp_path):
    counts = _counts(3, 2, seed=4)
    _write_10x(tmp_path / "v2", counts, [("ENSG1", "Actb"), ("ENSG2", "Gapdh")], ["a", "b", "c"], gz=False)
    mod = read_10x(tmp_path / "v2", likelihoods="nb")
    assert isinstance(mod, Modality) and mod.likelihood == "nb" and mod.name == "rna"
    assert read_10x(tmp_path / "v2").likelihood == "zinb"
    both = read_10x_multi({"rna": tmp_path / "v2"})
    assert isinstance(both, MultiModality) and both.modality("rna").n_vars == 2
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_10x(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"matrix.mtx\[.gz\]"):
        read_10x(tmp_path / "empty")


# ---------------------------------------------------------------- real data


def test_snare_file_loads_and_batches():
    if not SNARE.exists():
        pytest.skip(f"SNARE-seq data not available at {SNARE}")
    mm = read_h5mu(SNARE, likelihoods={"rna": "zinb", "atac": "bernoulli"}, batch_key="batch")
    mm.validate()
    ds = mm.to_dataset(batch_size=64, seed=1)
    assert ds.element_spec["x"]["rna"].shape.as_list() == [None, 1677]
    assert ds.element_spec["x"]["atac"].shape.as_list() == [None, 25734]
    batch = next(iter(ds))
    rna, atac = batch["x"]["rna"], batch["x"]["atac"]
    assert isinstance(rna, tf.SparseTensor) and isinstance(atac, tf.SparseTensor)
    assert rna.dense_shape.numpy().tolist() == [64, 1677] and atac.dense_shape.numpy().tolist() == [64, 25734]
    assert batch["batch"]["atac"].shape == (64, 12)
    np.testing.assert_array_equal(batch["batch"]["rna"].numpy().sum(axis=1), np.ones(64))


def test_slicing_copying_and_io_keep_the_package_classes(tmp_path):
    data = simulate(n_cells=60, n_atac=30, n_rna=20, n_batches=2, seed=3)
    for part in (data[:10], data[np.arange(60) % 2 == 0], data.copy(), data.subset(np.arange(5))):
        assert isinstance(part, MultiModality)
        assert all(isinstance(m, Modality) for m in part.mod.values())
        assert part.modality("rna").likelihood == data.modality("rna").likelihood
        assert part.modality("rna").batch_key == data.modality("rna").batch_key == ["batch"]
    assert data[:10].n_obs == 10 and list(data[:10].obs_names) == list(data.obs_names[:10])
    rna = data.modality("rna")
    sliced = rna[:7, :3]
    assert isinstance(sliced, Modality) and sliced.shape == (7, 3) and sliced.likelihood == rna.likelihood
    assert isinstance(rna.copy(), Modality)
    # slices are copies: writing to one leaves the original alone
    sliced.obs["flag"] = 1
    assert "flag" not in rna.obs
    data.write_h5mu(tmp_path / "d.h5mu")
    back = read_h5mu(tmp_path / "d.h5mu")
    assert isinstance(back, MultiModality) and isinstance(back.mod["atac"], Modality)
    assert back.modality("atac").likelihood == data.modality("atac").likelihood


# ---------------------------------------------------------------- shared feature names, bad files


def _cite_seq(n_cells=40, seed=0):
    """RNA and ADT whose feature names overlap (CD36, CD69, HLA-E), as in CITE-seq data."""
    rng = np.random.default_rng(seed)
    cells = pd.DataFrame(index=[f"c{i:02d}" for i in range(n_cells)])
    genes = ["CD36", "CD69", "HLA-E", "Actb", "Gapdh", "Malat1", "Cd74", "Lyz2"]
    rna = ad.AnnData(sp.csr_matrix(rng.poisson(2.0, (n_cells, len(genes))).astype(np.float32)),
                     obs=cells.copy(), var=pd.DataFrame(index=genes))
    adt = ad.AnnData(sp.csr_matrix(rng.poisson(20.0, (n_cells, 4)).astype(np.float32)),
                     obs=cells.copy(), var=pd.DataFrame(index=["CD36", "CD69", "HLA-E", "CD4"]))
    with no_pull(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # mudata's own "var_names are not unique"
        return md.MuData({"rna": rna, "adt": adt})


def test_shared_feature_names_are_made_unique_and_reported_once(tmp_path, caplog):
    mdata = _cite_seq()
    mdata.write(tmp_path / "cite.h5mu")
    caplog.set_level(logging.WARNING, logger="cavachon_like")
    with pytest.warns(UserWarning, match="feature names were made unique"):
        mm = read_h5mu(tmp_path / "cite.h5mu", likelihoods={"rna": "nb", "adt": "nb"})
    assert list(mm.modality("rna").var_names[:3]) == ["CD36", "CD69", "HLA-E"], "the first modality keeps its names"
    assert list(mm.modality("adt").var_names) == ["adt:CD36", "adt:CD69", "adt:HLA-E", "CD4"]
    assert mm.var_names.is_unique and mdata.mod["adt"].var_names[0] == "CD36", "the source is untouched"
    np.testing.assert_array_equal(mm.modality("adt").X.toarray(), mdata.mod["adt"].X.toarray())
    qc = mm.apply_qc([{"step": "filter_cells", "modality": "rna", "min_features": 6},
                      {"step": "filter_features", "modality": "adt", "min_cells": 1}])
    assert 0 < qc.n_obs < mm.n_obs and qc.modality("adt").n_vars == 4
    qc.write(tmp_path / "qc.h5mu")
    back = read_h5mu(tmp_path / "qc.h5mu")
    assert list(back.modality("adt").var_names) == list(qc.modality("adt").var_names)
    batch = next(iter(back.to_dataset(batch_size=qc.n_obs, shuffle=False)))
    np.testing.assert_array_equal(tf.sparse.to_dense(batch["x"]["adt"]).numpy(), qc.modality("adt").X.toarray())
    reports = [r.getMessage() for r in caplog.records if "feature names were made unique" in r.getMessage()]
    assert len(reports) == 1, "reported once, not at every QC step, write or read"
    assert "modality 'adt' shares 3 feature names with modality 'rna'" in reports[0]
    assert "'CD36', 'CD69', 'HLA-E'" in reports[0] and "'adt:CD36'" in reports[0]


def test_names_repeated_within_a_modality_get_suffixes():
    mdata = _cite_seq(n_cells=12)
    rna = mdata.mod["rna"]
    rna.var_names = ["Actb", "Actb", *rna.var_names[2:]]
    with pytest.warns(UserWarning, match=r"'rna' repeats 1 feature names \(e.g. 'Actb'\)"):
        mm = MultiModality({"rna": rna, "adt": mdata.mod["adt"]}, likelihoods={"rna": "nb", "adt": "nb"})
    assert list(mm.modality("rna").var_names[:3]) == ["Actb", "Actb-1", "HLA-E"]
    assert list(mm.modality("adt").var_names[:3]) == ["CD36", "CD69", "adt:HLA-E"]


def test_bad_files_are_input_errors_naming_the_file(tmp_path):
    data = simulate(n_cells=20, n_atac=10, n_rna=8, seed=0)
    data.write_h5mu(tmp_path / "ok.h5mu")
    data.modality("rna").write_h5ad(tmp_path / "rna.h5ad")
    content = (tmp_path / "ok.h5mu").read_bytes()
    (tmp_path / "cut.h5mu").write_bytes(content[: len(content) * 2 // 3])
    (tmp_path / "counts.csv").write_text("cell,gene\nc1,3\n")
    h5py.File(tmp_path / "other.h5", "w").create_dataset("x", data=np.arange(3))
    cases = [
        (read_h5mu, "cut.h5mu", "truncated or damaged"),
        (read_h5ad, "cut.h5mu", "truncated or damaged"),
        (read_h5mu, "rna.h5ad", r"holds a single AnnData.*read_h5ad"),
        (read_h5ad, "ok.h5mu", r"holds a MuData .*\['atac', 'rna'\].*read_h5mu"),
        (read_h5mu, "counts.csv", "is not an HDF5 file"),
        (read_h5ad, "counts.csv", "is not an HDF5 file"),
        (read_h5mu, "other.h5", "could not be read as a MuData"),
        (read_h5mu, ".", "is a folder"),
    ]
    for reader, name, message in cases:
        with pytest.raises(InputError, match=message) as error:
            reader(tmp_path / name)
        assert str(tmp_path / name) in str(error.value), (reader.__name__, name)
    with pytest.raises(InputError, match=r"h5ad file of modality 'rna' .*is not an HDF5 file"):
        read_h5ad({"rna": tmp_path / "counts.csv"})


def test_snare_library_sizes_raise_no_alarm(snare_path):
    mm = read_h5mu(snare_path, likelihoods={"rna": "zinb", "atac": "bernoulli"})
    report = mm.library_size_report()
    assert report["n_zero"].tolist() == [0, 0] and report["n_extreme"].tolist() == [0, 0]
    for name in ("rna", "atac"):  # with margin: the largest cell is far below the threshold
        largest = float(mm.modality(name).X.sum(axis=1).max())
        assert largest < 0.5 * report.loc[name, "threshold"], name
    assert mm.warn_library_sizes({"rna": "counts", "atac": "binary"}) == []


def test_library_sizes_zero_and_extreme_cells(caplog):
    data = simulate(n_cells=60, n_atac=40, n_rna=20, seed=1)
    x = data.modality("rna").X.tolil()
    x[[3, 8], :] = 0
    median = np.median(np.asarray(data.modality("rna").X.sum(axis=1)))
    x[5, 0] += 10 * median  # large (11x the median) but ordinary: not flagged
    x[7, 1] = 1e9
    data.modality("rna").X = x.tocsr()
    data = MultiModality(dict(data.mod))
    report = data.library_size_report()
    assert report.loc["rna", "zero_cells"] == ["cell000003", "cell000008"]
    assert report.loc["rna", "extreme_cells"] == ["cell000007"]
    assert 20 * median <= report.loc["rna", "threshold"] < 1e6
    with pytest.warns(UserWarning) as record:
        data.validate({"rna": "counts", "atac": "binary"})
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        data.validate({"rna": "counts", "atac": "binary"})  # the model checks its data several times
    assert not again, "warned once per modality"
    messages = [str(w.message) for w in record if "modality 'rna'" in str(w.message)]
    assert len(messages) == 2 and sum("modality 'rna'" in r.message for r in caplog.records) == 2
    assert "2 of 60 cells have no counts" in messages[0] and "'cell000003', 'cell000008'" in messages[0]
    assert "1 of 60 cells have an extreme library size" in messages[1] and "'cell000007' (1e+09)" in messages[1]
    kept = data.apply_qc([{"step": "filter_cells", "modality": "rna", "min_features": 1, "max_counts": 10**6}])
    assert kept.n_obs == 57 and "cell000005" in kept.obs_names
    assert kept.library_size_report().loc["rna", ["n_zero", "n_extreme"]].tolist() == [0, 0]
    real = ad.AnnData(np.full((4, 2), -1e6, np.float32), obs=pd.DataFrame(index=list("abcd")))
    assert MultiModality({"x": real}, likelihoods={"x": "normal"}).warn_library_sizes({"x": "real"}) == []
