"""Training plans: which components train in which stage."""
from __future__ import annotations

from collections.abc import Sequence

#: Training modes: one stage per component in topological order, or one stage for all.
MODES = ("sequential", "joint")


def training_plan(order: Sequence[str], mode: str = "sequential") -> list[list[str]]:
    """Stages of components to train, given the components in topological order.

    ``"sequential"`` (paper Sec. 2.3): one stage per component in topological order;
    ``"joint"``: one stage with every component.
    """
    if mode == "sequential":
        return [[c] for c in order]
    if mode == "joint":
        return [list(order)]
    raise ValueError(f"unknown training mode {mode!r}; expected one of {MODES}.")
