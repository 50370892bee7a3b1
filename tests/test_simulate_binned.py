"""Tests of the simulator of channels on shared genomic bins (simulate_binned): layout, determinism,
local structure shared across channels, the YAML option, and a Conv1D VAE trained on it."""
from __future__ import annotations

import importlib

import keras
import numpy as np
import pytest
import scipy.sparse as sp
import yaml

import cavachon_like
from cavachon_like import CAVACHON
from cavachon_like.analysis import knn_agreement
from cavachon_like.config import ConfigError, load_config, load_data, validate_config
from cavachon_like.data import (
    MultiModality,
    chromosome_boundaries,
    parse_coordinates,
    read_h5mu,
    simulate,
    simulate_binned,
)
from cavachon_like.data.bins import bin_multimodality
from cavachon_like.nn import Conv1DDecoder, Conv1DEncoder

CHANNELS = ("atac", "h3k27ac", "h3k27me3")
MOUSE = [f"chr{i}" for i in range(1, 20)] + ["chrX", "chrY"]
# The module itself: the package's attribute of that name is the function.
simulate_binned_module = importlib.import_module("cavachon_like.data.simulate_binned")


@pytest.fixture(scope="module")
def data() -> MultiModality:
    return simulate_binned(channels=CHANNELS, seed=0)


def _normalised(x: sp.csr_matrix) -> np.ndarray:
    """Counts over each cell's total, so that library size does not correlate every pair of bins."""
    x = x.toarray()
    return x / x.sum(axis=1, keepdims=True)


def _column_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation across cells of column ``j`` of ``a`` with column ``j`` of ``b``."""
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    return (a * b).sum(axis=0) / np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))


def _counts(mm: MultiModality) -> dict[str, np.ndarray]:
    return {m: mm.mod[m].X.toarray() for m in mm.mod}


def test_shapes_sparsity_and_annotations(data):
    assert isinstance(data, MultiModality) and list(data.mod) == list(CHANNELS)
    for m in CHANNELS:
        mod = data.modality(m)
        assert mod.shape == (600, 2000) and mod.likelihood == "poisson" and mod.batch_key == ["batch"]
        assert sp.issparse(mod.X) and mod.X.format == "csr" and mod.X.dtype == np.float32
        assert np.array_equal(mod.X.data, np.round(mod.X.data)) and mod.X.data.min() >= 1
        # measured 0.17-0.20 of the entries on seeds 0-5
        assert mod.X.nnz < 0.3 * 600 * 2000, mod.X.nnz
        for col in ("cell_type", "batch"):
            assert mod.obs[col].dtype == "category"
        assert mod.uns["genome_bins"] == {"bin_size": 10_000}
    assert data.obs["cell_type"].dtype == "category" and data.obs["batch"].dtype == "category"
    assert sorted(set(data.obs["cell_type"])) == [f"T{t}" for t in range(5)]
    assert sorted(set(data.obs["batch"])) == ["batch0", "batch1"]
    data.validate()
    # Library sizes vary per cell (CV 0.35-0.39 on seeds 0-5) and per channel: cells' totals in two
    # channels are correlated (a shared cell factor, 0.64-0.71 on the log scale) but far from equal.
    totals = np.stack([np.asarray(data.mod[m].X.sum(axis=1)).ravel() for m in CHANNELS], axis=1)
    assert (totals.std(axis=0) / totals.mean(axis=0) > 0.2).all()
    log_correlation = np.corrcoef(np.log(totals).T)[np.triu_indices(3, 1)]
    assert ((log_correlation > 0.3) & (log_correlation < 0.9)).all(), log_correlation
    default = simulate_binned()
    assert list(default.mod) == ["atac", "h3k27ac"] and default.shape == (600, 4000)


def test_deterministic_from_the_seed_and_independent_of_the_chunk_size(data, monkeypatch):
    again = simulate_binned(channels=CHANNELS, seed=0)
    first = _counts(data)
    assert all(np.array_equal(first[m], x) for m, x in _counts(again).items())
    assert again.obs.equals(data.obs) and again.mod["atac"].var.equals(data.mod["atac"].var)
    other = simulate_binned(channels=CHANNELS, seed=1)
    assert all(not np.array_equal(first[m], x) for m, x in _counts(other).items())
    assert not np.array_equal(other.uns["simulation"]["domains"], data.uns["simulation"]["domains"])
    # Chunks of 97 cells (instead of all 600 at once) give the same counts: memory follows the chunk.
    monkeypatch.setattr(simulate_binned_module, "_CHUNK_ENTRIES", 97 * 2000)
    chunked = simulate_binned(channels=CHANNELS, seed=0)
    assert all(np.array_equal(first[m], x) for m, x in _counts(chunked).items())


def test_survives_an_h5mu_round_trip(tmp_path):
    """A YAML run writes its data (uns["simulation"] included) to result.h5mu."""
    data = simulate_binned(n_cells=40, channels=CHANNELS, seed=4)  # writing turns var strings into categories
    data.write(tmp_path / "binned.h5mu")
    back = read_h5mu(tmp_path / "binned.h5mu")
    assert list(back.mod) == list(CHANNELS) and back.modality("h3k27me3").likelihood == "poisson"
    assert all((back.mod[m].X != data.mod[m].X).nnz == 0 for m in CHANNELS)
    assert np.array_equal(back.uns["simulation"]["domains"], data.uns["simulation"]["domains"])


def test_bins_are_named_and_ordered_as_bin_genome_writes_them(data):
    var = data.mod["atac"].var
    for m in CHANNELS:
        mine = data.mod[m].var
        assert mine.reset_index(drop=True).equals(var.reset_index(drop=True))  # the same bins in every channel
        assert all(name.startswith(f"{m}:") for name in mine.index)
        parsed = parse_coordinates([name[len(m) + 1:] for name in mine.index])
        assert parsed["chrom"].tolist() == mine["chrom"].tolist()
        assert parsed["start"].tolist() == mine["start"].tolist() and parsed["end"].tolist() == mine["end"].tolist()
    boundaries = chromosome_boundaries(var)
    assert boundaries.index.tolist() == MOUSE  # chr10 after chr9, chrX and chrY last
    sizes = np.diff(np.r_[boundaries.to_numpy(), len(var)])
    assert sizes.sum() == 2000 and dict(zip(MOUSE, sizes.tolist())) == dict(
        simulate_binned_module.DEFAULT_CHROMOSOME_BINS)
    assert ((var["end"] - var["start"]) == 10_000).all()
    assert (var["start"] == var["bin_index"] * 10_000).all()
    # bin_genome, re-binning the simulated channels by their coordinates, gives the same names and counts.
    rebinned = bin_multimodality(data, list(CHANNELS), bin_size=10_000)
    for m in CHANNELS:
        assert rebinned.mod[m].var_names.equals(data.mod[m].var_names)
        assert (rebinned.mod[m].X != data.mod[m].X).nnz == 0
    # Other genomes: names and bin size as given, chromosomes put in genome order.
    single = simulate_binned(n_cells=20, chromosome_bins={"chrX": 30, "chr10": 40, "chr2": 50}, channels=["atac"],
                             bin_size=5_000, domain_length=(3, 8), seed=2)
    assert chromosome_boundaries(single.mod["atac"].var).to_dict() == {"chr2": 0, "chr10": 50, "chrX": 90}
    assert single.mod["atac"].var_names[:2].tolist() == ["chr2_0_5000", "chr2_5000_10000"]
    two = simulate_binned(n_cells=5, chromosome_bins=[40, 30], channels=["atac"], seed=0).mod["atac"].var
    assert two["chrom"].unique().tolist() == ["chr1", "chr2"] and two.index[40] == "chr2_0_10000"


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_domains_are_runs_of_bins_inside_one_chromosome(seed):
    # Short chromosomes and long domains: many domains end near a chromosome boundary.
    mm = simulate_binned(n_cells=10, chromosome_bins=[12, 7, 30, 9, 25], domain_length=(4, 9),
                         domain_fraction=0.7, channels=["atac"], seed=seed)
    var, domains = mm.mod["atac"].var, mm.uns["simulation"]["domains"]
    chrom, domain = var["chrom"].to_numpy(), var["domain"].to_numpy()
    assert len(domains) >= 3
    for d, (first, stop) in enumerate(domains):
        assert 4 <= stop - first <= 9
        assert len(set(chrom[first:stop])) == 1  # never across a chromosome boundary
        assert (domain[first:stop] == d).all()
    assert (domain >= 0).sum() == (domains[:, 1] - domains[:, 0]).sum()  # no other bin belongs to a domain
    same_chromosome = chrom[domains[1:, 0]] == chrom[domains[:-1, 0]]
    # within a chromosome a gap separates domains, so each is its own run of bins
    assert (domains[1:, 0][same_chromosome] > domains[:-1, 1][same_chromosome]).all()
    assert mm.uns["simulation"]["active"].shape == (5, len(domains))


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="n_cells must be a positive integer"):
        simulate_binned(n_cells=0)
    with pytest.raises(ValueError, match="channels must be distinct names"):
        simulate_binned(channels=["atac", "atac"])
    with pytest.raises(ValueError, match="chromosome_bins must give a positive number of bins"):
        simulate_binned(chromosome_bins=[10, 0])
    with pytest.raises(ValueError, match=r"domain_length must be \(fewest, most\)"):
        simulate_binned(domain_length=(9, 3))
    with pytest.raises(ValueError, match="no domain of 5-50 bins fits the chromosomes"):
        simulate_binned(chromosome_bins=[3, 4])


def test_signal_is_local_in_bin_order(data):
    """Across cells, neighbouring bins co-vary and bins far apart do not; the co-variation is the domains'."""
    x = _normalised(data.mod["atac"].X)
    var = data.mod["atac"].var
    chrom, domain = var["chrom"].to_numpy(), var["domain"].to_numpy()
    left = np.flatnonzero(chrom[:-1] == chrom[1:])
    near = _column_correlations(x[:, left], x[:, left + 1])
    far = (left + np.random.default_rng(12345).integers(200, len(var) - 200, len(left))) % len(var)
    far = _column_correlations(x[:, left], x[:, far])
    in_domain = (domain[left] >= 0) & (domain[left] == domain[left + 1])
    outside = (domain[left] < 0) & (domain[left + 1] < 0)
    print(f"neighbour correlation {near.mean():.3f} (in domains {near[in_domain].mean():.3f}, outside "
          f"{near[outside].mean():.3f}), far {far.mean():.3f}")
    # Seeds 0-5: neighbours 0.070-0.086, far -0.002 to 0.001; in domains 0.19-0.22, outside 0.000-0.005.
    assert near.mean() > 0.04 and abs(far.mean()) < 0.01 and near.mean() > far.mean() + 0.04
    assert near[in_domain].mean() > 0.12 and abs(near[outside].mean()) < 0.02


def test_channels_share_the_domains(data):
    """Accessibility and the active mark go up together in a domain, the repressive mark goes down."""
    atac, active, repressive = (_normalised(data.mod[m].X) for m in CHANNELS)
    domain = data.mod["atac"].var["domain"].to_numpy()
    inside = domain >= 0
    with_active, with_repressive = _column_correlations(atac, active), _column_correlations(atac, repressive)
    # Per bin, seeds 0-5: active 0.19-0.22 inside domains, repressive -0.081 to -0.095; outside |r| <= 0.003.
    assert with_active[inside].mean() > 0.1 and with_repressive[inside].mean() < -0.05
    assert abs(with_active[~inside].mean()) < 0.02 and abs(with_repressive[~inside].mean()) < 0.02
    # Summed over each domain's bins, seeds 0-5: active 0.78-0.87, repressive -0.45 to -0.52.
    member = sp.csr_matrix((np.ones(inside.sum()), (np.flatnonzero(inside), domain[inside])),
                           shape=(len(domain), domain.max() + 1))
    totals = [np.asarray(x @ member) for x in (atac, active, repressive)]
    per_domain_active = _column_correlations(totals[0], totals[1])
    per_domain_repressive = _column_correlations(totals[0], totals[2])
    print(f"domain totals: active {per_domain_active.mean():.2f}, repressive {per_domain_repressive.mean():.2f}")
    assert per_domain_active.mean() > 0.6 and per_domain_repressive.mean() < -0.3


def test_yaml_kind_binned_goes_through_load_data(tmp_path):
    path = tmp_path / "binned.yaml"
    path.write_text(yaml.safe_dump({
        "seed": 3,
        "data": {"simulate": {"kind": "binned", "n_cells": 80, "channels": ["atac", "h3k27me3"]}},
        "model": {"components": [{"name": "joint", "modalities": ["atac", "h3k27me3"], "encoder": "conv1d",
                                  "decoder": "conv1d"}]},
    }))
    config = load_config(path)
    loaded = load_data(config["data"], seed=config["seed"])
    assert config["data"]["simulate"]["kind"] == "binned"  # the saved config is left as written
    expected = simulate_binned(n_cells=80, channels=["atac", "h3k27me3"], seed=3)
    assert list(loaded.mod) == ["atac", "h3k27me3"]
    assert all(np.array_equal(x, expected.mod[m].X.toarray()) for m, x in _counts(loaded).items())
    assert cavachon_like.simulate_binned is simulate_binned  # also a top-level name, as simulate


def test_yaml_simulate_kinds_and_their_errors():
    def data_config(simulate_options):
        return validate_config({"data": {"simulate": simulate_options},
                                "model": {"components": [{"name": "a", "modalities": ["atac"]}]}})["data"]

    small = {"n_cells": 30, "n_atac": 20, "n_rna": 10}
    cells = load_data(data_config({"kind": "cells", **small}), seed=1)
    default = load_data(data_config(small), seed=1)  # no kind: the paired-cells simulator, as before
    expected = simulate(seed=1, **small)
    for mm in (cells, default):
        assert list(mm.mod) == ["atac", "rna"]
        assert all(np.array_equal(x, expected.mod[m].X.toarray()) for m, x in _counts(mm).items())
    with pytest.raises(ConfigError, match=r"data.simulate.kind: unknown simulator 'bined'; accepted kinds: "
                                          r"\['cells', 'binned'\]"):
        load_data(data_config({"kind": "bined"}))
    with pytest.raises(ConfigError, match=r"data.simulate: \['n_atac'\] are not options of the 'binned' simulator; "
                                          r"accepted: \['n_cells', 'chromosome_bins'"):
        load_data(data_config({"kind": "binned", "n_atac": 20}))


@pytest.fixture(scope="module")
def trained():
    """A Conv1D VAE over the default simulation's two channels (about 10-25 s on 2 shared CPUs)."""
    data = simulate_binned(seed=0)
    conv = {"filters": [16], "kernel_size": 11}
    spec = {"name": "joint", "modalities": list(data.mod), "latent_dim": 4,
            "encoder": {"class": "conv1d", "units": [32], **conv}, "decoder": {"class": "conv1d", **conv}}
    model = CAVACHON.from_data(data, [spec], seed=0, pretrain_epochs=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    loss = model.fit(data, epochs=8, batch_size=64, verbose=0).history["loss"]
    return model, data, np.asarray(loss, dtype=float)


def test_conv_vae_trains_with_the_chromosomes_of_the_var_column(trained):
    model, _, loss = trained
    component = model.components["joint"]
    assert isinstance(component.encoder, Conv1DEncoder)
    assert all(isinstance(d, Conv1DDecoder) for d in component.decoders.values())
    sizes = list(simulate_binned_module.DEFAULT_CHROMOSOME_BINS.values())
    assert component.encoder.get_config()["chromosome_sizes"] == sizes
    assert all(d.get_config()["chromosome_sizes"] == sizes for d in component.decoders.values())
    print("conv1d loss per epoch:", loss.round(1).tolist())
    # Data and model seeds 0-4: the last epoch's loss is 0.82-0.83 of the first's.
    assert np.isfinite(loss).all() and loss[-1] < 0.93 * loss[0]


def test_conv_vae_latent_separates_cell_types(trained):
    """The domains each cell type activates are recoverable from the bins: 20-NN agreement far above chance."""
    model, data, _ = trained
    latent = model.get_latent_representation(data)["z_joint"]
    agreement = knn_agreement(latent, data.obs["cell_type"])
    chance = float((data.obs["cell_type"].value_counts(normalize=True) ** 2).sum())
    print(f"20-NN cell-type agreement {agreement:.3f}, chance {chance:.3f}")
    # Data and model seeds 0-4: 0.91, 0.99, 0.95, 0.99, 0.86 against a chance of 0.20.
    assert agreement > max(0.6, 3 * chance)
