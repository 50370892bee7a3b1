"""The paper's claim on simulated data with known factors: the DAG separates sources of variation.

ATAC is generated from a parent factor only; RNA from the parent factor plus a child-only factor.
After sequential training (atac -> rna), the child's own z should capture the child-only factor,
while the parent factor should be predicted markedly better from the parent's z than the child's.
"""
from __future__ import annotations

import keras
import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import cross_val_score

from cavachon_like import CAVACHON, simulate


def r2(z, target):
    return float(np.mean(cross_val_score(RidgeCV(alphas=np.logspace(-3, 3, 7)), z, target, cv=5, scoring="r2")))


def test_child_latent_captures_child_only_factor():
    data = simulate(n_cells=1500, n_batches=2, n_atac=1500, n_rna=200, seed=11)
    small = {"latent_dim": 4, "encoder": {"units": [64, 32]}, "decoder": {"units": [32, 64]}}
    components = [
        {"name": "atac", "modalities": ["atac"], **small},
        {"name": "rna", "modalities": ["rna"], "parents": ["atac"], **small},
    ]
    model = CAVACHON.from_data(data, components, seed=0, progressive_epochs=3)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(data, epochs=60, batch_size=128, verbose=0)
    latents = model.get_latent_representation(data)
    parent, child = data.obsm["true_parent"], data.obsm["true_child"]
    child_from_child = r2(latents["z_rna"], child)
    parent_from_parent = r2(latents["z_atac"], parent)
    parent_from_child = r2(latents["z_rna"], parent)
    child_from_parent = r2(latents["z_atac"], child)
    print(f"R2 child<-z_rna {child_from_child:.2f}, parent<-z_atac {parent_from_parent:.2f}, "
          f"parent<-z_rna {parent_from_child:.2f}, child<-z_atac {child_from_parent:.2f}")
    assert child_from_child > 0.5
    assert child_from_parent < 0.2  # ATAC carries no child information
    assert parent_from_parent > 0.5
    assert parent_from_parent > parent_from_child + 0.3
