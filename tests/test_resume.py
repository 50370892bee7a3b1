"""Checkpoint and resume: a run killed mid-stage continues to the uninterrupted run's result;
and a model's construction leaves the caller's random generators alone."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import yaml

from cavachon_like import CAVACHON
from cavachon_like.cli import main
from cavachon_like.data import read_h5mu
from cavachon_like.errors import InputError

TINY = {"encoder": {"units": [16, 8]}, "decoder": {"units": [8, 16]}, "latent_dim": 3, "n_clusters": 3}
CONFIG = {
    "seed": 5,
    "data": {"simulate": {"n_cells": 240, "n_atac": 60, "n_rna": 30, "n_batches": 2}},
    "model": {"components": [{"name": "atac", "modalities": ["atac"], **TINY},
                             {"name": "rna", "modalities": ["rna"], "parents": ["atac"], **TINY}],
              "pretrain_epochs": 1, "progressive_epochs": 2},
    "training": {"epochs": 3, "batch_size": 64, "min_pretrain_steps": 0, "verbose": 0, "validation_split": 0.1,
                 "early_stopping": {"patience": 2},
                 # Every epoch after a phase's first is a plateau, so the rate falls at each one:
                 # a resumed run must restore both the rate and the plateau's counters.
                 "reduce_lr": {"patience": 1, "min_delta": 1e9}},
    "output": {"embedding": "pca"},
}
# Epochs per stage: 1 of pre-training then 3 of the ELBO, so the 7th epoch is the RNA stage's
# second ELBO epoch: the kill lands mid-phase, after a mixture fit, with early stopping and the
# plateau's counters running.
KILL_AFTER = 7

# Runs the CLI in a fresh interpreter and exits hard (as kill -9 would: no cleanup, no
# flush) as the KILL_AFTER-th epoch ends, before that epoch is checkpointed.
KILLER = """
import os, sys, keras
from cavachon_like.config import runner
make = runner.training_callbacks
class Kill(keras.callbacks.Callback):
    seen = 0
    def on_epoch_end(self, epoch, logs=None):
        Kill.seen += 1
        if Kill.seen == int(sys.argv[3]):
            os._exit(9)
runner.training_callbacks = lambda config, out: make(config, out) + [Kill()]
from cavachon_like.cli import main
sys.exit(main(["train", sys.argv[1], "--out", sys.argv[2]]))
"""


def _latents(out: Path) -> np.ndarray:
    result = read_h5mu(out / "result.h5mu")
    return np.concatenate([result.obsm["z_atac"], result.obsm["z_rna"]], axis=1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run uninterrupted, and killed after epoch KILL_AFTER then resumed."""
    root = tmp_path_factory.mktemp("resume")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    killed = subprocess.run([sys.executable, "-c", KILLER, str(config), str(root / "resumed"), str(KILL_AFTER)],
                            env=env, capture_output=True, text=True, timeout=600)
    checkpoint_after_kill = sorted(p.name for p in (root / "resumed" / "checkpoint").iterdir())
    assert main(["train", str(config), "--out", str(root / "resumed"), "--resume"]) == 0
    assert main(["train", str(config), "--out", str(root / "whole")]) == 0
    return {"root": root, "config": config, "killed": killed, "checkpoint": checkpoint_after_kill}


def test_killed_run_resumes_to_the_uninterrupted_result(runs):
    assert runs["killed"].returncode == 9, runs["killed"].stderr[-2000:]
    assert "checkpoint.npz" in runs["checkpoint"]
    assert not [name for name in runs["checkpoint"] if name.startswith(".")]  # no half-written file
    root = runs["root"]
    np.testing.assert_allclose(_latents(root / "resumed"), _latents(root / "whole"), rtol=0, atol=1e-5)
    resumed = (root / "resumed" / "history.csv").read_text().splitlines()
    whole = (root / "whole" / "history.csv").read_text().splitlines()
    # Every epoch is in the resumed history once (the killed epoch re-run), phase by phase.
    assert len(resumed) == len(whole) == 1 + 2 * (1 + 3)
    assert [line.split(",")[:2] for line in resumed] == [line.split(",")[:2] for line in whole]
    rates = [pd.read_csv(root / out / "history.csv")["learning_rate"].tolist() for out in ("resumed", "whole")]
    assert rates[0] == pytest.approx(rates[1])
    assert rates[1][-3:] == pytest.approx([1e-3, 1e-3, 5e-4])  # the rates the RNA stage's ELBO epochs trained with
    # Outputs written, the checkpoint removed.
    for out in ("resumed", "whole"):
        assert not (root / out / "checkpoint").exists()
        names = {p.name for p in (root / out).iterdir()}
        assert {"result.h5mu", "model.keras", "history.csv", "latent.png"} <= names
        assert not [name for name in names if name.startswith(".")]  # no temporary file left


def test_resume_refuses_what_it_cannot_continue(runs, capsys):
    root, config = runs["root"], str(runs["config"])
    assert main(["train", config, "--out", str(root / "whole"), "--resume"]) == 2
    assert "complete" in capsys.readouterr().err
    assert main(["train", config, "--out", str(root / "whole"), "--resume", "--overwrite"]) == 2
    assert "contradict" in capsys.readouterr().err
    # A checkpoint left by another configuration is not continued with this one.
    other = root / "other"
    (other / "checkpoint").mkdir(parents=True)
    (other / "checkpoint" / "config.json").write_text('{"seed": 1}')
    (other / "checkpoint" / "checkpoint.npz").write_bytes(b"")
    assert main(["train", config, "--out", str(other), "--resume"]) == 2
    assert "seed" in capsys.readouterr().err
    # Without --resume, an interrupted run is not silently replaced.
    assert main(["train", config, "--out", str(other)]) == 2
    assert "--resume" in capsys.readouterr().err


# The checkpoint mechanism itself (variables, optimizer slots, RNG states) is what an older
# Keras or TensorFlow could break, so it also runs on the dependency floor (.ci/run); the
# command-line kill-and-resume runs above cover the rest once, on the current releases.
@pytest.mark.floor
def test_fit_checkpoint_api(small_data, small_components, tmp_path):
    model = CAVACHON.from_data(small_data, small_components, seed=0, pretrain_epochs=0)
    model.compile()
    with pytest.raises(ValueError, match="checkpoint folder"):
        model.fit(small_data, resume=True)
    model.fit(small_data, epochs=1, batch_size=128, verbose=0, checkpoint=tmp_path)
    assert (tmp_path / "checkpoint.npz").exists()
    # Resuming a finished fit restores its weights and history without training again.
    again = CAVACHON.from_data(small_data, small_components, seed=0, pretrain_epochs=0)
    again.compile()
    history = again.fit(small_data, epochs=1, batch_size=128, verbose=0, checkpoint=tmp_path, resume=True)
    assert history.history["loss"] == model.history.history["loss"]
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="batch_size: 128 then, 64 now"):
        again.fit(small_data, epochs=1, batch_size=64, verbose=0, checkpoint=tmp_path, resume=True)


@pytest.mark.floor
def test_construction_seeds_its_own_generators_only(small_data, small_components):
    def weights(seed):
        model = CAVACHON.from_data(small_data, small_components, seed=seed)
        model.predict(model.make_dataset(small_data), verbose=0)  # build every layer
        return model.get_weights()

    random.seed(1)
    np.random.seed(1)
    keras.utils.set_random_seed(1)
    python_state, numpy_state = random.getstate(), np.random.get_state()[1].copy()
    first = weights(7)
    assert random.getstate() == python_state  # the caller's generators are untouched
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)
    random.seed(2)
    keras.utils.set_random_seed(2)  # whatever the global state, the model's seed decides
    second = weights(7)
    assert len(first) == len(second) > 10
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    other = weights(8)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other) if a.size > 1)
