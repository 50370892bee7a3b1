"""Batches of cells read from disk: shuffled by block, then within a window of blocks.

A pass over the cells permutes blocks of :data:`BLOCK_CELLS` consecutive cells, reads
the blocks of one window (about :data:`WINDOW_NONZEROS` non-zeros over all modalities)
with a few long HDF5 reads, shuffles the window's cells and cuts them into batches;
cells left over after the last full batch of a window join the next window. Every cell
is seen once per pass, as in memory; a batch mixes cells from the window's blocks,
which sit at random places of the file. Reading runs in the ``tf.data`` pipeline,
ahead of the training step.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from .backed import RowReader, check_unchanged, is_backed, signature

#: Consecutive cells read together. Small blocks give well-mixed batches (a window
#: holds many blocks from all over the file); reads stay long enough to stream.
BLOCK_CELLS = 64

#: Non-zeros held in one window: float32 values and int32 columns make this about
#: 128 MB, whatever the size of the file.
WINDOW_NONZEROS = 1 << 24


def _components(block: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, values)`` of a ``tf.SparseTensor`` holding ``block`` (row-major order)."""
    if not block.has_sorted_indices:
        block = block.sorted_indices()
    rows = np.repeat(np.arange(block.shape[0], dtype=np.int64), np.diff(block.indptr))
    return np.stack([rows, block.indices.astype(np.int64)], axis=1), block.data.astype(np.float32, copy=False)


def streamed_batches(
    mods: Mapping[str, Any],
    names: Sequence[str],
    cells: np.ndarray,
    batch_size: int,
    shuffle: bool,
    seed: int,
    order: tf.Variable | None,
    drop_remainder: bool,
) -> tf.data.Dataset:
    """``(idx, {modality: (indices, values)})`` batches of the cells ``cells`` of ``mods``.

    ``idx`` are positions into ``cells``; the pairs are the components of each
    modality's ``tf.SparseTensor``. Pass ``p`` shuffles with the generator seeded
    by ``(seed, p)``, ``p`` being ``order``'s value when the pass starts if given (so an
    epoch's order can be replayed), else the number of passes made so far.
    """
    readers = {n: RowReader(mods[n].X) for n in names}
    backed = {n: mods[n].X for n in names if is_backed(mods[n].X)}
    expected = {n: signature(x) for n, x in backed.items()}
    n = len(cells)
    per_cell = sum(float(r.indptr[-1]) / max(r.shape[0], 1) for r in readers.values())
    window = max(batch_size, BLOCK_CELLS, int(WINDOW_NONZEROS / max(per_cell, 1.0)))
    blocks_per_window = max(1, window // BLOCK_CELLS)
    n_blocks = math.ceil(n / BLOCK_CELLS)
    passes = [0]

    def generate(pass_number: Any):
        if order is None:
            pass_number, passes[0] = passes[0], passes[0] + 1
        # numpy seeds are non-negative; a pass key may be -1 ("the pass before the first epoch")
        rng = np.random.default_rng([int(seed) % 2**63, int(pass_number) % 2**63])
        blocks = rng.permutation(n_blocks) if shuffle else np.arange(n_blocks)
        carry = np.zeros(0, np.int64)
        carried: dict[str, sp.csr_matrix] = {}
        for start in range(0, n_blocks, blocks_per_window):
            for name, x in backed.items():
                check_unchanged(x, expected[name], name)
            chosen = blocks[start:start + blocks_per_window]
            pos = np.concatenate([np.arange(b * BLOCK_CELLS, min((b + 1) * BLOCK_CELLS, n)) for b in chosen])
            if shuffle:
                pos = pos[rng.permutation(len(pos))]
            data = {k: r.read(cells[pos]) for k, r in readers.items()}
            if carry.size:
                pos = np.concatenate([carry, pos])
                data = {k: sp.vstack([carried[k], v], format="csr") for k, v in data.items()}
            last = start + blocks_per_window >= n_blocks
            full = len(pos) if last else len(pos) // batch_size * batch_size
            for lo in range(0, full, batch_size):
                hi = min(lo + batch_size, full)
                if hi - lo < batch_size and drop_remainder:
                    break
                yield pos[lo:hi], {k: _components(v[lo:hi]) for k, v in data.items()}
            carry, carried = pos[full:], {k: v[full:] for k, v in data.items()}

    spec = (tf.TensorSpec((None,), tf.int64),
            {k: (tf.TensorSpec((None, 2), tf.int64), tf.TensorSpec((None,), tf.float32)) for k in names})

    def one_pass(_: tf.Tensor) -> tf.data.Dataset:
        # the pass number is read when the pass starts, i.e. each time an iterator is made
        pass_number = order.read_value() if order is not None else tf.constant(0, tf.int64)
        return tf.data.Dataset.from_generator(generate, output_signature=spec, args=(pass_number,))

    ds = tf.data.Dataset.from_tensors(0).flat_map(one_pass)
    n_batches = n // batch_size if drop_remainder else math.ceil(n / batch_size)
    return ds.apply(tf.data.experimental.assert_cardinality(n_batches))
