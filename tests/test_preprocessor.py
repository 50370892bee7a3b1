"""Preprocessor transforms (sparse in, sparse out) and the TF-IDF statistics a model adapts and saves."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from cavachon_like import CAVACHON, MultiModality
from cavachon_like.nn import Preprocessor


def sparse(x: np.ndarray) -> tf.SparseTensor:
    return tf.sparse.from_dense(tf.constant(x, tf.float32))


def test_tfidf_matches_signac_formula_sparse_and_dense():
    x = np.array([[1, 0, 2, 0], [0, 0, 1, 1], [3, 0, 0, 1]], np.float32)
    layer = Preprocessor("tfidf", name="p")
    layer.adapt(sp.csr_matrix(x))
    idf = 3 / np.maximum((x > 0).sum(0), 1)
    expected = np.log1p(1e4 * x / x.sum(1, keepdims=True) * idf)
    np.testing.assert_allclose(layer(tf.constant(x)).numpy(), expected, rtol=1e-6)
    out = layer(sparse(x))
    assert isinstance(out, tf.SparseTensor)
    np.testing.assert_allclose(tf.sparse.to_dense(out).numpy(), expected, rtol=1e-6)


def test_log1p_and_binarize_keep_sparse_input_sparse():
    x = np.array([[2, 0, 6], [0, 0, 0]], np.float32)
    normalized = Preprocessor("log1p_normalize", target_sum=8.0)(sparse(x))
    np.testing.assert_allclose(tf.sparse.to_dense(normalized).numpy(), np.log1p([[2.0, 0, 6.0], [0, 0, 0]]))
    binary = Preprocessor("binarize")(sparse(x))
    np.testing.assert_array_equal(tf.sparse.to_dense(binary).numpy(), [[1, 0, 1], [0, 0, 0]])
    with pytest.raises(ValueError, match="unknown transform"):
        Preprocessor("tf-idf")


def test_model_adapts_tfidf_saves_it_and_refuses_an_unadapted_dataset(small_data, small_components, tmp_path):
    data = MultiModality(small_data, likelihoods={"atac": "bernoulli_depth", "rna": "zinb"})
    model = CAVACHON.from_data(data, small_components, seed=0, pretrain_epochs=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    with pytest.raises(ValueError, match=r"model.adapt\(data\)"):
        model.fit(model.make_dataset(data, batch_size=64), epochs=1, verbose=0)
    model.fit(data, epochs=1, batch_size=64, verbose=0)
    idf = np.array(model.components["atac"].preprocessors["atac"].idf)
    detected = np.asarray((data.mod["atac"].X > 0).sum(0)).ravel()
    np.testing.assert_allclose(idf, data.n_obs / np.maximum(detected, 1), rtol=1e-6)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(np.array(loaded.components["atac"].preprocessors["atac"].idf), idf)
    np.testing.assert_array_equal(loaded.get_latent_representation(data)["z_atac"],
                                  model.get_latent_representation(data)["z_atac"])


def test_a_preprocessor_spec_keyed_by_modality_overrides_its_transform(small_data, tmp_path):
    """``preprocessor: {atac: {transform: tfidf}}`` gives ATAC, modelled as ZINB counts (scMM), the
    TF-IDF input of Signac; RNA keeps the transform of its likelihood, and the model adapts and saves
    the statistics that transform needs."""
    data = MultiModality(small_data, likelihoods={"atac": "zinb", "rna": "zinb"})
    spec = {"name": "joint", "modalities": ["atac", "rna"], "posterior": "moe", "latent_dim": 3,
            "encoder": {"units": [16]}, "decoder": {"units": [16]}, "preprocessor": {"atac": {"transform": "tfidf"}}}
    model = CAVACHON.from_data(data, [spec], seed=0, pretrain_epochs=0)
    preprocessors = model.components["joint"].preprocessors
    assert preprocessors["atac"].transform == "tfidf" and preprocessors["rna"].transform == "log1p_normalize"
    model.compile()
    model.fit(data, epochs=1, batch_size=64, verbose=0)
    assert preprocessors["atac"].is_adapted
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.components["joint"].preprocessors["atac"].transform == "tfidf"
    np.testing.assert_allclose(loaded.get_latent_representation(data)["z_joint"],
                               model.get_latent_representation(data)["z_joint"], rtol=1e-5, atol=1e-6)
    # One spec for all modalities still applies to each of them.
    both = CAVACHON.from_data(data, [{**spec, "preprocessor": {"transform": "tfidf"}}], seed=0, pretrain_epochs=0)
    assert {p.transform for p in both.components["joint"].preprocessors.values()} == {"tfidf"}
