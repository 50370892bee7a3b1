"""Differential expression over many groups, through the public model interface."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd


def one_vs_rest(model: Any, data: Any, modality: str, groupby: str, groups: Sequence[str] | None = None,
                **kwargs: Any) -> pd.DataFrame:
    """``model.differential_expression`` of each group of ``groupby`` against all other cells.

    ``kwargs`` go to :meth:`~cavachon_like.model.base.MultimodalModel.differential_expression`.
    Returns one long table with ``feature`` and ``group`` columns (features ranked
    within each group by ``score``).
    """
    column = data.obs_column(groupby).astype(str)
    groups = list(groups) if groups is not None else sorted(column.unique())
    tables = []
    for group in groups:
        table = model.differential_expression(data, modality, groupby=groupby, group_a=group, **kwargs)
        tables.append(table.reset_index().assign(group=group))
    return pd.concat(tables, ignore_index=True)
