"""Training from data left on disk (read_h5mu(..., backed=True)): same data, same checks, same model."""
from __future__ import annotations

import os

import h5py
import keras
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from cavachon_like import CAVACHON
from cavachon_like.data import MultiModality, read_h5ad, read_h5mu, simulate, simulate_to_disk, streaming
from cavachon_like.data.backed import is_backed
from cavachon_like.errors import InputError
from cavachon_like.model import stages

pytestmark = pytest.mark.floor  # anndata's on-disk matrices changed API across versions: run on the floor too

QC = [{"step": "filter_features", "modality": "atac", "min_cells": 40},
      {"step": "filter_cells", "modality": "rna", "min_features": 40}]


@pytest.fixture(scope="module")
def h5mu(tmp_path_factory):
    path = tmp_path_factory.mktemp("backed") / "sim.h5mu"
    simulate(n_cells=500, n_batches=2, n_atac=150, n_rna=80, seed=4).write(path)
    return path


def test_on_disk_data_pass_the_same_checks_and_qc_as_in_memory(h5mu):
    memory, disk = read_h5mu(h5mu, backed=False), read_h5mu(h5mu, backed=True)
    assert disk.on_disk and not memory.on_disk
    disk.validate()
    assert disk.library_size_report()["median"].tolist() == memory.library_size_report()["median"].tolist()
    filtered_memory, filtered_disk = memory.apply_qc(QC), disk.apply_qc(QC)
    assert filtered_disk.on_disk
    assert filtered_disk.shape == filtered_memory.shape and filtered_memory.n_obs < memory.n_obs
    assert filtered_disk.obs_names.equals(filtered_memory.obs_names)
    for name in memory.mod:
        on_disk = filtered_disk.mod[name].X[np.arange(filtered_disk.n_obs)]
        assert (on_disk != filtered_memory.mod[name].X).nnz == 0
        assert filtered_disk.mod[name].likelihood == memory.mod[name].likelihood
    assert filtered_disk.uns["cavachon_like"]["qc"] == filtered_memory.uns["cavachon_like"]["qc"]


def test_batches_from_disk_hold_every_cell_once_with_its_own_rows(h5mu, monkeypatch):
    # small blocks and windows, so a pass crosses many windows and carries cells between them
    monkeypatch.setattr(streaming, "BLOCK_CELLS", 16)
    monkeypatch.setattr(streaming, "WINDOW_NONZEROS", 4000)
    memory, disk = read_h5mu(h5mu, backed=False), read_h5mu(h5mu, backed=True)
    train, _ = memory.split(0.2, seed=1)
    # the cell a batch row came from: its row of a per-cell array of positions
    per_cell = {"cell": np.arange(memory.n_obs)}
    ds = disk.to_dataset(batch_size=48, indices=train, seed=3, per_cell=per_cell)
    assert ds.cardinality().numpy() == int(np.ceil(len(train) / 48))
    first = list(ds)
    cells = np.concatenate([b["cell"].numpy() for b in first])
    assert sorted(cells.tolist()) == train.tolist()  # every training cell exactly once
    assert [len(b["cell"]) for b in first[:-1]] == [48] * (len(first) - 1)
    for name in memory.mod:
        dense = np.concatenate([tf.sparse.to_dense(b["x"][name]).numpy() for b in first])
        np.testing.assert_array_equal(dense, memory.mod[name].X[cells].toarray())
    onehot = np.concatenate([b["batch"]["rna"].numpy() for b in first])
    np.testing.assert_array_equal(onehot, memory.mod["rna"].batch_one_hot()[cells])
    # shuffled: not in file order, another order next pass, the same orders for the same seed
    second = np.concatenate([b["cell"].numpy() for b in ds])
    assert not np.array_equal(cells, np.sort(cells)) and not np.array_equal(cells, second)
    again = disk.to_dataset(batch_size=48, indices=train, seed=3, per_cell=per_cell)
    assert np.array_equal(np.concatenate([b["cell"].numpy() for b in again]), cells)
    # unshuffled: file order, dense on request, drop_remainder honoured
    plain = disk.to_dataset(batch_size=48, shuffle=False, sparse=False, drop_remainder=True, per_cell=per_cell)
    batches = list(plain)
    assert len(batches) == memory.n_obs // 48
    np.testing.assert_array_equal(np.concatenate([b["cell"].numpy() for b in batches]),
                                  np.arange(len(batches) * 48))
    np.testing.assert_array_equal(batches[1]["x"]["atac"].numpy(), memory.mod["atac"].X[48:96].toarray())


def test_an_order_variable_replays_a_pass(h5mu):
    disk = read_h5mu(h5mu, backed=True)
    order = tf.Variable(0, dtype=tf.int64)
    ds = disk.to_dataset(batch_size=64, seed=0, order=order, per_cell={"cell": np.arange(disk.n_obs)})

    def cells():
        return np.concatenate([b["cell"].numpy() for b in ds])

    first = cells()
    order.assign(1)
    second = cells()
    order.assign(0)
    assert np.array_equal(cells(), first) and not np.array_equal(first, second)


def test_a_model_trains_from_disk_and_embeds_on_disk_data_as_in_memory(h5mu, small_components):
    disk, memory = read_h5mu(h5mu, backed=True), read_h5mu(h5mu, backed=False)
    losses = {}
    for name, data in (("disk", disk), ("memory", memory)):
        model = CAVACHON.from_data(data, small_components, seed=0, pretrain_epochs=1)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        losses[name] = model.fit(data, epochs=3, batch_size=64, verbose=0).history["loss"]
    # the same model on the same cells in other batches: the same course of the loss (its last
    # value of the RNA stage within a few per cent; a stage's first epoch is several times higher)
    assert np.isfinite(losses["disk"]).all() and len(losses["disk"]) == len(losses["memory"])
    assert abs(losses["disk"][-1] / losses["memory"][-1] - 1) < 0.1
    for key, value in model.get_latent_representation(disk).items():
        np.testing.assert_allclose(value, model.get_latent_representation(memory)[key], rtol=1e-5, atol=1e-5)
    # the RNA stage's frozen ATAC posterior is computed once only from memory: on disk it would cost a read
    assert stages.frozen_moments(model, disk, ["rna"]) == {}
    assert stages.frozen_moments(model, memory, ["rna"])["atac"].shape[0] == memory.n_obs


def test_an_interrupted_fit_from_disk_resumes_to_the_uninterrupted_weights(h5mu, small_components, tmp_path):
    """Resuming replays each epoch's order of cells from the file, as it does in memory."""
    class Interrupt(keras.callbacks.Callback):
        epochs = 0

        def on_epoch_end(self, epoch, logs=None):
            Interrupt.epochs += 1
            if Interrupt.epochs == 3:  # the RNA stage's first epoch, before it is checkpointed
                raise KeyboardInterrupt

    def fit(callbacks=(), resume=False):
        disk = read_h5mu(h5mu, backed=True)
        model = CAVACHON.from_data(disk, small_components, seed=2, pretrain_epochs=0)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        model.fit(disk, epochs=2, batch_size=64, verbose=0, callbacks=list(callbacks), validation_split=0.1,
                  checkpoint=tmp_path / "run", resume=resume)
        return model

    with pytest.raises(KeyboardInterrupt):
        fit([Interrupt()])
    resumed = fit(resume=True)
    whole = CAVACHON.from_data(read_h5mu(h5mu, backed=True), small_components, seed=2, pretrain_epochs=0)
    whole.compile(optimizer=keras.optimizers.Adam(1e-3))
    whole.fit(read_h5mu(h5mu, backed=True), epochs=2, batch_size=64, verbose=0, validation_split=0.1)
    for a, b in zip(resumed.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_a_replicated_step_on_disk_data_takes_the_single_device_gradient(small_data, small_components, tmp_path):
    """Under MirroredStrategy each global batch read from disk is split across the replicas (not
    handed whole to one): one SGD step's update equals the single-device step on the data in memory.
    (``small_data``'s shapes, as tests/test_distributed.py: TensorFlow keys its collectives by
    instance, so models of other shapes under later strategies in the process would clash.)"""
    path = tmp_path / "small.h5mu"
    small_data.write(path)

    def step(data, strategy):
        with strategy.scope():
            model = CAVACHON.from_data(data, small_components, training="joint", pretrain_epochs=0, seed=0)
            model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1))
        model.sample_latent = False
        before = [np.array(w) for w in model.trainable_weights]
        model.fit(model.make_dataset(data, batch_size=64, indices=np.arange(64)), epochs=1, verbose=0)
        return [b - np.array(w) for b, w in zip(before, model.trainable_weights)]

    single = step(read_h5mu(path, backed=False), tf.distribute.get_strategy())
    mirrored = step(read_h5mu(path, backed=True), tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    # Each replica sums its half of the batch before the two halves are added, so float32 rounding
    # differs from the single-device sum (1.1e-4 relative on one of 36 entries, TF 2.16 on Intel);
    # a batch handed whole to one replica would be off by a factor of about 2.
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * np.abs(a).max())


def test_a_file_changed_during_training_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "WINDOW_NONZEROS", 500)  # a check before each of many windows
    path = tmp_path / "data.h5mu"
    simulate(n_cells=300, n_atac=60, n_rna=40, seed=1).write(path)
    disk = read_h5mu(path, backed=True)
    ds = iter(disk.to_dataset(batch_size=16, shuffle=False))
    next(ds)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # what a rewrite in place leaves
    with pytest.raises(Exception, match="changed while it was being read"):
        for _ in range(100):
            next(ds)


def test_files_that_cannot_be_read_by_rows_get_a_fix(tmp_path, h5mu):
    columnwise = tmp_path / "csc.h5mu"
    data = read_h5mu(h5mu, backed=False)
    data.mod["atac"].X = sp.csc_matrix(data.mod["atac"].X)
    data.write(columnwise)
    with pytest.raises(InputError, match="modality 'atac'.*stored column-wise.*rewrite it as CSR"):
        read_h5mu(columnwise, backed=True)

    one_chunk = tmp_path / "one_chunk.h5mu"
    read_h5mu(h5mu, backed=False).write(one_chunk)
    with h5py.File(one_chunk, "r+") as f:
        values = f["mod/rna/X/data"][...]
        del f["mod/rna/X/data"]
        f["mod/rna/X"].create_dataset("data", data=values, compression="gzip", chunks=values.shape)
    from cavachon_like.data import backed
    limit = backed.MAX_CHUNK_VALUES
    try:
        backed.MAX_CHUNK_VALUES = len(values) // 2
        with pytest.raises(InputError, match="modality 'rna'.*gzip-compressed in chunks"):
            read_h5mu(one_chunk, backed=True)
    finally:
        backed.MAX_CHUNK_VALUES = limit


def test_on_disk_data_refuse_what_would_load_them(h5mu):
    disk = read_h5mu(h5mu, backed=True)
    with pytest.raises(InputError, match="join='outer'.*on disk"):
        MultiModality(dict(disk.mod), join="outer")
    rna = read_h5mu(h5mu, backed=False).mod["rna"]
    reversed_rna = rna[np.arange(rna.n_obs)[::-1]]
    with pytest.raises(InputError, match="on disk.*same cells in the same order"):
        MultiModality({"atac": disk.mod["atac"], "rna": reversed_rna})
    with pytest.raises(InputError, match="bin the peaks"):
        disk.apply_qc([{"step": "bin_genome", "modality": "atac"}])


def test_h5ad_files_train_from_disk_too(h5mu, tmp_path):
    memory = read_h5mu(h5mu, backed=False)
    paths = {}
    for name, mod in memory.mod.items():
        paths[name] = tmp_path / f"{name}.h5ad"
        mod.write_h5ad(paths[name])
    disk = read_h5ad(paths, backed=True)
    assert disk.on_disk and isinstance(disk, MultiModality)
    batch = next(iter(disk.to_dataset(batch_size=32, shuffle=False)))
    np.testing.assert_array_equal(tf.sparse.to_dense(batch["x"]["rna"]).numpy(), memory.mod["rna"].X[:32].toarray())
    single = read_h5ad(paths["atac"], backed=True)
    assert single.likelihood == "bernoulli" and is_backed(single.X)


def test_auto_leaves_large_files_on_disk(h5mu, monkeypatch, caplog):
    import logging

    from cavachon_like.data import readers

    assert not read_h5mu(h5mu).on_disk
    monkeypatch.setattr(readers, "AUTO_BACKED_FRACTION", 1e-12)
    with caplog.at_level(logging.INFO, logger="cavachon_like.data.readers"):
        assert read_h5mu(h5mu).on_disk
    assert "stay on disk" in caplog.text and "backed=False" in caplog.text
    with pytest.raises(ValueError, match="backed must be"):
        read_h5mu(h5mu, backed="yes")


def test_simulated_data_are_written_to_disk_chunk_by_chunk(tmp_path):
    path = simulate_to_disk(tmp_path / "big.h5mu", n_cells=2_500, n_atac=3_000, n_rna=500, atac_per_cell=100,
                            rna_library=300, chunk_cells=1_000, seed=2)
    disk = read_h5mu(path, backed=True)
    assert disk.shape[0] == 2_500 and disk.mod["atac"].n_vars == 3_000 and disk.on_disk
    disk.validate()
    atac = disk.mod["atac"].X[np.arange(disk.n_obs)]
    rna = disk.mod["rna"].X[np.arange(disk.n_obs)]
    assert set(np.unique(atac.data)) == {1.0} and 80 < atac.getnnz(axis=1).mean() < 100
    assert 250 < rna.sum(axis=1).mean() < 350
    # cell types shape the profiles: per-type mean RNA differs far more than sampling noise allows
    types = disk.obs["cell_type"].cat.codes.to_numpy()
    means = np.stack([np.asarray(rna[types == t].mean(axis=0)).ravel() for t in range(10)])
    assert np.corrcoef(means)[np.triu_indices(10, 1)].min() < 0.9
    again = simulate_to_disk(tmp_path / "again.h5mu", n_cells=2_500, n_atac=3_000, n_rna=500, atac_per_cell=100,
                             rna_library=300, chunk_cells=1_000, seed=2)
    assert (read_h5mu(again, backed=False).mod["rna"].X != rna).nnz == 0


def test_reading_batches_from_disk_holds_one_window_not_the_file(tmp_path, monkeypatch):
    """The generator's own allocations (numpy arrays of the rows it reads) peak at about one window,
    whatever the file's size: a file four times larger barely raises the peak."""
    import tracemalloc

    monkeypatch.setattr(streaming, "WINDOW_NONZEROS", 20_000)
    peaks = {}
    for n_cells in (2_000, 8_000):
        path = simulate_to_disk(tmp_path / f"{n_cells}.h5mu", n_cells=n_cells, n_atac=2_000, n_rna=300,
                                atac_per_cell=60, rna_library=200, chunk_cells=1_000, seed=0)
        ds = read_h5mu(path, backed=True).to_dataset(batch_size=100, seed=0)
        tracemalloc.start()
        n = sum(int(b["x"]["atac"].dense_shape[0]) for b in ds)
        peaks[n_cells] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert n == n_cells
    # 8,000 cells hold about 1.6 million non-zeros (13 MB as CSR): far above one window's 20,000
    # (per-cell row pointers, 8 bytes a cell, do grow with the file)
    assert peaks[8_000] < 2 * peaks[2_000] and peaks[8_000] < 8e6
