"""``tf.data`` pipeline over a MultiModality, batching sparse rows without densifying."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from .backed import canonical_csr, is_backed
from .groups import cell_positions
from .streaming import streamed_batches

if TYPE_CHECKING:
    from .multimodality import MultiModality

#: Batches gathered in parallel and kept ready. Gathering a batch is one ragged
#: gather (about a millisecond), so two of each keep any training step fed.
PARALLEL_BATCHES = 2

#: The tensors each batch is gathered from ride in the dataset as one element repeated
#: (``Dataset.from_tensors(tables).repeat()`` zipped with the batches of positions) rather
#: than being captured by the gathering function. A traced function sits in reference
#: cycles, which only Python's occasional cyclic collection frees; what it captures (the
#: whole data set as tensors) stayed allocated with it, so every dataset made between two
#: collections (e.g. a latent computed after each epoch) added a copy of the data.


def row_tables(x: Any) -> dict[str, tf.Tensor | tf.RaggedTensor]:
    """The tensors that :func:`gather_rows` takes rows of ``x`` from.

    Scipy sparse matrices are held as CSR (one CSC -> CSR conversion; memory grows with
    the non-zeros): ``{"columns", "values"}`` as ragged rows. Anything else is held dense
    (``{"dense"}``).
    """
    if not sp.issparse(x):
        return {"dense": tf.constant(np.asarray(x, dtype=np.float32))}
    csr = canonical_csr(x)
    row_splits = tf.constant(csr.indptr, dtype=tf.int64)
    # int32 column indices (4 bytes per non-zero less); widened per batch for the SparseTensor
    column_dtype = tf.int32 if x.shape[1] < 2**31 else tf.int64
    return {
        "columns": tf.RaggedTensor.from_row_splits(tf.constant(csr.indices, dtype=column_dtype), row_splits,
                                                   validate=False),
        "values": tf.RaggedTensor.from_row_splits(tf.constant(csr.data, dtype=tf.float32), row_splits,
                                                  validate=False),
    }


def gather_rows(tables: Mapping[str, Any], idx: tf.Tensor, n_features: int,
                sparse: bool = True) -> tf.Tensor | tf.SparseTensor:
    """Rows ``idx`` (an int64 vector) of the matrix held as :func:`row_tables`.

    For a sparse matrix a ``tf.SparseTensor`` (indices in row-major order, static shape
    ``(None, n_features)``), or the batch densified with ``sparse=False``.
    """
    if "dense" in tables:
        return tf.gather(tables["dense"], idx)
    cols = tf.gather(tables["columns"], idx)
    indices = tf.stack([cols.value_rowids(), tf.cast(cols.flat_values, tf.int64)], axis=1)
    shape = tf.stack([tf.shape(idx, out_type=tf.int64)[0], tf.constant(n_features, dtype=tf.int64)])
    batch = tf.SparseTensor(indices, tf.gather(tables["values"], idx).flat_values, shape)
    return batch if sparse else tf.sparse.to_dense(batch)


def _cell_rows(values: Any, cells: np.ndarray, n_obs: int, key: str) -> tf.Tensor:
    """The rows of the cells ``cells`` of a per-cell array, as a constant to gather batches from."""
    values = np.asarray(values)
    if values.shape[:1] != (n_obs,):
        raise ValueError(f"per_cell[{key!r}] has {values.shape[0] if values.ndim else 0} rows; it needs one per "
                         f"cell ({n_obs}).")
    return tf.constant(values[cells])


def make_dataset(
    mm: MultiModality,
    batch_size: int = 256,
    shuffle: bool = True,
    seed: int = 0,
    indices: np.ndarray | Sequence[int] | None = None,
    modalities: Sequence[str] | None = None,
    sparse: bool = True,
    drop_remainder: bool = False,
    batch_categories: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    order: tf.Variable | None = None,
    per_cell: Mapping[str, Any] | None = None,
) -> tf.data.Dataset:
    """Batches of cells as ``{"x": {mod: counts}, "batch": {mod: one-hot}}``.

    Parameters
    ----------
    mm
        The paired data.
    batch_size
        Cells per batch.
    shuffle
        Shuffle the cells, differently in every epoch; the same ``seed`` gives
        the same sequence of orders.
    seed
        Shuffle seed.
    indices
        Cell positions (or a boolean mask) to draw from, e.g. from
        :meth:`MultiModality.split`; default all cells.
    modalities
        Modalities to include; default all.
    sparse
        Keep sparse matrices sparse (``tf.SparseTensor``); ``False`` densifies
        each batch (never the whole matrix).
    drop_remainder
        Drop the last, smaller batch.
    batch_categories
        ``{mod: {column: categories}}`` fixing the one-hot layout, e.g.
        ``train.batch_categories()`` when embedding new data; default each
        modality's own sorted categories.
    order
        An integer ``tf.Variable`` that fixes the shuffling: each pass over the data
        takes the permutation of ``(seed, order's value when the pass starts)``, so a
        training loop that sets it per epoch (as resumable training does) can replay
        any epoch's order. Default: tf.data reshuffles on every pass.
    per_cell
        More arrays to batch with the cells: ``{key: array}`` or ``{key: {name: array}}``
        with one row per cell of ``mm`` (all of its cells, also when ``indices`` picks some),
        e.g. a model's row of each cell in a table of learned representations.

    Returns
    -------
    tf.data.Dataset
        ``x[mod]`` is ``(B, n_features)`` float32 (``SparseTensor`` for sparse
        input with ``sparse=True``); ``batch[mod]`` is ``(B, n_batch_dims)``
        float32, ``(B, 0)`` without batch columns. For mosaic data (a cell lacks a loaded
        modality, see :class:`~cavachon_like.data.MultiModality`'s ``join="outer"``) also
        ``measured[mod]``, ``(B,)`` float32, 1 where the cell was measured in ``mod``.
    """
    names = list(mm.mod) if modalities is None else list(modalities)
    if not names:
        raise ValueError("modalities is empty; name at least one modality to load.")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    categories = dict(batch_categories or {})
    if batch_categories is not None:
        absent = [n for n in names if n not in categories]
        if absent:
            raise ValueError(f"batch_categories has no entry for modalities {absent}; give categories for every "
                             "loaded modality (e.g. from train.batch_categories()).")
    mods = {n: mm.modality(n) for n in names}
    for name, mod in mods.items():
        if not mod.obs_names.equals(mm.obs_names):
            raise ValueError(f"modality {name!r} no longer has the cells of the MultiModality in the same order; "
                             "rebuild it with MultiModality(dict(mm.mod)).")
    cells = np.arange(mm.n_obs, dtype=np.int64) if indices is None else cell_positions(indices, mm.obs_names, "indices")
    if not cells.size:
        raise ValueError("no cells to load: indices is empty.")

    # Only the requested cells become tensors, so a 90/10 train/validation split holds the
    # non-zeros once in all, not once per dataset; batches index into that subset.
    subset = indices is not None
    # Matrices left on disk (read_h5mu(..., backed=True)) are read in row blocks as batches are needed.
    on_disk = any(is_backed(mod.X) for mod in mods.values())
    # Per-cell tensors (made once, gathered per batch): see the note above row_tables.
    tables: dict[str, Any] = {"batch": {}}
    if not on_disk:
        tables["rows"] = {n: row_tables(mod.X[cells] if subset else mod.X) for n, mod in mods.items()}
    for n, mod in mods.items():
        # one-hots are small (cells x categories)
        encoded = mod.batch_one_hot(categories.get(n))
        tables["batch"][n] = tf.constant(encoded[cells] if subset else encoded)

    # Mosaic data (some cell lacks a loaded modality): every batch says which cells each
    # modality measured. Decided on all cells, so training and validation batches share a layout.
    flags = {n: mod.measured for n, mod in mods.items()}
    if not all(f.all() for f in flags.values()):
        tables["measured"] = {n: tf.constant(f[cells].astype(np.float32)) for n, f in flags.items()}
    for key, value in (per_cell or {}).items():
        tables.setdefault("extra", {})[key] = (
            {k: _cell_rows(v, cells, mm.n_obs, f"{key}.{k}") for k, v in value.items()}
            if isinstance(value, Mapping) else _cell_rows(value, cells, mm.n_obs, key))

    def annotations(idx: tf.Tensor, tables: dict[str, Any]) -> dict[str, Any]:
        gathered = {"batch": {n: tf.gather(tables["batch"][n], idx) for n in names}}
        if "measured" in tables:
            gathered["measured"] = {n: tf.gather(tables["measured"][n], idx) for n in names}
        for key, value in tables.get("extra", {}).items():
            gathered[key] = ({k: tf.gather(v, idx) for k, v in value.items()} if isinstance(value, dict)
                             else tf.gather(value, idx))
        return gathered

    with_tables = tf.data.Dataset.from_tensors(tables).repeat()
    if on_disk:
        ds = streamed_batches(mods, names, cells, batch_size, shuffle, seed, order, drop_remainder)

        def assemble(batch: tuple[tf.Tensor, dict[str, tuple[tf.Tensor, tf.Tensor]]],
                     tables: dict[str, Any]) -> dict[str, Any]:
            idx, parts = batch
            shape = tf.shape(idx, out_type=tf.int64)[0]
            x = {n: tf.SparseTensor(parts[n][0], parts[n][1], tf.stack([shape, tf.constant(mods[n].n_vars, tf.int64)]))
                 for n in names}
            return {"x": {n: v if sparse else tf.sparse.to_dense(v) for n, v in x.items()}, **annotations(idx, tables)}

        ds = tf.data.Dataset.zip((ds, with_tables)).map(assemble, num_parallel_calls=PARALLEL_BATCHES,
                                                         deterministic=True)
        return _finish(ds)

    n_features = {n: mod.n_vars for n, mod in mods.items()}

    def gather(idx: tf.Tensor, tables: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {"x": {n: gather_rows(tables["rows"][n], idx, n_features[n], sparse) for n in names},
                **annotations(idx, tables)}

    if shuffle and order is not None:
        n = len(cells)

        def permutation(_: tf.Tensor) -> tf.data.Dataset:
            key = tf.stack([tf.constant(seed, tf.int64), order.read_value()])
            return tf.data.Dataset.from_tensor_slices(tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=key))

        ds = tf.data.Dataset.from_tensors(0).flat_map(permutation)
        ds = ds.apply(tf.data.experimental.assert_cardinality(n))
    else:
        ds = tf.data.Dataset.from_tensor_slices(np.arange(len(cells), dtype=np.int64))
        if shuffle:
            ds = ds.shuffle(len(cells), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = tf.data.Dataset.zip((ds, with_tables))
    return _finish(ds.map(gather, num_parallel_calls=PARALLEL_BATCHES, deterministic=True))


def _finish(ds: tf.data.Dataset) -> tf.data.Dataset:
    """``ds`` prefetched, with tf.data's autotuning off."""
    ds = ds.prefetch(PARALLEL_BATCHES)
    # No tf.data autotuning: its model thread lives with each iterator, Keras makes a new
    # iterator every epoch, and destroying the old one waits for that thread, which
    # stalled the first step of later epochs by 2-5 s (and the thread took CPU from
    # training). Fixed parallelism is enough for a pipeline this cheap.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)
