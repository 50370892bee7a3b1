"""Count matrices left on disk: CSR rows read from ``.h5mu``/``.h5ad`` files in blocks.

A modality read with ``read_h5mu(path, backed=True)`` keeps its ``X`` in the file
(anndata's ``CSRDataset``); its annotations are in memory. Everything that needs the
whole matrix (validation, QC statistics, library sizes, TF-IDF statistics) walks it
in row blocks of about :data:`BLOCK_NONZEROS` non-zeros through :func:`row_blocks`,
which hands an in-memory matrix over as one block, so one code path serves both.
Training reads row blocks as :mod:`~cavachon_like.data.dataset` asks for them.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anndata as ad
import h5py
import numpy as np
import scipy.sparse as sp

from ..errors import InputError

try:  # anndata >= 0.11
    from anndata.abc import CSCDataset, CSRDataset
except ImportError:  # anndata 0.10
    from anndata.experimental import CSCDataset, CSRDataset

#: Non-zeros per block when a whole on-disk matrix is walked (about 32 MB of
#: float32 values and int32 columns): large enough that HDF5 reads stream, small
#: enough that a block is a rounding error next to the model.
BLOCK_NONZEROS = 1 << 22

#: Rows that a read skips over are read anyway (and dropped) when they hold fewer
#: non-zeros than this: one longer read beats many short ones.
GAP_NONZEROS = 1 << 16

#: Compressed HDF5 chunks larger than this many values make every row read decompress
#: far more than the row (a chunk of the whole matrix: all of it), so they are refused.
MAX_CHUNK_VALUES = 1 << 24


def canonical_csr(x: Any) -> sp.csr_matrix:
    """``x`` as CSR with sorted, unique columns per row (what ``tf.SparseTensor`` needs); a copy
    only when ``x`` is not already that, so the caller's matrix is never changed."""
    csr = sp.csr_matrix(x)
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    return csr


def is_backed(x: Any) -> bool:
    """Whether ``x`` is a sparse matrix left on disk (anndata's ``CSRDataset``/``CSCDataset``)."""
    return isinstance(x, (CSRDataset, CSCDataset))


class RowReader:
    """Reads rows of a cells x features matrix, on disk or in memory, as scipy CSR.

    Parameters
    ----------
    x
        A backed ``CSRDataset`` or an in-memory matrix (dense or sparse).
    """

    def __init__(self, x: Any) -> None:
        self.shape = tuple(x.shape)
        self.backed = is_backed(x)
        if self.backed:
            group = x.group
            self._data, self._indices = group["data"], group["indices"]
            # one int64 per cell: the map from rows to slices of data/indices, kept in memory
            self.indptr = np.asarray(group["indptr"][...], dtype=np.int64)
        else:
            self._csr = canonical_csr(x)
            self.indptr = self._csr.indptr.astype(np.int64, copy=False)

    def read(self, rows: np.ndarray) -> sp.csr_matrix:
        """Rows ``rows`` (any order, repeats allowed) as a float32 CSR matrix in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        if not self.backed:
            return self._csr[rows].astype(np.float32, copy=False)
        unique, inverse = np.unique(rows, return_inverse=True)
        if not unique.size:
            return sp.csr_matrix((0, self.shape[1]), dtype=np.float32)
        # Runs of wanted rows are read as one slice when the rows in between hold few
        # non-zeros; the rows that were read but not wanted are dropped afterwards.
        gaps = self.indptr[unique[1:]] - self.indptr[unique[:-1] + 1]
        cuts = np.flatnonzero((np.diff(unique) > 1) & (gaps > GAP_NONZEROS)) + 1
        parts = []
        for run in np.split(unique, cuts):
            start, stop = int(run[0]), int(run[-1]) + 1
            lo, hi = int(self.indptr[start]), int(self.indptr[stop])
            block = sp.csr_matrix((np.asarray(self._data[lo:hi], dtype=np.float32),
                                   np.asarray(self._indices[lo:hi]), self.indptr[start:stop + 1] - lo),
                                  shape=(stop - start, self.shape[1]))
            parts.append(block if len(run) == stop - start else block[run - start])
        joined = parts[0] if len(parts) == 1 else sp.vstack(parts, format="csr")
        return joined if np.array_equal(inverse, np.arange(len(unique))) else joined[inverse]


def in_memory(x: Any) -> Any:
    """``x`` itself, or for a matrix on disk all of it read into memory (scipy CSR)."""
    return x.to_memory() if is_backed(x) else x


def row_blocks(x: Any, nonzeros: int = BLOCK_NONZEROS) -> Iterator[tuple[int, Any]]:
    """``(first row, block)`` pairs covering ``x`` in order.

    A matrix in memory is one block, itself; a backed one is read in consecutive row
    blocks of about ``nonzeros`` stored entries (at least one row each), as float32 CSR.
    """
    if not is_backed(x):
        yield 0, x
        return
    reader = RowReader(x)
    n = reader.shape[0]
    # row boundaries where the running count of non-zeros crosses a multiple of `nonzeros`
    bounds = np.unique(np.concatenate([[0], np.searchsorted(reader.indptr[1:], np.arange(
        nonzeros, reader.indptr[-1] + nonzeros, nonzeros), side="left") + 1, [n]]).clip(0, n))
    for start, stop in zip(bounds[:-1], bounds[1:]):
        yield int(start), reader.read(np.arange(start, stop))


def blockwise(x: Any, fn: Callable[[Any], Any], axis: int) -> np.ndarray:
    """``fn`` of ``x`` computed block by block: ``fn`` returns a per-row (``axis=1``, joined)
    or per-column (``axis=0``, summed over blocks) vector of its argument."""
    parts = [np.asarray(fn(block)).ravel() for _, block in row_blocks(x)]
    return np.concatenate(parts) if axis == 1 else np.sum(parts, axis=0)


def totals(x: Any, axis: int) -> np.ndarray:
    """Sums of ``x`` over ``axis`` in float64, block by block: per cell (``axis=1``) or per feature (``axis=0``)."""
    return blockwise(x, lambda block: block.sum(axis=axis, dtype=np.float64), axis).astype(np.float64)


def source_path(x: Any) -> Path:
    """The file a backed matrix lives in."""
    return Path(x.group.file.filename)


def signature(x: Any) -> tuple[int, int, int, int]:
    """What changes when a backed matrix' file is rewritten: inode, size, modification time, non-zeros."""
    stat = os.stat(source_path(x))
    return stat.st_ino, stat.st_size, stat.st_mtime_ns, int(x.group["indptr"][-1])


def check_unchanged(x: Any, expected: tuple[int, int, int, int], modality: str) -> None:
    """:class:`InputError` when the file of modality ``modality`` no longer has signature ``expected``."""
    try:
        now = signature(x)
    except (OSError, KeyError) as error:  # deleted, truncated or replaced under an open handle
        now = (type(error).__name__,)
    if now != expected:
        raise InputError(f"the file {source_path(x)} holding modality {modality!r} changed while it was being read "
                         "(size, time or content differ from when training started); the batches would mix two data "
                         "sets. Leave the file alone during training, or copy it and train from the copy.")


def check_readable(x: Any, modality: str) -> None:
    """:class:`InputError` unless rows of the backed matrix ``x`` can be read one block at a time."""
    path = source_path(x)
    rewrite = (f"rewrite it as CSR without compression, e.g. in Python: mm = cavachon_like.data.read_h5mu({str(path)!r}); "
               "mm.write('copy.h5mu') (this loads the data once), then train from the copy")
    if not isinstance(x, CSRDataset):
        raise InputError(f"modality {modality!r} in {path} is stored column-wise ({type(x).__name__}), so reading a "
                         f"block of cells means reading the whole matrix; {rewrite}.")
    for key in ("data", "indices"):
        dataset = x.group[key]
        if dataset.compression and dataset.chunks and int(np.prod(dataset.chunks)) > MAX_CHUNK_VALUES:
            raise InputError(f"modality {modality!r} in {path}: X/{key} is {dataset.compression}-compressed in chunks "
                             f"of {dataset.chunks[0]:,} values, so every read of a few cells decompresses "
                             f"{dataset.chunks[0]:,} values; {rewrite}.")
        try:
            dataset[: min(1, dataset.shape[0])]
        except (OSError, ValueError) as error:
            raise InputError(f"modality {modality!r} in {path}: X/{key} cannot be read ({error}), e.g. it needs an "
                             f"HDF5 compression filter this installation lacks; {rewrite} where it can be read.") from error


class CSRWriter:
    """Writes a CSR matrix into an HDF5 group (anndata's encoding) one block of rows at a time.

    Memory grows with one block; ``close`` writes the row pointers and the encoding.

    Parameters
    ----------
    group
        The group to fill, e.g. ``file["mod/atac/X"]``; an existing matrix there is replaced.
    n_columns
        Columns of the matrix.
    """

    def __init__(self, group: h5py.Group, n_columns: int) -> None:
        for key in list(group):
            del group[key]
        self.group, self.n_columns = group, int(n_columns)
        self.data = group.create_dataset("data", shape=(0,), maxshape=(None,), dtype=np.float32, chunks=(1 << 18,))
        self.indices = group.create_dataset("indices", shape=(0,), maxshape=(None,), chunks=(1 << 18,),
                                            dtype=np.int32 if n_columns < 2**31 else np.int64)
        self.indptr = [np.zeros(1, np.int64)]
        self.written = 0

    def append(self, block: sp.csr_matrix) -> None:
        """Add the rows of ``block`` (``n_columns`` columns) below those written so far."""
        if block.shape[1] != self.n_columns:
            raise ValueError(f"a block of {block.shape[1]} columns cannot join a matrix of {self.n_columns}.")
        block = sp.csr_matrix(block, dtype=np.float32)
        block.sum_duplicates()  # canonical: sorted, unique columns per row, as SparseTensor needs
        end = self.written + block.nnz
        self.data.resize((end,))
        self.indices.resize((end,))
        self.data[self.written:end] = block.data
        self.indices[self.written:end] = block.indices
        self.indptr.append(self.written + block.indptr[1:].astype(np.int64))
        self.written = end

    def close(self) -> None:
        """Write the row pointers and mark the group as anndata's ``csr_matrix``."""
        indptr = np.concatenate(self.indptr)
        self.group.create_dataset("indptr", data=indptr)
        self.group.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0",
                                 "shape": np.array([len(indptr) - 1, self.n_columns])})


def write_rows(target: h5py.Group, x: Any, rows: np.ndarray, columns: np.ndarray | None) -> None:
    """Write rows ``rows`` (and columns ``columns``, a boolean mask; ``None``: all) of ``x`` as the
    CSR matrix group ``target``, block by block."""
    reader = RowReader(x)
    writer = CSRWriter(target, reader.shape[1] if columns is None else int(np.count_nonzero(columns)))
    per_block = max(1, int(BLOCK_NONZEROS / max(1.0, reader.indptr[-1] / max(reader.shape[0], 1))))
    for start in range(0, len(rows), per_block):
        block = reader.read(rows[start:start + per_block])
        writer.append(block if columns is None else block[:, columns])  # a boolean mask renumbers the columns
    writer.close()


def copy_subset(mm: Any, cells: Any = None, features: Mapping[str, np.ndarray] | None = None,
                path: str | os.PathLike | None = None) -> Any:
    """Some cells and features of on-disk data as new on-disk data (see ``MultiModality.subset``).

    The annotations are subset in memory; the matrices are copied block by block to
    ``path``, by default a temporary file (in ``$TMPDIR``) deleted with the returned object.
    """
    import mudata as md

    from .annotations import global_annotations, no_pull

    # The in-memory subset machinery runs on stand-ins with empty matrices of the same shape,
    # which settles which rows and columns survive and subsets every annotation alike.
    shells = {k: ad.AnnData(sp.csr_matrix(m.shape, dtype=np.float32), obs=m.obs, var=m.var, uns=dict(m.uns),
                            obsm=dict(m.obsm), varm=dict(m.varm), obsp=dict(m.obsp), varp=dict(m.varp))
              for k, m in mm.mod.items()}
    with no_pull():
        shell = type(mm)(md.MuData(shells, **global_annotations(mm, shells, mm.var)))
    shell.obs["_row"] = np.arange(mm.n_obs)
    for k, m in shell.mod.items():
        m.var["_column"] = np.arange(m.n_vars)
    small = shell.subset(cells, features)
    rows = small.obs.pop("_row").to_numpy()
    columns = {k: m.var.pop("_column").to_numpy() for k, m in small.mod.items()}
    temporary = path is None
    if temporary:
        handle, path = tempfile.mkstemp(prefix="cavachon_like-", suffix=".h5mu")
        os.close(handle)
    small.write_h5mu(path)
    with h5py.File(path, "r+") as f:
        for k, m in mm.mod.items():
            keep = np.zeros(m.n_vars, dtype=bool)
            keep[columns[k]] = True
            if not np.array_equal(columns[k], np.flatnonzero(keep)):
                raise ValueError("features must keep their order when data on disk are subset.")
            write_rows(f[f"mod/{k}/X"], m.X, rows, None if keep.all() else keep)
    with no_pull():
        result = type(mm)(md.read_h5mu(path, backed="r"))
    if temporary:
        weakref.finalize(result, _remove, path)
    return result


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)
