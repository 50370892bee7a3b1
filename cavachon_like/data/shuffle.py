"""Paper 004's locality control: the same counts over bins in a random genomic order."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .multimodality import MultiModality


def shuffle_bins(data: MultiModality, seed: int = 0, modalities: Sequence[str] | None = None) -> MultiModality:
    """A copy of ``data`` whose counts are moved to the bins of one random permutation.

    Every listed modality gets the same permutation of its columns (so channels stay aligned
    with each other), while ``var`` (names, ``chrom``, ``start``, ``end``) stays in place: a model
    built on the copy has the same chromosome layout, padding and parameter count, but
    neighbouring positions no longer hold neighbouring parts of the genome. Paper 004 trains a
    Conv1D VAE on such data to show that its convolutions use genomic locality
    (``benchmarks/convnet_locality.py``).

    Parameters
    ----------
    data
        Binned modalities on the same bins (``bin_genome``), in memory.
    seed
        Seed of the permutation.
    modalities
        Modalities to permute (default: all); they must have the same number of bins.

    Returns
    -------
    MultiModality
        The permuted copy; ``data`` is unchanged.
    """
    names = list(data.mod) if modalities is None else list(modalities)
    unknown = sorted(set(names) - set(data.mod))
    if unknown:
        raise ValueError(f"shuffle_bins: no modality {unknown}; the data has {list(data.mod)}.")
    sizes = {name: data.modality(name).n_vars for name in names}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"shuffle_bins: the modalities must share their bins to be permuted together, got "
                         f"{sizes} bins; bin them together with the bin_genome QC step.")
    order = np.random.default_rng(seed).permutation(next(iter(sizes.values())))
    shuffled = data.copy()
    for name in names:
        modality = shuffled.modality(name)
        modality.X = modality.X[:, order]
    return shuffled
