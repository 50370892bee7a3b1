"""KL warm-up in the ELBO phase (scMM's deterministic warm-up): the weight ramps, the logged loss does not."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from cavachon_like import CAVACHON
from cavachon_like.train import KLWarmup


def test_warmup_ramps_from_the_phase_start_and_ends_at_one():
    weight = keras.Variable(1.0, trainable=False)
    warmup = KLWarmup(weight, epochs=4, start=10)
    seen = []
    for epoch in range(10, 16):
        warmup.on_epoch_begin(epoch)
        seen.append(float(weight.numpy()))
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    warmup.on_epoch_begin(11)
    warmup.on_train_end()
    assert float(weight.numpy()) == 1.0


def test_model_warms_the_kl_up_but_logs_the_unweighted_elbo(small_data, small_components):
    class Weights(keras.callbacks.Callback):
        seen: list[float] = []

        def on_epoch_end(self, epoch, logs=None):
            Weights.seen.append(float(self.model.kl_weight.numpy()))

    model = CAVACHON.from_data(small_data, small_components[:1], seed=0, pretrain_epochs=0, kl_warmup_epochs=3)
    model.compile()
    history = model.fit(small_data, epochs=4, batch_size=128, verbose=0, callbacks=[Weights()]).history
    assert Weights.seen == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    # The logged loss is nll + kl, not nll + weight * kl: at weight 0 it still counts the KL.
    np.testing.assert_allclose(history["loss"], np.add(history["atac_nll"], history["atac_kl"]), rtol=1e-5)
    assert history["atac_kl"][0] > 0.5
    assert model.get_config()["kl_warmup_epochs"] == 3
    with pytest.raises(ValueError, match="kl_warmup_epochs must be >= 0"):
        CAVACHON.from_data(small_data, small_components[:1], kl_warmup_epochs=-1)
