"""Test session setup: two logical CPU devices (for tf.distribute tests), quiet TF, shared fixtures."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Logical devices must be configured before TensorFlow runs its first op.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

SNARE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "snare_mouse_cortex.h5mu"


@pytest.fixture(scope="session")
def snare_path() -> Path:
    if not SNARE.exists():
        pytest.skip(f"real data not found at {SNARE} (it lives in ../shared/data next to the repository)")
    return SNARE


@pytest.fixture(scope="session")
def small_data():
    """A small simulated paired data set (atac -> rna) shared by model tests."""
    from cavachon_like import simulate

    return simulate(n_cells=300, n_batches=2, n_atac=120, n_rna=60, seed=3)


@pytest.fixture
def small_components() -> list[dict]:
    """Two tiny components wired atac -> rna."""
    small = {"encoder": {"units": [32, 16]}, "decoder": {"units": [16, 32]}, "latent_dim": 4}
    return [
        {"name": "atac", "modalities": ["atac"], **small},
        {"name": "rna", "modalities": ["rna"], "parents": ["atac"], **small},
    ]


@pytest.fixture(scope="session")
def small_components_spec() -> tuple[dict, ...]:
    """The components of ``small_components`` for module- and session-scoped fixtures (which cannot
    use a function-scoped fixture); a tuple, so take ``[dict(c) for c in ...]`` before changing one."""
    small = {"encoder": {"units": [32, 16]}, "decoder": {"units": [16, 32]}, "latent_dim": 4}
    return (
        {"name": "atac", "modalities": ["atac"], **small},
        {"name": "rna", "modalities": ["rna"], "parents": ["atac"], **small},
    )


@pytest.fixture(scope="session")
def planted_factors_run():
    """A two-stage model (atac -> rna) trained with VaDE's recipe on data with known factors.

    ATAC comes from a parent factor (4 types); RNA from the parent factor plus a child-only
    factor (3 states) that ATAC never sees. tests/test_clustering_recipe.py checks the clusters
    and tests/test_dag_semantics.py the latents of this one training (about a minute on 2 CPUs).
    Seed 11 places the three child states >= 1.6 apart (within-state SD 0.3); with seed 5 two
    of them lie 0.7 apart and no method separates them reliably.
    """
    import keras

    from cavachon_like import CAVACHON, simulate

    data = simulate(n_cells=1500, n_batches=2, n_atac=1500, n_rna=200, n_parent_types=4, n_child_states=3, seed=11)
    small = {"latent_dim": 4, "encoder": {"units": [64, 32]}, "decoder": {"units": [32, 64]}}
    components = [
        {"name": "atac", "modalities": ["atac"], "n_clusters": 4, **small},
        {"name": "rna", "modalities": ["rna"], "parents": ["atac"], "n_clusters": 3, **small},
    ]
    model = CAVACHON.from_data(data, components, seed=0, pretrain_epochs=10, progressive_epochs=3)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(data, epochs=20, batch_size=128, verbose=0)
    return model, data
