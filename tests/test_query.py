"""Query mapping (scArches-style): new batches added to a trained model, only their weights trained.

One reference model (atac -> rna, encoders conditioned on the batch) is trained on two of three
simulated batches; the third, with its own batch effect, is the query. The module-scoped mapping
is shared by the tests that read it.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import keras
import mudata as md
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from cavachon_like import CAVACHON, MultiModality, simulate
from cavachon_like.cli import main
from cavachon_like.errors import InputError
from cavachon_like.model.mapping import (
    align_features,
    self_transfer_accuracy,
    transfer_labels,
)
from cavachon_like.model.query import (
    RowMaskedAdam,
    extend_model,
    query_categories,
    train_new_rows,
)

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"latent_dim": 4, "encoder": {"units": [32, 16], "condition_on_batch": True}, "decoder": {"units": [16, 32]}}
COMPONENTS = [
    {"name": "atac", "modalities": ["atac"], **SMALL},
    {"name": "rna", "modalities": ["rna"], "parents": ["atac"], **SMALL},
]


@pytest.fixture(scope="module")
def run():
    """The reference model, its cells, the query cells, a copy of its weights before mapping and the mapping."""
    data = simulate(n_cells=600, n_batches=3, n_atac=120, n_rna=60, seed=2)
    held_out = data.obs["batch"].astype(str).to_numpy() == "batch2"
    reference, query = data[~held_out], data[held_out]
    model = CAVACHON.from_data(reference, [dict(c) for c in COMPONENTS], seed=0, pretrain_epochs=0,
                               progressive_epochs=0, prior_em_iterations=20)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(reference, epochs=8, batch_size=64, verbose=0)
    before = [np.array(w) for w in model.weights]
    mapping = model.map_query(query, reference=reference, label_key="cell_type", latent="rna", epochs=8)
    return model, reference, query, before, mapping


def _rows_by_path(model):
    return {w.path: np.asarray(w) for w in model.weights}


def test_reference_weights_stay_bit_identical_and_only_new_rows_train(run):
    model, _, _, before, mapping = run
    assert mapping.new_categories == {"atac": {"batch": ["batch2"]}, "rna": {"batch": ["batch2"]}}
    assert mapping.model is not model
    assert mapping.model.batch_categories["rna"]["batch"] == ["batch0", "batch1", "batch2"]
    assert mapping.summary()["epochs"] == {"atac": 8, "rna": 8}  # per stage, not their sum
    # the reference model itself is untouched
    for w, value in zip(model.weights, before):
        np.testing.assert_array_equal(np.asarray(w), value, err_msg=w.path)
    extended = 0
    for old, new in zip(model.weights, mapping.model.weights):
        old, new_value = np.asarray(old), np.asarray(new)
        if old.shape == new_value.shape:
            np.testing.assert_array_equal(new_value, old, err_msg=new.path)
            continue
        # a kernel reading the one-hot: reference rows bit-identical, the new category's row trained
        extended += 1
        n_batch = 2 if "encoder" in new.path or "decoder" in new.path else None
        assert n_batch and new_value.shape == (old.shape[0] + 1, old.shape[1]), new.path
        np.testing.assert_array_equal(new_value[:old.shape[0]], old, err_msg=new.path)
        start = old[-n_batch:].astype(np.float64).mean(axis=0)  # init="mean"
        assert np.abs(new_value[-1] - start).max() > 1e-3, f"{new.path}: the new row did not train"
    assert extended == 4  # both components' encoder and decoder
    # the mapped model ends as fit leaves one: every weight trainable again, its own optimizer settings
    trainable = [w.path for w in mapping.model.trainable_weights]
    assert trainable == [w.path for w in model.trainable_weights] and len(trainable) > 50
    assert mapping.model.get_compile_config() == model.get_compile_config()


def test_reference_cells_keep_their_latents(run):
    model, reference, _, _, mapping = run
    before = model.get_latent_representation(reference)
    after = mapping.model.get_latent_representation(reference)
    assert set(before) == set(after)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def test_query_cells_land_near_their_cell_type(run):
    _, _, query, _, mapping = run
    chance = query.obs["cell_type"].value_counts(normalize=True).max()
    print(f"label transfer: query {mapping.accuracy:.3f}, reference among itself {mapping.reference_accuracy:.3f}, "
          f"majority class {chance:.3f}")
    assert mapping.accuracy >= 3 * chance
    assert mapping.accuracy >= mapping.reference_accuracy - 0.15
    labels = mapping.labels
    assert labels.index.equals(query.obs_names)
    assert ((labels["confidence"] > 0) & (labels["confidence"] <= 1)).all()
    # confident calls are the better ones
    confident = labels["confidence"].to_numpy() >= 0.8
    own = query.obs["cell_type"].astype(str).to_numpy()
    assert np.mean(labels["label"].astype(str).to_numpy()[confident] == own[confident]) >= mapping.accuracy
    assert set(mapping.clusters) == {"atac", "rna"}
    assert mapping.clusters["rna"].shape == (query.n_obs,)
    assert mapping.latents["z_rna"].shape == (query.n_obs, 4)


def test_training_fits_the_query_better_than_the_initial_surgery(run):
    """The trained rows explain the query better than their start (the mean reference batch)."""
    model, _, query, _, mapping = run
    start, _ = extend_model(model, query_categories(model, query)[0])

    def elbo(m, cells):  # negative ELBO at the posterior means (no sampling noise), per cell
        batch = next(iter(m.make_dataset(cells, batch_size=cells.n_obs)))
        outputs = m(batch, training=False, sample=False)
        loss, _ = m.loss_terms(batch["x"], outputs, m.graph.order)
        return float(tf.reduce_mean(loss))

    def as_batch(name):  # the query read as one of the reference batches (naive integration)
        mods = {}
        for m, mod in query.mod.items():
            mods[m] = mod.copy()
            mods[m].obs["batch"] = name
        return type(query)(mods)

    trained, untrained = elbo(mapping.model, query), elbo(start, query)
    naive = {b: elbo(model, as_batch(b)) for b in ("batch0", "batch1")}
    print(f"query negative ELBO per cell: read as {naive}, {untrained:.2f} at the start, {trained:.2f} trained")
    assert trained < untrained and trained < min(naive.values())
    history = pd.DataFrame(mapping.history.history)
    assert list(history["stage"].unique()) == ["atac", "rna"] and (history["phase"] == "query").all()


def test_unknown_batches_are_still_an_error_without_map_query(run):
    model, _, query, _, _ = run
    with pytest.raises(ValueError, match=r"batch column 'batch' has values such as \['batch2'\].*map_query"):
        model.get_latent_representation(query)


def test_a_query_of_known_batches_is_mapped_as_them_without_training(run, caplog):
    model, reference, _, _, _ = run
    cells = reference[:120]
    with caplog.at_level(logging.INFO, logger="cavachon_like.model.query"):
        mapping = model.map_query(cells)
    assert "no new batch category" in caplog.text and "batch0" in caplog.text
    assert mapping.model is model and mapping.history is None and mapping.new_categories == {}
    assert mapping.known_categories["rna"] == {"batch": ["batch0", "batch1"]}
    assert mapping.latent == "rna" and mapping.labels is None  # the default latent: the last
    np.testing.assert_array_equal(mapping.latents["z_rna"], model.get_latent_representation(cells)["z_rna"])


def test_a_mixed_query_adds_only_its_new_batches(run, caplog):
    model, reference, query, _, _ = run
    mods = {m: ad.concat([reference.mod[m][:50], query.mod[m][:50]]) for m in ("atac", "rna")}
    mixed = MultiModality(mods, likelihoods={"atac": "bernoulli", "rna": "zinb"}, batch_key="batch")
    with caplog.at_level(logging.INFO, logger="cavachon_like.model.query"):
        mapping = model.map_query(mixed, epochs=0)  # the surgery alone
    assert "already knows" in caplog.text and "rna.batch: ['batch0', 'batch1']" in caplog.text
    assert mapping.new_categories["rna"] == {"batch": ["batch2"]} and mapping.history is None
    known = model.get_latent_representation(reference[:50])["z_rna"]
    # (not bit for bit: the cells are encoded in a batch of another size, with other float blockings)
    np.testing.assert_allclose(mapping.latents["z_rna"][:50], known, rtol=1e-5, atol=1e-6)


def test_the_mapped_model_saves_and_loads(run, tmp_path):
    _, _, query, _, mapping = run
    path = tmp_path / "mapped.keras"
    mapping.model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.batch_categories == mapping.model.batch_categories
    for w, v in zip(mapping.model.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(v), np.asarray(w), err_msg=w.path)
    np.testing.assert_array_equal(loaded.get_latent_representation(query)["z_rna"], mapping.latents["z_rna"])


def test_annotate_writes_the_mapping_into_the_query(run):
    _, _, query, _, mapping = run
    cells = query.copy()
    written = mapping.annotate(cells)
    assert {"obsm/z_rna", "obs/cluster_rna", "obs/cell_type_transferred", "obs/cell_type_confidence"} <= set(written)
    assert isinstance(cells.obs["cell_type_transferred"].dtype, pd.CategoricalDtype)
    assert '"batch2"' in cells.uns["cavachon_like"]["query"]
    with pytest.raises(ValueError, match="query cells of the mapping"):
        mapping.annotate(query[:10])


def test_bad_options_fail_before_training(run):
    model, reference, query, _, _ = run
    with pytest.raises(InputError, match="both the reference cells"):
        model.map_query(query, label_key="cell_type")
    with pytest.raises(InputError, match="no obs column 'nope'"):
        model.map_query(query, reference=reference, label_key="nope")
    with pytest.raises(InputError, match="unknown latent 'z'"):
        model.map_query(query, latent="z")


def test_features_are_checked_by_name_and_reindexed_on_request(small_data):
    reference = small_data
    query = small_data[:40].copy()
    rna = query.mod["rna"]
    rna.var_names = ["other"] + list(rna.var_names[1:])
    query = type(small_data)(dict(query.mod))
    with pytest.raises(InputError, match=r"(?s)modality 'rna': 1 of the reference's 60 features are missing "
                                         r"\(e.g. 'gene00000'\) and 1 are extra \(e.g. 'other'\).*reindex=True"):
        align_features(query, reference)
    aligned = align_features(query, reference, reindex=True)
    assert aligned.mod["rna"].var_names.equals(reference.mod["rna"].var_names)
    x = aligned.mod["rna"].X.toarray()
    assert not x[:, 0].any()  # the missing feature: zeros
    np.testing.assert_array_equal(x[:, 1:], small_data[:40].mod["rna"].X.toarray()[:, 1:])
    assert aligned.mod["rna"].likelihood == "zinb" and aligned.mod["rna"].batch_key == ["batch"]
    assert "cell_type" in aligned.mod["rna"].obs and aligned.obs.columns.equals(query.obs.columns)
    # the same features in another order are reordered silently
    shuffled = small_data[:40].copy()
    order = np.arange(reference.mod["rna"].n_vars)[::-1]
    mods = dict(shuffled.mod)
    mods["rna"] = mods["rna"][:, order]
    reordered = align_features(type(small_data)(mods), reference)
    np.testing.assert_array_equal(reordered.mod["rna"].X.toarray(), small_data[:40].mod["rna"].X.toarray())
    assert align_features(reference, reference) is reference


def test_transfer_labels_votes_among_the_nearest_reference_cells():
    reference = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
    labels = pd.Series(["a", "a", "b", "b", "b", None])
    result = transfer_labels(reference, labels, np.array([[0.05], [5.05]]), n_neighbors=3, index=["q1", "q2"])
    assert list(result.index) == ["q1", "q2"]
    assert list(result["label"].astype(str)) == ["a", "b"]  # the unlabelled cell is left out
    np.testing.assert_allclose(result["confidence"], [2 / 3, 1.0])
    assert self_transfer_accuracy(reference[:5], labels[:5], n_neighbors=1) == 0.8  # cell 3 (b) nearest to 2 (b)
    with pytest.raises(ValueError, match="n_neighbors must be an integer from 1 to 5"):
        transfer_labels(reference, labels, reference, n_neighbors=6)


def test_row_masked_adam_leaves_other_rows_bit_identical():
    variable = keras.Variable(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32), name="kernel")
    start = np.asarray(variable).copy()
    optimizer = RowMaskedAdam({variable.path: [2]}, learning_rate=0.1)
    for _ in range(3):
        optimizer.apply_gradients([(tf.ones((4, 3)), variable)])
    value = np.asarray(variable)
    np.testing.assert_array_equal(value[[0, 1, 3]], start[[0, 1, 3]])
    assert (value[2] < start[2]).all()
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(again, RowMaskedAdam) and again.rows == {variable.path: [2]}
    with pytest.raises(ValueError, match="weight decay"):
        RowMaskedAdam({}, weight_decay=0.01)


def test_surgery_of_conv1d_experts_keeps_reference_outputs_and_batch_norm_statistics():
    """Product-of-experts Conv1D encoders and Conv1D decoders (batch rows at the end of a dense
    kernel or of the heads' kernels): extended, the reference cells' latents and decoded data
    stay; trained, only the new rows move (not the batch normalisation statistics)."""
    data = simulate(n_cells=90, n_batches=3, n_atac=48, n_rna=48, seed=5)
    held_out = data.obs["batch"].astype(str).to_numpy() == "batch2"
    reference, query = data[~held_out], data[held_out]
    conv = {"class": "conv1d", "filters": [4], "kernel_size": 4}
    components = [{"name": "joint", "modalities": ["atac", "rna"], "posterior": "poe", "latent_dim": 3,
                   "encoder": {**conv, "units": []}, "decoder": conv}]  # no dense layer: the heads read the batch
    model = CAVACHON.from_data(reference, components, seed=0)
    new, _ = query_categories(model, query)
    extended, rows = extend_model(model, new)
    assert len(rows) == 6 and all(len(r) == 1 for r in rows.values())  # two heads of two experts, two decoders
    batch = next(iter(model.make_dataset(reference, batch_size=reference.n_obs)))
    wide = next(iter(extended.make_dataset(reference, batch_size=reference.n_obs)))
    before, after = model(batch, sample=False), extended(wide, sample=False)
    np.testing.assert_array_equal(after["joint"]["z_mean"], before["joint"]["z_mean"])
    for m in ("atac", "rna"):
        for p, value in before["joint"]["raw"][m].items():
            np.testing.assert_allclose(after["joint"]["raw"][m][p], value, rtol=1e-6, atol=1e-6)
    # the new rows start at the mean of the reference batches' rows
    for path, (row,) in rows.items():
        kernel = np.asarray(next(w for w in extended.weights if w.path == path))
        np.testing.assert_allclose(kernel[row], kernel[row - 2:row].mean(axis=0), rtol=1e-6, atol=1e-7)
    # training moves those rows only: batch normalisation runs in inference mode, its statistics stay
    train_new_rows(extended, query, rows, epochs=1, batch_size=16)
    moving = [w.path for w in extended.weights if "moving" in w.path]
    assert len(moving) >= 4  # mean and variance of each expert's batch norm
    for old, new in zip(model.weights, extended.weights):
        value = np.asarray(new)
        if new.path in rows:
            (row,) = rows[new.path]
            np.testing.assert_array_equal(np.delete(value, row, axis=0), np.asarray(old), err_msg=new.path)
            assert not np.allclose(value[row], value[row - 2:row].mean(axis=0)), new.path
        else:
            np.testing.assert_array_equal(value, np.asarray(old), err_msg=new.path)


def test_cli_maps_a_query_into_a_saved_run(run, tmp_path, capsys):
    model, reference, query, _, _ = run
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model.save(run_dir / "model.keras")
    annotated = reference.copy()
    model.annotate(annotated)
    annotated.write(run_dir / "result.h5mu")
    plain = md.MuData({m: query.mod[m].copy() for m in query.mod}, obs=query.obs.copy())  # as another tool wrote it
    for mod in plain.mod.values():
        mod.uns.pop("cavachon_like", None)
    plain.write(tmp_path / "query.h5mu")
    out = tmp_path / "mapped.h5mu"
    code = main(["map-query", str(run_dir), "--data", str(tmp_path / "query.h5mu"), "--out", str(out),
                 "--label-key", "cell_type", "--epochs", "1", "--model-out", str(tmp_path / "mapped.keras")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "label transfer:" in printed and f"wrote {out}" in printed and "new batches: batch2" in printed
    result = md.read_h5mu(out)
    assert result.obsm["z_rna"].shape == (query.n_obs, 4)
    assert {"cell_type_transferred", "cell_type_confidence", "cluster_rna"} <= set(result.obs.columns)
    assert (tmp_path / "mapped.keras").is_file()
    # a bad label key is one line on stderr, before any training
    assert main(["map-query", str(run_dir), "--data", str(tmp_path / "query.h5mu"), "--label-key", "nope"]) == 2
    assert "no obs column 'nope'" in capsys.readouterr().err


def test_map_query_help_does_not_import_tensorflow():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "cavachon_like.cli", "map-query", "--help"],
                            check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: cavachon-like map-query")
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "cavachon_like" in imported and "tensorflow" not in imported and "keras" not in imported
