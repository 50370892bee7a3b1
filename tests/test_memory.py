"""Memory that training and analyses hand back: spent optimizers' slots and datasets' copies of the data."""
from __future__ import annotations

import gc

import anndata
import keras
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from cavachon_like import CAVACHON, MultiModality
from cavachon_like.train import FusedAdam, release


def _allocated() -> int:
    """Bytes TensorFlow's CPU allocator holds now."""
    try:
        return int(tf.config.experimental.get_memory_info("CPU:0")["current"])
    except (ValueError, RuntimeError) as error:  # allocator statistics are not kept on every build
        pytest.skip(f"TensorFlow keeps no CPU allocator statistics here: {error}")


def test_release_frees_the_slots_of_an_optimizer_a_traced_step_used():
    weights = keras.Variable(np.zeros((1000, 1000), "float32"))
    optimizer = FusedAdam()
    optimizer.build([weights])

    @tf.function
    def step(gradient):
        optimizer.apply([gradient], [weights])

    step(tf.ones((1000, 1000)))
    slots = 2 * 1000 * 1000 * 4
    before = _allocated()
    if before < slots:
        pytest.skip("the allocator's statistics do not show the optimizer's slots")
    release(optimizer, tf.distribute.get_strategy())
    assert before - _allocated() > 0.9 * slots
    assert all(int(tf.size(v.value)) == 0 for v in optimizer.variables)
    assert weights.shape == (1000, 1000) and float(weights.numpy()[0, 0]) < 0  # the weights stay (they took a step)


def test_each_phase_empties_the_previous_phases_optimizer(small_data, small_components):
    model = CAVACHON.from_data(small_data, small_components, seed=0, pretrain_epochs=2)
    optimizers = []

    class Seen(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            optimizers.append(self.model.optimizer)
            assert all(int(tf.size(v.value)) > 0 for v in self.model.optimizer.variables)  # the live one is whole

    model.fit(small_data, epochs=2, batch_size=64, callbacks=[Seen()], verbose=0)
    assert len(optimizers) == 4  # pre-training and ELBO of two stages
    for optimizer in optimizers:  # all spent once fit returns
        assert optimizer is not model.optimizer
        assert max(int(tf.size(v.value)) for v in optimizer.variables) == 0
    assert np.isfinite(model.get_latent_representation(small_data)["z_rna"]).all()
    model.fit(small_data, epochs=1, batch_size=64, verbose=0)  # a model whose optimizers were emptied trains on


def test_a_dataset_gives_its_copy_of_the_data_back_without_a_cyclic_collection():
    rng = np.random.default_rng(0)
    counts = sp.random(4000, 3000, density=0.1, format="csr", random_state=rng, dtype=np.float32)
    counts.data = np.ceil(counts.data * 5)
    data = MultiModality({"atac": anndata.AnnData(counts)}, likelihoods={"atac": "bernoulli"})
    size = counts.nnz * 8  # values and column indices

    def one_pass() -> int:
        """Bytes allocated while the dataset lives."""
        dataset = data.to_dataset(batch_size=512, shuffle=True, seed=0)
        for _ in dataset:
            pass
        return _allocated()

    if one_pass() < size:  # tf.data's first use also sets up what it keeps for the process
        pytest.skip("the allocator's statistics do not show the dataset's tensors")
    gc.collect()
    gc.disable()  # only reference counting frees memory from here on
    try:
        before = _allocated()
        for _ in range(4):
            one_pass()
        grown = _allocated() - before
    finally:
        gc.enable()
    # Held by the traced gathering function's reference cycles, each pass kept a copy (4 here).
    assert grown < 0.5 * size, f"{grown / size:.2f} copies of the data still held"
