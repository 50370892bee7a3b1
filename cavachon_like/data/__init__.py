"""Data layer: modalities, paired multi-modal data, readers, QC, genomic bins, tf.data pipelines, simulators.

``MultiModality.to_dataset`` imports TensorFlow on first use, so reading files and
running QC stay light.
"""
from .bins import align_bins, bin_counts, chromosome_boundaries
from .genome import attach_gene_coordinates, coordinates, parse_coordinates, read_gene_table, read_intervals
from .groups import cell_positions, resolve_groups
from .modality import UNS_KEY, Modality
from .multimodality import MultiModality
from .qc import (
    PAPER_QC,
    BinGenome,
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
from .shuffle import shuffle_bins
from .simulate import simulate
from .simulate_binned import simulate_binned
from .simulate_disk import simulate_to_disk
from .support import SUPPORTS, register_support, support_of

__all__ = [
    "DEFAULT_LIKELIHOODS",
    "FEATURE_TYPES",
    "PAPER_QC",
    "SUPPORTS",
    "UNS_KEY",
    "BinGenome",
    "FilterCells",
    "FilterCellsByFraction",
    "FilterFeatures",
    "Modality",
    "MultiModality",
    "QCStep",
    "align_bins",
    "attach_gene_coordinates",
    "bin_counts",
    "cell_positions",
    "chromosome_boundaries",
    "coordinates",
    "from_config",
    "parse_coordinates",
    "read_10x",
    "read_10x_multi",
    "read_gene_table",
    "read_h5ad",
    "read_h5mu",
    "read_intervals",
    "register_support",
    "resolve_groups",
    "shuffle_bins",
    "simulate",
    "simulate_binned",
    "simulate_to_disk",
    "support_of",
]
