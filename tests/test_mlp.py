"""The MLP block shared by encoders and decoders: dropout only in training, and in its config."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from cavachon_like.nn import MLP

pytestmark = pytest.mark.floor  # also run on the dependency floor (.ci/run)


def test_dropout_acts_in_training_only_and_round_trips():
    layer = MLP([64, 32], dropout=0.5, name="mlp")
    layer.build([(None, 10)])
    x = tf.constant(np.random.default_rng(0).normal(size=(200, 10)), tf.float32)
    inference = layer([x], training=False).numpy()
    np.testing.assert_array_equal(inference, layer([x]).numpy())  # off by default, outside fit
    trained = layer([x], training=True).numpy()
    dropped = (trained == 0) & (inference != 0)
    assert 0.3 < dropped.mean() < 0.7  # rate 0.5 on 6,400 units
    restored = MLP.from_config(layer.get_config())
    assert restored.dropout == 0.5
    with pytest.raises(ValueError, match="dropout"):
        MLP([8], dropout=1.0)
