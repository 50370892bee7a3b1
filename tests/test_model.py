"""CAVACHON model: training stages, freezing, outputs, save/load, determinism, bad input."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cavachon_like import CAVACHON, MultiModality, simulate


def make_model(data, components, seed=0, **kwargs):
    # Without pre-training each stage is one Keras fit; tests/test_clustering_recipe.py covers it.
    kwargs.setdefault("pretrain_epochs", 0)
    model = CAVACHON.from_data(data, components, seed=seed, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


class WeightProbe(keras.callbacks.Callback):
    """Snapshots every component's weights when each training stage begins and ends."""

    def __init__(self):
        super().__init__()
        self.stages = []

    def _snapshot(self):
        return {name: [np.array(w) for w in c.weights] for name, c in self.model.components.items()}

    def on_train_begin(self, logs=None):
        self.stages.append({"begin": self._snapshot(), "training": self.model.training_components, "trainable": {
            name: [w.path for w in c.trainable_weights] for name, c in self.model.components.items()
        }})

    def on_train_end(self, logs=None):
        self.stages[-1]["end"] = self._snapshot()


def changed(before, after):
    return any(not np.array_equal(a, b) for a, b in zip(before, after))


def train_sequential(data, components, seed):
    """The sequential run the tests below share: two stages, the second blended in over one epoch."""
    model = make_model(data, components, seed=seed, progressive_epochs=1)
    probe = WeightProbe()
    history = model.fit(data, epochs=2, batch_size=64, callbacks=[probe], verbose=0)
    return model, history, probe


@pytest.fixture(scope="module")
def sequential_run(small_data, small_components_spec):
    # Each training stage is one keras fit, traced anew (seconds each): the tests that only need
    # a trained model (outputs, save/load, same-seed reproducibility) share this one.
    model, history, probe = train_sequential(small_data, small_components_spec, seed=7)
    return model, history.history, probe, model.get_latent_representation(small_data)


def test_sequential_training_freezes_everything_but_the_stage(sequential_run):
    model, history, probe, _ = sequential_run
    assert [s for s in history["stage"]] == ["atac", "atac", "rna", "rna"]
    assert history["epoch"] == [0, 1, 2, 3]
    assert np.isfinite(history["loss"]).all()
    # Stage metrics are per component and modality; the other stage's are NaN.
    assert np.isnan(history["rna_nll"][:2]).all() and np.isfinite(history["rna_nll"][2:]).all()
    assert np.isfinite(history["atac_kl"][:2]).all() and np.isnan(history["atac_kl"][2:]).all()
    first, second = probe.stages
    assert changed(first["begin"]["atac"], first["end"]["atac"])
    assert not changed(first["begin"]["rna"], first["end"]["rna"])
    assert not changed(second["begin"]["atac"], second["end"]["atac"])  # ancestors frozen, prior included
    assert changed(second["begin"]["rna"], second["end"]["rna"])
    assert second["trainable"]["atac"] == [] and first["trainable"]["rna"] == []
    assert first["training"] == ["atac"] and second["training"] == ["rna"]
    # Progressive blending ends with the new component fully blended in.
    assert float(model.components["rna"].hierarchical_encoder.alpha.numpy()) == 1.0
    # After fit every component is trainable again (for evaluate / a later fit).
    assert all(c.trainable for c in model.components.values())
    assert model.training_components == ["atac", "rna"]


def test_frozen_ancestors_are_encoded_once_per_stage_and_train_the_same(small_data, small_components, monkeypatch):
    from cavachon_like.model import stages

    model = make_model(small_data, small_components)
    moments = stages.frozen_moments(model, small_data, ["rna"])
    assert stages.frozen_moments(model, small_data, ["atac"]) == {}  # nothing frozen in the first stage
    assert list(moments) == ["atac"] and moments["atac"].shape == (small_data.n_obs, 8)
    z_atac = model.get_latent_representation(small_data)["z_atac"]
    np.testing.assert_allclose(moments["atac"][:, :4], z_atac, rtol=1e-5, atol=1e-6)
    assert (moments["atac"][:, 4:] > 0).all()  # variances
    # Batches that carry the moments never reach the encoder: emptied ATAC counts change nothing.
    batch = next(iter(model.make_dataset(small_data, batch_size=32, moments=moments)))
    emptied = {**batch, "x": {**batch["x"], "atac": tf.sparse.map_values(tf.zeros_like, batch["x"]["atac"])}}
    for inputs in (batch, emptied):
        outputs = model(inputs, components=["rna"], decode=False)
        np.testing.assert_array_equal(outputs["atac"]["z_mean"], moments["atac"][:32, :4])

    def fit(cache):
        if not cache:
            monkeypatch.setattr(stages, "frozen_moments", lambda *args, **kwargs: {})
        trained = make_model(small_data, small_components, seed=3)
        history = trained.fit(small_data, epochs=2, batch_size=64, validation_split=0.2, verbose=0).history
        return history, trained.get_latent_representation(small_data)["z_rna"]

    cached, encoded = fit(True), fit(False)
    # the same noise draws from the same moments: equal up to float rounding
    for key in ("loss", "val_loss", "rna_nll"):
        np.testing.assert_allclose(cached[0][key][2:], encoded[0][key][2:], rtol=1e-4)
    np.testing.assert_allclose(cached[1], encoded[1], rtol=1e-3, atol=1e-4)


def test_joint_training_updates_all_components_in_one_stage(small_data, small_components):
    model = make_model(small_data, small_components, training="joint")
    probe = WeightProbe()
    history = model.fit(small_data, epochs=1, batch_size=64, callbacks=[probe], verbose=0)
    assert history.history["stage"] == ["atac+rna"]
    (stage,) = probe.stages
    assert changed(stage["begin"]["atac"], stage["end"]["atac"])
    assert changed(stage["begin"]["rna"], stage["end"]["rna"])


def test_validation_split_early_stopping_and_csv_logger(small_data, small_components, tmp_path):
    model = make_model(small_data, small_components)
    log = tmp_path / "log.csv"
    history = model.fit(
        small_data,
        epochs=2,
        batch_size=64,
        validation_split=0.2,
        verbose=0,
        callbacks=[keras.callbacks.EarlyStopping(patience=1, restore_best_weights=True), keras.callbacks.CSVLogger(log)],
    )
    assert "val_loss" in history.history and np.isfinite(history.history["val_loss"]).all()
    # The logger appends across stages instead of overwriting the first stage.
    rows = log.read_text().strip().splitlines()[1:]
    assert len(rows) == len(history.history["loss"])


def test_annotate_writes_scverse_outputs(small_data, sequential_run):
    data = small_data.copy()  # annotate writes into it; keep the shared fixture clean
    model = sequential_run[0]
    latents = model.annotate(data)
    n = data.n_obs
    for c in ("atac", "rna"):
        assert data.obsm[f"z_{c}"].shape == (n, 4)
        assert data.obsm[f"z_hat_{c}"].shape == (n, 4)
        probs = data.obsm[f"cluster_probabilities_{c}"]
        assert probs.shape == (n, 9)  # K = 2 * 4 + 1
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
        assert (data.obs[f"cluster_{c}"].astype(int).to_numpy() == probs.argmax(1)).all()
    assert "model" in data.uns["cavachon_like"]
    np.testing.assert_array_equal(latents["z_atac"], data.obsm["z_atac"])


def test_save_load_round_trip_gives_identical_latents(small_data, sequential_run, tmp_path):
    model, _, _, before = sequential_run
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, CAVACHON)
    after = loaded.get_latent_representation(small_data)
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])
    # The loaded model trains further without being rebuilt.
    loaded.fit(small_data, epochs=1, batch_size=64, verbose=0)


def test_same_seed_same_numbers_and_different_seed_differs(small_data, small_components_spec, sequential_run):
    # The shared run (seed 7) is the first of the pair; other tests ran in between, which
    # must not matter: the seed alone fixes the numbers.
    _, history, _, latents = sequential_run
    runs = [(history["loss"], latents["z_hat_rna"])]
    for seed in (7, 8):
        model, again, _ = train_sequential(small_data, small_components_spec, seed=seed)
        runs.append((again.history["loss"], model.get_latent_representation(small_data)["z_hat_rna"]))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert not np.allclose(runs[0][1], runs[2][1])


def test_conditioned_on_z_uses_parent_z(small_data, small_components):
    components = [dict(c) for c in small_components]
    components[1]["conditioned_on"] = "z"
    model = make_model(small_data, components)
    batch = next(iter(model.make_dataset(small_data, batch_size=32)))
    out = model(batch)
    # With conditioned_on="z", rna's z_hat is f_b([z_atac; f_r(z_rna)]).
    hier = model.components["rna"].hierarchical_encoder
    expected = hier.f_b(np.concatenate([out["atac"]["z"], hier.f_r(out["rna"]["z"])], axis=1))
    np.testing.assert_allclose(out["rna"]["z_hat"], expected, rtol=1e-5, atol=1e-6)


def test_joint_component_with_two_modalities(small_data):
    components = [{"name": "joint", "modalities": ["atac", "rna"], "latent_dim": 3,
                   "encoder": {"units": [16]}, "decoder": {"units": [16]}}]
    model = make_model(small_data, components)
    history = model.fit(small_data, epochs=1, batch_size=64, verbose=0)
    assert {"atac_nll", "rna_nll", "joint_kl"} <= set(history.history)
    assert model.get_latent_representation(small_data)["z_joint"].shape == (small_data.n_obs, 3)


def test_standard_normal_prior_has_no_clusters(small_data, small_components):
    components = [dict(c, prior="normal") for c in small_components]
    model = make_model(small_data, components)
    latents = model.get_latent_representation(small_data)
    assert "z_rna" in latents and not any(k.startswith("cluster_") for k in latents)


# ---------------------------------------------------------------- bad input, before training


def corrupt(data, modality, fn):
    mods = {m: data.mod[m].copy() for m in data.mod}
    x = mods[modality].X.tocsr(copy=True)
    fn(x)
    mods[modality].X = x
    return MultiModality(mods)


def test_nan_counts_are_reported_before_training(small_data, small_components):
    model = make_model(small_data, small_components)
    bad = corrupt(small_data, "rna", lambda x: x.data.__setitem__(slice(0, 1), np.nan))
    with pytest.raises(ValueError, match="rna"):
        model.fit(bad, epochs=1, verbose=0)


def test_negative_counts_are_reported_before_training(small_data, small_components):
    model = make_model(small_data, small_components)
    bad = corrupt(small_data, "atac", lambda x: x.data.__setitem__(slice(0, 3), -1.0))
    with pytest.raises(ValueError, match="atac"):
        model.fit(bad, epochs=1, verbose=0)


def test_feature_mismatch_is_reported(small_data, small_components):
    model = make_model(small_data, small_components)
    mods = {m: small_data.mod[m] for m in small_data.mod}
    mods["rna"] = mods["rna"][:, :10].copy()
    with pytest.raises(ValueError, match="modality 'rna' has 10 features; the model was built for 60"):
        model.fit(MultiModality(mods), epochs=1, verbose=0)


def test_unknown_component_key_and_modality_are_named(small_data, small_components):
    components = [dict(c) for c in small_components]
    components[0]["latent_dims"] = 3
    with pytest.raises(ValueError, match=r"component 'atac': unknown key\(s\) \['latent_dims'\]"):
        CAVACHON.from_data(small_data, components)
    with pytest.raises(ValueError, match="lacks"):
        CAVACHON.from_data(small_data, [{"name": "x", "modalities": ["protein"]}])


def test_cycle_is_an_error_before_building(small_data):
    components = [
        {"name": "atac", "modalities": ["atac"], "parents": ["rna"]},
        {"name": "rna", "modalities": ["rna"], "parents": ["atac"]},
    ]
    with pytest.raises(ValueError, match="cycle"):
        CAVACHON.from_data(small_data, components)


def test_compile_rejects_a_loss(small_data, small_components):
    model = CAVACHON.from_data(small_data, small_components)
    with pytest.raises(ValueError, match="own loss"):
        model.compile(loss="mse")


def test_model_dataset_keeps_counts_sparse_and_exact(small_data, small_components):
    model = make_model(small_data, small_components)
    batch = next(iter(model.make_dataset(small_data, batch_size=16)))
    assert isinstance(batch["x"]["atac"], tf.SparseTensor)
    np.testing.assert_array_equal(tf.sparse.to_dense(batch["x"]["atac"]), small_data.mod["atac"].X[:16].toarray())


def test_bad_specs_and_splits_name_the_culprit():
    data = simulate(n_cells=60, n_atac=20, n_rna=10, n_batches=2, seed=0)
    with pytest.raises(ValueError, match=r"component 'rna': cannot build encoder 'mlp' from \{'unit': 64.*Unrecognized.*'unit'"):
        CAVACHON.from_data(data, [{"name": "rna", "modalities": ["rna"], "encoder": {"unit": 64}}])
    with pytest.raises(ValueError, match=r"component 'rna': unknown prior 'flow'"):
        CAVACHON.from_data(data, [{"name": "rna", "modalities": ["rna"], "prior": "flow"}])
    modalities = {"rna": {"likelihood": "nb", "n_features": 0}}
    with pytest.raises(ValueError, match="modality 'rna' has no features"):
        CAVACHON(modalities, [{"name": "rna", "modalities": ["rna"]}])
    with pytest.raises(ValueError, match="leaves 0 cells for validation"):
        data.split(0.005)
    with pytest.raises(ValueError, match="leaves 60 cells for validation and 0 for training"):
        data.split(0.999)
