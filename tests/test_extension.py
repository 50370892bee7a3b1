"""A user's likelihood and encoder, defined outside the package, named in YAML and trained."""
from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np
import yaml

from cavachon_like.data import read_h5mu
from cavachon_like.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_plugin_classes_are_nameable_from_yaml(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    config = {
        "seed": 1,
        "plugins": ["custom_modules"],
        "data": {
            "simulate": {"n_cells": 200, "n_atac": 80, "n_rna": 40},
            "modalities": {"rna": {"likelihood": "lognormal", "batch_key": ["batch"]}},
        },
        "model": {
            # The plugins are under test, not VaDE's pre-training (tests/test_clustering_recipe.py):
            # without it each stage is one Keras fit instead of two.
            "pretrain_epochs": 0,
            "components": [
                {"name": "atac", "modalities": ["atac"], "latent_dim": 3, "encoder": {"units": [16]},
                 "decoder": {"units": [16]}},
                {"name": "rna", "modalities": ["rna"], "parents": ["atac"], "latent_dim": 3,
                 "encoder": {"class": "residual_mlp", "units": [16, 16]}, "decoder": {"units": [16]}},
            ]
        },
        "training": {"epochs": 1, "batch_size": 64, "validation_split": 0.0, "early_stopping": None, "verbose": 0},
        "output": {"embedding": "pca"},
    }
    path = tmp_path / "plugin.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["train", str(path), "--out", str(out)]) == 0
    import custom_modules

    model = keras.models.load_model(out / "model.keras")
    rna = model.components["rna"]
    assert isinstance(rna.encoder, custom_modules.ResidualEncoder)
    assert isinstance(rna.likelihoods["rna"], custom_modules.LogNormalCounts)
    history = (out / "history.csv").read_text()
    assert "rna_nll" in history
    result = read_h5mu(out / "result.h5mu")
    assert np.isfinite(model.get_latent_representation(result)["z_rna"]).all()
    sys.modules.pop("custom_modules", None)
