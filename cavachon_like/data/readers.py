"""Readers for h5mu, h5ad and 10x matrix folders into Modality / MultiModality."""
from __future__ import annotations

import gzip
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import IO

import anndata as ad
import h5py
import mudata as md
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

from ..errors import InputError
from .backed import check_readable
from .modality import Modality
from .multimodality import MultiModality, no_pull

logger = logging.getLogger(__name__)

#: 10x feature type -> modality name.
FEATURE_TYPES = {"Gene Expression": "rna", "Peaks": "atac", "Antibody Capture": "protein"}

#: Default likelihood of a modality name, used when none is given.
DEFAULT_LIKELIHOODS = {"rna": "zinb", "atac": "bernoulli", "protein": "nb"}

BatchKey = str | Sequence[str] | Mapping[str, str | Sequence[str]] | None


def _existing(path: str | PathLike, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _h5_kind(path: Path, what: str) -> tuple[str | None, list[str]]:
    """``("MuData" | "AnnData" | None, modality names)`` of an HDF5 file; :class:`InputError`
    naming the file for a folder, a file that is not HDF5, or one HDF5 cannot open."""
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder, not a file; pass the file itself (a folder of 10x matrix "
                         "files is read with read_10x, or data.tenx in a config).")
    if not h5py.is_hdf5(path):
        raise InputError(f"{what} {path} is not an HDF5 file, which .h5mu and .h5ad files are (is it a text, CSV "
                         "or compressed file?); write the data with mudata's write_h5mu or anndata's write_h5ad.")
    try:
        with h5py.File(path, "r") as handle:
            kind = handle.attrs.get("encoding-type", "")
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            mods = list(handle["mod"].keys()) if isinstance(handle.get("mod"), h5py.Group) else []
            if mods or kind.lower() == "mudata":
                return "MuData", mods
            if kind.lower() == "anndata" or "X" in handle:
                return "AnnData", []
            return None, []
    except OSError as error:
        raise InputError(f"{what} {path} cannot be opened: it is truncated or damaged (HDF5 says: {error}); copy or "
                         "write it again (an interrupted download or copy leaves such files).") from error


def _read(reader: Callable[[Path], ad.AnnData | md.MuData], path: Path, what: str, kind: str) -> ad.AnnData | md.MuData:
    """``reader(path)`` with its failures reported as :class:`InputError` naming the file."""
    try:
        with warnings.catch_warnings():
            # repeated feature names are made unique, and reported, by MultiModality
            warnings.filterwarnings("ignore", message="var_names are not unique")
            return reader(path)
    except MemoryError:
        raise
    except Exception as error:  # the file's content is all the reader looks at: any failure is about the file
        raise InputError(f"{what} {path} could not be read as {kind} ({type(error).__name__}: {error}); the file "
                         "may be damaged or written by an incompatible tool: write it again with mudata/anndata.") from error


def _check_kind(path: Path, what: str, expected: str) -> None:
    kind, mods = _h5_kind(path, what)
    if kind == expected or kind is None:
        return
    if kind == "AnnData":
        raise InputError(f"{what} {path} holds a single AnnData (an .h5ad file), not a MuData with several "
                         "modalities: read it with read_h5ad({'rna': path}) (in a config: data.h5ad: {rna: path}, "
                         "one file per modality), or write the modalities into one .h5mu with mudata.")
    raise InputError(f"{what} {path} holds a MuData (an .h5mu file) with modalities {mods}, not a single AnnData: "
                     "read it with read_h5mu (in a config: data.path, or --data on the command line).")


def read_h5mu(
    path: str | PathLike,
    likelihoods: Mapping[str, str] | None = None,
    batch_key: BatchKey = None,
    join: str = "strict",
    backed: bool | str = "auto",
) -> MultiModality:
    """Read an ``.h5mu`` file into a :class:`MultiModality`.

    Likelihoods and batch keys stored by a previous ``write`` are used for the
    modalities not named in ``likelihoods`` / ``batch_key``.

    Parameters
    ----------
    backed
        ``True``: leave the matrices (``X``) on disk and read rows as training needs them;
        memory then grows with the annotations and one window of rows, not with the
        non-zeros (see :mod:`cavachon_like.data.backed`). ``False``: load everything.
        ``"auto"``: on disk when the matrices would take more than
        :data:`AUTO_BACKED_FRACTION` of this machine's memory.
    """
    path = _existing(path, "h5mu file")
    _check_kind(path, "h5mu file", "MuData")
    backed = _on_disk(backed, [path])
    with no_pull():
        mdata = _read(lambda p: md.read_h5mu(p, backed="r") if backed else md.read_h5mu(p), path, "h5mu file",
                      "a MuData")
    if backed:
        for name, mod in mdata.mod.items():
            check_readable(mod.X, name)
    return MultiModality(mdata, join=join, likelihoods=likelihoods, batch_key=batch_key)


#: ``read_h5mu(..., backed="auto")`` leaves matrices on disk above this fraction of the
#: machine's memory: training holds them once more as tensors, next to the model.
AUTO_BACKED_FRACTION = 0.25


def _on_disk(backed: bool | str, paths: Sequence[Path]) -> bool:
    """Whether to leave the matrices of ``paths`` on disk: ``backed``, or for ``"auto"`` their size."""
    if backed == "auto":
        size, memory = sum(_matrix_bytes(p) for p in paths), _physical_memory()
        if size <= AUTO_BACKED_FRACTION * memory:
            return False
        logger.info("the count matrices of %s take %.1f GB, over %d%% of this machine's %.1f GB: they stay on disk "
                    "(backed='auto'; pass backed=False to load them).", ", ".join(map(str, paths)), size / 1e9,
                    round(100 * AUTO_BACKED_FRACTION), memory / 1e9)
        return True
    if not isinstance(backed, bool):
        raise ValueError(f"backed must be True, False or 'auto', got {backed!r}.")
    return backed


def _matrix_bytes(path: Path) -> int:
    """Bytes of the ``X`` datasets of an h5mu file's modalities (or an h5ad file), as loaded (uncompressed)."""
    total = 0
    with h5py.File(path, "r") as f:
        for x in [m.get("X") for m in f.get("mod", {}).values()] + [f.get("X")]:
            for item in (x.values() if isinstance(x, h5py.Group) else [x] if x is not None else []):
                if isinstance(item, h5py.Dataset):
                    total += item.size * item.dtype.itemsize
    return total


def _physical_memory() -> int:
    """This machine's memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def read_h5ad(
    path: str | PathLike | Mapping[str, str | PathLike],
    likelihood: str | Mapping[str, str] | None = None,
    batch_key: BatchKey = None,
    join: str = "strict",
    backed: bool | str = "auto",
) -> Modality | MultiModality:
    """Read one ``.h5ad`` file into a :class:`Modality`, or ``{name: path}`` into a :class:`MultiModality`.

    Parameters
    ----------
    path
        One file, or one file per modality.
    likelihood
        For one file, the likelihood; for several, ``{name: likelihood}``. Left
        out: the value stored in the file's ``uns``.
    batch_key
        Batch columns (or ``{name: columns}`` for several files).
    join
        How to match cells across several files; see :class:`MultiModality`.
    backed
        Leave the matrices on disk, as for :func:`read_h5mu` (``"auto"``: above
        :data:`AUTO_BACKED_FRACTION` of the memory, all files together).
    """
    files = {name: _existing(p, f"h5ad file of modality {name!r}") for name, p in path.items()} if isinstance(
        path, Mapping) else {None: _existing(path, "h5ad file")}
    what = {name: "h5ad file" if name is None else f"h5ad file of modality {name!r}" for name in files}
    for name, p in files.items():
        _check_kind(p, what[name], "AnnData")
    on_disk = _on_disk(backed, list(files.values()))
    adatas = {name: _read(lambda f: ad.read_h5ad(f, backed="r") if on_disk else ad.read_h5ad(f), p, what[name],
                          "an AnnData") for name, p in files.items()}
    for name, adata in adatas.items() if on_disk else ():
        check_readable(adata.X, name or str(files[name]))
    if isinstance(path, Mapping):
        return MultiModality(adatas, join=join, likelihoods=likelihood, batch_key=batch_key)
    return Modality(adatas[None], likelihood=likelihood, batch_key=batch_key)


def _find(directory: Path, stems: Sequence[str]) -> Path:
    for stem in stems:
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.exists():
                return candidate
    raise FileNotFoundError(f"10x folder {directory} has none of {[f'{s}[.gz]' for s in stems]}.")


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_tsv(path: Path) -> pd.DataFrame:
    with _open(path) as handle:
        return pd.read_csv(handle, sep="\t", header=None, dtype=str, keep_default_na=False)


def _read_10x_folder(directory: str | PathLike) -> ad.AnnData:
    """All features of one 10x folder as a cells x features CSR float32 AnnData."""
    directory = _existing(directory, "10x folder")
    with _open(_find(directory, ["matrix.mtx"])) as handle:
        # 10x stores features x cells
        counts = sp.csr_matrix(scipy.io.mmread(handle).T, dtype=np.float32)
    barcodes = _read_tsv(_find(directory, ["barcodes.tsv"]))
    features = _read_tsv(_find(directory, ["features.tsv", "genes.tsv"]))
    if counts.shape != (len(barcodes), len(features)):
        raise ValueError(
            f"10x folder {directory}: matrix.mtx has {counts.shape[1]} features x {counts.shape[0]} cells but "
            f"the tsv files list {len(features)} features and {len(barcodes)} barcodes."
        )
    # legacy genes.tsv has no type column and only holds gene expression
    feature_type = features[2] if features.shape[1] > 2 else pd.Series("Gene Expression", index=features.index)
    name = features[1] if features.shape[1] > 1 else features[0]
    # symbols (not ids) as names so QC patterns such as '^mt-' match, made unique like scanpy does
    var = pd.DataFrame({"gene_ids": features[0].to_numpy(), "feature_types": feature_type.to_numpy()},
                       index=ad.utils.make_index_unique(pd.Index(name.to_numpy())))
    return ad.AnnData(counts, obs=pd.DataFrame(index=barcodes[0].to_numpy()), var=var)


def _split_by_type(adata: ad.AnnData, feature_types: Mapping[str, str], directory: object) -> dict[str, ad.AnnData]:
    types = pd.unique(adata.var["feature_types"])
    unknown = [t for t in types if t not in feature_types]
    if unknown:
        raise ValueError(
            f"10x folder {directory}: no modality name for feature type(s) {unknown}; pass feature_types="
            f"{{{unknown[0]!r}: 'name', ...}} (known: {dict(feature_types)})."
        )
    return {feature_types[t]: adata[:, (adata.var["feature_types"] == t).to_numpy()].copy() for t in types}


def _default_likelihood(name: str, given: Mapping[str, str]) -> str:
    if name in given:
        return given[name]
    if name in DEFAULT_LIKELIHOODS:
        return DEFAULT_LIKELIHOODS[name]
    raise ValueError(f"no default likelihood for modality {name!r}; pass likelihoods={{{name!r}: ...}}.")


def read_10x(
    directory: str | PathLike,
    likelihoods: str | Mapping[str, str] | None = None,
    batch_key: BatchKey = None,
    feature_types: Mapping[str, str] | None = None,
) -> Modality | MultiModality:
    """Read a 10x Cell Ranger matrix folder.

    The folder holds ``matrix.mtx[.gz]``, ``barcodes.tsv[.gz]`` and
    ``features.tsv[.gz]`` (or legacy ``genes.tsv``). Feature symbols become the
    ``var_names`` (made unique); ids and types are kept in ``var``.

    Parameters
    ----------
    directory
        The matrix folder.
    likelihoods
        A likelihood name (one feature type) or ``{modality: likelihood}``; left
        out, ``DEFAULT_LIKELIHOODS`` by modality name.
    batch_key
        Batch columns (``obs`` is empty after reading: add them before training).
    feature_types
        Feature type -> modality name, overriding :data:`FEATURE_TYPES`.

    Returns
    -------
    Modality | MultiModality
        A :class:`Modality` for a single feature type, else a :class:`MultiModality`
        with one modality per feature type.
    """
    names = {**FEATURE_TYPES, **(feature_types or {})}
    parts = _split_by_type(_read_10x_folder(directory), names, directory)
    given = {} if likelihoods is None else likelihoods
    if len(parts) == 1:
        ((name, adata),) = parts.items()
        likelihood = given if isinstance(given, str) else _default_likelihood(name, given)
        return Modality(adata, likelihood=likelihood, batch_key=batch_key, name=name)
    if isinstance(given, str):
        raise ValueError(
            f"10x folder {directory} holds {len(parts)} feature types ({list(parts)}); pass likelihoods as "
            "{modality: likelihood} instead of one name."
        )
    per_mod = {name: _default_likelihood(name, given) for name in parts}
    return MultiModality(parts, likelihoods=per_mod, batch_key=batch_key)


def read_10x_multi(
    path: str | PathLike | Mapping[str, str | PathLike],
    likelihoods: Mapping[str, str] | None = None,
    batch_key: BatchKey = None,
    join: str = "strict",
    feature_types: Mapping[str, str] | None = None,
) -> MultiModality:
    """Read 10x folders into a :class:`MultiModality`, always.

    ``path`` is one folder (one modality per feature type) or ``{name: folder}``
    where each folder holds a single feature type, read under that name.
    """
    if not isinstance(path, Mapping):
        read = read_10x(path, likelihoods=likelihoods, batch_key=batch_key, feature_types=feature_types)
        return read if isinstance(read, MultiModality) else MultiModality({read.name: read})
    given = likelihoods or {}
    adatas = {}
    for name, directory in path.items():
        adata = _read_10x_folder(directory)
        types = list(pd.unique(adata.var["feature_types"]))
        if len(types) > 1:
            raise ValueError(
                f"10x folder {directory} for modality {name!r} holds several feature types {types}; pass the "
                "folder itself (not in a dict) to split it into one modality per type."
            )
        adatas[name] = adata
    per_mod = {name: _default_likelihood(name, given) for name in adatas}
    return MultiModality(adatas, join=join, likelihoods=per_mod, batch_key=batch_key)
