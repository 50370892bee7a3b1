"""Readers (10x folders, the shared SNARE-seq file) and what reading, slicing and copying keep."""
from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
import tensorflow as tf

from cavachon_like.data import (
    Modality,
    MultiModality,
    read_10x,
    read_10x_multi,
    read_h5mu,
    simulate,
)

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
