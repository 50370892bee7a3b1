"""Selecting cells: positions from masks, positions or names, and two groups to compare."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

#: How cells may be named: a boolean mask, integer positions or cell names.
CellSpec = Sequence[str] | Sequence[int] | Sequence[bool] | np.ndarray

_N_EXAMPLES = 5


def name_examples(names: Sequence[Any], limit: int = _N_EXAMPLES) -> str:
    """Up to ``limit`` names quoted for an error message, with how many were left out."""
    names = list(names)
    shown = ", ".join(repr(str(n)) for n in names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown


def cell_positions(spec: CellSpec, obs_names: pd.Index, what: str = "cells") -> np.ndarray:
    """Integer positions (in the given order) of the cells named by ``spec``.

    ``spec`` is a boolean mask with one entry per cell, integer positions, or cell
    names (strings looked up in ``obs_names``). Errors name ``what`` and up to five
    offending entries.
    """
    n = len(obs_names)
    values = np.asarray(spec)
    if values.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional (a mask, positions or names), got shape {values.shape}.")
    if values.dtype == bool:
        if values.shape != (n,):
            raise ValueError(f"{what}: a boolean mask needs one entry per cell ({n}), got shape {values.shape}.")
        return np.flatnonzero(values)
    if not values.size:
        return np.zeros(0, dtype=np.int64)
    if np.issubdtype(values.dtype, np.integer):
        bad = values[(values < 0) | (values >= n)]
        if bad.size:
            raise IndexError(f"{what}: positions {bad[:_N_EXAMPLES].tolist()} are out of range for {n} cells.")
        return values.astype(np.int64)
    if values.dtype.kind not in "USO":
        raise ValueError(f"{what} must be a boolean mask, integer positions or cell names, got dtype {values.dtype}.")
    positions = obs_names.get_indexer(values.astype(str))
    if (positions < 0).any():
        missing = values[positions < 0][:_N_EXAMPLES].tolist()
        raise ValueError(f"{what}: {int((positions < 0).sum())} cell names are not in the data, e.g. {missing}.")
    return positions.astype(np.int64)


def resolve_groups(
    data: Any, group_a: Any = None, group_b: Any = None, groupby: str | None = None
) -> tuple[np.ndarray, np.ndarray, str, str]:
    """Cell positions and names of two groups to compare.

    - ``groupby`` alone: an obs column with exactly two values, A = the first category.
    - ``groupby`` with ``group_a`` (a value or list of values) and optionally
      ``group_b``: cells with those values; B defaults to every other cell ("rest").
    - no ``groupby``: ``group_a``/``group_b`` are boolean masks, integer positions or
      cell names; B defaults to every other cell.

    Raises
    ------
    ValueError
        For unknown columns or values, empty groups and cells in both groups.
    """
    if groupby is not None:
        column = data.obs_column(groupby)
        values = column.astype(str).to_numpy()
        seen = set(values)
        order = column.cat.categories if isinstance(column.dtype, pd.CategoricalDtype) else pd.unique(column)
        present = [str(v) for v in order if str(v) in seen]
        if group_a is None:
            if len(present) != 2:
                raise ValueError(f"obs column {groupby!r} has {len(present)} values {present[:10]}; name group_a "
                                 "(and optionally group_b) to compare two of them.")
            group_a, group_b = present
        wanted_a = [group_a] if isinstance(group_a, str) else [str(v) for v in group_a]
        wanted_b = None if group_b is None else ([group_b] if isinstance(group_b, str) else [str(v) for v in group_b])
        for wanted in (wanted_a, wanted_b or []):
            unknown = [v for v in wanted if v not in seen]
            if unknown:
                raise ValueError(f"obs column {groupby!r} has no cells with {unknown}; its values are {present}.")
        a = np.flatnonzero(np.isin(values, wanted_a))
        b = np.flatnonzero(~np.isin(values, wanted_a) if wanted_b is None else np.isin(values, wanted_b))
        name_a = ",".join(wanted_a)
        name_b = "rest" if wanted_b is None else ",".join(wanted_b)
    else:
        if group_a is None:
            raise ValueError("give group_a (cells, a mask or positions), or groupby with the group values.")
        a = np.unique(cell_positions(group_a, data.obs_names, "group_a"))
        if group_b is None:
            b = np.setdiff1d(np.arange(data.n_obs), a)
        else:
            b = np.unique(cell_positions(group_b, data.obs_names, "group_b"))
        name_a, name_b = "A", "rest" if group_b is None else "B"
    if not len(a) or not len(b):
        raise ValueError(f"both groups need cells; group {name_a!r} has {len(a)}, group {name_b!r} has {len(b)}.")
    overlap = np.intersect1d(a, b)
    if overlap.size:
        raise ValueError(f"{overlap.size} cells are in both groups (e.g. {data.obs_names[overlap[0]]!r}).")
    return a, b, name_a, name_b
