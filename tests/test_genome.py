"""Tests of genomic coordinates (cavachon_like.data.genome), bins (cavachon_like.data.bins) and the QC step bin_genome."""
from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import cavachon_like.distributions  # noqa: F401  (registers the likelihoods' supports the step warns about)
from cavachon_like.data import (
    BinGenome,
    align_bins,
    attach_gene_coordinates,
    bin_counts,
    chromosome_boundaries,
    coordinates,
    from_config,
    parse_coordinates,
    read_gene_table,
    read_h5mu,
    read_intervals,
    simulate,
)
from cavachon_like.errors import DataWarning, InputError

SHARED = Path(__file__).parents[1] / ".." / "shared" / "data"
SNARE = SHARED / "snare_mouse_cortex.h5mu"
GENES = SHARED / "mm10_genes.tsv.gz"


def _peaks(chrom, start, end, x=None, seed=0):
    """Cells x peaks named chrN_start_end; random counts unless ``x`` is given."""
    names = [f"{c}_{s}_{e}" for c, s, e in zip(chrom, start, end)]
    if x is None:
        x = sp.random(30, len(names), density=0.3, format="csr", dtype=np.float32, random_state=seed,
                      data_rvs=lambda n: np.random.default_rng(seed).integers(1, 6, n))
    return ad.AnnData(sp.csr_matrix(x, dtype=np.float32), obs=pd.DataFrame(index=[f"c{i}" for i in range(x.shape[0])]),
                      var=pd.DataFrame(index=names))


def _gene_table(tmp_path, names=("Ga", "Gb", "Gc")):
    """Genes in GTF convention (1-based, inclusive), as the shipped mm10 table."""
    table = pd.DataFrame({"gene_name": list(names), "chrom": ["chr1", "chr1", "chr2"],
                          "start": [1001, 50001, 20001], "end": [30000, 52000, 20500], "strand": ["+", "-", "+"]})
    path = tmp_path / "genes.tsv.gz"
    table.to_csv(path, sep="\t", index=False)
    return path


# coordinates


def test_parse_both_formats_and_contigs():
    frame = parse_coordinates(["chr1_3000_3500", "chr2:10-20", "chrUn_GL456239_1000_2000", "chrX:5-6"])
    assert frame["chrom"].tolist() == ["chr1", "chr2", "chrUn_GL456239", "chrX"]
    assert frame["start"].tolist() == [3000, 10, 1000, 5] and frame["end"].tolist() == [3500, 20, 2000, 6]
    assert frame["start"].dtype == np.int64 and list(frame.index)[1] == "chr2:10-20"


def test_coordinates_prefer_var_columns():
    adata = _peaks(["chr1"] * 3, [0, 10, 20], [5, 15, 25])
    adata.var_names = ["a", "b", "c"]  # names say nothing; the columns do
    adata.var["chrom"], adata.var["start"], adata.var["end"] = "chr3", [100, 200, 300], [150, 250, 350]
    frame = coordinates(adata)
    assert frame["chrom"].tolist() == ["chr3"] * 3 and frame["end"].tolist() == [150, 250, 350]
    del adata.var["end"]
    with pytest.raises(InputError, match=r"var has \['chrom', 'start'\] but not \['end'\]"):
        coordinates(adata)


def test_bad_names_raise_naming_them_or_are_dropped_with_a_count():
    names = ["chr1_100_200", "peak7", "chr1:300_400", "chr1_500_400", "chr2:1-9"]
    with pytest.raises(InputError) as error:
        parse_coordinates(names, name="atac")
    message = str(error.value)
    assert "modality 'atac'" in message and "3 of 5" in message
    assert all(f"'{n}'" in message for n in ("peak7", "chr1:300_400", "chr1_500_400"))
    assert "chr1_3000_3500" in message and "drop_invalid=True" in message
    with pytest.warns(DataWarning, match="3 of 5 entries"):
        assert parse_coordinates(names, drop_invalid=True).index.tolist() == ["chr1_100_200", "chr2:1-9"]
    genes = _peaks(["chr1"], [0], [1])
    genes.var_names = ["Gad1"]
    with pytest.raises(InputError, match="attach_gene_coordinates"):
        bin_counts(genes)



@pytest.mark.parametrize("vectorised", [True, False])
def test_vectorised_name_parsing_reads_what_the_pattern_reads(vectorised, monkeypatch):
    """The split-based parser (NumPy >= 2.3) agrees with the documented pattern on awkward names;
    what it cannot vouch for (whitespace, non-ASCII digits) falls back to the pattern itself, as
    everything does on older NumPy."""
    if not vectorised and hasattr(np, "strings"):
        monkeypatch.delattr(np.strings, "rpartition", raising=False)
    from cavachon_like.data.genome import _NAME_PATTERN

    names = ["chr1_3000_3500", "chr2:10-20", "chrUn_GL456239_1000_2000", "chr1:5_6_7", "chr1_100-200", "a:b:1-2",
             "chr1:1-2-3", "HLA-A:1-9", "chr1 _1_2", "chr1_1_2\n", "chr1_\u0661\u0662_\u0663\u0664", "", "_1_2",
             "chr1__2", "chr1_1_", "chr1_0012_0100", "chrX:7-7", "chr1_9_3", "1_5_6", "x_y_1_2", "chrM:0-16299",
             "chr1\t:1-2", "chr1:+1-2", "chr1_1e3_2e3"]
    parts = pd.Series(names).str.extract(_NAME_PATTERN)
    start = pd.to_numeric(parts["s1"].fillna(parts["s2"]), errors="coerce")
    end = pd.to_numeric(parts["e1"].fillna(parts["e2"]), errors="coerce")
    valid = parts["c1"].fillna(parts["c2"]).notna() & (start >= 0) & (end > start)
    with pytest.warns(DataWarning, match=f"{int((~valid).sum())} of {len(names)} entries"):
        got = parse_coordinates(names, drop_invalid=True)
    assert got.index.tolist() == [n for n, v in zip(names, valid) if v]
    assert got["chrom"].tolist() == parts["c1"].fillna(parts["c2"])[valid].tolist()
    assert got["start"].tolist() == start[valid].astype(int).tolist()
    assert got["end"].tolist() == end[valid].astype(int).tolist()
    assert got.loc["chr1:5_6_7", "chrom"] == "chr1:5" and got.loc["a:b:1-2", "chrom"] == "a:b"


# genes


def test_gene_table_is_one_based_and_tss_follows_the_strand(tmp_path):
    table = read_gene_table(_gene_table(tmp_path))
    assert table.loc["Ga", ["start", "end"]].tolist() == [1000, 30000]  # 1-based 1001..30000 is BED [1000, 30000)
    rna = _peaks(["chr1"] * 3, [0, 1, 2], [1, 2, 3])
    rna.var_names = ["Gb", "Ga", "Gc"]
    tss = attach_gene_coordinates(rna, table).var
    assert tss["start"].tolist() == [51999, 1000, 20000] and (tss["end"] - tss["start"]).eq(1).all()
    assert tss["gene_end"].tolist() == [52000, 30000, 20500] and rna.var.columns.empty, "the input is left alone"
    body = attach_gene_coordinates(rna, table, anchor="body").var
    assert body["start"].tolist() == [50000, 1000, 20000]
    # the TSS puts Ga in bin 0; its body's midpoint (15500) in bin 1
    assert bin_counts(attach_gene_coordinates(rna, table), 10_000).var_names[0] == "chr1_0_10000"
    assert "chr1_10000_20000" in bin_counts(attach_gene_coordinates(rna, table, anchor="body"), 10_000).var_names


def test_missing_genes_are_reported_and_dropped_only_when_asked(tmp_path):
    rna = _peaks(["chr1"] * 4, [0, 1, 2, 3], [1, 2, 3, 4])
    rna.var_names = ["Ga", "Nope1", "Gc", "Nope2"]
    with pytest.raises(InputError, match=r"modality 'rna': 2 of 4 genes are not in the gene table, e.g. 'Nope1', "
                                         r"'Nope2'"):
        attach_gene_coordinates(rna, _gene_table(tmp_path), name="rna")
    with pytest.warns(DataWarning, match="2 of 4 genes"):
        kept = attach_gene_coordinates(rna, _gene_table(tmp_path), drop_missing=True)
    assert kept.var_names.tolist() == ["Ga", "Gc"]
    np.testing.assert_array_equal(kept.X.sum(axis=0).A1, rna.X[:, [0, 2]].sum(axis=0).A1)


# binning


def test_bin_sums_equal_the_per_cell_totals_of_the_features_kept():
    rng = np.random.default_rng(1)
    n = 400
    chrom = rng.choice(["chr1", "chr2", "chr10", "chrX"], n)
    start = rng.integers(0, 200_000, n)
    end = start + rng.integers(50, 3000, n)
    adata = _peaks(chrom, start, end, seed=2)
    adata.var_names = [*adata.var_names[:-3], "bad1", "bad2", "bad3"]  # no coordinates: dropped
    with pytest.warns(DataWarning, match="3 of 400"):
        binned = bin_counts(adata, 10_000, drop_invalid=True)
    kept = adata.X[:, :-3]
    np.testing.assert_array_equal(binned.X.sum(axis=1).A1, kept.sum(axis=1).A1)  # exact: integer counts
    assert binned.var["n_features"].sum() == n - 3 and binned.X.sum() == kept.sum()
    # each bin holds exactly the features whose midpoint lies in it
    mid = (start[:-3] + end[:-3]) // 2
    for j in rng.choice(binned.n_vars, 10, replace=False):
        row = binned.var.iloc[j]
        members = np.flatnonzero((chrom[:-3] == row["chrom"]) & (mid // 10_000 == row["bin_index"]))
        np.testing.assert_array_equal(binned.X[:, [j]].sum(axis=1).A1, kept[:, members].sum(axis=1).A1)
    assert binned.uns["genome_bins"] == {"bin_size": 10_000}


def test_midpoint_assignment_at_bin_edges():
    starts, ends = [9990, 9990, 0, 19_999, 25_000], [10_010, 10_009, 1, 20_000, 35_000]
    x = sp.csr_matrix(np.diag([1, 10, 100, 1000, 10_000]).astype(np.float32))
    binned = bin_counts(_peaks(["chr1"] * 5, starts, ends, x=x), 10_000)
    # midpoints 10000 (on the edge: the bin starting there), 9999, 0, 19999, 30000
    assert binned.var_names.tolist() == ["chr1_0_10000", "chr1_10000_20000", "chr1_30000_40000"]
    np.testing.assert_array_equal(binned.X.sum(axis=0).A1, [110, 1001, 10_000])
    assert binned.var["bin_index"].tolist() == [0, 1, 3]


def test_top_bins_chosen_across_modalities_and_aligned_in_genome_order():
    atac = bin_counts(_peaks(["chr10", "chr2", "chrX", "chr2"], [5, 5, 5, 20_005], [15, 15, 15, 20_015],
                             x=sp.csr_matrix(np.array([[3, 1, 0, 1], [3, 0, 0, 0]], np.float32))), 10_000)
    rna = bin_counts(_peaks(["chr2", "chr19", "chrX"], [25, 25, 25], [35, 35, 35],
                            x=sp.csr_matrix(np.array([[0, 9, 2], [0, 0, 1]], np.float32))), 10_000)
    # totals: chr10 6, chr2:0 1 (atac) + 0 (rna), chr2:20000 1, chrX 0 + 3, chr19 9 (rna only)
    out = align_bins({"atac": atac, "rna": rna}, top_bins=3)
    expected = ["chr10_0_10000", "chr19_0_10000", "chrX_0_10000"]  # natural order: chr10 < chr19 < chrX
    for mod in out.values():
        assert mod.var_names.tolist() == expected and sp.isspmatrix_csr(mod.X)
        assert mod.var[["chrom", "start", "end", "bin_index"]].equals(out["atac"].var[["chrom", "start", "end",
                                                                                         "bin_index"]])
    assert out["atac"][:, "chr19_0_10000"].X.nnz == 0, "a bin without atac features is an implicit zero"
    assert out["atac"].var["n_features"].tolist() == [1, 0, 1] and out["rna"].var["n_features"].tolist() == [0, 1, 1]
    np.testing.assert_array_equal(out["rna"].X.sum(axis=0).A1, [0, 9, 3])
    assert align_bins([atac, rna])[0].n_vars == 5, "without top_bins every bin of either modality"
    assert chromosome_boundaries(out["rna"].var).to_dict() == {"chr10": 0, "chr19": 1, "chrX": 2}


def test_blacklist_drops_overlapping_bins(tmp_path):
    binned = bin_counts(_peaks(["chr1"] * 4 + ["chr2"], [5, 10_005, 20_005, 30_005, 5], [9, 10_009, 20_009, 30_009, 9]),
                        10_000)
    # [19990, 20000) ends where bin 2 starts: it touches bin 1 only
    frame = pd.DataFrame({"chrom": ["chr1", "chr1", "chr9"], "start": [19_990, 35_000, 0], "end": [20_000, 36_000, 10]})
    kept = align_bins([binned], blacklist=frame)[0]
    assert kept.var_names.tolist() == ["chr1_0_10000", "chr1_20000_30000", "chr2_0_10000"]
    bed = tmp_path / "blacklist.bed"
    bed.write_text("track name=blacklist\n# ENCODE-like\nchr1\t19990\t20000\tHigh_Signal\nchr1\t35000\t36000\tLow\n")
    assert align_bins([binned], blacklist=bed)[0].var_names.tolist() == kept.var_names.tolist()
    assert read_intervals(bed)["start"].tolist() == [19_990, 35_000]
    bed.write_text("chr1\t5\t1\n")
    with pytest.raises(InputError, match="0 <= start < end"):
        read_intervals(bed)


def test_modalities_on_other_chromosome_names_are_an_error():
    a = bin_counts(_peaks(["chr1"], [5], [9]), 10_000)
    b = bin_counts(_peaks(["1"], [5], [9]), 10_000)
    with pytest.raises(InputError, match="modality 'atac' shares no genomic bin.*same genome build"):
        align_bins({"atac": a, "rna": b})
    with pytest.raises(InputError, match="different bin sizes"):
        align_bins({"atac": a, "rna": bin_counts(_peaks(["chr1"], [5], [9]), 5_000)})


def test_chromosome_boundaries_need_grouped_bins():
    var = pd.DataFrame({"chrom": ["chr1", "chr1", "chr2", "chr1"]})
    with pytest.raises(InputError, match="not grouped by chromosome"):
        chromosome_boundaries(var)


def _traced_peak(adata):
    tracemalloc.start()
    try:
        binned = align_bins([bin_counts(adata, 10_000)], top_bins=5_000)[0]
        return tracemalloc.get_traced_memory()[1], binned
    finally:
        tracemalloc.stop()


def test_result_stays_sparse_and_memory_grows_with_nonzeros():
    rng = np.random.default_rng(0)
    n_cells, n_features = 50_000, 20_000  # dense float32: 4 GB, and 1 GB as 5,000 bins
    var = pd.DataFrame({"chrom": rng.choice([f"chr{i}" for i in range(1, 20)], n_features),
                        "start": rng.integers(0, 50_000_000, n_features)}, index=[f"p{j}" for j in range(n_features)])
    var["end"] = var["start"] + 500
    peaks = {}
    for nnz in (50_000, 800_000):
        x = sp.csr_matrix((np.ones(nnz, np.float32), (rng.integers(0, n_cells, nnz), rng.integers(0, n_features, nnz))),
                          shape=(n_cells, n_features))
        peaks[nnz], binned = _traced_peak(ad.AnnData(x, var=var))
        assert sp.issparse(binned.X) and binned.X.nnz <= x.nnz and binned.shape == (n_cells, 5_000)
    print(f"traced peak: {peaks[50_000] / 2**20:.1f} MiB at 50k non-zeros, {peaks[800_000] / 2**20:.1f} MiB at 800k")
    assert peaks[50_000] < 20 * 2**20
    assert peaks[800_000] - peaks[50_000] < 100 * 750_000, "memory grows by tens of bytes per non-zero"


# the QC step


def _placed_simulation(tmp_path):
    mm = simulate(n_cells=60, n_batches=2, n_atac=80, n_rna=3, seed=4)
    rng = np.random.default_rng(0)
    atac = mm.modality("atac").var
    atac["chrom"] = rng.choice(["chr1", "chr2"], len(atac))
    atac["start"] = rng.integers(0, 60_000, len(atac))
    atac["end"] = atac["start"] + 400
    return mm, _gene_table(tmp_path, mm.modality("rna").var_names)


def test_qc_step_from_yaml_dict_bins_and_aligns_two_modalities(tmp_path):
    mm, genes = _placed_simulation(tmp_path)
    step = {"step": "bin_genome", "modality": ["atac", "rna"], "bin_size": 10_000, "top_bins": 8,
            "gene_table": str(genes), "genes": "rna"}
    with pytest.warns(DataWarning, match="'atac': binned counts reach .* likelihood 'bernoulli'"):
        out = mm.apply_qc([step])
    atac, rna = out.modality("atac"), out.modality("rna")
    columns = ["chrom", "start", "end", "bin_index"]
    assert atac.n_vars == 8 and (atac.var[columns].to_numpy() == rna.var[columns].to_numpy()).all()
    assert atac.var_names[0].startswith("atac:chr1_") and rna.var_names[0].startswith("rna:chr1_")
    assert (atac.likelihood, rna.likelihood, atac.batch_key) == ("bernoulli", "zinb", ["batch"])
    assert out.obs_names.equals(mm.obs_names) and atac.obs["batch"].equals(mm.modality("atac").obs["batch"])
    assert sp.isspmatrix_csr(atac.X) and "true_parent" in out.obsm
    record = out.uns["cavachon_like"]["qc"][-1]
    assert record["step"] == "bin_genome" and record["modality"] == "rna" and record["n_bins"] == 8
    assert "qc" not in mm.uns["cavachon_like"], "the input is left unchanged"
    out.validate()
    out.write(tmp_path / "binned.h5mu")
    back = read_h5mu(tmp_path / "binned.h5mu")
    assert back.modality("atac").var["bin_index"].tolist() == atac.var["bin_index"].tolist()
    assert back.uns["cavachon_like"]["qc"][-1]["n_bins"] == 8
    assert from_config(from_config(step).get_config()).get_config() == from_config(step).get_config()


def test_qc_step_on_one_modality_keeps_the_others(tmp_path):
    mm, _ = _placed_simulation(tmp_path)
    out = mm.apply_qc([{"step": "bin_genome", "modality": "atac", "likelihood": "poisson"}])
    assert out.modality("atac").likelihood == "poisson" and out.modality("atac").var_names[0].startswith("chr1_")
    assert out.modality("rna").var_names.equals(mm.modality("rna").var_names)
    np.testing.assert_array_equal(out.modality("atac").X.sum(axis=1).A1, mm.modality("atac").X.sum(axis=1).A1)


def test_qc_step_errors(tmp_path):
    mm, _ = _placed_simulation(tmp_path)
    with pytest.raises(InputError, match="pass both gene_table"):
        mm.apply_qc([{"step": "bin_genome", "modality": ["atac", "rna"], "genes": "rna"}])
    with pytest.raises(InputError, match="modality 'rna'.*have no valid genomic coordinates.*'gene00000'"):
        mm.apply_qc([{"step": "bin_genome", "modality": ["atac", "rna"]}])
    with pytest.raises(InputError, match=r"\['protein'\] are not among"):
        BinGenome(["atac", "protein"])(mm)
    with pytest.raises(ValueError, match="gene_anchor"):
        from_config({"step": "bin_genome", "modality": "atac", "gene_anchor": "middle"})
    with pytest.raises(ValueError, match="bin_size"):
        from_config({"step": "bin_genome", "modality": "atac", "bin_size": 0})



def test_qc_step_names_unparseable_peaks_and_drops_them_only_when_asked(tmp_path):
    mm, _ = _placed_simulation(tmp_path)
    atac = mm.modality("atac")
    names = [f"{c}_{s}_{e}" for c, s, e in zip(atac.var["chrom"], atac.var["start"], atac.var["end"])]
    names[3], names[40] = "peak_A", "chr1-100-200"
    atac.var = pd.DataFrame(index=names)
    step = {"step": "bin_genome", "modality": "atac", "likelihood": "poisson"}
    with pytest.raises(InputError) as error:
        mm.apply_qc([step])
    message = str(error.value)
    assert "modality 'atac': 2 of 80 entries have no valid genomic coordinates" in message
    assert "'peak_A'" in message and "'chr1-100-200'" in message
    assert "'chr1_3000_3500' or 'chr1:3000-3500'" in message and "drop_unplaced: true" in message
    with pytest.warns(DataWarning, match="2 of 80 entries.*dropped them"):
        out = mm.apply_qc([{**step, "drop_unplaced": True}])
    kept = np.delete(np.arange(80), [3, 40])
    np.testing.assert_array_equal(out.modality("atac").X.sum(axis=1).A1, atac.X[:, kept].sum(axis=1).A1)
    assert out.uns["cavachon_like"]["qc"][-1]["n_features_removed"] == 2


def test_qc_step_reports_genes_missing_from_the_table_and_drops_them_only_when_asked(tmp_path):
    mm, _ = _placed_simulation(tmp_path)
    genes = mm.modality("rna").var_names.tolist()
    table = _gene_table(tmp_path, [genes[0], "Other1", "Other2"])  # genes[1] and genes[2] are not in it
    step = {"step": "bin_genome", "modality": ["atac", "rna"], "gene_table": str(table), "genes": "rna",
            "likelihood": "poisson"}
    with pytest.raises(InputError) as error:
        mm.apply_qc([step])
    message = str(error.value)
    assert f"modality 'rna': 2 of 3 genes are not in the gene table, e.g. '{genes[1]}', '{genes[2]}'" in message
    assert "drop_unplaced: true" in message
    with pytest.warns(DataWarning, match="2 of 3 genes are not in the gene table.*dropped them"):
        out = mm.apply_qc([{**step, "drop_unplaced": True}])
    rna = out.modality("rna")
    assert int(rna.var["n_features"].sum()) == 1 and out.uns["cavachon_like"]["qc"][-1]["n_features_removed"] == 2
    np.testing.assert_array_equal(rna.X.sum(axis=1).A1, mm.modality("rna").X[:, [0]].sum(axis=1).A1)


def test_qc_step_rejects_modalities_on_another_genome_build(tmp_path):
    """Genes placed with an Ensembl-style table ('1', '2') share no bin with peaks on 'chr1', 'chr2'."""
    mm, _ = _placed_simulation(tmp_path)
    genes = mm.modality("rna").var_names
    table = pd.DataFrame({"gene_name": genes, "chrom": ["1", "1", "2"], "start": [1001, 50001, 20001],
                          "end": [30000, 52000, 20500], "strand": ["+", "-", "+"]})
    step = {"step": "bin_genome", "modality": ["atac", "rna"], "gene_table": table, "genes": "rna"}
    with pytest.raises(InputError, match=r"modality 'atac' shares no genomic bin with the others \(chromosomes "
                                         r".*same genome build, with the same chromosome names"):
        BinGenome(**{k: v for k, v in step.items() if k != "step"})(mm)


# real data


@pytest.fixture(scope="module")
def snare():
    if not SNARE.exists() or not GENES.exists():
        pytest.skip(f"SNARE-seq data or gene table not found in {SHARED.resolve()} (../shared/data next to the "
                    "repository)")
    return read_h5mu(SNARE, likelihoods={"rna": "zinb", "atac": "bernoulli"})


def test_snare_atac_and_rna_in_10kb_bins(snare):
    begin = time.perf_counter()
    rna = attach_gene_coordinates(snare.modality("rna"), read_gene_table(GENES), name="rna")
    assert rna.var["chrom"].notna().all() and rna.n_vars == 1_677, "every SNARE gene gets a coordinate"
    bins = {"atac": bin_counts(snare.modality("atac"), 10_000), "rna": bin_counts(rna, 10_000)}
    for name, binned in bins.items():
        original = snare.modality(name).X
        np.testing.assert_array_equal(binned.X.sum(axis=1, dtype=np.float64).A1,
                                      original.sum(axis=1, dtype=np.float64).A1)
    nonempty = {k: int((b.X.getnnz(axis=0) > 0).sum()) for k, b in bins.items()}
    aligned = align_bins(bins, top_bins=10_000)
    both = int(((aligned["atac"].X.getnnz(axis=0) > 0) & (aligned["rna"].X.getnnz(axis=0) > 0)).sum())
    rna_near_atac = np.isin(bins["rna"].var_names, bins["atac"].var_names).mean()
    seconds = time.perf_counter() - begin
    print(f"\nSNARE 10 kb bins: atac {bins['atac'].n_vars} bins ({nonempty['atac']} non-empty) from 25,734 regions, "
          f"{bins['atac'].X.sum():.0f} counts; rna {bins['rna'].n_vars} TSS bins ({nonempty['rna']} non-empty) from "
          f"1,677 genes, {bins['rna'].X.sum():.0f} counts; {rna_near_atac:.1%} of rna bins hold an atac region; "
          f"top 10,000 bins: {both} with counts in both; {seconds:.1f} s")
    # the data file is fixed: these change only with the binning conventions
    assert (bins["atac"].n_vars, nonempty["atac"], bins["rna"].n_vars) == (15_385, 14_951, 1_661)
    assert rna_near_atac > 0.8, "genes and regions are on one assembly"
    assert chromosome_boundaries(aligned["atac"].var).index[:3].tolist() == ["chr1", "chr2", "chr3"]
    assert seconds < 15
