"""One measured data type (RNA, ATAC, ...) of a set of cells, with its likelihood."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .backed import is_backed, row_blocks
from .groups import name_examples
from .mosaic import measured as _measured
from .support import SUPPORTS, support_of

#: Key under which this package keeps its metadata in ``uns``; a plain dict so it
#: survives h5ad/h5mu round trips.
UNS_KEY = "cavachon_like"



def _as_batch_key(batch_key: str | Sequence[str] | None) -> list[str]:
    if batch_key is None:
        return []
    if isinstance(batch_key, str):
        return [batch_key]
    # h5 stores an empty list as an empty float array, hence the size check
    keys = np.asarray(batch_key, dtype=object).ravel()
    return [str(k) for k in keys] if keys.size else []


class Modality(ad.AnnData):
    """An :class:`anndata.AnnData` that knows how its data should be modelled.

    The likelihood and the batch covariate columns are kept in
    ``uns["cavachon_like"]`` so they survive writing to and reading from h5ad/h5mu.
    Slicing returns a plain ``AnnData`` (anndata views are not subclass aware), but
    the metadata travels along in ``uns``; ``Modality.from_anndata`` restores it.

    Parameters
    ----------
    data
        An ``AnnData`` (its ``X``, annotations and ``uns`` are reused; ``X`` is not
        copied) or a cells x features matrix (dense or scipy sparse).
    likelihood
        Name of the data distribution in the distribution registry, e.g.
        ``"bernoulli"``, ``"poisson"``, ``"nb"``, ``"zinb"``, ``"normal"``. When
        ``None`` and ``data`` is an ``AnnData``, the stored one is used.
    batch_key
        ``obs`` columns holding batch covariates; a single string is wrapped in a
        list. When ``None`` and ``data`` is an ``AnnData``, the stored value is used,
        else no batch covariates.
    obs, var
        Cell and feature annotations; only with a matrix as ``data``.
    name
        Name used in error messages; set by :class:`MultiModality` to the
        modality's key.

    Examples
    --------
    >>> rna = Modality(counts, likelihood="zinb", batch_key="batch", obs=cells)
    >>> rna.validate()  # the checks of zinb's support: non-negative integer counts
    """

    def __init__(
        self,
        data: ad.AnnData | np.ndarray | sp.spmatrix | sp.sparray,
        likelihood: str | None = None,
        batch_key: str | Sequence[str] | None = None,
        obs: pd.DataFrame | None = None,
        var: pd.DataFrame | None = None,
        *,
        name: str | None = None,
    ) -> None:
        if isinstance(data, ad.AnnData):
            if obs is not None or var is not None:
                raise ValueError(
                    "obs and var are taken from the AnnData passed as data; set them on it instead of "
                    "passing obs=/var= to Modality."
                )
            stored = dict(data.uns.get(UNS_KEY, {}))
            if is_backed(data.X):
                # anndata's copy constructor leaves a matrix on disk behind: pass it on as it is
                super().__init__(X=data.X, obs=data.obs, var=data.var, uns=dict(data.uns), obsm=dict(data.obsm),
                                 varm=dict(data.varm), obsp=dict(data.obsp), varp=dict(data.varp))
            else:
                # a view has no matrix of its own to share, so it has to be materialised
                super().__init__(data.copy() if data.is_view else data)
            # anndata shares uns with the source; copy so our metadata does not leak into it
            self.uns = dict(self.uns)
        else:
            if data is None:
                raise ValueError("Modality needs a cells x features matrix or an AnnData, got None.")
            stored = {}
            if sp.issparse(data) and data.format not in ("csr", "csc"):
                data = data.tocsr()
            super().__init__(X=data, obs=obs, var=var)
        likelihood = likelihood if likelihood is not None else stored.get("likelihood")
        if likelihood is None:
            raise ValueError(
                f"no likelihood for modality {name or stored.get('name') or '<unnamed>'!r}: pass likelihood=..., "
                "e.g. 'zinb' or 'nb' for RNA counts, 'bernoulli' for binarised ATAC, 'normal' for "
                f"continuous data (it is not stored in uns[{UNS_KEY!r}] either)."
            )
        self.uns[UNS_KEY] = {
            "likelihood": _check_likelihood(likelihood),
            "batch_key": _as_batch_key(batch_key if batch_key is not None else stored.get("batch_key")),
            "name": str(name if name is not None else stored.get("name", "")),
        }

    def __getitem__(self, index: Any) -> Modality:
        """``modality[cells, features]`` as a new Modality (a copy, keeping the likelihood
        and batch key; anndata's view would be a plain AnnData)."""
        return Modality(super().__getitem__(index))

    @classmethod
    def from_anndata(
        cls,
        adata: ad.AnnData,
        likelihood: str | None = None,
        batch_key: str | Sequence[str] | None = None,
        *,
        name: str | None = None,
    ) -> Modality:
        """Wrap an ``AnnData``; arguments left as ``None`` fall back to its ``uns``."""
        return cls(adata, likelihood=likelihood, batch_key=batch_key, name=name)

    @property
    def likelihood(self) -> str:
        """Registry name of the data distribution."""
        return str(self.uns[UNS_KEY]["likelihood"])

    @likelihood.setter
    def likelihood(self, value: str) -> None:
        self.uns[UNS_KEY]["likelihood"] = _check_likelihood(value)

    @property
    def batch_key(self) -> list[str]:
        """``obs`` columns used as batch covariates (possibly empty)."""
        return _as_batch_key(self.uns[UNS_KEY].get("batch_key"))

    @batch_key.setter
    def batch_key(self, value: str | Sequence[str] | None) -> None:
        self.uns[UNS_KEY]["batch_key"] = _as_batch_key(value)

    @property
    def measured(self) -> np.ndarray:
        """Whether each cell was measured in this modality: all ``True`` except in mosaic data
        (``MultiModality(..., join="outer")``), whose unmeasured cells hold empty rows."""
        return _measured(self)

    @property
    def name(self) -> str:
        """Name used in messages; empty when the modality was never named."""
        return str(self.uns[UNS_KEY].get("name", ""))

    def copy(self, filename: Any = None) -> Modality:
        """Full copy that stays a :class:`Modality`."""
        return Modality(super().copy(filename))

    def batch_categories(self) -> dict[str, list[str]]:
        """Sorted category strings of every batch column, as seen in the data.

        Raises
        ------
        ValueError
            If a batch column is missing or has missing values.
        """
        self._check_batch_columns()
        return {col: sorted(self.obs[col].astype(str).unique().tolist()) for col in self.batch_key}

    def batch_one_hot(self, categories: Mapping[str, Sequence[Any]] | None = None) -> np.ndarray:
        """One-hot batch covariates, concatenated over the ``batch_key`` columns.

        Parameters
        ----------
        categories
            ``{column: categories}`` fixing the layout (e.g. the training data's
            :meth:`batch_categories`); by default the data's own sorted categories.

        Returns
        -------
        np.ndarray
            ``(n_obs, total number of categories)`` float32; ``(n_obs, 0)`` without
            batch columns.

        Raises
        ------
        ValueError
            If ``categories`` does not cover exactly the batch columns, or the data
            holds values outside them.
        """
        own = self.batch_categories()
        if categories is not None:
            missing = [c for c in self.batch_key if c not in categories]
            extra = [c for c in categories if c not in self.batch_key]
            if missing or extra:
                raise ValueError(
                    f"{self._label()}: batch categories are given for columns {list(categories)} but batch_key is "
                    f"{self.batch_key} (missing: {missing}, not batch columns: {extra}); pass categories for "
                    "exactly the batch_key columns."
                )
        blocks = [np.zeros((self.n_obs, 0), dtype=np.float32)]
        for col in self.batch_key:
            cats = own[col] if categories is None else [str(c) for c in categories[col]]
            if len(set(cats)) != len(cats):
                raise ValueError(f"{self._label()}: batch categories of column {col!r} contain duplicates: {cats}.")
            values = self.obs[col].astype(str).to_numpy()
            codes = pd.Categorical(values, categories=cats).codes
            unseen = np.flatnonzero(codes < 0)
            if unseen.size:
                raise ValueError(
                    f"{self._label()}: batch column {col!r} has values such as "
                    f"{sorted(set(values[unseen]))[:5]} not among "
                    f"the given categories {cats} (in {unseen.size} cells, e.g. "
                    f"{name_examples(self.obs_names[unseen])}); a model can only use batches it was trained with, so "
                    "remove these cells, retrain with these categories, or add them to the trained model with "
                    "model.map_query(data) (it trains weights for the new batches only)."
                )
            blocks.append(np.eye(len(cats), dtype=np.float32)[codes])
        return np.concatenate(blocks, axis=1)

    def unseen_batch_categories(self, categories: Mapping[str, Sequence[Any]]) -> dict[str, list[str]]:
        """Values of the batch columns that ``categories`` does not list: the batches a model
        trained with ``categories`` has never seen (what :meth:`batch_one_hot` refuses).

        Parameters
        ----------
        categories
            ``{column: categories}``, e.g. a trained model's ``batch_categories[modality]``;
            a ``batch_key`` column it lacks counts as entirely unseen.

        Returns
        -------
        dict
            ``{column: sorted unseen values}`` for the columns that have any; empty when
            every cell is from a known batch.

        Raises
        ------
        ValueError
            If a batch column is missing or has missing values.
        """
        own = self.batch_categories()
        unseen = {}
        for col in self.batch_key:
            known = {str(c) for c in categories.get(col, [])}
            new = [c for c in own[col] if c not in known]
            if new:
                unseen[col] = new
        return unseen

    def validate(self, support: str | None = None) -> None:
        """Check that the data fits the likelihood and the batch columns exist.

        ``support`` (``"counts"``, ``"binary"`` or ``"real"``, see
        :data:`~cavachon_like.data.support.SUPPORTS`) defaults to the one the
        likelihood named by :attr:`likelihood` declares; an unknown likelihood only
        gets the checks every modality gets. Cells with zero total counts are allowed.

        Raises
        ------
        ValueError
            Naming the modality, up to five offending cell barcodes and the fix, for
            NaN/infinite values, negative values under counts or binary support,
            non-integer values under counts support, missing batch columns or
            missing batch values.
        """
        if self.X is None:
            raise ValueError(f"{self._label()} has no X matrix; store the data in X before training.")
        support = support or support_of(self.likelihood)
        self._check_batch_columns()
        for first, block in row_blocks(self.X):  # a matrix on disk, block by block
            values, rows_of = _values_and_rows(block)
            cells_of = (lambda pos, rows_of=rows_of, first=first: first + rows_of(pos))
            self._check_entries(~np.isfinite(values), cells_of, "NaN or infinite values",
                                "remove these cells or fix the values before training")
            if support in ("counts", "binary"):
                self._check_entries(values < 0, cells_of, f"negative values, which the likelihood "
                                    f"{self.likelihood!r} (support: {SUPPORTS[support]}) cannot model",
                                    "use raw counts (not log-normalised or scaled data), or choose likelihood 'normal'")
            if support == "counts":
                self._check_entries(values != np.round(values), cells_of, f"non-integer values, which the "
                                    f"likelihood {self.likelihood!r} cannot model",
                                    "use raw integer counts (e.g. from layers['counts']), or choose likelihood "
                                    "'normal'")

    def _label(self) -> str:
        return f"modality {self.name!r}" if self.name else "modality"

    def _check_entries(self, bad: np.ndarray, rows_of: Any, problem: str, fix: str) -> None:
        if not bad.any():
            return
        cells = np.unique(rows_of(np.flatnonzero(bad)))
        raise ValueError(
            f"{self._label()} (likelihood {self.likelihood!r}): {len(cells)} cells have {problem}, e.g. cells "
            f"{name_examples(self.obs_names[cells])}; {fix}."
        )

    def _check_batch_columns(self) -> None:
        missing = [c for c in self.batch_key if c not in self.obs.columns]
        if missing:
            raise ValueError(
                f"{self._label()}: batch_key column(s) {missing} are not in obs (columns: "
                f"{list(self.obs.columns)}); add them to obs or change batch_key."
            )
        for col in self.batch_key:
            na = np.flatnonzero(self.obs[col].isna().to_numpy())
            if na.size:
                raise ValueError(
                    f"{self._label()}: {na.size} cells have no value in batch column {col!r}, e.g. cells "
                    f"{name_examples(self.obs_names[na])}; fill them (e.g. with 'unknown') or remove these cells."
                )


def unique_feature_names(adatas: Mapping[str, ad.AnnData]) -> tuple[dict[str, pd.Index], list[str]]:
    """Feature names of ``adatas`` made unique across all of them, and what was renamed.

    A name repeated within a modality gets anndata's ``-1``, ``-2`` suffixes (as
    ``var_names_make_unique``); a name an earlier modality already uses becomes
    ``<modality>:<name>`` (mudata's prefix, here only for the shared names, so that
    gene symbols stay usable). Nothing is modified.

    Parameters
    ----------
    adatas
        The modalities by name, in order: a name an earlier modality uses is renamed in the later.

    Returns
    -------
    names : dict
        ``{modality: new var names}`` (a :class:`pandas.Index` each).
    lines : list of str
        One line per renaming modality, with counts and examples (empty when all names
        were unique already).
    """
    names_by_mod = {name: adata.var_names for name, adata in adatas.items()}
    if pd.Index(np.concatenate([n.to_numpy() for n in names_by_mod.values()])).is_unique:
        return names_by_mod, []  # the usual case, without a Python loop over every feature
    lines: list[str] = []
    owner: dict[str, str] = {}
    for name, adata in adatas.items():
        names = adata.var_names.astype(str)
        if not names.is_unique:
            repeated = names[names.duplicated()].unique()
            names = ad.utils.make_index_unique(names)
            lines.append(f"modality {name!r} repeats {len(repeated)} feature names (e.g. {name_examples(repeated)}); "
                         "repeats got the suffixes '-1', '-2', ... (as anndata's var_names_make_unique)")
        shared = [n for n in names if n in owner]
        if shared:
            own, new = set(names), []
            for n in names:
                if n in owner:
                    candidate, k = f"{name}:{n}", 0
                    while candidate in owner or candidate in own:
                        k += 1
                        candidate = f"{name}:{n}-{k}"
                    own.add(candidate)
                    n = candidate
                new.append(n)
            others = ", ".join(repr(m) for m in dict.fromkeys(owner[n] for n in shared))
            lines.append(f"modality {name!r} shares {len(shared)} feature names with modality {others} (e.g. "
                         f"{name_examples(shared)}); in {name!r} they are now '{name}:<name>' (e.g. "
                         f"{new[names.get_loc(shared[0])]!r}), as features are matched by name across modalities")
            names = pd.Index(new)
        names_by_mod[name] = names
        for n in names:
            owner.setdefault(n, name)
    return names_by_mod, lines


def _check_likelihood(likelihood: Any) -> str:
    if not isinstance(likelihood, str) or not likelihood:
        raise ValueError(f"likelihood must be a non-empty distribution name such as 'zinb', got {likelihood!r}.")
    return likelihood.lower()


def _values_and_rows(x: Any) -> tuple[np.ndarray, Any]:
    """Stored values of ``x`` and a function mapping value positions to row numbers.

    For sparse matrices only the explicitly stored entries are inspected, so memory
    grows with the non-zeros rather than the matrix size.
    """
    if sp.issparse(x):
        if x.format == "csc":
            return x.data, lambda pos: x.indices[pos]
        csr = x if x.format == "csr" else x.tocsr()
        return csr.data, lambda pos: np.searchsorted(csr.indptr, pos, side="right") - 1
    dense = np.asarray(x)
    return dense.ravel(), lambda pos: pos // max(dense.shape[1], 1)
