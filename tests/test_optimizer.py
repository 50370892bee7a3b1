"""FusedAdam, the default optimizer: Keras' Adam update in one kernel per variable."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cavachon_like import CAVACHON
from cavachon_like.train import FusedAdam

pytestmark = pytest.mark.floor  # Keras' optimizer internals changed across versions: run on the floor too


def _fit(optimizer: type, strategy: tf.distribute.Strategy, **options):
    """Final weights and losses of a small regression trained with ``optimizer(**options)``."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 1))).astype("float32")
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])
        model.compile(optimizer=optimizer(**options), loss="mse")  # made in the scope, as Keras wants
    history = model.fit(x, y, epochs=4, batch_size=16, shuffle=False, verbose=0)
    return model.get_weights(), history.history["loss"]


@pytest.mark.parametrize("devices", [None, ["/cpu:0", "/cpu:1"]])
def test_fused_adam_takes_keras_adams_steps(devices):
    # Reduction through one device, not collective ops: a collective started by another test's
    # strategy in this process would share this one's instance keys (TensorFlow aborts on that).
    strategy = (tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
                if devices else tf.distribute.get_strategy())
    options = {"learning_rate": 0.02, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-6}
    expected, expected_loss = _fit(keras.optimizers.Adam, strategy, **options)
    got, loss = _fit(FusedAdam, strategy, **options)
    initial, _ = _fit(FusedAdam, strategy, learning_rate=0.0)
    for e, g, w0 in zip(expected, got, initial):
        assert np.abs(e - w0).max() > 1e-2            # the weights moved ...
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)   # ... exactly as Keras' Adam moves them
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-4)


def test_fused_adam_keeps_keras_optimizer_options_and_round_trips():
    # Keras' common options stay Keras': decoupled weight decay shrinks the weights.
    decayed, _ = _fit(FusedAdam, tf.distribute.get_strategy(), learning_rate=0.02, weight_decay=2.0)
    plain, _ = _fit(FusedAdam, tf.distribute.get_strategy(), learning_rate=0.02)
    assert sum(np.square(w).sum() for w in decayed) < 0.8 * sum(np.square(w).sum() for w in plain)
    optimizer = FusedAdam(learning_rate=0.01, beta_1=0.5, clipnorm=1.0)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, FusedAdam)
    assert restored.get_config() == optimizer.get_config()


def test_fused_adam_refuses_variables_it_was_not_built_for():
    optimizer = FusedAdam()
    optimizer.build([keras.Variable(np.zeros(3, "float32"))])
    stranger = keras.Variable(np.zeros(3, "float32"))
    with pytest.raises(RuntimeError, match="no moments for variable"):
        optimizer.update_step(tf.ones(3), stranger.value, 0.1)


def test_models_train_with_fused_adam_by_default(small_data, small_components):
    model = CAVACHON.from_data(small_data, small_components, seed=0, pretrain_epochs=0)
    model.compile()
    assert isinstance(model.optimizer, FusedAdam)
