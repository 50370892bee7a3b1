"""MirroredStrategy over two logical CPUs gives the single-device loss and gradients."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cavachon_like import CAVACHON

pytestmark = pytest.mark.floor  # also run on the dependency floor (.ci/run)


def one_step(data, components, strategy, initial_weights=None):
    with strategy.scope():
        # No pre-training: the weight change must be the one gradient step alone.
        model = CAVACHON.from_data(data, components, training="joint", pretrain_epochs=0, seed=0)
        # Plain SGD: the update is -lr * gradient, so equal updates mean equal gradients.
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1))
    if initial_weights is not None:
        model.set_weights(initial_weights)
    model.sample_latent = False  # identical forward passes on both set-ups
    before = [np.array(w) for w in model.trainable_weights]
    names = [w.path for w in model.trainable_weights]
    dataset = model.make_dataset(data, batch_size=64, indices=np.arange(64))
    history = model.fit(dataset, epochs=1, verbose=0)
    gradients = {n: (b - np.array(w)) / 0.1 for n, b, w in zip(names, before, model.trainable_weights)}
    return model, history.history, gradients


def test_mirrored_strategy_matches_single_device(small_data, small_components):
    assert len(tf.config.list_logical_devices("CPU")) >= 2, "conftest configures two logical CPUs"
    single, single_history, single_grads = one_step(small_data, small_components, tf.distribute.get_strategy())
    # Both models start from the same weights: rebuild the single-device initial state.
    reference = CAVACHON.from_data(small_data, small_components, training="joint", seed=0)
    initial = reference.get_weights()
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    _, dist_history, dist_grads = one_step(small_data, small_components, mirrored, initial)
    for key in ("loss", "atac_kl", "rna_nll", "atac_nll", "rna_kl"):
        np.testing.assert_allclose(dist_history[key], single_history[key], rtol=1e-5, err_msg=key)
    assert single_grads.keys() == dist_grads.keys()
    largest = max(np.abs(g).max() for g in single_grads.values())
    assert largest > 0
    for name in single_grads:
        np.testing.assert_allclose(dist_grads[name], single_grads[name], rtol=1e-3, atol=1e-4 * largest, err_msg=name)


def test_fit_outside_the_strategy_scope_after_building_inside_it(small_data, small_components):
    """Keras' usual pattern: build and compile under the scope, fit anywhere. Every training
    phase recompiles with a fresh optimizer, which must be made in the model's strategy."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = CAVACHON.from_data(small_data, small_components, training="joint", pretrain_epochs=0, seed=0)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(small_data, epochs=1, batch_size=64, verbose=0)
    assert np.isfinite(history.history["loss"]).all() and len(history.history["loss"]) == 1
