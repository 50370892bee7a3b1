"""Paired modalities measured in the same cells, matched by barcode."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError, warn_data
from .annotations import global_annotations, no_pull, renamed_var, take_cells, with_var_names
from .backed import blockwise, copy_subset, is_backed
from .barcodes import check_unique_barcodes, shared_barcodes, union_barcodes
from .groups import cell_positions
from .modality import UNS_KEY, Modality, _as_batch_key, unique_feature_names
from .mosaic import check_some_modality, pad_modalities
from .qc import QCStep, from_config, library_size_report, library_size_warnings
from .support import support_of

if TYPE_CHECKING:
    import tensorflow as tf

logger = logging.getLogger(__name__)

_JOINS = ("strict", "inner", "outer")

#: Fewest cells :meth:`MultiModality.check_training` accepts: fewer cannot shape a latent
#: space (nor be split into training and validation cells).
MIN_TRAINING_CELLS = 10


class MultiModality(md.MuData):
    """A :class:`mudata.MuData` whose modalities are :class:`Modality` objects over the same cells.

    Every modality holds the same cells in the same order, so row ``i`` of each
    matrix is one cell; this is what :meth:`to_dataset` relies on.

    Parameters
    ----------
    mods
        Modalities by name, or a ``MuData`` (its global ``obs``, ``obsm``, ``obsp``,
        ``var``, ``varm``, ``varp`` and ``uns`` are kept).
    join
        ``"strict"``: every modality must have the same barcodes (order may
        differ; all are put in the first modality's order). ``"inner"``: keep the
        cells present in all modalities; how many each modality lost is logged and
        stored in ``uns["cavachon_like"]["join_report"]``. ``"outer"``: keep every
        cell of any modality (mosaic data); a cell that lacks a modality gets an
        empty row there, marked unmeasured (:attr:`Modality.measured`), which models
        leave out of that modality's likelihood and posterior. The batch columns
        of those cells come from the global ``obs`` or another modality's ``obs``.

        Feature names must be unique across all modalities (mudata matches features
        by name): a name repeated within a modality gets anndata's ``-1``, ``-2``
        suffixes, and a name already used by an earlier modality (e.g. ``CD36`` in
        both ``rna`` and ``adt`` of CITE-seq data) becomes ``<modality>:<name>``
        (``adt:CD36``) in the later one. Both are logged and warned about once.
    likelihoods
        Likelihood per modality name; modalities left out use the one stored in
        their ``uns``.
    batch_key
        Batch covariate columns: one column or list for every modality, or a dict
        per modality name. Modalities left out use their stored value, else none.

    Examples
    --------
    >>> mm = MultiModality({"atac": atac, "rna": rna}, likelihoods={"atac": "bernoulli", "rna": "zinb"},
    ...                    batch_key="batch")
    >>> train, val = mm.split(0.1)
    >>> ds = mm.to_dataset(batch_size=128, indices=train)
    """

    def __init__(
        self,
        mods: Mapping[str, ad.AnnData] | md.MuData,
        join: str = "strict",
        likelihoods: Mapping[str, str] | None = None,
        batch_key: str | Sequence[str] | Mapping[str, str | Sequence[str]] | None = None,
    ) -> None:
        if join not in _JOINS:
            raise ValueError(f"join must be one of {_JOINS}, got {join!r}.")
        source = mods if isinstance(mods, md.MuData) else None
        if source is None and not isinstance(mods, Mapping):
            raise TypeError(f"mods must be a dict of AnnData/Modality or a MuData, got {type(mods).__name__}.")
        adatas = dict(source.mod if source is not None else mods)
        if not adatas:
            raise ValueError("MultiModality needs at least one modality.")
        for name, adata in adatas.items():
            if not isinstance(adata, ad.AnnData):
                raise TypeError(f"modality {name!r} must be an AnnData or Modality, got {type(adata).__name__}.")
        likelihoods = _per_modality(likelihoods, adatas, "likelihoods")
        batch_keys = _per_modality(batch_key, adatas, "batch_key")
        for name, adata in adatas.items():
            if name not in likelihoods and "likelihood" not in adata.uns.get(UNS_KEY, {}):
                raise ValueError(
                    f"no likelihood for modality {name!r}: pass likelihoods={{{name!r}: ...}}, e.g. 'zinb' for "
                    "RNA counts, 'bernoulli' for ATAC peaks, 'nb' for protein counts."
                )

        check_unique_barcodes(adatas)
        new_names, renamed = unique_feature_names(adatas)
        if renamed:  # on shallow copies (the matrices are shared): the caller's objects keep their names
            adatas = {k: with_var_names(a, new_names[k]) for k, a in adatas.items()}
            if source is not None:
                with no_pull():
                    source = md.MuData(adatas, **global_annotations(source, adatas, renamed_var(source, adatas)))
        on_disk = [k for k, a in adatas.items() if is_backed(a.X)]
        if join == "outer":
            if on_disk:
                raise InputError(f"join='outer' (mosaic data) needs the matrices in memory, but modalities {on_disk} "
                                 "are on disk (read with backed=True); read them in memory, or give every modality "
                                 "every cell.")
            keep, lost = (source.obs_names if source is not None else union_barcodes(adatas)), {}
            adatas = pad_modalities(adatas, keep, [source.obs] if source is not None else [],
                                    {k: _as_batch_key(batch_keys.get(k, a.uns.get(UNS_KEY, {}).get("batch_key")))
                                     for k, a in adatas.items()})
            if source is not None:
                with no_pull():
                    source = md.MuData(adatas, **global_annotations(source, adatas, source.var))
        else:
            keep, lost = shared_barcodes(adatas, join)
        aligned = all(a.obs_names.equals(keep) for a in adatas.values())
        if on_disk and not aligned:
            raise InputError(f"modalities {on_disk} are on disk (read with backed=True), and matching cells across "
                             "modalities would reorder or drop rows of them; write the data once with every modality "
                             "holding the same cells in the same order (read it in memory, MultiModality(..., "
                             "join='inner').write(path)), then train on disk from that file.")
        if source is not None and not (aligned and source.obs_names.equals(keep)):
            source = take_cells(source, keep)
            adatas = dict(source.mod)
        elif not aligned:
            adatas = {k: a[a.obs_names.get_indexer(keep)] for k, a in adatas.items()}

        modalities = {
            k: Modality(a, likelihood=likelihoods.get(k), batch_key=batch_keys.get(k), name=k)
            for k, a in adatas.items()
        }
        if source is None:
            glob: dict[str, Any] = {"obs": pd.DataFrame(index=keep), "uns": {}}
        else:
            glob = global_annotations(source, modalities, source.var)
        super().__init__(modalities, **glob)

        meta = dict(self.uns.get(UNS_KEY, {}))
        if isinstance(meta.get("qc"), pd.DataFrame):
            meta["qc"] = _records(meta["qc"])
        if join == "inner":
            meta["join_report"] = lost
            if any(lost.values()):
                message = (
                    "join='inner' dropped cells missing from other modalities: "
                    + ", ".join(f"{k!r} lost {n}" for k, n in lost.items())
                    + f"; {len(keep)} cells remain."
                )
                warn_data(message, logger)
        self.uns[UNS_KEY] = meta
        if renamed:
            warn_data("feature names were made unique:\n  - " + "\n  - ".join(renamed), logger)

    # access

    def modality(self, name: str) -> Modality:
        """The modality called ``name``."""
        if name not in self.mod:
            raise KeyError(f"no modality {name!r}; available: {list(self.mod)}.")
        return self.mod[name]

    def obs_column(self, name: str) -> pd.Series:
        """A cell annotation from the global ``obs``, else from the first modality that has it."""
        if name in self.obs.columns:
            return self.obs[name]
        for mod in self.mod.values():
            if name in mod.obs.columns:
                return mod.obs[name]
        available = {"global": list(self.obs.columns), **{k: list(m.obs.columns) for k, m in self.mod.items()}}
        raise KeyError(f"no obs column {name!r} in the global obs or any modality; available: {available}.")

    @property
    def on_disk(self) -> bool:
        """Whether some modality's matrix is left on disk (``read_h5mu(..., backed=True)``)."""
        return any(is_backed(m.X) for m in self.mod.values())

    def batch_categories(self) -> dict[str, dict[str, list[str]]]:
        """``{modality: {batch column: sorted categories}}``, e.g. to pin one-hot layouts across data sets."""
        return {k: self.modality(k).batch_categories() for k in self.mod}

    def validate(self, supports: Mapping[str, str] | None = None) -> None:
        """Check every modality (see :meth:`Modality.validate`; ``supports`` maps modality
        names to the support to check, default their likelihood's) and that cells are
        still aligned, then warn about all-zero cells and extreme library sizes (see
        :meth:`warn_library_sizes`; once per modality of this object)."""
        for name, mod in self.mod.items():
            if not mod.obs_names.equals(self.obs_names):
                raise ValueError(
                    f"modality {name!r} no longer has the same cells in the same order as the MultiModality; "
                    "rebuild it with MultiModality(dict(mm.mod))."
                )
            self.modality(name).validate((supports or {}).get(name))
        check_some_modality(self.mod, self.obs_names)
        self.warn_library_sizes(supports)

    def library_size_report(self) -> pd.DataFrame:
        """Per modality: cells without any counts and cells with an extreme library size.

        One row per modality with columns ``n_cells``, ``n_zero``, ``zero_cells``,
        ``median`` (library size of the cells with counts), ``threshold`` (the rule is
        :data:`~cavachon_like.data.qc.EXTREME_LIBRARY_RATIO`), ``n_extreme`` and
        ``extreme_cells``. Only row sums are computed; sparse matrices stay sparse.
        """
        rows = {}
        for name in (k for k, m in self.mod.items() if m.X is not None):
            report = library_size_report(self, name)
            rows[name] = {"n_cells": report["n_cells"], "n_zero": len(report["zero_cells"]),
                          "zero_cells": report["zero_cells"], "median": report["median"],
                          "threshold": report["threshold"], "n_extreme": len(report["extreme_cells"]),
                          "extreme_cells": report["extreme_cells"]}
        return pd.DataFrame.from_dict(rows, orient="index")

    def warn_library_sizes(self, supports: Mapping[str, str] | None = None) -> list[str]:
        """Log and warn about cells without counts and extreme library sizes, with counts and examples.

        Each modality is reported at most once per object, however often this is
        called (the model checks its data several times before training). Only count
        and binary modalities are looked at (``supports`` as in :meth:`validate`; a
        likelihood of unknown support counts when its values are non-negative).

        Returns
        -------
        list[str]
            The messages emitted by this call.
        """
        done = self.__dict__.setdefault("_library_sizes_reported", set())
        messages = []
        for name, mod in self.mod.items():
            support = (supports or {}).get(name) or support_of(mod.likelihood)
            if name in done or support == "real" or mod.X is None:
                continue
            if support is None and _smallest(mod.X) < 0:
                continue
            done.add(name)
            messages += library_size_warnings(self, name)
        for message in messages:
            warn_data(message, logger)
        return messages

    def check_training(self, validation_split: float = 0.0, seed: int = 0,
                       min_cells: int = MIN_TRAINING_CELLS) -> list[str]:
        """Checks of data about to be trained on, beyond :meth:`validate` (which also suits
        data only encoded by a trained model).

        Raises :class:`~cavachon_like.errors.InputError` when there are fewer than
        ``min_cells`` cells or ``validation_split`` (with ``seed``, as :meth:`split`)
        leaves no cell for validation or training; then warns as
        :meth:`warn_library_sizes` and returns its messages.
        """
        if self.n_obs < min_cells:
            removed = sum(int(r.get("n_cells_removed", 0)) for r in self.uns.get(UNS_KEY, {}).get("qc", []))
            after_qc = f" after QC removed {removed}" if removed else ""
            raise InputError(
                f"the data hold only {self.n_obs} cells{after_qc} (modalities {list(self.mod)}); training needs at least "
                f"{min_cells}. Use a larger data set" + (" or loosen the QC thresholds." if removed else ".")
            )
        if validation_split:
            self.split(validation_split, seed=seed)
        return self.warn_library_sizes()

    # derived objects

    def split(self, validation_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Random train/validation split of the cells: ``validation_fraction`` (in [0, 1)) of
        them held out, picked by a permutation seeded with ``seed``.

        Returns
        -------
        train_idx, val_idx : numpy.ndarray
            Sorted integer positions of the training and of the validation cells.
        """
        if not 0.0 <= validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}.")
        order = np.random.default_rng(seed).permutation(self.n_obs)
        n_val = round(validation_fraction * self.n_obs)
        if validation_fraction > 0 and not 0 < n_val < self.n_obs:
            raise InputError(f"a validation fraction of {validation_fraction} of {self.n_obs} cells leaves "
                             f"{n_val} cells for validation and {self.n_obs - n_val} for training; use more cells "
                             "or set validation_split to 0.")
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    def subset(
        self,
        idx: np.ndarray | Sequence[int] | None = None,
        features: Mapping[str, np.ndarray] | None = None,
    ) -> MultiModality:
        """A copy restricted to some cells and/or some features of some modalities.

        Parameters
        ----------
        idx
            Integer positions or a boolean mask over cells; ``None`` keeps all.
        features
            ``{modality: boolean mask over its features}``; other modalities keep
            all features.
        """
        if self.on_disk:
            return copy_subset(self, idx, features)
        cells = slice(None) if idx is None else cell_positions(idx, self.obs_names, "cells")
        columns: slice | np.ndarray = slice(None)
        if features:
            columns = np.ones(self.n_vars, dtype=bool)
            for name, mask in features.items():
                mask = np.asarray(mask)
                n_features = self.modality(name).n_vars
                if mask.dtype != bool or mask.shape != (n_features,):
                    raise ValueError(
                        f"features[{name!r}] must be a boolean mask of length {n_features} (the features of "
                        f"modality {name!r}), got dtype {mask.dtype} and shape {mask.shape}."
                    )
                where = self.varmap[name] > 0
                columns[where] = mask[self.varmap[name][where] - 1]
        with no_pull():
            plain = super().__getitem__((cells, columns)).copy()
        return MultiModality(plain)

    def __getitem__(self, index: Any) -> MultiModality:
        """``mm[cells]`` or ``mm[cells, features]`` as a new MultiModality.

        A copy rather than MuData's view: a view's modalities are plain AnnData views
        that would lose the likelihoods and batch keys the model reads.
        """
        if self.on_disk:
            if isinstance(index, tuple):
                raise InputError("the data are on disk (read with backed=True): select cells with mm[cells] and "
                                 "features with mm.subset(features={modality: mask}).")
            return copy_subset(self, index)
        with no_pull():
            return MultiModality(super().__getitem__(index).copy())

    def copy(self, filename: str | PathLike | None = None) -> MultiModality:
        """Full in-memory copy that stays a :class:`MultiModality`."""
        if filename is not None:
            raise ValueError("backed copies are not supported; use write_h5mu() and read_h5mu().")
        return self.subset()

    def apply_qc(self, steps: Sequence[QCStep | Mapping[str, Any]]) -> MultiModality:
        """Apply quality-control steps in order; see :mod:`cavachon_like.data.qc`.

        ``steps`` may mix step objects and configs such as
        ``{"step": "filter_cells", "modality": "rna", "min_features": 20}``.
        """
        result = self
        for step in steps:
            result = (step if isinstance(step, QCStep) else from_config(step))(result)
        return result

    def to_dataset(
        self,
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
        """A ``tf.data.Dataset`` of ``{"x": {mod: counts}, "batch": {mod: one-hot}}``; see
        :func:`cavachon_like.data.dataset.make_dataset`."""
        # imported here so IO and QC work without paying for the TensorFlow import
        from .dataset import make_dataset

        return make_dataset(self, batch_size=batch_size, shuffle=shuffle, seed=seed, indices=indices,
                            modalities=modalities, sparse=sparse, drop_remainder=drop_remainder,
                            batch_categories=batch_categories, order=order, per_cell=per_cell)

    # mudata hooks

    def update(self) -> None:
        """MuData's ``update``, without pulling modality columns into the global tables (:func:`no_pull`)."""
        with no_pull():
            super().update()

    def write_h5mu(self, filename: str | PathLike | None = None, **kwargs: Any) -> None:
        """Write to an ``.h5mu`` file (likelihoods, batch keys and the QC report included)."""
        meta = self.uns.get(UNS_KEY, {})
        qc = meta.get("qc")
        # h5 cannot hold a list of dicts; a table round-trips and is turned back on reading
        if isinstance(qc, list):
            meta["qc"] = pd.DataFrame.from_records(qc)
        try:
            super().write_h5mu(filename, **kwargs)
        finally:
            if isinstance(qc, list):
                meta["qc"] = qc

    write = write_h5mu


def _smallest(x: Any) -> float:
    """The smallest value of ``x`` (for a sparse matrix: of its stored values; 0 if it stores none)."""
    def least(block: Any) -> list[float]:
        values = block.data if sp.issparse(block) else np.asarray(block)
        return [float(values.min()) if values.size else 0.0]

    return float(blockwise(x, least, axis=1).min())


def _per_modality(value: Any, adatas: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Spread a per-modality argument into ``{modality: value}`` (missing keys: use stored)."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(adatas))
        if unknown:
            raise ValueError(f"{what} names modalities {unknown} that do not exist; modalities: {list(adatas)}.")
        return dict(value)
    if what == "likelihoods":
        raise TypeError(f"likelihoods must be a dict {{modality: likelihood}}, got {value!r}.")
    return {k: _as_batch_key(value) for k in adatas}


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of a table as plain-Python dicts (numpy scalars would leak into reports)."""
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in table.to_dict("records")]
