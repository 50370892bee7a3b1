"""Data layer: modalities, paired multi-modal data, readers, QC, tf.data pipelines, simulation.

``MultiModality.to_dataset`` imports TensorFlow on first use, so reading files and
running QC stay light.
"""
from .groups import cell_positions, resolve_groups
from .modality import UNS_KEY, Modality
from .multimodality import MultiModality
from .qc import (
    PAPER_QC,
    FilterCells,
    FilterCellsByFraction,
    FilterFeatures,
    QCStep,
    from_config,
)
from .readers import (
    DEFAULT_LIKELIHOODS,
    FEATURE_TYPES,
    read_10x,
    read_10x_multi,
    read_h5ad,
    read_h5mu,
)
from .simulate import simulate
from .support import SUPPORTS, register_support, support_of

__all__ = [
    "DEFAULT_LIKELIHOODS",
    "FEATURE_TYPES",
    "PAPER_QC",
    "SUPPORTS",
    "UNS_KEY",
    "FilterCells",
    "FilterCellsByFraction",
    "FilterFeatures",
    "Modality",
    "MultiModality",
    "QCStep",
    "cell_positions",
    "from_config",
    "read_10x",
    "read_10x_multi",
    "read_h5ad",
    "read_h5mu",
    "register_support",
    "resolve_groups",
    "simulate",
    "support_of",
]
