"""Data layer: modalities, paired multi-modal data, readers, QC, tf.data pipelines, simulation.

``MultiModality.to_dataset`` imports TensorFlow on first use, so reading files and
running QC stay light.
"""
from .groups import cell_positions, resolve_groups
from .modality import COUNT_LIKELIHOODS, INTEGER_LIKELIHOODS, UNS_KEY, Modality
from .multimodality import MultiModality
from .qc import (
    PAPER_QC,
    FilterCells,
    FilterCellsByFraction,
    FilterFeatures,
    QCStep,
    from_config,
)
from .readers import DEFAULT_LIKELIHOODS, FEATURE_TYPES, read_10x, read_h5ad, read_h5mu
from .simulate import simulate

__all__ = [
    "COUNT_LIKELIHOODS",
    "DEFAULT_LIKELIHOODS",
    "FEATURE_TYPES",
    "INTEGER_LIKELIHOODS",
    "PAPER_QC",
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
    "read_h5ad",
    "read_h5mu",
    "resolve_groups",
    "simulate",
]
