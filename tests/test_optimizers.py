"""FusedAdam makes Keras Adam's updates; CAVACHON trains with it."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cavachon_like.train.optimizers import FusedAdam, fused


def _train(optimizer: keras.optimizers.Optimizer, steps: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.normal(size=shape).astype(np.float32)) for shape in [(7, 5), (5,)]]
    optimizer.build(variables)
    for step in range(steps):
        grads = [tf.constant(np.random.default_rng(step).normal(size=v.shape).astype(np.float32)) for v in variables]
        optimizer.apply_gradients(zip(grads, variables))
    return [v.numpy() for v in variables]


@pytest.mark.parametrize("config", [{}, {"learning_rate": 0.1, "beta_1": 0.5, "epsilon": 1e-3}])
def test_fused_adam_matches_keras_adam(config):
    expected = _train(keras.optimizers.Adam(**config))
    got = _train(FusedAdam(**config))
    for a, b in zip(got, expected):
        # equal up to float rounding (the fused kernel evaluates the same formulas in another order)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_fused_replaces_only_plain_adam():
    assert isinstance(fused(keras.optimizers.Adam(learning_rate=0.01)), FusedAdam)
    assert fused(keras.optimizers.Adam(learning_rate=0.01)).learning_rate.numpy() == pytest.approx(0.01)
    assert not isinstance(fused(keras.optimizers.Adam(amsgrad=True)), FusedAdam)
    sgd = keras.optimizers.SGD()
    assert fused(sgd) is sgd


@pytest.fixture
def mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision_trains_and_returns_float32_latents(mixed_bfloat16):
    import cavachon_like as cl

    data = cl.simulate(n_cells=300, n_atac=200, n_rna=80, seed=0)
    components = [{"name": "atac", "modalities": ["atac"]}, {"name": "rna", "modalities": ["rna"], "parents": ["atac"]}]
    model = cl.CAVACHON.from_data(data, components, seed=0)
    model.compile()
    history = model.fit(data, epochs=1, batch_size=100, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    latents = model.get_latent_representation(data)
    assert latents["z_rna"].dtype == np.float32 and np.isfinite(latents["z_rna"]).all()
