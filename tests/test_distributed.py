"""MirroredStrategy over two logical CPUs, and MultiWorkerMirroredStrategy over two worker processes,
give the single-device losses, gradients and weights."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
from packaging.version import Version
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


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_worker_processes_train_as_one(tmp_path):
    """MultiWorkerMirroredStrategy across two processes on localhost (TF_CONFIG, as on a cluster)
    gives the single-worker losses and weights: each worker takes half of every global batch.
    The chief alone writes the checkpoint."""
    job = Path(__file__).with_name("multiworker_job.py")
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(config), "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
        log = open(tmp_path / f"worker{index}.log", "w")
        processes.append((subprocess.Popen([sys.executable, str(job), str(tmp_path / f"w{index}.npz"),
                                            str(tmp_path / "checkpoint")], env=env,
                                           stdout=log, stderr=subprocess.STDOUT), log))
    # the reference, here, while the workers start
    sys.path.insert(0, str(job.parent))
    try:
        from multiworker_job import train
    finally:
        sys.path.remove(str(job.parent))
    loss, weights = train(tf.distribute.get_strategy())
    for index, (process, log) in enumerate(processes):
        try:
            code = process.wait(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()
            log.close()
        assert code == 0, (tmp_path / f"worker{index}.log").read_text()[-3000:]
    # one checkpoint, the chief's, holding the trained weights
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["checkpoint.npz"]
    saved = np.load(tmp_path / "checkpoint" / "checkpoint.npz")
    assert any(np.allclose(saved[k], weights[0], atol=1e-4) for k in saved.files if k.startswith("model/")
               and saved[k].shape == weights[0].shape)
    for index in range(2):
        result = np.load(tmp_path / f"w{index}.npz")
        for i, w in enumerate(weights):
            # measured: equal to 5e-6 (Adam, two epochs, weights up to 9 in size)
            np.testing.assert_allclose(result[f"w{i}"], w, rtol=1e-4, atol=1e-4, err_msg=f"weight {i}")
        # The logged epoch losses are reduced over workers by Keras: equal on Keras 3.15 (the suite's);
        # on the floor's Keras 3.8 the weights above are equal but the first epoch's logged loss is not
        # (358.3 against 355.3, measured), so the logs are checked where Keras reduces them.
        if Version(keras.__version__) >= Version("3.15"):
            np.testing.assert_allclose(result["loss"], loss, rtol=1e-5)
