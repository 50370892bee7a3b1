"""Every public layer on its own, outside any model: built by its first call or by an explicit
``build`` with the documented shapes, dense and sparse input, output shapes, symbolic (``keras.Input``)
calls, and a serialisation round trip (config and build config through JSON, as in a ``.keras``
file) that reproduces the outputs exactly."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from cavachon_like.module import Component
from cavachon_like.nn import MLP, Decoder, Encoder, HierarchicalEncoder, Preprocessor

pytestmark = pytest.mark.floor  # also run on the dependency floor (.ci/run)


def counts(n_cells: int, n_features: int, seed: int = 0) -> tf.Tensor:
    """Poisson counts with about half the entries zero."""
    rng = np.random.default_rng(seed)
    x = rng.poisson(2.0, size=(n_cells, n_features)) * (rng.random((n_cells, n_features)) < 0.5)
    return tf.constant(x, tf.float32)


def normal(n_cells: int, dim: int, seed: int = 0) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).normal(size=(n_cells, dim)), tf.float32)


def onehot(n_cells: int, n_batch: int) -> tf.Tensor:
    return tf.one_hot(np.arange(n_cells) % n_batch, n_batch)


def sparse(x: tf.Tensor) -> tf.SparseTensor:
    return tf.sparse.from_dense(x)


def shapes(layer: keras.layers.Layer) -> list[tuple[int, ...]]:
    return [tuple(w.shape) for w in layer.weights]


def round_trip(layer: keras.layers.Layer) -> keras.layers.Layer:
    """Serialise ``layer`` as a ``.keras`` file does, deserialise it and copy its weights."""
    restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(keras.saving.serialize_keras_object(layer))))
    assert restored.built  # from the recorded build shapes, before any call
    assert restored.get_config() == layer.get_config()
    restored.set_weights(layer.get_weights())
    return restored


# ---------------------------------------------------------------- Preprocessor
@pytest.mark.parametrize("transform", Preprocessor.TRANSFORMS)
def test_preprocessor_builds_on_call_and_keeps_the_sparsity_pattern(transform):
    x = counts(6, 5)
    layer = Preprocessor(transform)
    out = layer(sparse(x))
    assert layer.built
    assert isinstance(out, tf.SparseTensor) and tuple(out.shape) == (6, 5)
    np.testing.assert_array_equal(out.indices.numpy(), sparse(x).indices.numpy())  # zeros stay implicit
    np.testing.assert_allclose(tf.sparse.to_dense(out).numpy(), layer(x).numpy(), rtol=1e-6)
    assert shapes(layer) == ([(5,), ()] if transform == "tfidf" else [])
    explicit = Preprocessor(transform)
    explicit.build((None, 5))
    assert shapes(explicit) == shapes(layer)


def test_preprocessor_symbolic_sparse_input_keeps_its_feature_dimension():
    out = Preprocessor("log1p_normalize")(keras.Input((5,), sparse=True))
    assert out.sparse and tuple(out.shape) == (None, 5)


def test_preprocessor_round_trip_keeps_the_adapted_idf():
    x = counts(8, 5)
    layer = Preprocessor("tfidf", target_sum=100.0)
    layer.adapt(x.numpy())
    restored = round_trip(layer)
    assert restored.is_adapted and restored.idf.numpy().max() > 1.0
    np.testing.assert_array_equal(restored(x).numpy(), layer(x).numpy())


# ---------------------------------------------------------------- MLP
def test_mlp_builds_on_call_and_sparse_input_equals_dense():
    x, b = counts(6, 9), onehot(6, 2)
    layer = MLP([8, 4])
    out = layer([sparse(x), b])
    assert tuple(out.shape) == (6, 4)
    assert [tuple(p.kernel.shape) for p in layer.input_projections] == [(9, 8), (2, 8)]
    np.testing.assert_allclose(layer([x, b]).numpy(), out.numpy(), rtol=1e-5, atol=1e-6)
    explicit = MLP([8, 4])
    explicit.build([(None, 9), (None, 2)])
    assert shapes(explicit) == shapes(layer)
    with pytest.raises(ValueError, match="built for 2 inputs, got 1"):
        layer([x])


def test_mlp_zero_width_input_contributes_nothing():
    x = counts(6, 9)
    with_empty = MLP([8, 4])
    out = with_empty([x, tf.zeros((6, 0))])
    alone = MLP([8, 4])
    alone.build([(None, 9)])
    alone.set_weights([w for w in with_empty.get_weights() if w.size])  # all but the (0, 8) kernel
    np.testing.assert_array_equal(alone([x]).numpy(), out.numpy())


def test_mlp_round_trip_and_symbolic_call():
    x = counts(6, 9)
    layer = MLP([8, 4], activation="relu", linear_first=True, dropout=0.1)
    expected = layer([x]).numpy()
    np.testing.assert_array_equal(round_trip(layer)([x]).numpy(), expected)
    assert tuple(MLP([8, 4])([keras.Input((9,), sparse=True)]).shape) == (None, 4)


# ---------------------------------------------------------------- Encoder
def test_encoder_takes_a_list_of_modalities_and_the_batch_covariates():
    atac, rna, b = counts(6, 12), counts(6, 7, seed=1), onehot(6, 3)
    layer = Encoder(4, units=[8, 5], condition_on_batch=True)
    mean, var = layer([sparse(atac), rna], b)
    assert tuple(mean.shape) == tuple(var.shape) == (6, 4)
    assert float(tf.reduce_min(var)) >= layer.min_variance
    assert [tuple(p.kernel.shape) for p in layer.body.input_projections] == [(12, 8), (7, 8), (3, 8)]
    np.testing.assert_allclose(layer([atac, rna], b)[0].numpy(), mean.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(layer([atac, rna], tf.reverse(b, [0]))[0].numpy(), mean.numpy())
    explicit = Encoder(4, units=[8, 5], condition_on_batch=True)
    explicit.build([(None, 12), (None, 7)], (None, 3))
    assert shapes(explicit) == shapes(layer)


def test_encoder_without_batch_conditioning_ignores_the_batch():
    x, b = counts(6, 7), onehot(6, 3)
    layer = Encoder(4, units=[8])
    mean, _ = layer([x], b)
    assert len(layer.body.input_projections) == 1
    np.testing.assert_array_equal(layer([x])[0].numpy(), mean.numpy())
    np.testing.assert_array_equal(layer([x], tf.reverse(b, [0]))[0].numpy(), mean.numpy())


def test_encoder_round_trip_and_symbolic_call():
    x, b = counts(6, 7), onehot(6, 2)
    layer = Encoder(3, units=[8, 4], condition_on_batch=True, min_variance=1e-3)
    expected = layer([x], b)
    for got, want in zip(round_trip(layer)([x], b), expected):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    mean, var = Encoder(3, units=[8])([keras.Input((7,), sparse=True)], keras.Input((2,)))
    assert tuple(mean.shape) == tuple(var.shape) == (None, 3)


# ---------------------------------------------------------------- Decoder
def test_decoder_has_one_head_per_parameter_and_conditions_on_the_batch():
    z, b = normal(6, 3), onehot(6, 2)
    layer = Decoder(7, ["logits", "dispersion"], units=[8, 5])
    raw = layer(z, b)
    assert sorted(raw) == ["dispersion", "logits"]
    assert all(tuple(v.shape) == (6, 7) for v in raw.values())
    assert not np.allclose(layer(z, tf.reverse(b, [0]))["logits"].numpy(), raw["logits"].numpy())
    explicit = Decoder(7, ["logits", "dispersion"], units=[8, 5])
    explicit.build((None, 3), (None, 2))
    assert shapes(explicit) == shapes(layer)
    assert tuple(Decoder(7, ["logits"], units=[8])(z, tf.zeros((6, 0)))["logits"].shape) == (6, 7)


def test_decoder_round_trip_and_symbolic_call():
    z, b = normal(6, 3), onehot(6, 2)
    layer = Decoder(7, ["loc", "scale"], units=[8], activation="relu", norm=None)
    expected = layer(z, b)
    got = round_trip(layer)(z, b)
    for p in ("loc", "scale"):
        np.testing.assert_array_equal(got[p].numpy(), expected[p].numpy())
    symbolic = Decoder(7, ["loc"], units=[8])(keras.Input((3,)), keras.Input((2,)))
    assert tuple(symbolic["loc"].shape) == (None, 7)


# ---------------------------------------------------------------- HierarchicalEncoder
def test_hierarchical_encoder_without_parents():
    z = normal(6, 3)
    layer = HierarchicalEncoder(3)
    z_hat = layer(z)
    assert float(layer.alpha.numpy()) == 1.0 and tuple(layer.f_b.kernel.shape) == (3, 3)
    np.testing.assert_allclose(z_hat.numpy(), layer.f_b(layer.f_r(z)).numpy(), rtol=1e-6)
    # alpha = 0 blends z out: only f_b's bias is left
    blended_out = layer(z, alpha=tf.zeros((6, 3))).numpy()
    np.testing.assert_array_equal(blended_out, np.broadcast_to(layer.f_b.bias.numpy(), (6, 3)))


def test_hierarchical_encoder_with_two_parents_and_alpha():
    z, parents = normal(6, 3), [normal(6, 2, seed=1), normal(6, 5, seed=2)]
    layer = HierarchicalEncoder(3)
    z_hat = layer(z, parents, alpha=tf.constant(0.5))
    assert tuple(layer.f_b.kernel.shape) == (2 + 5 + 3, 3)
    expected = layer.f_b(tf.concat([*parents, 0.5 * layer.f_r(z)], axis=-1))
    np.testing.assert_allclose(z_hat.numpy(), expected.numpy(), rtol=1e-6)
    zero = tf.constant(0.0)
    np.testing.assert_array_equal(layer(z, parents, alpha=zero).numpy(), layer(2 * z, parents, alpha=zero).numpy())
    explicit = HierarchicalEncoder(3)
    explicit.build((None, 3), [(None, 2), (None, 5)])
    assert shapes(explicit) == shapes(layer)


def test_hierarchical_encoder_round_trip_and_symbolic_call():
    z, parents = normal(6, 3), [normal(6, 2, seed=1)]
    layer = HierarchicalEncoder(3)
    expected = layer(z, parents).numpy()
    np.testing.assert_array_equal(round_trip(layer)(z, parents).numpy(), expected)
    symbolic = HierarchicalEncoder(3)(keras.Input((3,)), [keras.Input((2,)), keras.Input((4,))])
    assert tuple(symbolic.shape) == (None, 3)


# ---------------------------------------------------------------- Component
MODALITIES = {
    "atac": {"likelihood": "bernoulli", "n_features": 12, "n_batch": 0},
    "rna": {"likelihood": "zinb", "n_features": 7, "n_batch": 2},
}


def joint_component() -> Component:
    """A joint component (two modalities, one without batch covariates) with one parent."""
    return Component(MODALITIES, latent_dim=3, parents=["p"], parent_dims=[2], encoder={"units": [8]},
                     decoder={"units": [8]}, seed=0, name="joint")


def component_inputs(n_cells: int = 6) -> tuple[dict, dict, list]:
    atac = tf.cast(counts(n_cells, 12) > 0, tf.float32)
    x = {"atac": sparse(atac), "rna": counts(n_cells, 7, seed=1)}
    batch = {"atac": tf.zeros((n_cells, 0)), "rna": onehot(n_cells, 2)}
    return x, batch, [normal(n_cells, 2, seed=2)]


def test_component_is_built_by_its_first_call_not_by_init():
    x, batch, parents = component_inputs()
    component = joint_component()
    assert not component.built and not component.encoder.built
    out = component(x, batch, parents)
    assert component.built
    assert all(tuple(out[k].shape) == (6, 3) for k in ("z_mean", "z_var", "z", "z_hat"))
    assert {m: sorted(raw) for m, raw in out["raw"].items()} == {
        "atac": ["logits"], "rna": ["dispersion", "dropout_logits", "logits"]}
    assert tuple(out["raw"]["atac"]["logits"].shape) == (6, 12)
    np.testing.assert_array_equal(out["z"].numpy(), out["z_mean"].numpy())  # no sampling unless asked
    np.testing.assert_array_equal(out["library_size"]["rna"].numpy(), tf.reduce_sum(x["rna"], -1, keepdims=True))
    explicit = joint_component()
    explicit.build(**explicit.build_shapes())
    assert shapes(explicit) == shapes(component)


def test_component_samples_with_the_given_noise():
    x, batch, parents = component_inputs()
    component = joint_component()
    out = component(x, batch, parents, sample=True, noise=tf.ones((6, 3)), decode=False)
    assert "raw" not in out
    expected = out["z_mean"] + tf.sqrt(out["z_var"])
    np.testing.assert_allclose(out["z"].numpy(), expected.numpy(), rtol=1e-6)


def test_component_round_trip_and_shape_checks():
    x, batch, parents = component_inputs()
    component = joint_component()
    expected = component(x, batch, parents)
    got = round_trip(component)(x, batch, parents)
    np.testing.assert_array_equal(got["z_hat"].numpy(), expected["z_hat"].numpy())
    np.testing.assert_array_equal(got["raw"]["rna"]["logits"].numpy(), expected["raw"]["rna"]["logits"].numpy())
    shapes_ = joint_component().build_shapes()
    with pytest.raises(ValueError, match="'rna' has 7 features"):
        joint_component().build(**{**shapes_, "x_shape": {"atac": (None, 12), "rna": (None, 8)}})
    with pytest.raises(ValueError, match=r"latent dims \[2\] but the parent inputs have \[\]"):
        joint_component()(x, batch)
