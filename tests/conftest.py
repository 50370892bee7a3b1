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
