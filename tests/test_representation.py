"""Learned per-cell representations (multiDGD): the table's sparse Adam, training, inference of new cells."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.neighbors import KNeighborsClassifier

from cavachon_like import CAVACHON, MultiModality, simulate
from cavachon_like.nn import LearnedRepresentation

COMPONENTS = [{"name": "joint", "modalities": ["atac", "rna"], "posterior": "representation", "latent_dim": 6,
               "n_clusters": 8, "decoder": {"units": [48, 48]}}]


def test_a_step_moves_only_the_batch_rows_as_adam_would():
    table = LearnedRepresentation(n_cells=6, latent_dim=3, learning_rate=0.1, beta_1=0.5, beta_2=0.7)
    table.build()
    table.embeddings.assign(np.arange(18, dtype=np.float32).reshape(6, 3))
    before = np.asarray(table.embeddings).copy()
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(2, 3)).astype(np.float32) for _ in range(3)]
    for g in grads:
        table.apply_gradient(tf.constant([4, 1]), tf.constant(g))
    after = np.asarray(table.embeddings)
    np.testing.assert_array_equal(after[[0, 2, 3, 5]], before[[0, 2, 3, 5]])
    # numpy Adam, three steps, each row on its own
    z, m, v = before[[4, 1]].astype(np.float64), 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        m = 0.5 * m + 0.5 * g
        v = 0.7 * v + 0.3 * g**2
        z = z - 0.1 * (m / (1 - 0.5**t)) / (np.sqrt(v / (1 - 0.7**t)) + 1e-8)
    np.testing.assert_allclose(after[[4, 1]], z, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(table.steps), [0, 3, 0, 0, 3, 0])


def test_rows_are_found_by_cell_name_in_any_order():
    table = LearnedRepresentation(n_cells=4, latent_dim=2)
    table.build()
    assert not table.has_cells
    table.assign_cells(["a", "b", "c", "d"])
    np.testing.assert_array_equal(table.rows_of(["c", "x", "a"]), [2, -1, 0])
    with pytest.raises(ValueError, match="unique"):
        table.assign_cells(["a", "a", "c", "d"])
    with pytest.raises(ValueError, match="rows for 4 cells, but 3"):
        table.assign_cells(["a", "b", "c"])


@pytest.fixture(scope="module")
def split():
    data = simulate(n_cells=600, n_batches=2, n_atac=200, n_rna=120, seed=3)
    rng = np.random.default_rng(0)
    held_out = np.sort(rng.choice(data.n_obs, 100, replace=False))
    train = np.setdiff1d(np.arange(data.n_obs), held_out)
    return data, data[train], data[held_out]


@pytest.fixture(scope="module")
def trained(split):
    _, train, _ = split
    model = CAVACHON.from_data(train, COMPONENTS, seed=0, pretrain_epochs=3)
    model.compile()
    history = model.fit(train, epochs=15, batch_size=100, validation_split=0.1, verbose=0)
    return model, history


def test_training_learns_latents_that_separate_cell_types(split, trained):
    _, train, _ = split
    model, history = trained
    assert history.history["val_loss"][-1] < 0.8 * history.history["val_loss"][0]
    z = model.get_latent_representation(train)["z_joint"]
    labels = train.obs["cell_type"].to_numpy()
    knn = KNeighborsClassifier(15).fit(z[::2], labels[::2])
    # 8 cell types, so chance is about 0.125; measured 0.9-1.0
    assert (knn.predict(z[1::2]) == labels[1::2]).mean() > 0.6


def test_only_the_training_cells_rows_are_trained_and_validation_rows_move_too(split, trained):
    model, _ = trained
    table = model.components["joint"].encoder
    steps = np.asarray(table.steps)
    # every row took steps: training cells' in the gradient steps, validation cells' in the validation passes
    assert steps.min() > 0
    assert np.abs(np.asarray(table.embeddings)).sum(axis=1).min() > 0


def test_new_cells_are_placed_near_their_cell_type_from_one_or_both_modalities(split, trained):
    _, train, test = split
    model, _ = trained
    z_train = model.get_latent_representation(train)["z_joint"]
    knn = KNeighborsClassifier(15).fit(z_train, train.obs["cell_type"].to_numpy())
    truth = test.obs["cell_type"].to_numpy()
    both = model.predict_new(test)["z_joint"]
    assert (knn.predict(both) == truth).mean() > 0.6  # measured 0.78
    # RNA alone still carries the cell type (ATAC only the parent type in this simulator)
    rna_only = model.predict_new(test, modalities=["rna"])["z_joint"]
    assert (knn.predict(rna_only) == truth).mean() > 0.45
    before = [np.asarray(w).copy() for w in model.weights]
    np.testing.assert_array_equal(model.get_latent_representation(test)["z_joint"], both)
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, model.weights)), "inference changed the model"


def test_predict_new_places_training_cells_near_their_trained_rows(split, trained):
    """Inference against the frozen model finds (about) the optimum training found for the same cells."""
    _, train, _ = split
    model, _ = trained
    cells = train[:100]
    rows = model.get_latent_representation(cells)["z_joint"]  # their learned rows
    inferred = model.predict_new(cells)["z_joint"]
    own = np.linalg.norm(inferred - rows, axis=1)
    others = np.linalg.norm(inferred[:, None, :] - rows[None, :, :], axis=2)
    # Closer to its own row than to a typical other cell's, by a wide margin (measured 0.49 against
    # 2.52; 1.63 against 2.97 with multiDGD's row learning rate, 1e-2, at which rows stay near their start)
    assert np.median(own) < 0.4 * np.median(others)
    # and among the nearest rows: mostly of its own cell type (measured 0.85; 0.66 at lr 1e-2)
    labels = cells.obs["cell_type"].to_numpy()
    nearest = np.argsort(others, axis=1)[:, :5]
    assert (labels[nearest] == labels[:, None]).mean() > 0.6


def test_rna_is_predicted_from_atac_for_cells_without_rna(split, trained):
    _, train, test = split
    model, _ = trained
    atac_only = MultiModality({"atac": test.mod["atac"]})
    predicted = model.predict_modality(atac_only, "rna", transform_batch="all")
    assert predicted.shape == (test.n_obs, 120) and np.isfinite(predicted).all()
    counts = test.mod["rna"].X.toarray()
    observed = np.log1p(1e4 * counts / counts.sum(1, keepdims=True))
    r = [np.corrcoef(np.log1p(predicted[:, j]), observed[:, j])[0, 1] for j in range(120)]
    # ATAC fixes the parent type, which moves RNA; a constant prediction would give r = nan/0
    assert np.nanmedian(r) > 0.2
    # The expected log-normalised value from the same inferred latents: below log1p of the mean (Jensen)
    logged = model.predict_modality(atac_only, "rna", transform_batch="all", log1p=True)
    assert logged.shape == predicted.shape and np.all(logged <= np.log1p(predicted) + 1e-4)
    r = [np.corrcoef(logged[:, j], observed[:, j])[0, 1] for j in range(120)]
    assert np.nanmedian(r) > 0.2


def test_save_and_load_round_trip_the_table(split, trained, tmp_path):
    _, train, test = split
    model, _ = trained
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    for data in (train, test):
        np.testing.assert_array_equal(loaded.get_latent_representation(data)["z_joint"],
                                      model.get_latent_representation(data)["z_joint"])


def test_clear_errors(split, trained):
    data, train, test = split
    model, _ = trained
    with pytest.raises(ValueError, match="point latent per cell"):
        model.marginal_log_likelihood(test)
    with pytest.raises(ValueError, match="of the cells to train on have none"):
        model.fit(data, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="needs representation: {n_cells"):
        CAVACHON(modalities={"rna": {"likelihood": "nb", "n_features": 5}},
                 components=[{"name": "rna", "modalities": ["rna"], "posterior": "representation"}])


def test_the_prior_update_reports_the_map_prior_term_of_point_latents(caplog):
    """Learned rows are points: the mixture's EM after training is logged with -log p(z), the term
    the training loss holds, not a KL term (which a zero variance makes meaningless)."""
    data = simulate(n_cells=200, n_batches=2, n_atac=60, n_rna=40, seed=1)
    spec = [{"name": "joint", "modalities": ["atac", "rna"], "posterior": "representation", "latent_dim": 3,
             "n_clusters": 3, "decoder": {"units": [16]}}]
    model = CAVACHON.from_data(data, spec, seed=0, pretrain_epochs=1)
    model.compile()
    with caplog.at_level(logging.INFO, logger="cavachon_like.train.prior_init"):
        model.fit(data, epochs=1, batch_size=100, verbose=0)
    lines = [r.getMessage() for r in caplog.records if "updated from" in r.getMessage()]
    assert lines and all("-log p(z)" in line and "KL" not in line for line in lines), lines
    z = model.get_latent_representation(data)["z_joint"]
    after = float(lines[-1].split("->")[1].split()[0])
    expected = -np.mean(model.components["joint"].prior.log_prob(z))
    assert abs(after - expected) < 0.05 * abs(expected) + 0.01  # the same quantity, at the rows after the update


def test_two_replicas_train_the_table_and_the_decoders_as_one_device(tmp_path):
    """MirroredStrategy over two logical CPUs (in a process of its own, ``tests/replicas_job.py``):
    each replica steps the rows of its half of the batch and gathers the other half's, so after
    two epochs every copy of the table, and the decoders, match the single-device run from the
    same start."""
    job = Path(__file__).with_name("replicas_job.py")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(job), str(tmp_path / "runs.npz")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    runs = np.load(tmp_path / "runs.npz")
    np.testing.assert_allclose(runs["mirrored_loss"], runs["single_loss"], rtol=1e-5)
    assert runs["mirrored_tables"].shape[0] == 2  # one copy per replica, both checked
    for copy in runs["mirrored_tables"]:
        np.testing.assert_allclose(copy, runs["single_tables"][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(runs["mirrored_steps"][:128], 2.0)  # every training row: one step per epoch
    np.testing.assert_array_equal(runs["mirrored_steps"][128:], 0.0)
    weights = sorted(k for k in runs.files if k.startswith("single_w"))
    assert weights
    for key in weights:
        np.testing.assert_allclose(runs[key.replace("single", "mirrored")], runs[key], rtol=1e-3, atol=1e-5,
                                   err_msg=key)
